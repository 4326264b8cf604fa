"""The PostgreSQL daily cache (PostgresDayCache) on real PostgreSQL: fill, hits, freshness, concurrency, purge."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from litemaas_cache.aggregates import DayUsage
from litemaas_cache.codec import Codec
from litemaas_cache.daily_cache import FreshnessPolicy, PostgresDayCache
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.db import Database
from litemaas_cache.schema import SCHEMA
from litemaas_cache.source import SOURCE_TABLE

TODAY = utc_today()
POLICY = FreshnessPolicy(current_day_ttl=dt.timedelta(minutes=5), yesterday_grace=dt.timedelta(hours=2))


def ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


@pytest_asyncio.fixture
async def db(fresh_dsn: str) -> AsyncIterator[Database]:
    async with Database(fresh_dsn, max_size=4) as database:
        yield database


@pytest.fixture
def cache(db: Database) -> PostgresDayCache:
    return PostgresDayCache(db, POLICY, Codec())


async def rows(db: Database, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    async with db.cache_connection() as conn:
        cur = await conn.execute(sql.encode(), params)
        return await cur.fetchall()


async def execute(db: Database, sql: str, params: Any = ()) -> None:
    async with db.cache_connection() as conn:
        await conn.execute(sql.encode(), params)


async def source_totals(db: Database, day: dt.date) -> tuple[int, int, float]:
    ((requests, tokens, spend),) = await rows(
        db,
        f"""SELECT COALESCE(sum(api_requests), 0), COALESCE(sum(prompt_tokens + completion_tokens), 0),
                   COALESCE(sum(spend), 0) FROM {SOURCE_TABLE} WHERE date = %s""",
        (day.isoformat(),),
    )
    return int(requests), int(tokens), float(spend)


async def test_past_days_are_complete_and_served_without_recompute(db: Database, cache: PostgresDayCache) -> None:
    days = [ago(n) for n in range(10, 3, -1)]
    assert await cache.get(days) == {}
    filled, computed = await cache.fill(days)
    assert computed == len(days)
    assert sorted(filled) == days
    for day in days:
        usage = filled[day]
        assert usage.is_complete
        assert usage.version == 1
        requests, tokens, spend = usage.totals()
        s_requests, s_tokens, s_spend = await source_totals(db, day)
        assert (requests, tokens) == (s_requests, s_tokens)
        assert spend == pytest.approx(s_spend, rel=1e-9, abs=1e-6)
        assert requests > 0

    again, computed_again = await cache.fill(days)
    assert computed_again == 0
    assert again == filled
    assert await cache.get(days) == filled
    assert await cache.versions(days) == dict.fromkeys(days, 1)
    stored = await rows(
        db, f"SELECT day, is_complete, version, row_count, requests FROM {SCHEMA}.daily_usage ORDER BY day"
    )
    assert [(d, c, v) for d, c, v, _, _ in stored] == [(d, True, 1) for d in days]
    assert all(n == len(filled[d].rows) and r == filled[d].totals()[0] for d, _, _, n, r in stored)


async def test_a_day_without_usage_is_cached_as_empty(db: Database, cache: PostgresDayCache) -> None:
    empty = ago(300)
    assert await source_totals(db, empty) == (0, 0, 0.0)
    filled, computed = await cache.fill([empty])
    assert computed == 1
    assert filled[empty].rows == ()
    assert filled[empty].is_complete
    stored = await rows(
        db, f"SELECT aggregates, is_complete, version FROM {SCHEMA}.daily_usage WHERE day = %s", (empty,)
    )
    assert [(DayUsage.from_payload(Codec().decode(data)).rows, ok, v) for data, ok, v in stored] == [((), True, 1)]
    # A hit from now on: served by get(), and fill() computes nothing.
    assert (await cache.get([empty]))[empty].rows == ()
    assert (await cache.fill([empty]))[1] == 0
    assert await cache.versions([empty]) == {empty: 1}


async def test_today_is_recomputed_once_older_than_the_ttl(fresh_dsn: str) -> None:
    policy = FreshnessPolicy(current_day_ttl=dt.timedelta(seconds=1), yesterday_grace=dt.timedelta(hours=2))
    async with Database(fresh_dsn, max_size=4) as db:
        cache = PostgresDayCache(db, policy, Codec())
        filled, computed = await cache.fill([TODAY])
        assert computed == 1
        assert not filled[TODAY].is_complete
        assert filled[TODAY].version == 1
        before = filled[TODAY].totals()[0]
        assert (await cache.fill([TODAY]))[1] == 0  # still within the TTL
        assert TODAY in await cache.get([TODAY])

        # LiteLLM records more usage today; once the cached copy is older than the TTL it is recomputed.
        async with db.source_connection() as conn:
            await conn.execute(
                f"""INSERT INTO {SOURCE_TABLE} (id, user_id, date, api_key, model, custom_llm_provider,
                        prompt_tokens, completion_tokens, spend, api_requests, successful_requests, failed_requests)
                    VALUES ('test-extra', 'u', %s, 'extra-key', 'gpt-4o', 'openai', 10, 5, 0.5, 7, 7, 0)""",
                (TODAY.isoformat(),),
            )
        await asyncio.sleep(1.1)
        assert await cache.get([TODAY]) == {}  # stale: not served
        refreshed, computed = await cache.fill([TODAY])
        assert computed == 1
        assert refreshed[TODAY].version == 2
        assert refreshed[TODAY].totals()[0] == before + 7
        assert not refreshed[TODAY].is_complete

        # Aged through updated_at instead of sleeping: recomputed again, version 3.
        aged = f"UPDATE {SCHEMA}.daily_usage SET updated_at = now() - %s::interval WHERE day = %s"
        await execute(db, aged, ("1 hour", TODAY))
        assert (await cache.fill([TODAY]))[0][TODAY].version == 3
        # A past day never goes stale, however old its row.
        await cache.fill([ago(5)])
        await execute(db, aged, ("400 days", ago(5)))
        assert (await cache.fill([ago(5)]))[1] == 0


async def test_yesterday_filled_in_the_grace_period_is_recomputed_after_it(
    db: Database, cache: PostgresDayCache
) -> None:
    yesterday = ago(1)
    await cache.fill([yesterday])
    # Pretend it was written while still current: incomplete, an hour ago.
    await execute(
        db,
        f"UPDATE {SCHEMA}.daily_usage SET is_complete = false, updated_at = now() - interval '1 hour' WHERE day = %s",
        (yesterday,),
    )
    # Within the grace period the current-day TTL (5 min) applies, so an hour-old copy is stale; after it, an
    # incomplete copy is never served. Either way: not served, recomputed, complete once the grace is over.
    assert await cache.get([yesterday]) == {}
    filled, computed = await cache.fill([yesterday])
    assert computed == 1
    assert filled[yesterday].version == 2
    assert filled[yesterday].is_complete == (not POLICY.is_current(yesterday))


def test_freshness_policy_is_current() -> None:
    policy = FreshnessPolicy(current_day_ttl=dt.timedelta(minutes=5), yesterday_grace=dt.timedelta(hours=2))
    today = dt.date(2025, 6, 10)
    yesterday = dt.date(2025, 6, 9)

    def at(hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime.combine(today, dt.time(hour, minute), tzinfo=dt.UTC)

    assert policy.is_current(today, at(0))
    assert policy.is_current(today, at(23, 59))
    assert policy.is_current(today + dt.timedelta(days=1), at(12))
    assert policy.is_current(yesterday, at(0))
    assert policy.is_current(yesterday, at(1, 59))  # within the 2-hour grace after UTC midnight
    assert not policy.is_current(yesterday, at(2, 0))  # the grace has ended
    assert not policy.is_current(yesterday, at(15))
    assert not policy.is_current(dt.date(2025, 6, 8), at(0, 30))  # the day before yesterday: never
    no_grace = FreshnessPolicy(dt.timedelta(minutes=5), dt.timedelta(0))
    assert not no_grace.is_current(yesterday, at(0))


def test_freshness_policy_is_fresh() -> None:
    policy = FreshnessPolicy(current_day_ttl=dt.timedelta(minutes=5), yesterday_grace=dt.timedelta(hours=2))
    now = dt.datetime(2025, 6, 10, 12, 0, tzinfo=dt.UTC)
    today, yesterday, old = now.date(), dt.date(2025, 6, 9), dt.date(2025, 1, 1)
    long_ago = now - dt.timedelta(days=100)
    assert policy.is_fresh(old, long_ago, True, now)  # complete past days: forever
    assert policy.is_fresh(yesterday, long_ago, True, now)
    assert not policy.is_fresh(old, now - dt.timedelta(seconds=1), False, now)  # incomplete past day: recompute
    assert policy.is_fresh(today, now - dt.timedelta(minutes=4), False, now)
    assert not policy.is_fresh(today, now - dt.timedelta(minutes=6), False, now)
    # Within the grace period yesterday follows the current-day TTL.
    early = dt.datetime(2025, 6, 10, 1, 0, tzinfo=dt.UTC)
    assert policy.is_fresh(yesterday, early - dt.timedelta(minutes=1), False, early)
    assert not policy.is_fresh(yesterday, early - dt.timedelta(minutes=10), False, early)


async def test_concurrent_fills_compute_each_day_once(fresh_dsn: str) -> None:
    days = [ago(n) for n in range(20, 4, -1)]
    async with Database(fresh_dsn, max_size=4) as db_a, Database(fresh_dsn, max_size=4) as db_b:
        a, b = PostgresDayCache(db_a, POLICY, Codec()), PostgresDayCache(db_b, POLICY, Codec())
        (filled_a, computed_a), (filled_b, computed_b) = await asyncio.gather(a.fill(days), b.fill(days))
        assert computed_a + computed_b == len(days)
        assert filled_a == filled_b
        assert await a.versions(days) == dict.fromkeys(days, 1)

        # Overlapping sets from both pools (and a third filler): still one computation per new day.
        more = [ago(n) for n in range(30, 18, -1)]  # 10 new days, 2 already cached
        results = await asyncio.gather(a.fill(more[:8]), b.fill(more[4:]), a.fill(more[::-1]))
        assert sum(computed for _, computed in results) == len(set(more) - set(days))
        assert await b.versions(more) == dict.fromkeys(more, 1)


async def test_purge_bumps_versions_and_drops_aggregates(db: Database, cache: PostgresDayCache) -> None:
    cached = [ago(n) for n in range(12, 8, -1)]
    await cache.fill(cached)
    await cache.fill(cached[:1])  # a hit: versions stay 1
    purge_range = DateRange(ago(14), ago(7))  # 4 cached days plus 4 never cached
    before = await cache.versions(list(purge_range))
    assert before == {d: 1 if d in cached else 0 for d in purge_range}

    result = await cache.purge(purge_range)
    assert result.days_purged == len(cached)
    assert result.versions == {d: before[d] + 1 for d in purge_range}
    assert await cache.versions(list(purge_range)) == result.versions
    stored = await rows(
        db,
        f"SELECT day, aggregates, is_complete, requests FROM {SCHEMA}.daily_usage WHERE day BETWEEN %s AND %s",
        (purge_range.start, purge_range.end),
    )
    assert {d for d, *_ in stored} == set(purge_range)  # a row (a version) even for days never cached
    assert all(agg is None and not complete and requests == 0 for _, agg, complete, requests in stored)
    assert await cache.get(list(purge_range)) == {}

    # Purging again only bumps versions; refilling recomputes with a higher version.
    again = await cache.purge(purge_range)
    assert again.days_purged == 0
    assert again.versions == {d: v + 1 for d, v in result.versions.items()}
    refilled, computed = await cache.fill(cached)
    assert computed == len(cached)
    assert {d: u.version for d, u in refilled.items()} == {d: again.versions[d] + 1 for d in cached}
    assert all(u.is_complete and u.rows for u in refilled.values())
    # Days outside the range were not touched.
    assert await cache.versions([ago(20)]) == {ago(20): 0}


async def test_fill_of_nothing(cache: PostgresDayCache) -> None:
    assert await cache.fill([]) == ({}, 0)
    assert await cache.get([]) == {}


async def test_duplicate_days_in_one_fill(cache: PostgresDayCache) -> None:
    day = ago(6)
    filled, computed = await cache.fill([day, day, day])
    assert computed == 1
    assert list(filled) == [day]
