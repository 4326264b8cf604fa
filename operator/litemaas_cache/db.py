"""PostgreSQL connection pools: the LiteMaaS database (daily cache, users, api_keys) and LiteLLM's database."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from .errors import BackendUnavailable

set_json_loads(orjson.loads)
set_json_dumps(orjson.dumps)

CONNECT_TIMEOUT_SECONDS = 5


def describe_pg_error(exc: BaseException) -> str:
    """A short description of a PostgreSQL error that never includes the DSN (and so no password)."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return f"{type(exc).__name__}: {exc.diag.message_primary}"
    return type(exc).__name__


class Database:
    """Owns the pools; use `async with Database(dsn, litellm_dsn) as db:`."""

    def __init__(self, dsn: str, litellm_dsn: str | None = None, *, max_size: int = 10) -> None:
        kwargs = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "litemaas-cache"}
        self.cache_pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=max_size, kwargs=kwargs, open=False, name="litemaas"
        )
        if litellm_dsn is None or litellm_dsn == dsn:
            self.source_pool = self.cache_pool
        else:
            self.source_pool = AsyncConnectionPool(
                litellm_dsn, min_size=1, max_size=max_size, kwargs=kwargs, open=False, name="litellm"
            )

    async def open(self, wait_seconds: float = 10.0) -> None:
        try:
            await self.cache_pool.open(wait=True, timeout=wait_seconds)
            if self.source_pool is not self.cache_pool:
                await self.source_pool.open(wait=True, timeout=wait_seconds)
        except Exception as exc:
            await self.close()
            raise BackendUnavailable("postgresql", describe_pg_error(exc)) from None

    async def close(self) -> None:
        await self.cache_pool.close()
        if self.source_pool is not self.cache_pool:
            await self.source_pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def identity(self) -> str:
        """Which database this is, as a short stable hash of the server's system identifier (unique per cluster,
        kept by physical replicas) and the database's name. Cached entries live under it, so two deployments
        that share a Redis and a key prefix never read each other's entries."""
        async with self.cache_connection() as conn:
            cur = await conn.execute("SELECT current_database()")
            row = await cur.fetchone()
            name = str(row[0]) if row else ""
            try:
                async with conn.transaction():
                    cur = await conn.execute("SELECT system_identifier::text FROM pg_control_system()")
                    row = await cur.fetchone()
                system = str(row[0]) if row else ""
            except psycopg.errors.InsufficientPrivilege:  # a managed server that hides it: the name still tells
                system = ""
        return hashlib.blake2b(f"{system}/{name}".encode(), digest_size=5).hexdigest()

    @asynccontextmanager
    async def cache_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection to the LiteMaaS database; connection failures become BackendUnavailable."""
        async with _translated(), self.cache_pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def source_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection to LiteLLM's database."""
        async with _translated(), self.source_pool.connection() as conn:
            yield conn


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise BackendUnavailable("postgresql", describe_pg_error(exc)) from None
