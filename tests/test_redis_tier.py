"""The Redis tier on real Redis (standalone and a 3-primary cluster) and real PostgreSQL: hits and misses,
sharing between managers, TTLs, shared statistics and warming."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from litemaas_cache.analytics import Page
from litemaas_cache.dates import DateRange, resolve_range, utc_today
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.redis_tier import RedisStore

OpenManager = Callable[..., Awaitable[CacheManager]]
DAY = 86400


def _query(days: DateRange, **filters: list[str]) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000, **filters)


def _last(n: int, ending: dt.date | None = None) -> DateRange:
    end = ending or utc_today()
    return DateRange(end - dt.timedelta(days=n - 1), end)


async def test_first_read_computes_then_redis_answers_every_manager(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    first = await open_manager(fresh_dsn, **redis_target)
    query = _query(_last(30))

    cold = await first.analytics(query)
    assert cold.tier == "source"
    assert cold.value["totalRequests"] > 0
    assert cold.keys_written == 60 + 1, "30 + 30 previous-period days and the result"
    warm = await first.analytics(query)
    assert (warm.tier, warm.value) == ("redis", cold.value)

    # a second manager (its own PostgreSQL and Redis pools, like another process) on the same prefix
    second = await open_manager(fresh_dsn, **redis_target)
    shared = await second.analytics(query)
    assert (shared.tier, shared.value) == ("redis", cold.value)
    # another query over the same days reuses the day entries: computed, but without PostgreSQL or the source
    by_model = await second.breakdown("model", query, Page())
    assert by_model.tier == "redis"
    assert sum(row["metrics"]["requests"] for row in by_model.value["data"]) == cold.value["totalRequests"]
    assert second.counters.local.get("day:postgres:hit", 0) == 0
    assert second.counters.local.get("day:source:computed", 0) == 0

    # counters are shared through Redis: both managers' counts show up in either's stats
    assert isinstance(second.redis, RedisStore)
    await second.redis.flush_stats()
    stats = await first.stats()
    assert stats["counterScope"] == "shared"
    assert stats["redis"]["available"] is True
    assert stats["redis"]["hits"] == 2, stats
    assert stats["redis"]["misses"] == 2, stats  # the cold analytics and the first breakdown
    assert stats["requests"] == 4
    assert stats["computations"] == 2
    assert stats["postgres"]["daysComputedFromSource"] == 60
    assert stats["redis"]["keyCount"] >= 60 + 2
    assert stats["hitRate"] == 75.0  # 3 of 4 requests answered without the source

    again = await second.analytics(query)
    assert again.tier == "redis"
    assert isinstance(first.redis, RedisStore)
    await first.redis.flush_stats()
    after = await second.stats()
    assert after["redis"]["hits"] == 3
    assert after["requests"] == 5


async def test_day_and_result_ttls(
    fresh_dsn: str,
    redis_target: dict[str, object],
    redis_client: Redis | RedisCluster,
    open_manager: OpenManager,
) -> None:
    manager = await open_manager(fresh_dsn, **redis_target)
    settings = manager.settings
    today = utc_today()
    with_today = _query(_last(10))
    historical = _query(_last(7, today - dt.timedelta(days=12)))

    for query in (with_today, historical):
        await manager.analytics(query)
        await manager.breakdown("model", query, Page())

    async def ttl(key: str) -> int:
        value = int(await redis_client.ttl(key))
        assert value > 0, f"{key} has no TTL ({value})"
        return value

    def near(actual: int, expected: int) -> bool:
        return expected - 60 <= actual <= expected

    covered = DateRange(with_today.range.previous().start, today)
    for day in covered:
        expected = settings.ttl_current_day if manager.postgres.policy.is_current(day) else settings.ttl_historical_day
        assert near(await ttl(manager.keys.day(day)), expected), day
    assert near(await ttl(manager.keys.day(today)), 5 * 60)
    assert near(await ttl(manager.keys.day(today - dt.timedelta(days=5))), 30 * DAY)

    def result_key(kind: Any, query: AnalyticsQuery) -> str:
        """The zstd entry of the result (its gzip copy is written with it, by the same pipeline)."""
        return manager.keys.result_entry(manager.keys.result(kind, query.range, query.filters.fingerprint()), "zstd")

    assert near(await ttl(result_key("analytics", historical)), 10 * 60)
    assert near(await ttl(result_key("by-model", historical)), 15 * 60)
    # a range that includes today is capped to the current day's TTL
    assert near(await ttl(result_key("analytics", with_today)), 5 * 60)
    assert near(await ttl(result_key("by-model", with_today)), 5 * 60)
    # the version mirror and the counters never expire
    assert int(await redis_client.ttl(manager.keys.versions)) == -1
    assert isinstance(manager.redis, RedisStore)
    await manager.redis.flush_stats()
    assert int(await redis_client.ttl(manager.keys.stats)) == -1


async def test_filtered_queries_and_breakdowns_are_cached_separately(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn, **redis_target)
    days = _last(14, utc_today() - dt.timedelta(days=3))
    everything = await manager.analytics(_query(days))
    model = everything.value["topModels"][0]["modelId"]
    filtered_query = _query(days, model_ids=[model])
    filtered = await manager.analytics(filtered_query)
    assert filtered.tier == "redis", "the days are in Redis already; only the result is computed"
    assert filtered.value["totalRequests"] == everything.value["topModels"][0]["requests"]
    assert filtered.value["totalRequests"] < everything.value["totalRequests"]
    assert (await manager.analytics(filtered_query)).value == filtered.value
    before = manager.counters.local["computations"]
    pages = [await manager.breakdown("user", _query(days), Page(n, 7)) for n in (1, 2, 3)]
    assert manager.counters.local["computations"] == before + 1, "pages of one breakdown share one cached list"
    assert sum(len(p.value["data"]) for p in pages) == min(21, pages[0].value["pagination"]["total"])
    assert {p.tier for p in pages[1:]} == {"redis"}


async def test_warm_fills_redis_for_the_range(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn, **redis_target)
    last7 = resolve_range("last-7-days")
    report = await manager.warm([last7], breakdowns=["model"])
    assert report.redis_available
    assert report.days_warmed == 14, "the range and its previous period"
    assert report.results_warmed == 2
    assert report.keys_written == 14 + 3, "the days, the analytics document, the by-model list and its first page"
    assert report.as_dict()["keysWritten"] == 17

    reader = await open_manager(fresh_dsn, **redis_target)
    hits_before = (await reader.stats())["redis"]["hits"]
    answer = await reader.analytics(_query(last7))
    assert answer.tier == "redis"
    assert (await reader.breakdown("model", _query(last7), Page())).tier == "redis"
    assert (await reader.stats())["redis"]["hits"] == hits_before + 2

    again = await manager.warm([last7])
    assert again.keys_written == 0, "warming a warm range writes nothing"
