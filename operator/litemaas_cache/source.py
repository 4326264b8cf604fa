"""Reads LiteLLM's "LiteLLM_DailyUserSpend" (the source of truth) and LiteMaaS's key/user mapping."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from .aggregates import UNMAPPED_USER_ID, UsageRow, merge_rows
from .db import Database
from .errors import SourceMissing
from .hotpath import gc_paused
from .providers import provider_of

SOURCE_TABLE = '"LiteLLM_DailyUserSpend"'

# One round trip for any set of days: grouped in SQL at (date, key, model, provider) grain.
_DAY_AGGREGATE_SQL = f"""
SELECT date, api_key, model, custom_llm_provider,
       coalesce(sum(prompt_tokens), 0)::bigint, coalesce(sum(completion_tokens), 0)::bigint,
       coalesce(sum(api_requests), 0)::bigint, coalesce(sum(successful_requests), 0)::bigint,
       coalesce(sum(failed_requests), 0)::bigint, coalesce(sum(spend), 0)::double precision
FROM {SOURCE_TABLE}
WHERE date = ANY(%s)
GROUP BY date, api_key, model, custom_llm_provider
"""


class KeyOwner(NamedTuple):
    user_id: str
    alias: str | None


class UserInfo(NamedTuple):
    user_id: str
    username: str | None
    email: str | None


async def _table_exists(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def load_key_owners(db: Database) -> dict[str, KeyOwner]:
    """key hash -> (LiteMaaS user id, LiteLLM key alias); empty when LiteMaaS's api_keys table is absent."""
    async with db.cache_connection() as conn:
        if not await _table_exists(conn, "api_keys"):
            return {}
        cur = await conn.execute("SELECT key_hash, user_id::text, litellm_key_alias FROM api_keys")
        return {str(h): KeyOwner(str(u), a) for h, u, a in await cur.fetchall() if h is not None}


async def load_users(db: Database) -> dict[str, UserInfo]:
    """LiteMaaS user id -> username/email; empty when the users table is absent."""
    async with db.cache_connection() as conn:
        if not await _table_exists(conn, "users"):
            return {}
        cur = await conn.execute("SELECT id::text, username, email FROM users")
        return {str(i): UserInfo(str(i), n, e) for i, n, e in await cur.fetchall()}


async def fetch_day_rows(db: Database, days: Sequence[dt.date]) -> dict[dt.date, list[UsageRow]]:
    """Aggregate the source for the given days; every requested day is present (possibly empty)."""
    result: dict[dt.date, list[UsageRow]] = {day: [] for day in days}
    if not days:
        return result
    owners = await load_key_owners(db)
    unmapped = KeyOwner(UNMAPPED_USER_ID, None)
    by_date = {day.isoformat(): result[day] for day in days}
    providers: dict[tuple[str, str | None], str] = {}
    async with db.source_connection() as conn:
        try:
            cur = await conn.cursor(binary=True).execute(_DAY_AGGREGATE_SQL, (list(by_date),))
        except psycopg.errors.UndefinedTable:
            raise SourceMissing(
                f"LiteLLM's table {SOURCE_TABLE} does not exist in the LITELLM_DATABASE_URL database"
            ) from None
        records = await cur.fetchall()
    with gc_paused():
        for date, api_key, model, llm_provider, prompt, completion, reqs, ok, failed, spend in records:
            owner = owners.get(api_key, unmapped)
            provider = providers.get((model, llm_provider))
            if provider is None:
                provider = providers[(model, llm_provider)] = provider_of(model, llm_provider)
            by_date[date].append(
                UsageRow(
                    owner.user_id, api_key, owner.alias, model, provider, prompt, completion, reqs, ok, failed, spend
                )
            )
    # The SQL grouping is already at grain unless a null provider was inferred to one also given explicitly.
    return {day: merge_rows(rows, ordered=False) for day, rows in result.items()}
