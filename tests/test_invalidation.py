"""Invalidation on real PostgreSQL and Redis: overlapping cached ranges, partial overlaps, tier choices, the real
CLI, and the set-after-delete race (a result computed before an invalidation and written after it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from litemaas_cache.codec import ENCODINGS, Body
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.redis_tier import RedisStore

OpenManager = Callable[..., Awaitable[CacheManager]]
CLI = str(Path(sys.executable).with_name("litemaas-cache"))  # the console script beside this interpreter
SOURCE = '"LiteLLM_DailyUserSpend"'


def _query(days: DateRange, **filters: list[str]) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000, **filters)


def _window() -> tuple[DateRange, Callable[[int], dt.date]]:
    """D = today-29..today, and day(i) = D.start + i."""
    today = utc_today()
    window = DateRange(today - dt.timedelta(days=29), today)
    return window, lambda i: window.start + dt.timedelta(days=i)


async def _sql(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall() if cur.description else []


async def _busiest_model(dsn: str, day: dt.date) -> str:
    rows = await _sql(
        dsn,
        f"SELECT model FROM {SOURCE} WHERE date = %s GROUP BY model ORDER BY count(*) DESC, model LIMIT 1",
        (day.isoformat(),),
    )
    assert rows, f"the seeded data has no row on {day}"
    return str(rows[0][0])


async def _bump_source_row(dsn: str, day: dt.date, model: str, requests: int = 1000, spend: float = 5.0) -> None:
    """Change one source row the way LiteLLM's late updates do (the cache does not notice by itself)."""
    await _sql(
        dsn,
        f"UPDATE {SOURCE} SET api_requests = api_requests + %s, successful_requests = successful_requests + %s,"
        f" spend = spend + %s WHERE id = (SELECT id FROM {SOURCE} WHERE date = %s AND model = %s ORDER BY id LIMIT 1)",
        (requests, requests, spend, day.isoformat(), model),
    )


async def _source_totals(dsn: str, days: DateRange, model: str | None = None) -> tuple[int, float]:
    """(requests, spend) straight from LiteLLM's table: the oracle."""
    extra, params = ("AND model = %s", (model,)) if model else ("", ())
    rows = await _sql(
        dsn,
        f"SELECT coalesce(sum(api_requests), 0), coalesce(sum(spend), 0) FROM {SOURCE}"
        f" WHERE date BETWEEN %s AND %s {extra}",
        (days.start.isoformat(), days.end.isoformat(), *params),
    )
    return int(rows[0][0]), float(rows[0][1])


def _totals(doc: dict[str, Any]) -> tuple[int, float]:
    return int(doc["totalRequests"]), float(doc["totalCost"]["total"])


def _assert_matches(doc: dict[str, Any], oracle: tuple[int, float]) -> None:
    requests, spend = _totals(doc)
    assert requests == oracle[0]
    assert spend == pytest.approx(oracle[1], abs=1e-4)


async def test_overlapping_cached_ranges_both_see_a_changed_day(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn, **redis_target)
    window, day = _window()
    model = await _busiest_model(fresh_dsn, day(10))
    wide = _query(window)
    narrow = _query(DateRange(day(5), day(12)), model_ids=[model])

    before_wide, before_narrow = await manager.analytics(wide), await manager.analytics(narrow)
    assert (await manager.analytics(wide)).tier == "redis"
    assert (await manager.analytics(narrow)).tier == "redis"
    _assert_matches(before_wide.value, await _source_totals(fresh_dsn, window))
    _assert_matches(before_narrow.value, await _source_totals(fresh_dsn, narrow.range, model))

    await _bump_source_row(fresh_dsn, day(10), model)
    # without an invalidation the caches still (legitimately) serve the old numbers
    assert (await manager.analytics(wide)).value == before_wide.value

    report = await manager.invalidate(DateRange(day(10), day(10)))
    assert report.complete
    assert report.redis_status == "done"
    assert report.days_purged == 1
    assert report.versions_bumped == 1
    assert report.keys_deleted >= 3, "day 10's entry and both results"

    computations = manager.counters.local["computations"]
    after_wide, after_narrow = await manager.analytics(wide), await manager.analytics(narrow)
    assert after_wide.tier == "source", "day 10 is recomputed from the source"
    assert manager.counters.local["computations"] == computations + 2, "neither cached result was served"
    _assert_matches(after_wide.value, await _source_totals(fresh_dsn, window))
    _assert_matches(after_narrow.value, await _source_totals(fresh_dsn, narrow.range, model))
    assert after_wide.value["totalRequests"] == before_wide.value["totalRequests"] + 1000
    assert after_narrow.value["totalRequests"] == before_narrow.value["totalRequests"] + 1000
    daily = {d["date"]: d["requests"] for d in after_narrow.value["dailyUsage"]}
    assert daily[day(10).isoformat()] == (await _source_totals(fresh_dsn, DateRange(day(10), day(10)), model))[0]
    # ... and the new numbers are what Redis serves from now on, to every manager
    other = await open_manager(fresh_dsn, **redis_target)
    assert (await other.analytics(wide)).value == after_wide.value
    assert (await other.analytics(narrow)).value == after_narrow.value


async def test_partially_overlapping_invalidation_makes_the_result_unreadable(
    fresh_dsn: str,
    redis_target: dict[str, object],
    redis_client: Redis | RedisCluster,
    open_manager: OpenManager,
) -> None:
    manager = await open_manager(fresh_dsn, **redis_target)
    assert isinstance(manager.redis, RedisStore)
    _, day = _window()
    query = _query(DateRange(day(5), day(12)))
    covered = list(DateRange(query.range.previous().start, query.range.end))
    key = manager.keys.result("analytics", query.range, query.filters.fingerprint())
    await manager.analytics(query)
    assert await manager.redis.get_result(key, covered) is not None

    report = await manager.invalidate(DateRange(day(10), day(20)))
    assert (report.days_purged, report.versions_bumped) == (3, 11), "days 10-12 were cached; 11 versions bumped"
    assert await redis_client.exists(*(manager.keys.result_entry(key, e) for e in ENCODINGS)) == 0, (
        "a result overlapping the range is deleted, in every encoding"
    )
    assert await manager.redis.get_result(key, covered) is None
    recomputed = await manager.analytics(query)
    assert recomputed.tier == "source", "days 10-12 were purged from every tier"
    assert recomputed.keys_written == 3 + 1, "days 10-12 and the result; the other days were still in Redis"

    # a day that only the comparison (previous) period uses: the key is kept, its versions make it unreadable
    model = await _busiest_model(fresh_dsn, day(1))
    assert query.range.previous().start <= day(1) <= query.range.previous().end
    before = (await manager.analytics(query)).value
    await _bump_source_row(fresh_dsn, day(1), model, requests=700)
    report = await manager.invalidate(DateRange(day(1), day(1)))
    assert await redis_client.exists(manager.keys.result_entry(key, "gzip")) == 1, "its range does not overlap day 1"
    assert await manager.redis.get_result(key, covered) is None
    after = await manager.analytics(query)
    assert after.tier != "redis"
    assert after.value["trends"]["requestsTrend"]["previous"] == before["trends"]["requestsTrend"]["previous"] + 700
    assert after.value["totalRequests"] == before["totalRequests"]


async def test_single_tier_invalidations(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn, **redis_target)
    _, day = _window()
    query = _query(DateRange(day(2), day(8)))
    first = await manager.analytics(query)

    redis_only = await manager.invalidate(DateRange(day(4), day(4)), tiers=("redis",))
    assert (redis_only.days_purged, redis_only.versions_bumped) == (0, 0)
    assert redis_only.keys_deleted == 1 + len(ENCODINGS), "the day and the result, in each of its encodings"
    assert redis_only.redis_status == "done"
    again = await manager.analytics(query)
    assert (again.tier, again.value) == ("postgres", first.value), "PostgreSQL still has every day"

    # PostgreSQL only: nothing is deleted in Redis, but the raised versions make its entries unreadable
    await _bump_source_row(fresh_dsn, day(4), await _busiest_model(fresh_dsn, day(4)), requests=3)
    pg_only = await manager.invalidate(DateRange(day(4), day(4)), tiers=("postgres",))
    assert pg_only.keys_deleted == 0
    assert pg_only.days_purged == 1
    assert pg_only.redis_status == "done"
    fetch = await manager.get_days([day(3), day(4)])
    assert (fetch.from_redis, fetch.from_source) == (1, 1)
    after = await manager.analytics(query)
    assert after.value["totalRequests"] == first.value["totalRequests"] + 3


async def test_set_after_delete_race_never_serves_the_stale_result(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    """A reader reads the days at their old versions and computes; an invalidation runs; only then does the
    reader write its (now stale) result and day entry. Neither may ever be read."""
    manager = await open_manager(fresh_dsn, **redis_target)
    assert isinstance(manager.redis, RedisStore)
    _, day = _window()
    model = await _busiest_model(fresh_dsn, day(10))
    query = _query(DateRange(day(5), day(12)))
    covered = list(DateRange(query.range.previous().start, query.range.end))
    key = manager.keys.result("analytics", query.range, query.filters.fingerprint())

    # 1. the slow reader fetches its inputs (all tiers filled at version 1) and computes from them
    old = await manager.get_days(covered)
    old_versions = {d: usage.version for d, usage in old.days.items()}
    stale_value = (await manager.analytics(query)).value
    await manager.invalidate(DateRange(day(5), day(12)), tiers=("redis",))  # forget the result it cached
    # 2. the source changes and is invalidated while the reader is still busy
    await _bump_source_row(fresh_dsn, day(10), model)
    report = await manager.invalidate(DateRange(day(10), day(10)))
    assert report.complete
    # 3. the reader finally writes what it computed from the old versions
    stale = Body.of(stale_value)
    assert await manager.redis.put_result(key, old_versions, stale, 600), "the write itself succeeds"
    assert await manager.redis.put_days([old.days[day(10)]], lambda _: 600) == 1

    assert await manager.redis.get_result(key, covered) is None
    assert day(10) not in await manager.redis.get_days([day(10)])
    fresh = await manager.analytics(query)
    assert fresh.tier != "redis"
    assert fresh.value["totalRequests"] == stale_value["totalRequests"] + 1000
    _assert_matches(fresh.value, await _source_totals(fresh_dsn, query.range))
    assert (await manager.analytics(query)).value == fresh.value


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        pytest.fail(f"litemaas-cache {' '.join(args)} did not finish within 60s")
    return int(proc.returncode or 0), out.decode(), err.decode()


def _tier(stderr: str) -> str | None:
    """The tier `analytics --json` reports on stderr ("tier: redis ...")."""
    found = re.search(r"^tier: (\w+)", stderr, re.MULTILINE)
    return found.group(1) if found else None


def cli_env(dsn: str, redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LITELLM_DATABASE_URL", "REDIS_CLUSTER")}
    env.update(DATABASE_URL=dsn, REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix)
    return env


async def test_cli_invalidate_then_analytics_shows_new_numbers(fresh_dsn: str, key_prefix: str) -> None:
    env = cli_env(fresh_dsn, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), key_prefix)
    window, day = _window()
    model = await _busiest_model(fresh_dsn, day(10))
    narrow = DateRange(day(5), day(12))
    wide_args = ["analytics", "--start", str(window.start), "--end", str(window.end), "--json"]
    narrow_args = ["analytics", "--start", str(narrow.start), "--end", str(narrow.end), "--model", model, "--json"]
    try:
        rc, _, err = await _cli(env, *wide_args)
        assert (rc, _tier(err)) == (0, "source"), err
        rc, _, err = await _cli(env, *narrow_args)  # computed from the day entries the first call stored
        assert (rc, _tier(err)) == (0, "redis"), err
        rc, out, err = await _cli(env, *wide_args)
        assert (rc, _tier(err)) == (0, "redis"), err
        old_wide = orjson.loads(out)

        await _bump_source_row(fresh_dsn, day(10), model)
        d10 = str(day(10))
        rc, out, err = await _cli(env, "invalidate", "--start", d10, "--end", d10, "--json")
        assert rc == 0, err
        report = orjson.loads(out)
        assert report["postgres"]["daysPurged"] == 1
        assert report["redis"]["keysDeleted"] >= 3
        assert report["redis"]["status"] == "done"
        assert report["complete"] is True

        rc, out, err = await _cli(env, *wide_args)
        assert rc == 0
        assert "Traceback" not in err
        new_wide = orjson.loads(out)
        _assert_matches(new_wide, await _source_totals(fresh_dsn, window))
        assert new_wide["totalRequests"] == old_wide["totalRequests"] + 1000
        rc, out, err = await _cli(env, *narrow_args)
        assert rc == 0
        _assert_matches(orjson.loads(out), await _source_totals(fresh_dsn, narrow, model))
        rc, out, err = await _cli(env, *wide_args)
        assert _tier(err) == "redis"
        assert orjson.loads(out) == new_wide
    finally:
        client = Redis.from_url(env["REDIS_URL"])
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
