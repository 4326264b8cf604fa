"""Redis going away: answers stay correct (from PostgreSQL), nothing raises, the breaker opens and closes again,
and no stale entry is served after an invalidation Redis missed. Each test runs a redis-server of its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from litemaas_cache.analytics import Page
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import Answer, CacheManager
from litemaas_cache.redis_tier import RedisStore
from litemaas_cache.redis_tier.breaker import BreakerState
from tests.support.redis_server import RedisServer, free_port

OpenManager = Callable[..., Awaitable[CacheManager]]
CLI = str(Path(sys.executable).with_name("litemaas-cache"))  # the console script beside this interpreter
SOURCE = '"LiteLLM_DailyUserSpend"'
# Quick failure detection for tests: short timeouts, a fast first probe.
# The Redis tier on its own: no result bodies held in memory in front of it (tests/test_local_results.py).
FAST = {"redis_socket_timeout": 0.25, "redis_breaker_reset_seconds": 0.2, "local_results_mib": 0}


async def wait_until(what: str, condition: Callable[[], bool | Awaitable[bool]], seconds: float = 15.0) -> float:
    """Poll `condition` until it holds; fail naming `what` after `seconds`. Returns the time waited."""
    started = time.monotonic()
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            pytest.fail(f"waited {seconds}s for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def _query(days: DateRange, **filters: list[str]) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000, **filters)


async def _sql(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall() if cur.description else []


async def _source_requests(dsn: str, days: DateRange) -> int:
    rows = await _sql(
        dsn,
        f"SELECT coalesce(sum(api_requests), 0) FROM {SOURCE} WHERE date BETWEEN %s AND %s",
        (days.start.isoformat(), days.end.isoformat()),
    )
    return int(rows[0][0])


@pytest_asyncio.fixture
async def queries() -> AsyncIterator[list[Callable[[CacheManager], Awaitable[Answer]]]]:
    today = utc_today()
    last30 = _query(DateRange(today - dt.timedelta(days=29), today))
    week = _query(DateRange(today - dt.timedelta(days=13), today - dt.timedelta(days=7)), model_ids=["gpt-4o"])
    yield [
        lambda m: m.analytics(last30),
        lambda m: m.analytics(week),
        lambda m: m.breakdown("user", last30, Page(1, 10)),
    ]


async def test_redis_killed_mid_test_then_restarted(
    fresh_dsn: str,
    redis_server: RedisServer,
    open_manager: OpenManager,
    queries: list[Callable[[CacheManager], Awaitable[Answer]]],
) -> None:
    manager = await open_manager(fresh_dsn, redis_url=redis_server.url, **FAST)
    assert isinstance(manager.redis, RedisStore)
    before = [(await q(manager)).value for q in queries]
    assert [(await q(manager)).tier for q in queries] == ["redis"] * 3
    today = utc_today()
    assert before[0]["totalRequests"] == await _source_requests(fresh_dsn, DateRange(today - dt.timedelta(29), today))

    redis_server.stop()
    started = time.monotonic()
    during = [await q(manager) for q in queries]
    assert [a.value for a in during] == before, "PostgreSQL answers exactly what Redis did"
    tiers = {a.tier for a in during}
    assert "postgres" in tiers, "PostgreSQL answered (today is never held in memory)"
    assert tiers <= {"postgres", "memory"}, "and days held in memory, nothing else"
    assert time.monotonic() - started < 10, "a dead Redis only costs bounded timeouts"
    assert manager.redis.breaker.state is BreakerState.OPEN
    stats = await manager.stats()
    assert stats["redis"]["available"] is False
    assert stats["redis"]["breaker"] == "open"
    assert stats["counterScope"] == "process"
    report = await manager.invalidate(DateRange(today - dt.timedelta(days=3), today - dt.timedelta(days=3)))
    assert (report.redis_status, report.complete, report.days_purged) == ("unavailable", False, 1)
    # while the breaker is open, calls fail fast: no Redis round trip at all
    started = time.monotonic()
    assert [(await q(manager)).value for q in queries] == before
    assert time.monotonic() - started < 2

    redis_server.start()
    waited = await wait_until("the breaker to close after redis-server came back", lambda: manager.redis.available)
    assert waited < 15
    assert manager.redis.breaker.state is BreakerState.CLOSED
    computations = manager.counters.local["computations"]
    refill = [await q(manager) for q in queries]  # the restarted Redis is empty
    assert [a.value for a in refill] == before
    assert refill[0].tier == "postgres"
    assert manager.counters.local["computations"] == computations + 3
    again = [await q(manager) for q in queries]
    assert [a.tier for a in again] == ["redis"] * 3
    assert [a.value for a in again] == before
    stats = await manager.stats()
    assert stats["redis"]["available"] is True
    assert stats["counterScope"] == "shared"


async def test_hung_redis_times_out_and_recovers(
    fresh_dsn: str,
    redis_server: RedisServer,
    open_manager: OpenManager,
    queries: list[Callable[[CacheManager], Awaitable[Answer]]],
) -> None:
    manager = await open_manager(fresh_dsn, redis_url=redis_server.url, **FAST)
    assert isinstance(manager.redis, RedisStore)
    before = [(await q(manager)).value for q in queries]
    redis_server.pause()
    try:
        started = time.monotonic()
        assert [(await q(manager)).value for q in queries] == before
        assert time.monotonic() - started < 10
        assert manager.redis.breaker.state is BreakerState.OPEN
    finally:
        redis_server.resume()
    await wait_until("the breaker to close after SIGCONT", lambda: manager.redis.available)
    assert [(await q(manager)).value for q in queries] == before
    assert [(await q(manager)).tier for q in queries] == ["redis"] * 3


async def test_invalidation_missed_by_redis_is_repaired_on_reconnect(
    fresh_dsn: str,
    redis_server: RedisServer,
    open_manager: OpenManager,
) -> None:
    """Redis is briefly unreachable (too briefly to open the breaker) exactly while a day is invalidated, and comes
    back with its old keys (persistence). The manager must re-sync the versions from PostgreSQL before trusting
    Redis again, or it would serve the result computed before the change."""
    manager = await open_manager(fresh_dsn, redis_url=redis_server.url, redis_breaker_failures=10, **FAST)
    assert isinstance(manager.redis, RedisStore)
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=12), today - dt.timedelta(days=6))
    query = _query(days)
    old = await manager.analytics(query)
    assert (await manager.analytics(query)).tier == "redis"
    changed = days.start + dt.timedelta(days=2)

    redis_server.shutdown_save()
    await _sql(
        fresh_dsn,
        f"UPDATE {SOURCE} SET api_requests = api_requests + 1000 WHERE id = "
        f"(SELECT id FROM {SOURCE} WHERE date = %s ORDER BY id LIMIT 1)",
        (changed.isoformat(),),
    )
    report = await manager.invalidate(DateRange(changed, changed))
    assert (report.redis_status, report.complete, report.days_purged) == ("unavailable", False, 1)
    assert manager.redis.breaker.state is BreakerState.CLOSED, "too few failures to open the breaker"
    redis_server.start()  # loads the RDB: the old result and the old version mirror are back

    answer = await manager.analytics(query)
    assert answer.value["totalRequests"] == old.value["totalRequests"] + 1000
    assert answer.value["totalRequests"] == await _source_requests(fresh_dsn, days)
    assert (await manager.analytics(query)).value == answer.value


async def test_invalidation_that_never_reached_redis_is_repaired_for_healthy_readers(
    fresh_dsn: str,
    redis_server: RedisServer,
    open_manager: OpenManager,
) -> None:
    """A partition: the invalidating process cannot reach Redis and exits, while a reader's connection never
    failed, so nothing tells the reader to re-sync. The periodic re-sync bounds how long it can serve the old
    result (CACHE_VERSION_RESYNC_SECONDS; short here)."""
    reader = await open_manager(fresh_dsn, redis_url=redis_server.url, version_resync_seconds=0.5, **FAST)
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=12), today - dt.timedelta(days=6))
    query = _query(days)
    old = await reader.analytics(query)
    assert (await reader.analytics(query)).tier == "redis"

    changed = days.start + dt.timedelta(days=2)
    await _sql(
        fresh_dsn,
        f"UPDATE {SOURCE} SET api_requests = api_requests + 1000 WHERE id = "
        f"(SELECT id FROM {SOURCE} WHERE date = %s ORDER BY id LIMIT 1)",
        (changed.isoformat(),),
    )
    partitioned = await open_manager(fresh_dsn, redis_url=f"redis://127.0.0.1:{free_port()}/0", **FAST)
    report = await partitioned.invalidate(DateRange(changed, changed))
    assert (report.redis_status, report.complete) == ("unavailable", False)

    await asyncio.sleep(0.6)  # one re-sync interval: the reader raises the shared mirror from PostgreSQL
    answer = await reader.analytics(query)
    assert answer.tier != "redis"
    assert answer.value["totalRequests"] == old.value["totalRequests"] + 1000
    assert answer.value["totalRequests"] == await _source_requests(fresh_dsn, days)


async def test_a_stray_key_of_the_wrong_type_is_a_miss_not_an_outage(
    fresh_dsn: str,
    redis_server: RedisServer,
    open_manager: OpenManager,
) -> None:
    manager = await open_manager(fresh_dsn, redis_url=redis_server.url, redis_breaker_failures=2, **FAST)
    assert isinstance(manager.redis, RedisStore)
    query = _query(DateRange(utc_today() - dt.timedelta(days=6), utc_today()))
    key = manager.keys.result("analytics", query.range, query.filters.fingerprint())
    raw = Redis.from_url(redis_server.url)
    await raw.lpush(key, "x")
    await raw.aclose()
    # The GET gets WRONGTYPE: Redis answered, so it is a miss for this read and the breaker stays closed; the
    # computed result then replaces the stray key, and later reads are hits.
    assert (await manager.analytics(query)).tier != "redis"
    assert [(await manager.analytics(query)).tier for _ in range(3)] == ["redis"] * 3
    assert manager.redis.breaker.state is BreakerState.CLOSED
    assert manager.redis.breaker.consecutive_failures == 0


def _run_cli(env: dict[str, str], *args: str) -> tuple[str, str]:
    proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, f"litemaas-cache {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout, proc.stderr


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
async def test_every_cli_command_works_with_nothing_listening_on_the_redis_port(fresh_dsn: str, cluster: bool) -> None:
    """Also as a Redis Cluster client, whose 'cannot connect' (RedisClusterException) is not a RedisError."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if k not in ("LITELLM_DATABASE_URL", "REDIS_CLUSTER")}
    env.update(DATABASE_URL=fresh_dsn, REDIS_URL=dead, REDIS_KEY_PREFIX="dead:", REDIS_CLUSTER=str(cluster).lower())
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=29), today)
    expected = await _source_requests(fresh_dsn, days)
    started = time.monotonic()

    out, _ = await asyncio.to_thread(_run_cli, env, "migrate")
    assert "up to date" in out or "applied" in out
    analytics_args = ("analytics", "--start", str(days.start), "--end", str(days.end), "--json")
    out, err = await asyncio.to_thread(_run_cli, env, *analytics_args)
    assert orjson.loads(out)["totalRequests"] == expected
    assert "tier: source" in err
    out, err = await asyncio.to_thread(_run_cli, env, *analytics_args)
    assert orjson.loads(out)["totalRequests"] == expected
    assert "tier: postgres" in err, "the PostgreSQL day cache still works"
    out, _ = await asyncio.to_thread(_run_cli, env, "warm", "--range", "last-7-days", "--json")
    warm = orjson.loads(out)
    assert (warm["redisAvailable"], warm["keysWritten"], warm["daysWarmed"]) == (False, 0, 14)
    out, err = await asyncio.to_thread(
        _run_cli, env, "invalidate", "--start", str(days.start), "--end", str(days.start), "--json"
    )
    report = orjson.loads(out)
    assert report["postgres"]["daysPurged"] == 1
    assert (report["redis"]["status"], report["complete"]) == ("unavailable", False)
    assert "redis was unreachable" in err
    out, _ = await asyncio.to_thread(_run_cli, env, "stats", "--json")
    stats = orjson.loads(out)
    assert stats["redis"]["available"] is False
    assert stats["counterScope"] == "process"
    out, _ = await asyncio.to_thread(_run_cli, env, "analytics", "--start", str(days.start), "--end", str(days.end))
    assert f"{expected:,}" in out, "the human-readable table shows the same total"
    assert time.monotonic() - started < 30


async def test_redis_out_of_memory_opens_the_breaker_and_answers_stay_right(
    fresh_dsn: str, tmp_path: Path, open_manager: OpenManager
) -> None:
    """OOM under noeviction refuses every write: that is an outage of the Redis tier (not a miss), so the breaker
    opens and status says so, while PostgreSQL keeps the answers right."""
    with RedisServer(tmp_path, extra_args=["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]) as server:
        manager = await open_manager(fresh_dsn, redis_url=server.url, redis_breaker_failures=2, **FAST)
        assert isinstance(manager.redis, RedisStore)
        days = DateRange(utc_today() - dt.timedelta(days=29), utc_today())
        answers = [await manager.analytics(_query(days)) for _ in range(2)]
        assert all(a.tier != "redis" for a in answers), "nothing could be stored, so nothing is a Redis hit"
        expected = await _source_requests(fresh_dsn, days)
        assert [a.value["totalRequests"] for a in answers] == [expected, expected]
        assert manager.redis.breaker.state is BreakerState.OPEN
        assert manager.redis.failure is not None
        assert (manager.redis.failure.reason, manager.redis.failure.error) == ("OutOfMemory", "OutOfMemoryError")
        assert (await manager.stats())["redis"]["available"] is False
