"""No cache: every request computes its document from LiteLLM's table.

- `per_day`: LiteMaaS's way today, one query per day of the range and of its previous period, the days' rows summed
  in the application;
- `one_pass`: one statement over the whole covered range (the DBA's way; also what cashews wraps).

Nothing is stored, so there is nothing to invalidate: a changed row shows in the next answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import polars as pl
import psycopg

from .compute import ArrowSession, Document, Request, day_between, day_equals, from_rows, source_statement, sql_filters
from .peer import PeerConfig, Reply


class NoCache:
    """Computes every answer; `per_day` chooses LiteMaaS's query per day over one statement for the range."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], arrow: ArrowSession, *, per_day: bool) -> None:
        self._conn = conn
        self._arrow = arrow
        self._per_day = per_day
        self.computations = 0

    async def compute(self, request: Request) -> Document:
        self.computations += 1
        query = request.query()
        filters = await sql_filters(self._conn, query)
        if self._per_day:
            frames = [await self._arrow.frame(source_statement(day_equals(day), filters)) for day in request.covered]
            rows = pl.concat(frames)
        else:
            rows = await self._arrow.frame(source_statement(day_between(request.covered), filters))
        return await from_rows(self._conn, query, rows)

    async def answer(self, request: Request) -> Reply:
        return Reply(await self.compute(request), hit=False)

    async def invalidate(self, day: dt.date) -> None:
        """Nothing is cached."""


@asynccontextmanager
async def _open(config: PeerConfig, *, per_day: bool) -> AsyncIterator[NoCache]:
    arrow = ArrowSession(config.dsn)
    try:
        async with await psycopg.AsyncConnection.connect(config.dsn, autocommit=True) as conn:
            yield NoCache(conn, arrow, per_day=per_day)
    finally:
        arrow.close()


def open_per_day(config: PeerConfig) -> Any:
    return _open(config, per_day=True)


def open_one_pass(config: PeerConfig) -> Any:
    return _open(config, per_day=False)
