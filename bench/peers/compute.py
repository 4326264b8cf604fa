"""What every peer computes on a miss: usage rows -> day cells -> range summary -> the analytics document.

The rows are LiteLLM's, normalised as the project normalises them (source.py): the user is the LiteMaaS owner of the
API key (UNMAPPED_USER_ID when LiteMaaS does not know the key), an empty model is UNKNOWN_MODEL, an empty provider is
inferred from the model name (providers.provider_of). Rows are summed into day cells at (day, user, key, model,
provider) grain; the range's summary is folded from those cells with polars and the document is built by the
project's pure `analytics_document`, so every peer's answer is comparable with every other's. The peers differ only
in where the rows come from and what they cache, which is what the benchmark compares.

Statements go through ADBC (Arrow columns, no Python object per row), the fastest way psycopg's world offers to
fetch a few million rows; each process keeps one connection per peer. Literals are rendered by psycopg, never
formatted by hand.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import orjson
import polars as pl
import psycopg
from psycopg import sql

from litemaas_cache.analytics import (
    Labels,
    TrendRule,
    active_users,
    analytics_document,
    keys_needed,
    users_needed,
)
from litemaas_cache.dates import DateRange
from litemaas_cache.engine import LAST_ACTIVE, RangeSummary, distinct_active
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.frames import ACTIVE, SUMS
from litemaas_cache.providers import provider_of
from litemaas_cache.source import count_users, key_aliases, keys_with_aliases, load_users
from litemaas_cache.vocabulary import METRICS, UNKNOWN_MODEL, UNMAPPED_USER_ID

MAX_RANGE_DAYS = 366
CELL = ["day", "user", "key", "model", "provider"]
GRAIN = ["user", "key", "model", "provider"]
Document = dict[str, Any]

# LiteLLM's rows with the key's LiteMaaS owner, normalised as source.py does (the provider is inferred in polars).
SOURCE_ROWS = sql.SQL(
    """SELECT s.date AS day, {user} AS "user", s.api_key AS key, {model} AS model,
       nullif(s.custom_llm_provider, '') AS llm_provider,
       s.prompt_tokens AS prompt, s.completion_tokens AS completion, s.api_requests AS requests,
       s.successful_requests AS successful, s.failed_requests AS failed, s.spend
FROM "LiteLLM_DailyUserSpend" s LEFT JOIN api_keys k ON k.key_hash = s.api_key
WHERE {days}{filters}"""
)


@dataclass(frozen=True)
class Request:
    """One analytics request of a workload: a range and LiteMaaS's four filter lists."""

    start: dt.date
    end: dt.date
    user_ids: tuple[str, ...] = ()
    model_ids: tuple[str, ...] = ()
    provider_ids: tuple[str, ...] = ()
    api_key_ids: tuple[str, ...] = ()
    label: str = field(default="", compare=False)  # preset x filter kind, for the report

    @property
    def range(self) -> DateRange:
        return DateRange(self.start, self.end)

    @property
    def covered(self) -> DateRange:
        """The days the document reads: the range and the previous period of equal length."""
        return DateRange(self.range.previous().start, self.end)

    def query(self) -> AnalyticsQuery:
        """The validated, normalised query (the project's own validation)."""
        return build_query(
            self.start,
            self.end,
            user_ids=list(self.user_ids),
            model_ids=list(self.model_ids),
            provider_ids=list(self.provider_ids),
            api_key_ids=list(self.api_key_ids),
            max_days=MAX_RANGE_DAYS,
            max_ids=1000,
        )

    def identity(self) -> str:
        """The exact request as text: equal requests give equal text (what an exact-key cache hashes)."""
        q = self.query()
        return orjson.dumps(
            {"startDate": self.start, "endDate": self.end, **q.filters.model_dump(by_alias=True)},
            option=orjson.OPT_SORT_KEYS,
        ).decode()


@dataclass(frozen=True)
class FilterColumns:
    """The SQL expressions a statement filters on: the user (LiteMaaS owner), the normalised model, the key hash."""

    user: sql.Composable
    model: sql.Composable
    key: sql.Composable


SOURCE_COLUMNS = FilterColumns(
    user=sql.SQL("coalesce(k.user_id::text, {})").format(UNMAPPED_USER_ID),
    model=sql.SQL("coalesce(nullif(s.model, ''), {})").format(UNKNOWN_MODEL),
    key=sql.SQL("s.api_key"),
)


async def sql_filters(
    conn: psycopg.AsyncConnection[Any], query: AnalyticsQuery, columns: FilterColumns = SOURCE_COLUMNS
) -> sql.Composable:
    """The user, model and API key conditions of a query as SQL (the provider one is applied after inference); an
    API key filter also matches the keys whose LiteLLM alias it names, as the project's does."""
    f = query.filters
    wanted = [(columns.user, f.user_ids), (columns.model, f.model_ids)]
    if f.api_key_ids:
        wanted.append((columns.key, [*f.api_key_ids, *await keys_with_aliases(conn, f.api_key_ids)]))
    return sql.SQL("").join(
        sql.SQL(" AND {} = ANY({})").format(column, sql.Literal(list(values))) for column, values in wanted if values
    )


def source_statement(days: sql.Composable, filters: sql.Composable) -> str:
    """The source rows of `days` (a condition on s.date, LiteLLM's text column) with the filters, as text."""
    return SOURCE_ROWS.format(
        user=SOURCE_COLUMNS.user, model=SOURCE_COLUMNS.model, days=days, filters=filters
    ).as_string(None)


def day_between(days: DateRange) -> sql.Composable:
    return sql.SQL("s.date BETWEEN {} AND {}").format(days.start.isoformat(), days.end.isoformat())


def day_equals(day: dt.date) -> sql.Composable:
    return sql.SQL("s.date = {}").format(day.isoformat())


class ArrowSession:
    """One ADBC connection (kept for reuse) that runs a statement in a worker thread and returns a polars frame."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._idle: list[Any] = []

    async def frame(self, statement: str) -> pl.DataFrame:
        return await asyncio.to_thread(self._select, statement)

    def _select(self, statement: str) -> pl.DataFrame:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(statement)
            table = cur.fetch_arrow_table()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        conn = self._idle.pop() if self._idle else adbc.connect(self._dsn)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        conn.rollback()
        self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def day_cells(rows: pl.DataFrame, provider_ids: Sequence[str]) -> pl.DataFrame:
    """Rows (day as text or date, user, key, model, llm_provider, METRICS) summed into day cells, the provider
    inferred where LiteLLM left it empty, and the provider filter applied."""
    pairs = rows.select("model", "llm_provider").unique()
    providers = pl.Series("provider", [provider_of(m, p) for m, p in pairs.iter_rows()], dtype=pl.String)
    rows = rows.join(pairs.with_columns(providers), on=["model", "llm_provider"], how="left", nulls_equal=True)
    if provider_ids:
        rows = rows.filter(pl.col("provider").is_in(list(provider_ids)))
    day = pl.col("day").str.to_date() if rows.schema["day"] == pl.String else pl.col("day").cast(pl.Date)
    return rows.with_columns(day.alias("day")).group_by(CELL).agg(SUMS)


def summarise(cells: pl.DataFrame, days: DateRange) -> RangeSummary:
    """The range's summary (what the document is built from) and its previous period's totals, from day cells."""
    previous = days.previous()
    current = cells.filter(pl.col("day").is_between(days.start, days.end))
    before = cells.filter(pl.col("day").is_between(previous.start, previous.end))
    totals = before.select(SUMS).row(0, named=True) if before.height else {}
    return RangeSummary(
        grain=current.group_by(GRAIN).agg(*SUMS, LAST_ACTIVE),
        daily=current.group_by("day").agg(*SUMS, distinct_active("user").alias("activeUsers")),
        daily_models=current.group_by("day", "model", "provider").agg(SUMS),
        previous_totals={m: totals.get(m) or 0 for m in METRICS},
        previous_active_users=before.filter(ACTIVE)["user"].n_unique(),
    )


async def document(conn: psycopg.AsyncConnection[Any], query: AnalyticsQuery, summary: RangeSummary) -> Document:
    """The analytics document of a summary, labelled from LiteMaaS's users and api_keys tables as the project does."""
    labels = Labels(
        await load_users(conn, users_needed(summary, None)),
        await key_aliases(conn, keys_needed(summary, None)),
        await count_users(conn, query.filters.user_ids, active_users(summary)),
    )
    return await asyncio.to_thread(analytics_document, query.range, summary, labels, TrendRule())


async def from_rows(conn: psycopg.AsyncConnection[Any], query: AnalyticsQuery, rows: pl.DataFrame) -> Document:
    """Rows of the covered days (already filtered on user, model and key) -> the document."""
    cells = await asyncio.to_thread(day_cells, rows, query.filters.provider_ids)
    summary = await asyncio.to_thread(summarise, cells, query.range)
    return await document(conn, query, summary)


def _rounded(value: Any) -> Any:
    """Floats to 6 decimals (the document's money precision): sums of the same spends in another order differ in
    the last bits, which is not a different answer."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def fingerprint(doc: Document) -> str:
    """A hash of the document with its floats rounded: equal answers give equal fingerprints."""
    payload = orjson.dumps(_rounded(doc), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(payload, digest_size=12).hexdigest()


def same(a: Any, b: Any, tolerance: float = 1e-6) -> bool:
    """Whether two documents are equal, floats within `tolerance` (for fingerprints that differ only by a float
    rounded to either side of a 6th decimal)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, abs_tol=tolerance)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return bool(a == b)
