"""Reads LiteLLM's "LiteLLM_DailyUserSpend" (the source of truth) and LiteMaaS's key and user tables.

The usage of a set of days is fetched in one statement, LiteLLM's rows as they are, streamed as Arrow columns through
ADBC (PostgreSQL's binary COPY): no row ever becomes a Python object. polars then codes the dimensions and sums the
rows at (date, user, key, model, provider) grain, which folds rows that differ only by endpoint or MCP tool.
LiteLLM's odd rows are normalised here: a NULL or empty model becomes UNKNOWN_MODEL, a NULL or empty provider is
inferred from the model name, and a key LiteMaaS does not know (the empty key included) belongs to UNMAPPED_USER_ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import psycopg

from .db import UNBOUNDED, SessionLimits
from .dictionary import CODE_TYPE
from .errors import BackendUnavailable, SourceMissing
from .frames import SUMS
from .providers import provider_of
from .vocabulary import UNKNOWN_MODEL, UNMAPPED_USER_ID, CodedColumn

SOURCE_TABLE = '"LiteLLM_DailyUserSpend"'
UNDEFINED_TABLE = "42P01"

# Plain rows, no GROUP BY: measured on 60 days of 1.49M rows, PostgreSQL's grouping of the text columns took
# 8.5 s (and more with work_mem raised to 256MB) against 2.6 s for the rows alone; polars then groups them as
# integer codes in a fraction of that.
_USAGE_SQL = f"""
SELECT date, api_key, coalesce(nullif(model, ''), '{UNKNOWN_MODEL}') AS model,
       nullif(custom_llm_provider, '') AS llm_provider,
       prompt_tokens AS prompt, completion_tokens AS completion, api_requests AS requests,
       successful_requests AS successful, failed_requests AS failed, spend
FROM {SOURCE_TABLE}
WHERE date IN ({{days}})
"""


# One indexed pass over the checked days' rows (LiteLLM indexes "date"): what a late row, a backfill or a correction
# changes. spend is summed as numeric, so the same rows always give the same text whatever their order.
_FINGERPRINT_SQL = f"""
SELECT date, concat_ws('/', count(*), coalesce(sum(api_requests), 0), coalesce(sum(spend::numeric), 0),
                       max(updated_at)) AS fingerprint
FROM {SOURCE_TABLE}
WHERE date IN ({{days}})
GROUP BY date
"""
# The fingerprint of a day without rows.
EMPTY_FINGERPRINT = "0/0/0"


class UserInfo(NamedTuple):
    user_id: str
    username: str | None
    email: str | None
    role: str | None


async def _table_exists(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def load_key_owners(conn: psycopg.AsyncConnection[Any]) -> pl.DataFrame:
    """key hash -> LiteMaaS user id, as columns (key, user); empty when LiteMaaS's api_keys table is absent."""
    rows: list[tuple[str, str]] = []
    if await _table_exists(conn, "api_keys"):
        cur = await conn.execute("SELECT key_hash, user_id::text FROM api_keys WHERE key_hash IS NOT NULL")
        rows = await cur.fetchall()
    return pl.DataFrame(rows, schema={"key": pl.String, "user": pl.String}, orient="row")


async def keys_with_aliases(conn: psycopg.AsyncConnection[Any], aliases: Sequence[str]) -> list[str]:
    """The key hashes whose LiteLLM alias is one of `aliases` (an API-key filter may name a key by its alias)."""
    if not aliases or not await _table_exists(conn, "api_keys"):
        return []
    cur = await conn.execute("SELECT key_hash FROM api_keys WHERE litellm_key_alias = ANY(%s)", (list(aliases),))
    return [str(h) for (h,) in await cur.fetchall() if h is not None]


async def key_aliases(conn: psycopg.AsyncConnection[Any], keys: Sequence[str]) -> dict[str, str]:
    """The LiteLLM alias LiteMaaS records for each of these key hashes that has one."""
    if not keys or not await _table_exists(conn, "api_keys"):
        return {}
    cur = await conn.execute(
        "SELECT key_hash, litellm_key_alias FROM api_keys WHERE key_hash = ANY(%s) AND litellm_key_alias IS NOT NULL",
        (list(keys),),
    )
    return {str(h): str(a) for h, a in await cur.fetchall()}


async def load_users(conn: psycopg.AsyncConnection[Any], user_ids: Sequence[str]) -> dict[str, UserInfo]:
    """username, email and role of the given LiteMaaS users; empty when the users table is absent. The role is
    LiteMaaS's `role` column, else the first of its `roles`, when the table has either (read through to_jsonb, so
    a table with neither works too)."""
    ids = [u for u in user_ids if u != UNMAPPED_USER_ID]
    if not ids or not await _table_exists(conn, "users"):
        return {}
    cur = await conn.execute(
        """SELECT id::text, username, email, coalesce(to_jsonb(u) ->> 'role', to_jsonb(u) -> 'roles' ->> 0)
           FROM users u WHERE id::text = ANY(%s)""",
        (ids,),
    )
    return {str(i): UserInfo(str(i), n, e, r) for i, n, e, r in await cur.fetchall()}


async def count_users(conn: psycopg.AsyncConnection[Any], wanted: Sequence[str], active: Sequence[str]) -> int:
    """LiteMaaS's users (only those in `wanted`, when it is not empty), plus the `active` users it does not know
    (the unmapped user): the analytics document's totalUsers."""
    if not await _table_exists(conn, "users"):
        return len(active)
    cur = await conn.execute(
        """SELECT (SELECT count(*) FROM users WHERE cardinality(%(wanted)s::text[]) = 0
                                                 OR id::text = ANY(%(wanted)s::text[]))
                + (SELECT count(*) FROM unnest(%(active)s::text[]) AS a(id)
                   WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id::text = a.id))""",
        {"wanted": list(wanted), "active": list(active)},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class SourceReader:
    """Fetches day usage from LiteLLM's table over ADBC connections of its own (kept for reuse, one per fetch)."""

    def __init__(self, dsn: str, limits: SessionLimits = UNBOUNDED) -> None:
        self._dsn = dsn
        self._limits = limits
        self._idle: list[Any] = []

    async def fetch(self, days: Sequence[dt.date]) -> pl.DataFrame:
        """LiteLLM's rows of `days` (date, api_key, model, llm_provider and the metrics), in one statement."""
        return await asyncio.to_thread(self._select, _USAGE_SQL, days) if days else _empty_source()

    async def fingerprints(self, days: Sequence[dt.date]) -> dict[dt.date, str]:
        """A fingerprint of each day's rows (EMPTY_FINGERPRINT for a day without any), in one statement."""
        if not days:
            return {}
        frame = await asyncio.to_thread(self._select, _FINGERPRINT_SQL, days)
        found = {dt.date.fromisoformat(day): text for day, text in frame.iter_rows()}
        return {day: found.get(day, EMPTY_FINGERPRINT) for day in days}

    def _select(self, sql: str, days: Sequence[dt.date]) -> pl.DataFrame:
        # Days are date objects, so their ISO form is safe to inline (ADBC cannot bind a list parameter).
        statement = sql.format(days=", ".join(f"'{d.isoformat()}'" for d in days))
        with self._connection() as conn, conn.cursor() as cur:
            try:
                cur.execute(statement)
                table = cur.fetch_arrow_table()
            except adbc.Error as exc:
                if getattr(exc, "sqlstate", None) == UNDEFINED_TABLE:
                    raise SourceMissing(
                        f"LiteLLM's table {SOURCE_TABLE} does not exist in the LITELLM_DATABASE_URL database"
                    ) from None
                raise
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            conn = self._reusable() or self._connect()
        except adbc.Error as exc:
            raise BackendUnavailable("postgresql", f"LiteLLM's database: {type(exc).__name__}") from None
        try:
            yield conn
        except adbc.Error as exc:
            conn.close()
            raise BackendUnavailable("postgresql", f"LiteLLM's database: {type(exc).__name__}") from None
        except BaseException:
            conn.close()
            raise
        else:
            conn.rollback()
            self._idle.append(conn)

    def _reusable(self) -> Any | None:
        """An idle connection that still answers (a PostgreSQL restart or an idle timeout ends them unnoticed: a
        fetch must not fail for that), or None; the dead ones are closed."""
        while self._idle:
            conn = self._idle.pop()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchall()
                conn.rollback()
                return conn
            except adbc.Error:
                with contextlib.suppress(adbc.Error):
                    conn.close()
        return None

    def _connect(self) -> Any:
        """A new ADBC connection with the session's timeouts (committed, so a later rollback keeps them)."""
        conn = adbc.connect(self._dsn)
        with conn.cursor() as cur:
            for name, milliseconds in self._limits.session_settings().items():
                cur.execute(f"SET {name} = {milliseconds}")
        conn.commit()
        return conn

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _empty_source() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "date": pl.String,
            "api_key": pl.String,
            "model": pl.String,
            "llm_provider": pl.String,
            **{c: pl.Int64 for c in ("prompt", "completion", "requests", "successful", "failed")},
            "spend": pl.Float64,
        }
    )


@dataclass(frozen=True)
class Dimensions:
    """The distinct dimension values of a batch of source rows: each key with its owner, each (model, provider)."""

    keys: pl.DataFrame  # api_key, user (text)
    models: pl.DataFrame  # model, llm_provider (as LiteLLM has them), provider (resolved)

    def values(self) -> dict[CodedColumn, list[str]]:
        return {
            "user": self.keys["user"].unique().to_list(),
            "key": self.keys["api_key"].to_list(),
            "model": self.models["model"].unique().to_list(),
            "provider": self.models["provider"].unique().to_list(),
        }


def dimensions_of(rows: pl.DataFrame, owners: pl.DataFrame) -> Dimensions:
    """Owners of the keys (UNMAPPED_USER_ID when LiteMaaS does not know one) and providers of the models."""
    keys = (
        rows.select(pl.col("api_key").unique())
        .join(owners, left_on="api_key", right_on="key", how="left")
        .with_columns(pl.col("user").fill_null(UNMAPPED_USER_ID))
    )
    pairs = rows.select("model", "llm_provider").unique()
    providers = pl.Series([provider_of(m, p) for m, p in pairs.iter_rows()], dtype=pl.String)
    return Dimensions(keys, pairs.with_columns(provider=providers))


def coded_usage(rows: pl.DataFrame, dims: Dimensions, codes: Mapping[CodedColumn, Mapping[str, int]]) -> pl.DataFrame:
    """The rows summed at (date, user, key, model, provider) grain, the dimensions as codes. Rows that differ only by
    what the grain leaves out (endpoint, MCP tool, LiteLLM's own user id, a provider left empty on one row and named
    on another) fall into one cell."""
    keys = dims.keys.select(
        "api_key",
        pl.col("user").replace_strict(dict(codes["user"]), return_dtype=CODE_TYPE),
        pl.col("api_key").replace_strict(dict(codes["key"]), return_dtype=CODE_TYPE).alias("key"),
    )
    models = dims.models.select(
        "model",
        "llm_provider",
        pl.col("model").replace_strict(dict(codes["model"]), return_dtype=CODE_TYPE).alias("model_code"),
        pl.col("provider").replace_strict(dict(codes["provider"]), return_dtype=CODE_TYPE),
    )
    return (
        rows.join(keys, on="api_key", how="left")
        .join(models, on=["model", "llm_provider"], how="left", nulls_equal=True)
        .group_by("date", "user", "key", pl.col("model_code").alias("model"), "provider")
        .agg(SUMS)
    )
