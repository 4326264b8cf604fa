"""Another client's FLUSHALL (LiteMaaS flushes LiteLLM's Redis after every model change) on a private redis-server:
the version mirror is repaired before any read can be stale, a computation that started before an invalidation and
finishes after the flush cannot make its stale result current again, and the cache refills."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from redis.asyncio import Redis

from litemaas_cache.codec import ENCODINGS, Body
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.redis_tier import RedisStore
from litemaas_cache.redis_tier.keys import MIRROR_COMPLETE, KeySpace
from tests.support.oracle import sql_requests
from tests.support.redis_server import RedisServer

OpenManager = Callable[..., Awaitable[CacheManager]]
TTL = 600


def _bump_source(dsn: str, day: dt.date) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            'UPDATE "LiteLLM_DailyUserSpend" SET api_requests = api_requests + 1000 WHERE id = '
            '(SELECT id FROM "LiteLLM_DailyUserSpend" WHERE date = %s ORDER BY id LIMIT 1)',
            (day.isoformat(),),
        )


async def test_flushall_after_an_invalidation_never_serves_a_stale_answer(
    tmp_path: Path, fresh_dsn: str, open_manager: OpenManager
) -> None:
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=12), today - dt.timedelta(days=6))
    changed = days.start + dt.timedelta(days=2)
    query = build_query(days.start, days.end, max_days=90, max_ids=1000)
    with RedisServer(tmp_path) as server:
        reader = await open_manager(fresh_dsn, redis_url=server.url)
        # Another process, part-way through a computation when the day is invalidated: it read the days before.
        slow = await open_manager(fresh_dsn, redis_url=server.url)
        assert isinstance(reader.redis, RedisStore)
        assert isinstance(slow.redis, RedisStore)
        old = await reader.analytics(query)
        assert (await reader.analytics(query)).tier == "redis"
        key = reader.keys.result("analytics", query.range, query.filters.fingerprint())
        old_versions = {d: v for d, v in (await slow.postgres.all_versions()).items() if d in days}
        old_days = await slow.redis.get_days(list(days))
        assert set(old_days) == set(days), "the slow computation read every day from Redis"

        _bump_source(fresh_dsn, changed)
        report = await reader.invalidate(DateRange(changed, changed))
        assert report.complete
        raw = Redis.from_url(server.url)
        try:
            await raw.flushall()

            # The slow computation finishes now and stores what it computed from the old versions. Merged into the
            # emptied mirror, those versions would make its stale result current again: it is refused.
            assert await slow.redis.put_result(key, old_versions, Body.of(old.value), TTL) is False
            assert await raw.exists(*(reader.keys.result_entry(key, e) for e in ENCODINGS)) == 0

            expected = sql_requests(fresh_dsn, days)
            assert expected == old.value["totalRequests"] + 1000
            answer = await reader.analytics(query)
            assert (answer.tier, answer.value["totalRequests"]) != ("redis", old.value["totalRequests"])
            assert answer.value["totalRequests"] == expected
            assert await raw.hexists(reader.keys.versions, MIRROR_COMPLETE), "the mirror was re-synced"
            refilled = await reader.analytics(query)
            assert (refilled.tier, refilled.value["totalRequests"]) == ("redis", expected), "the cache refills"

            # The slow computation's writes once the mirror is whole again: stored, but the stale day and the
            # stale result are never read.
            assert await slow.redis.put_days(old_days.values(), lambda _day: TTL) == len(old_days)
            assert set(await reader.redis.get_days(list(days))) == set(days) - {changed}
            assert await slow.redis.put_result(key, old_versions, Body.of(old.value), TTL) is True
            for manager in (reader, slow):
                assert (await manager.analytics(query)).value["totalRequests"] == expected
        finally:
            await raw.aclose()


async def test_a_flush_during_a_resync_leaves_the_mirror_untrusted(tmp_path: Path, fresh_dsn: str) -> None:
    """A re-sync reads PostgreSQL's versions, then merges them. If a flush comes between the two, raises made in
    between were wiped and are missing from what it read: the mirror must not be called complete by that merge."""
    with RedisServer(tmp_path) as server:
        raw = Redis.from_url(server.url)
        keys = KeySpace("flush-test:")
        day = utc_today() - dt.timedelta(days=3)
        flushes = 0

        async def versions_then_flush() -> dict[dt.date, int]:
            nonlocal flushes
            if flushes == 0:
                flushes += 1
                await raw.flushall()  # lands after the re-sync began and before it merges
            return {day: 1}

        store = RedisStore(server.url, keys, versions_then_flush)
        try:
            assert await store.versions([day]) is None, "no complete mirror: Redis is not trusted"
            assert not await raw.hexists(keys.versions, MIRROR_COMPLETE)
            assert await store.versions([day]) == {day: 1}, "the next re-sync, with no flush, completes it"
            assert await raw.hexists(keys.versions, MIRROR_COMPLETE)
        finally:
            await store.close()
            await raw.aclose()
