"""The synthetic data generator: deterministic, idempotent, and realistic enough to exercise every code path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg

from litemaas_cache.dates import utc_now
from litemaas_cache.db import Database
from litemaas_cache.seed import SeedReport, create_source_tables, seed
from litemaas_cache.source import SOURCE_TABLE
from tests.conftest import SEED_ARGS

FIXED_TODAY = dt.date(2025, 3, 14)
ARGS: dict[str, Any] = {"days": 21, "users": 12, "models": 4, "seed_value": 42, "today": FIXED_TODAY}

# Every column but the two timestamps (set to the wall clock at seeding time).
CHECKSUM_SQL = f"""
SELECT count(*), md5(string_agg(concat_ws('|', id, user_id, date, api_key, model, model_group, custom_llm_provider,
       prompt_tokens, completion_tokens, cache_read_input_tokens, cache_creation_input_tokens, spend,
       api_requests, successful_requests, failed_requests), E'\\n' ORDER BY id))
FROM {SOURCE_TABLE}
"""
MAPPING_CHECKSUM_SQL = """
SELECT md5(string_agg(concat_ws('|', u.id, u.username, u.email, k.id, k.key_hash, k.litellm_key_alias, k.name),
       E'\\n' ORDER BY k.key_hash))
FROM api_keys k JOIN users u ON u.id = k.user_id
"""


async def seed_into(dsn: str, **overrides: Any) -> SeedReport:
    async with Database(dsn) as db:
        await create_source_tables(db)
        return await seed(db, **{**ARGS, **overrides})


def fetch(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode(), params).fetchall()


async def test_same_seed_gives_the_same_rows(make_empty_dsn: Callable[[], str]) -> None:
    a, b, c = make_empty_dsn(), make_empty_dsn(), make_empty_dsn()
    report_a = await seed_into(a)
    report_b = await seed_into(b)
    report_c = await seed_into(c, seed_value=43)
    assert report_c.api_keys != report_a.api_keys or report_c.rows_generated != report_a.rows_generated
    assert report_a == report_b
    assert report_a.rows_generated == report_a.rows_inserted > 0
    assert (report_a.start, report_a.end) == (FIXED_TODAY - dt.timedelta(days=20), FIXED_TODAY)

    assert fetch(a, CHECKSUM_SQL) == fetch(b, CHECKSUM_SQL)
    assert fetch(a, CHECKSUM_SQL)[0][0] == report_a.rows_generated
    assert fetch(a, MAPPING_CHECKSUM_SQL) == fetch(b, MAPPING_CHECKSUM_SQL)
    # A different seed gives different data.
    assert fetch(a, CHECKSUM_SQL) != fetch(c, CHECKSUM_SQL)
    assert fetch(a, MAPPING_CHECKSUM_SQL) != fetch(c, MAPPING_CHECKSUM_SQL)
    # Exactly the requested days, no more.
    days = fetch(a, f"SELECT min(date), max(date), count(DISTINCT date) FROM {SOURCE_TABLE}")
    assert days == [(str(report_a.start), str(FIXED_TODAY), 21)]


async def test_seeding_twice_inserts_nothing_new(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    first = await seed_into(dsn)
    before = fetch(dsn, CHECKSUM_SQL)
    users_before = fetch(dsn, "SELECT count(*) FROM users")[0][0]
    second = await seed_into(dsn)
    assert second.rows_generated == first.rows_generated
    assert second.rows_inserted == 0
    assert fetch(dsn, CHECKSUM_SQL) == before
    assert fetch(dsn, "SELECT count(*) FROM users")[0][0] == users_before == ARGS["users"]


async def test_seeding_a_longer_period_keeps_the_past_days(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    await seed_into(dsn, days=5)
    past = CHECKSUM_SQL + " WHERE date < %s"
    before = fetch(dsn, past, (str(FIXED_TODAY),))
    total_before = fetch(dsn, f"SELECT count(*) FROM {SOURCE_TABLE}")[0][0]
    # Two days later, 7 days: the 4 complete past days are regenerated identically (nothing new for them).
    second = await seed_into(dsn, days=7, today=FIXED_TODAY + dt.timedelta(days=2))
    assert fetch(dsn, past, (str(FIXED_TODAY),)) == before
    total_after = fetch(dsn, f"SELECT count(*) FROM {SOURCE_TABLE}")[0][0]
    assert second.rows_inserted == total_after - total_before > 0
    new_days = fetch(dsn, f"SELECT count(DISTINCT date) FROM {SOURCE_TABLE} WHERE date > %s", (str(FIXED_TODAY),))
    assert new_days == [(2,)]


def test_seeded_data_has_unmapped_keys_failures_and_several_keys_per_user(seeded_dsn: str) -> None:
    unmapped = fetch(
        seeded_dsn,
        f"""SELECT count(DISTINCT api_key), count(*), min(user_id), max(user_id) FROM {SOURCE_TABLE} s
            WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key)""",
    )[0]
    assert unmapped[0] == max(1, SEED_ARGS["users"] // 10)
    assert unmapped[1] > 0
    assert unmapped[2] == unmapped[3] == "default_user_id"

    failed, successful, requests = fetch(
        seeded_dsn, f"SELECT sum(failed_requests), sum(successful_requests), sum(api_requests) FROM {SOURCE_TABLE}"
    )[0]
    assert failed > 0
    assert successful + failed == requests
    assert fetch(seeded_dsn, f"SELECT count(*) FROM {SOURCE_TABLE} WHERE failed_requests > api_requests") == [(0,)]

    keys_per_user = [n for (n,) in fetch(seeded_dsn, "SELECT count(*) FROM api_keys GROUP BY user_id")]
    assert len(keys_per_user) == SEED_ARGS["users"]
    assert max(keys_per_user) >= 2
    assert sum(1 for n in keys_per_user if n >= 2) >= SEED_ARGS["users"] // 3
    # Every mapped key row's LiteLLM user_id is its owner's (what LiteLLM would record).
    mismatched = fetch(
        seeded_dsn,
        f"SELECT count(*) FROM {SOURCE_TABLE} s JOIN api_keys k ON k.key_hash = s.api_key"
        " WHERE s.user_id <> k.user_id::text",
    )
    assert mismatched == [(0,)]

    providers = dict(fetch(seeded_dsn, f"SELECT model, min(custom_llm_provider) FROM {SOURCE_TABLE} GROUP BY model"))
    assert len(providers) == SEED_ARGS["models"]
    assert None in providers.values(), "some rows leave custom_llm_provider empty (provider is inferred)"


def test_today_is_a_partial_day(seeded_dsn: str) -> None:
    per_day = dict(fetch(seeded_dsn, f"SELECT date, sum(api_requests) FROM {SOURCE_TABLE} GROUP BY date"))
    today = utc_now().date()
    assert len(per_day) == SEED_ARGS["days"]
    assert max(per_day) == today.isoformat()
    others = [v for d, v in per_day.items() if d != today.isoformat()]
    assert per_day[today.isoformat()] > 0
    # Weak on purpose: today is scaled by the fraction of the UTC day elapsed at seeding time.
    fraction = (utc_now() - dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)).total_seconds() / 86400
    if fraction < 0.8:
        assert per_day[today.isoformat()] < max(others)
    if fraction < 0.5:
        assert per_day[today.isoformat()] < sorted(others)[len(others) // 2]  # below the median day
