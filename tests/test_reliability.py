"""Reliability under sharing, starvation and scale (issue 10): each test reproduces a failure seen on the landed
engine and passes now. Real PostgreSQL and Redis throughout."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
from redis.asyncio import Redis

from litemaas_cache.analytics import Page
from litemaas_cache.codec import ENCODINGS
from litemaas_cache.daily_cache import DAY_LOCK_NAMESPACE, MONTH_LOCK_NAMESPACE, month_key
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.errors import BackendUnavailable
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from tests.conftest import make_settings
from tests.support.oracle import sql_requests
from tests.support.redis_server import RedisServer

OpenManager = Callable[..., Awaitable[CacheManager]]


def _query(days: DateRange, **filters: list[str]) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000, **filters)


def _last(n: int) -> DateRange:
    end = utc_today() - dt.timedelta(days=3)
    return DateRange(end - dt.timedelta(days=n - 1), end)


@asynccontextmanager
async def managed_on(dsn: str, redis_url: str, **overrides: object) -> AsyncIterator[CacheManager]:
    async with CacheManager.open(make_settings(dsn, redis_url=redis_url, **overrides)) as manager:
        yield manager


@pytest.fixture
def two_databases(make_dsn: Callable[[], str]) -> tuple[str, str]:
    """Two copies of the seeded data that then differ: the second has three times the requests."""
    first, second = make_dsn(), make_dsn()
    with psycopg.connect(second, autocommit=True) as conn:
        conn.execute('UPDATE "LiteLLM_DailyUserSpend" SET api_requests = api_requests * 3')
    return first, second


async def test_two_deployments_sharing_a_redis_and_a_prefix_never_read_each_others_entries(
    two_databases: tuple[str, str], open_manager: OpenManager
) -> None:
    """Item 10: the second database was answered from Redis with the first's result (day versions start at 1 in
    both, so the version check passed). Entries now live under the database's identity."""
    first_dsn, second_dsn = two_databases
    days = _last(14)
    first = await open_manager(first_dsn)  # the same REDIS_KEY_PREFIX for both (the test's own)
    second = await open_manager(second_dsn)
    assert first.settings.redis_key_prefix == second.settings.redis_key_prefix

    for manager, dsn in ((first, first_dsn), (second, second_dsn)):
        answer = await manager.analytics(_query(days))
        assert answer.tier == "source", "each database computes its own answer"
        assert answer.value["totalRequests"] == sql_requests(dsn, days)
        again = await manager.analytics(_query(days))
        assert (again.tier, again.value["totalRequests"]) == ("redis", sql_requests(dsn, days))
    assert sql_requests(second_dsn, days) == 3 * sql_requests(first_dsn, days) > 0


async def test_the_identity_is_stable_for_a_database_and_differs_between_databases(
    two_databases: tuple[str, str], open_manager: OpenManager
) -> None:
    first_dsn, second_dsn = two_databases
    again = await open_manager(first_dsn)
    first = await open_manager(first_dsn)
    second = await open_manager(second_dsn)
    assert first.keys.prefix == again.keys.prefix != second.keys.prefix
    assert first.keys.prefix.startswith(first.settings.redis_key_prefix)


async def test_cold_reads_at_once_on_a_pool_of_one_connection_all_answer(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    """Item 1: with DB_POOL_MAX_SIZE=1, a cold read held its pooled connection while it asked the pool for another,
    and every cold read waited for the pool timeout. No code path holds one connection while waiting for another."""
    manager = await open_manager(fresh_dsn, db_pool_max_size=1, max_concurrent_computations=4)
    ranges = [_last(7), _last(10), _last(21), DateRange(_last(30).start, _last(30).start + dt.timedelta(days=4))]
    queries = [_query(r) for r in ranges] + [_query(_last(7), model_ids=["gpt-4o"])]
    answers = await asyncio.wait_for(asyncio.gather(*(manager.analytics(q) for q in queries)), timeout=60)
    for query, answer in zip(queries, answers, strict=True):
        if not query.filters.model_ids:
            assert answer.value["totalRequests"] == sql_requests(fresh_dsn, query.range)
    report = await asyncio.wait_for(manager.warm([_last(5)], breakdowns=["user", "model"]), timeout=60)
    assert report.results_warmed == 3


async def test_purge_and_stats_on_a_large_shared_redis_need_no_scan(fresh_dsn: str, tmp_path: Path) -> None:
    """Item 6: purge and stats SCANned the whole database within a 2 s budget, so on a large or shared Redis a purge
    always timed out (and the CacheInvalidation retried forever). 400,000 keys of another application now sit
    beside ours; the purge finds our entries in the results index and the stats count them from it."""
    with RedisServer(tmp_path) as server:
        other = Redis.from_url(server.url)
        try:
            for start in range(0, 400_000, 20_000):
                await other.mset({f"other-app:{i}": b"x" * 16 for i in range(start, start + 20_000)})
            assert await other.dbsize() == 400_000
            async with managed_on(fresh_dsn, server.url, redis_socket_timeout=0.2) as manager:
                days = _last(10)
                await manager.analytics(_query(days))
                await manager.breakdown("user", _query(days), Page())
                outside = DateRange(days.start - dt.timedelta(days=30), days.start - dt.timedelta(days=25))
                await manager.analytics(_query(outside))  # a result that does not overlap the purge

                purged = DateRange(days.end - dt.timedelta(days=1), days.end)
                report = await manager.invalidate(purged)
                assert report.redis_status == "done"
                assert report.complete
                # the 2 day entries, and the 3 results over them (the analytics document, the by-user list and its
                # first page), each in both of its encodings
                assert report.keys_deleted == 2 + 3 * len(ENCODINGS)
                # 10 + 10 previous-period days and 6 + 6 of the other range, less 2; 1 result left (in each
                # encoding); 3 shared keys
                assert (await manager.stats())["redis"]["keyCount"] == 20 - 2 + 12 + len(ENCODINGS) + 3
                assert (await manager.analytics(_query(outside))).tier == "redis"
                fresh = await manager.analytics(_query(days))
                assert fresh.tier != "redis"
                assert fresh.value["totalRequests"] == sql_requests(fresh_dsn, days)
                await manager.redis.delete_all()
            assert len(await other.keys("other-app:*")) == 400_000, "nothing of the other application was touched"
        finally:
            await other.aclose()


async def test_warms_of_many_policies_run_one_at_a_time(fresh_dsn: str, open_manager: OpenManager) -> None:
    """Item 7: nothing limited concurrent warming across many CacheWarmPolicies (each one a kopf timer)."""
    manager = await open_manager(fresh_dsn, warm_max_concurrent=1)
    seen_running: set[int] = set()
    seen_waiting: set[int] = set()
    warms = [asyncio.ensure_future(manager.warm([_last(n)], breakdowns=["user"])) for n in (9, 11, 13, 15)]
    while not all(w.done() for w in warms):
        seen_running.add(manager.maintenance.warms_running)
        seen_waiting.add(manager.maintenance.warms_waiting)
        await asyncio.sleep(0.002)
    assert [w.result().results_warmed for w in warms] == [2, 2, 2, 2]
    assert max(seen_running) == 1
    assert max(seen_waiting) == 3, "all but one waited"
    assert (manager.maintenance.warms_running, manager.maintenance.warms_waiting) == (0, 0)


async def test_every_session_has_a_statement_and_a_lock_timeout(fresh_dsn: str, open_manager: OpenManager) -> None:
    manager = await open_manager(fresh_dsn, db_statement_timeout_seconds=42, db_lock_timeout_seconds=7)
    async with manager.db.cache_connection() as conn:
        cur = await conn.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        assert await cur.fetchone() == ("42s", "7s")
    with manager.postgres._source._connection() as source, source.cursor() as cur:
        cur.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        assert cur.fetchone() == ("42s", "7s")


async def test_a_fill_waiting_on_a_stuck_lock_gives_up_with_503_not_for_ever(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    """Item 7: with no lock_timeout, a fill waited for ever on a day locked by a stuck session."""
    manager = await open_manager(fresh_dsn, db_lock_timeout_seconds=0.5)
    day = _last(1).start
    with psycopg.connect(fresh_dsn) as stuck:  # holds the day's advisory lock in an open transaction
        stuck.execute("SELECT pg_advisory_xact_lock(%s, %s)", (DAY_LOCK_NAMESPACE, day.toordinal()))
        with pytest.raises(BackendUnavailable, match="lock timeout"):
            await asyncio.wait_for(manager.analytics(_query(DateRange(day, day))), timeout=30)
    answer = await manager.analytics(_query(DateRange(day, day)))
    assert answer.value["totalRequests"] == sql_requests(fresh_dsn, DateRange(day, day))


async def test_the_pool_queue_is_bounded_and_a_wait_for_a_connection_ends(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    """Item 7: the pool's queue was unbounded. Beyond DB_POOL_MAX_WAITING a read is refused at once, and one that
    waits longer than DB_POOL_TIMEOUT_SECONDS gives up; both are BackendUnavailable (503, retry later)."""
    waits = await open_manager(fresh_dsn, db_pool_max_size=1, db_pool_timeout_seconds=0.5)
    async with waits.db.cache_connection():  # the only connection, held
        with pytest.raises(BackendUnavailable, match="no connection was free in time"):
            await asyncio.wait_for(waits.analytics(_query(_last(1))), timeout=30)

    queues = await open_manager(fresh_dsn, db_pool_max_size=1, db_pool_max_waiting=1, db_pool_timeout_seconds=2)
    async with queues.db.cache_connection():
        reads = [asyncio.ensure_future(queues.analytics(_query(_last(n)))) for n in (3, 4, 5)]
        done, _ = await asyncio.wait(reads, timeout=30)
        assert len(done) == 3
        errors = [r.exception() for r in reads]
    assert all(isinstance(e, BackendUnavailable) for e in errors)
    assert "postgresql unavailable: too many reads are waiting for a connection" in map(str, errors)
    # the connection is free again: reads are answered
    assert (await queues.analytics(_query(_last(2)))).value["totalRequests"] == sql_requests(fresh_dsn, _last(2))


async def test_postgresql_failing_during_a_version_resync_is_not_a_redis_failure(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    """Item 5: the version resync from PostgreSQL ran inside the Redis timeout, so a PostgreSQL outage tripped the
    *Redis* breaker (or escaped as an error). Now such a call is a miss and Redis stays in use."""
    manager = await open_manager(fresh_dsn, db_pool_max_size=1, db_pool_timeout_seconds=0.3, redis_breaker_failures=2)
    days = list(_last(3))
    async with manager.db.cache_connection():  # PostgreSQL gives no connection: the resync cannot read versions
        for _ in range(4):
            assert await manager.redis.get_days(days) == {}
    assert manager.redis.available
    assert manager.redis.breaker.consecutive_failures == 0
    answer = await manager.analytics(_query(_last(3)))  # PostgreSQL back: the mirror re-syncs, Redis is used
    assert answer.value["totalRequests"] == sql_requests(fresh_dsn, _last(3))
    assert await manager.redis.get_days(days) != {}


async def test_a_year_long_purge_holds_a_lock_per_month_not_per_day(fresh_dsn: str, open_manager: OpenManager) -> None:
    """Item 3: a purge took one advisory lock per day in one transaction, so a long range could exhaust PostgreSQL's
    shared lock table for every session of the server. Caught waiting behind a fill of its last day, a 366-day
    purge now holds at most one lock per month."""
    manager = await open_manager(fresh_dsn)
    year = DateRange(dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    last = year.end
    with psycopg.connect(fresh_dsn) as filling:  # a fill of the last day, under way: its month shared, its day
        filling.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (MONTH_LOCK_NAMESPACE, month_key(last)))
        filling.execute("SELECT pg_advisory_xact_lock(%s, %s)", (DAY_LOCK_NAMESPACE, last.toordinal()))
        purge = asyncio.ensure_future(manager.invalidate(year))
        with psycopg.connect(fresh_dsn, autocommit=True) as watcher:
            for _ in range(500):
                waiting = watcher.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchall()
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert len(waiting) == 1, "the purge waits for the fill"
            (held,) = watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s", waiting[0]
            ).fetchone() or (None,)
        assert held is not None
        assert held <= 13, f"the purge holds {held} advisory locks"
        filling.rollback()  # the fill ends
    report = await asyncio.wait_for(purge, timeout=30)
    assert report.versions_bumped == 366
