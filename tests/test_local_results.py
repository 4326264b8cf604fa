"""Result bodies held in the process (local_results.py) and the version mirror's generation and lease
(redis_tier/mirror.py): a warm read is served from memory with the bytes Redis holds, an invalidation made by another
process is never served from memory once it returned, and without Redis nothing held is served."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from redis.asyncio import Redis

from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.local_results import HeldResult, LocalResults
from litemaas_cache.manager import CacheManager
from litemaas_cache.redis_tier.keys import MIRROR_GENERATION
from litemaas_cache.redis_tier.mirror import LEASE_SECONDS
from litemaas_cache.stats import stats_document
from tests.conftest import make_settings
from tests.support.redis_server import RedisServer

OpenManager = Callable[..., Awaitable[CacheManager]]
SOURCE = '"LiteLLM_DailyUserSpend"'
END = utc_today() - dt.timedelta(days=3)
RANGE = DateRange(END - dt.timedelta(days=9), END)
QUERY = build_query(RANGE.start, RANGE.end, max_days=90, max_ids=10)


def _total_requests(dsn: str, days: DateRange) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT coalesce(sum(api_requests), 0) FROM {SOURCE} WHERE date BETWEEN %s AND %s".encode(),
            (days.start.isoformat(), days.end.isoformat()),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _add_requests(dsn: str, day: dt.date, extra: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {SOURCE} SET api_requests = api_requests + %s WHERE id = "
            f"(SELECT min(id) FROM {SOURCE} WHERE date = %s)".encode(),
            (extra, day.isoformat()),
        )


async def test_a_result_read_again_is_served_from_memory_as_redis_holds_it(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn)
    tiers = [(await manager.analytics(QUERY, "zstd")).tier for _ in range(3)]
    assert tiers == ["source", "redis", "memory"]
    from_redis = await manager.redis.get_result(
        manager.keys.result("analytics", QUERY.range, QUERY.filters.fingerprint()),
        list(DateRange(QUERY.range.previous().start, QUERY.range.end)),
        "zstd",
    )
    assert from_redis is not None
    held = await manager.analytics(QUERY, "zstd")
    assert held.tier == "memory"
    assert held.body.encoded("zstd") == from_redis.body.encoded("zstd"), "the bytes Redis holds, as they are"
    assert held.value["totalRequests"] == _total_requests(fresh_dsn, RANGE)
    assert manager.counters.local["result:memory:hit"] == 2
    stats = await stats_document(manager.redis, manager.counters)
    assert stats["memory"]["resultHits"] == 2


async def test_an_invalidation_by_another_process_is_never_served_from_memory(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    reader, writer = await open_manager(fresh_dsn), await open_manager(fresh_dsn)
    for _ in range(3):
        await reader.analytics(QUERY)
    day = RANGE.start + dt.timedelta(days=2)
    _add_requests(fresh_dsn, day, 1000)
    assert (await reader.analytics(QUERY)).tier == "memory", "the reader holds the result, its lease just renewed"
    report = await writer.invalidate(DateRange(day, day), tiers=["redis", "postgres"])
    assert report.complete
    answer = await reader.analytics(QUERY)
    assert answer.tier != "memory"
    assert answer.value["totalRequests"] == _total_requests(fresh_dsn, RANGE)


async def test_a_raise_returns_only_once_no_reader_s_lease_covers_the_old_versions(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    """The mirror's lease at the level of the store: a reader that checked the versions a moment ago trusts them
    without asking Redis, so the raise must outlast that check's lease before it returns."""
    reader, writer = await open_manager(fresh_dsn), await open_manager(fresh_dsn)
    await reader.analytics(QUERY)  # the mirror is re-synced and holds these days
    days = list(RANGE)
    before = await reader.redis.versions(days)
    assert before is not None
    vector = [before[d] for d in days]
    assert await reader.redis.still_current(days, vector)  # checked now: the lease starts
    assert await writer.redis.raise_versions({days[0]: vector[0] + 1})
    assert not await reader.redis.still_current(days, vector), "once the raise returned, the old versions are gone"


async def test_every_raise_rewrites_the_mirror_s_generation_and_only_a_raise(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn)
    await manager.analytics(QUERY)
    async with Redis.from_url(make_settings(fresh_dsn).redis_dsn) as redis:

        async def generation() -> bytes | None:
            return await redis.hget(manager.keys.versions, MIRROR_GENERATION)  # type: ignore[no-any-return]

        first = await generation()
        assert first is not None
        versions = await manager.redis.versions([END])
        assert versions is not None
        assert await manager.redis.raise_versions({END: versions[END]})  # nothing higher: no change
        assert await generation() == first
        assert await manager.redis.raise_versions({END: versions[END] + 1})
        second = await generation()
        assert second not in (None, first)


async def test_without_redis_a_held_result_is_not_served(
    fresh_dsn: str, open_manager: OpenManager, tmp_path: Path
) -> None:
    """A held copy is served only while a check of the mirror vouches for it: once Redis is gone and the last
    check's lease has run out, PostgreSQL answers."""
    with RedisServer(tmp_path) as server:
        manager = await open_manager(fresh_dsn, redis_url=server.url, redis_socket_timeout=0.25)
        tiers = [(await manager.analytics(QUERY)).tier for _ in range(3)]
        assert tiers == ["source", "redis", "memory"]
        server.stop()
        await asyncio.sleep(2 * LEASE_SECONDS)  # what the last check vouched for has expired
        answer = await manager.analytics(QUERY)
        assert answer.tier == "postgres", "nothing can tell the held copy is current: PostgreSQL answers"
        assert answer.value["totalRequests"] == _total_requests(fresh_dsn, RANGE)


async def test_a_budget_of_zero_holds_nothing(fresh_dsn: str, open_manager: OpenManager) -> None:
    manager = await open_manager(fresh_dsn, local_results_mib=0)
    tiers = [(await manager.analytics(QUERY)).tier for _ in range(3)]
    assert tiers == ["source", "redis", "redis"]


def test_the_budget_evicts_the_least_recently_used_body() -> None:
    held = LocalResults(budget_bytes=3000)
    for key in ("a", "b", "c"):
        held.put(key, "zstd", HeldResult([1], b"x" * 1000), 60)
    assert held.get("a", "zstd") is not None  # used: now the most recent
    held.put("d", "zstd", HeldResult([1], b"x" * 1000), 60)
    assert held.get("b", "zstd") is None, "the least recently used body went first"
    assert all(held.get(key, "zstd") is not None for key in ("a", "c", "d"))
    assert held.get("a", "gzip") is None, "each encoding is held on its own"
    held.put("e", "zstd", HeldResult([1], b"x" * 1000), 0)
    assert held.get("e", "zstd") is None, "an entry with no time left in Redis is not held"
    held.put("big", "zstd", HeldResult([1], b"x" * 3001), 60)
    assert held.get("big", "zstd") is None, "nor one larger than the budget"
    assert held.get("a", "zstd") is not None


async def test_a_raise_that_leaves_the_generation_alone_is_seen_after_a_re_sync(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    """An older version of this cache raises the mirror without rewriting its generation (during a rolling upgrade):
    a reader sees that raise once it re-syncs (CACHE_VERSION_RESYNC_SECONDS), since a re-sync marks the mirror complete
    again and so rewrites the generation."""
    reader = await open_manager(fresh_dsn, version_resync_seconds=0.5)
    await reader.analytics(QUERY)
    days = list(RANGE)
    before = await reader.redis.versions(days)
    assert before is not None
    vector = [before[d] for d in days]
    assert await reader.redis.still_current(days, vector)
    async with Redis.from_url(make_settings(fresh_dsn).redis_dsn) as redis:
        await redis.hset(reader.keys.versions, days[0].isoformat(), vector[0] + 1)  # as an older writer does
    await asyncio.sleep(0.6)  # past the re-sync interval
    assert not await reader.redis.still_current(days, vector)
