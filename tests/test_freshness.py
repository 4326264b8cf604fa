"""Self-healing freshness (issue 10, item 9): rows LiteLLM writes late for a past day are found by their day's
fingerprint, and exactly that day is invalidated and recomputed, with no manual invalidation."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

import psycopg

from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from tests.support.oracle import sql_requests

OpenManager = Callable[..., Awaitable[CacheManager]]
LATE_REQUESTS = 777


def _query(days: DateRange) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000)


def write_late_row(dsn: str, day: dt.date) -> None:
    """What LiteLLM does after an outage: a batch of spend for a past day, written now (a new endpoint row of an
    existing user, key and model)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO "LiteLLM_DailyUserSpend"
                   (id, user_id, date, api_key, model, custom_llm_provider, endpoint, prompt_tokens,
                    completion_tokens, spend, api_requests, successful_requests, failed_requests, updated_at)
               SELECT %s, user_id, date, api_key, model, custom_llm_provider, '/late-batch', 10, 20, 1.5,
                      %s, %s, 0, now()
               FROM "LiteLLM_DailyUserSpend" WHERE date = %s LIMIT 1""",
            (str(uuid.uuid4()), LATE_REQUESTS, LATE_REQUESTS, day.isoformat()),
        )


def _computed(manager: CacheManager) -> int:
    return manager.counters.local.get("day:source:computed", 0)


async def test_a_late_row_three_days_ago_is_picked_up_by_the_next_warm_and_only_its_day_recomputed(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn)
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=12), today - dt.timedelta(days=3))
    first = await manager.warm([days])
    assert first.days_refreshed == []
    before = (await manager.analytics(_query(days))).value["totalRequests"]
    assert before == sql_requests(fresh_dsn, days)

    late_day = today - dt.timedelta(days=3)
    write_late_row(fresh_dsn, late_day)
    stale = await manager.analytics(_query(days))  # the read check ran moments ago: still the cached answer
    assert stale.tier in ("redis", "memory")
    assert stale.value["totalRequests"] == before

    computed = _computed(manager)
    report = await manager.warm([days])
    assert report.days_refreshed == [late_day]
    assert _computed(manager) - computed == 1, "only the changed day was computed again"
    after = await manager.analytics(_query(days))
    assert after.tier == "redis"
    assert after.value["totalRequests"] == before + LATE_REQUESTS == sql_requests(fresh_dsn, days)

    again = await manager.warm([days])
    assert again.days_refreshed == [], "once recomputed, the day's fingerprint matches"


async def test_a_corrected_row_is_found_too_and_an_unchanged_source_invalidates_nothing(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn)
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=7), today - dt.timedelta(days=2))
    await manager.warm([days])
    invalidations = manager.counters.local.get("invalidations", 0)
    assert (await manager.warm([days])).days_refreshed == []
    assert manager.counters.local.get("invalidations", 0) == invalidations

    corrected = today - dt.timedelta(days=5)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:  # a correction: the same rows, one spend changed
        conn.execute(
            """UPDATE "LiteLLM_DailyUserSpend" SET spend = spend + 0.25
               WHERE id = (SELECT id FROM "LiteLLM_DailyUserSpend" WHERE date = %s ORDER BY id LIMIT 1)""",
            (corrected.isoformat(),),
        )
    assert (await manager.warm([days])).days_refreshed == [corrected]


async def test_reads_check_on_their_own_at_most_every_interval(fresh_dsn: str, open_manager: OpenManager) -> None:
    """No warm at all: a read after CACHE_FRESHNESS_CHECK_MINUTES sees the late row."""
    manager = await open_manager(fresh_dsn, freshness_check_minutes=0.01)  # 0.6 s
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=9), today - dt.timedelta(days=3))
    before = (await manager.analytics(_query(days))).value["totalRequests"]
    write_late_row(fresh_dsn, today - dt.timedelta(days=4))
    await asyncio.sleep(0.7)
    after = await manager.analytics(_query(days))
    assert after.value["totalRequests"] == before + LATE_REQUESTS == sql_requests(fresh_dsn, days)
    assert manager.counters.local.get("freshness:days-refreshed") == 1


async def test_only_days_the_check_looks_at_pay_for_a_fingerprint(fresh_dsn: str, open_manager: OpenManager) -> None:
    """A fill fingerprints only days within CACHE_FRESHNESS_DAYS: an older day never enters the window again, so a
    cold read of a long range does not pay for a second statement over its rows."""
    manager = await open_manager(fresh_dsn, freshness_days=5)
    today = utc_today()
    await manager.analytics(_query(DateRange(today - dt.timedelta(days=8), today - dt.timedelta(days=2))))
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute(
            "SELECT day, source_fingerprint IS NOT NULL FROM litemaas_cache.daily_usage"
            " WHERE aggregates IS NOT NULL AND day BETWEEN %s AND %s",
            (today - dt.timedelta(days=8), today - dt.timedelta(days=2)),
        ).fetchall()
    fingerprinted = {day: has for day, has in rows}
    assert fingerprinted == {today - dt.timedelta(days=n): n <= 5 for n in range(2, 9)}
