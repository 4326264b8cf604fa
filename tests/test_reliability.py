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
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from tests.conftest import make_settings
from tests.support.redis_server import RedisServer

OpenManager = Callable[..., Awaitable[CacheManager]]


def _query(days: DateRange, **filters: list[str]) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000, **filters)


def _last(n: int) -> DateRange:
    end = utc_today() - dt.timedelta(days=3)
    return DateRange(end - dt.timedelta(days=n - 1), end)


def _sql_requests(dsn: str, days: DateRange) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            'SELECT coalesce(sum(api_requests), 0) FROM "LiteLLM_DailyUserSpend" WHERE date BETWEEN %s AND %s',
            (days.start.isoformat(), days.end.isoformat()),
        ).fetchone()
    assert row is not None
    return int(row[0])


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
        assert answer.value["totalRequests"] == _sql_requests(dsn, days)
        again = await manager.analytics(_query(days))
        assert (again.tier, again.value["totalRequests"]) == ("redis", _sql_requests(dsn, days))
    assert _sql_requests(second_dsn, days) == 3 * _sql_requests(first_dsn, days) > 0


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
            assert answer.value["totalRequests"] == _sql_requests(fresh_dsn, query.range)
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
                assert report.keys_deleted == 2 + 2, "the 2 day entries and the 2 results over them"
                # 10 + 10 previous-period days and 6 + 6 of the other range, less 2; 1 result left; 3 shared keys
                assert (await manager.stats())["redis"]["keyCount"] == 20 - 2 + 12 + 1 + 3
                assert (await manager.analytics(_query(outside))).tier == "redis"
                fresh = await manager.analytics(_query(days))
                assert fresh.tier != "redis"
                assert fresh.value["totalRequests"] == _sql_requests(fresh_dsn, days)
                await manager.redis.delete_all()
            assert len(await other.keys("other-app:*")) == 400_000, "nothing of the other application was touched"
        finally:
            await other.aclose()
