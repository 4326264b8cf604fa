"""Reads LiteLLM's "LiteLLM_DailyUserSpend" (the source of truth) and LiteMaaS's key/user mapping."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from .aggregates import UNMAPPED_USER_ID, UsageRow, merge_rows
from .db import Database
from .errors import SourceMissing
from .providers import provider_of

SOURCE_TABLE = '"LiteLLM_DailyUserSpend"'

# One round trip for any set of days: grouped in SQL at (date, key, model, provider) grain.
_DAY_AGGREGATE_SQL = f"""
SELECT date, api_key, model, custom_llm_provider,
       sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint,
       sum(api_requests)::bigint, sum(successful_requests)::bigint, sum(failed_requests)::bigint,
       sum(spend)::double precision
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
    raw: dict[dt.date, list[UsageRow]] = defaultdict(list)
    async with db.source_connection() as conn:
        try:
            cur = await conn.execute(_DAY_AGGREGATE_SQL, ([d.isoformat() for d in days],))
        except psycopg.errors.UndefinedTable:
            raise SourceMissing(
                f"LiteLLM's table {SOURCE_TABLE} does not exist in the LITELLM_DATABASE_URL database"
            ) from None
        for date, api_key, model, provider, prompt, completion, reqs, ok, failed, spend in await cur.fetchall():
            owner = owners.get(api_key)
            raw[dt.date.fromisoformat(date)].append(
                UsageRow(
                    user_id=owner.user_id if owner else UNMAPPED_USER_ID,
                    api_key=api_key,
                    key_alias=owner.alias if owner else None,
                    model=model,
                    provider=provider_of(model, provider),
                    prompt_tokens=prompt or 0,
                    completion_tokens=completion or 0,
                    requests=reqs or 0,
                    successful=ok or 0,
                    failed=failed or 0,
                    spend=spend or 0.0,
                )
            )
    for day, rows in raw.items():
        result[day] = merge_rows(rows)
    return result
