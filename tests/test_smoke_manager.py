"""First end-to-end check of the manager on real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt

import psycopg
from redis.asyncio import Redis

from litemaas_cache.dates import utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.frames import decode_columns, read_header
from litemaas_cache.manager import CacheManager


async def test_cold_then_redis_hit(manager: CacheManager) -> None:
    today = utc_today()
    query = build_query(today.replace(day=1).isoformat(), today.isoformat(), max_days=90, max_ids=1000)
    cold = await manager.analytics(query)
    warm = await manager.analytics(query)
    assert cold.tier == "source"
    assert warm.tier == "redis"
    assert warm.value == cold.value
    assert cold.value["totalRequests"] > 0


async def test_both_tiers_hold_the_same_bytes_for_a_day(manager: CacheManager) -> None:
    """A day is encoded once: the PostgreSQL row and the Redis entry are the same bytes (a day payload)."""
    today = utc_today()
    day = today - dt.timedelta(days=3)
    query = build_query(day.isoformat(), day.isoformat(), max_days=90, max_ids=1000)
    assert (await manager.analytics(query)).tier == "source"
    with psycopg.connect(manager.settings.database_dsn) as conn:
        row = conn.execute(
            "SELECT aggregates, row_count, requests FROM litemaas_cache.daily_usage WHERE day = %s", (day,)
        ).fetchone()
        (source_requests,) = conn.execute(
            'SELECT sum(api_requests) FROM "LiteLLM_DailyUserSpend" WHERE date = %s', (day.isoformat(),)
        ).fetchone() or (None,)
    assert row is not None
    header = read_header(row[0])
    assert (header.day, header.is_complete, header.version) == (day, True, 1)
    columns = decode_columns(row[0])
    assert (columns.height, columns["requests"].sum()) == (row[1], row[2])
    assert row[2] == source_requests > 0
    client = Redis.from_url(manager.settings.redis_dsn)
    try:
        assert await client.get(manager.keys.day(day)) == row[0]
    finally:
        await client.aclose()
    # and a read from PostgreSQL alone (Redis entry gone) backfills Redis with those same bytes
    await manager.redis.delete_all()
    await manager.redis.flush_stats()
    fetch = await manager.get_days([day])
    assert (fetch.from_redis, fetch.from_postgres, fetch.from_source) == (0, 1, 0)
    assert fetch.days[day].payload == row[0]
    client = Redis.from_url(manager.settings.redis_dsn)
    try:
        assert await client.get(manager.keys.day(day)) == row[0]
    finally:
        await client.aclose()
