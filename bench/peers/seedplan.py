"""The seed plan's design: exact-key cache-aside in Redis in front of a per-day PostgreSQL cache table.

- Redis: the document under `<prefix>analytics:<sha256 of the exact request>`, with a TTL; a hit is a GET.
- PostgreSQL: `<schema>.daily_usage`, the aggregates of each cached day at (day, user, key, model, provider) grain,
  and `<schema>.cached_days`, the days it holds. A miss fills the covered days it lacks from LiteLLM's table (one
  INSERT ... SELECT ... GROUP BY per day, server side), then reads the covered days' aggregates with the request's
  filters and assembles the document (compute.py), and SETs it.
- Breakdowns would have no result cache (recomputed from the per-day table each time); the workloads ask for the
  analytics document only, so that part of the design is not exercised here.
- Invalidation of a day: SCAN MATCH `<prefix>analytics:*` + DEL (an exact key does not say which days it covers, so
  every result goes), then DELETE the day's rows and its cached_days entry.
- No stampede protection: concurrent misses of a result each compute it. Filling a day takes a transaction-scoped
  advisory lock of that day and checks again under it (concurrent INSERTs of the same cells could deadlock, and a
  competent implementation would not fill a day twice), so each day is read from LiteLLM's table once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from .compute import SOURCE_COLUMNS, ArrowSession, Document, FilterColumns, Request, from_rows, sql_filters
from .peer import PeerConfig, Reply

_TABLES = """
CREATE TABLE IF NOT EXISTS {schema}.daily_usage (
    day date NOT NULL, "user" text NOT NULL, key text NOT NULL, model text NOT NULL, llm_provider text NOT NULL,
    prompt bigint NOT NULL, completion bigint NOT NULL, requests bigint NOT NULL, successful bigint NOT NULL,
    failed bigint NOT NULL, spend double precision NOT NULL,
    PRIMARY KEY (day, "user", key, model, llm_provider)
);
CREATE TABLE IF NOT EXISTS {schema}.cached_days (day date PRIMARY KEY, cached_at timestamptz NOT NULL DEFAULT now());
"""

# One day of LiteLLM's rows, aggregated at the cell grain by PostgreSQL (the provider as LiteLLM has it, '' if none).
_FILL = """
INSERT INTO {schema}.daily_usage
SELECT s.date::date, {user}, s.api_key, {model}, coalesce(s.custom_llm_provider, ''),
       sum(s.prompt_tokens), sum(s.completion_tokens), sum(s.api_requests),
       sum(s.successful_requests), sum(s.failed_requests), sum(s.spend)
FROM "LiteLLM_DailyUserSpend" s LEFT JOIN api_keys k ON k.key_hash = s.api_key
WHERE s.date = {day}
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT DO NOTHING
"""

# The cached days' aggregates, aliased like the source rows so compute.py's filters and folding apply unchanged.
_READ = """
SELECT s.day, s."user", s.key, s.model, nullif(s.llm_provider, '') AS llm_provider,
       s.prompt, s.completion, s.requests, s.successful, s.failed, s.spend
FROM {schema}.daily_usage s
WHERE s.day BETWEEN {start} AND {end}{filters}
"""


POOL_SIZE = 10  # PostgreSQL connections per process, as an application's pool
CACHE_COLUMNS = FilterColumns(user=sql.SQL('s."user"'), model=sql.SQL("s.model"), key=sql.SQL("s.key"))


class SeedPlan:
    def __init__(self, config: PeerConfig, pool: AsyncConnectionPool[Any], arrow: ArrowSession, redis: Redis) -> None:
        self._config = config
        self._schema = sql.Identifier(config.schema)
        self._pool = pool
        self._arrow = arrow
        self._redis = redis
        self.computations = 0

    def key(self, request: Request) -> str:
        digest = hashlib.sha256(request.identity().encode()).hexdigest()
        return f"{self._config.prefix}analytics:{digest}"

    async def answer(self, request: Request) -> Reply:
        key = self.key(request)
        stored = await self._redis.get(key)
        if stored is not None:
            return Reply(orjson.loads(stored), hit=True)
        document = await self.compute(request)
        await self._redis.set(key, orjson.dumps(document), ex=self._config.ttl)
        return Reply(document, hit=False)

    async def compute(self, request: Request) -> Document:
        self.computations += 1
        await self._fill(request)
        query = request.query()
        async with self._pool.connection() as conn:
            filters = await sql_filters(conn, query, CACHE_COLUMNS)
            statement = sql.SQL(_READ).format(
                schema=self._schema, start=request.covered.start, end=request.covered.end, filters=filters
            )
            rows = await self._arrow.frame(statement.as_string(None))
            return await from_rows(conn, query, rows)

    async def _fill(self, request: Request) -> None:
        """Cache the covered days the table lacks, each from LiteLLM's table in one statement."""
        covered = request.covered
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT day FROM {}.cached_days WHERE day BETWEEN %s AND %s").format(self._schema),
                (covered.start, covered.end),
            )
            cached = {row[0] for row in await cur.fetchall()}
        for day in covered:
            if day in cached:
                continue
            async with self._pool.connection() as conn, conn.transaction():
                # One filler per day at a time (concurrent INSERTs of the same cells could deadlock), and a day a
                # concurrent filler has just cached is not filled again.
                await conn.execute(
                    b"SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (self._config.schema, day.toordinal())
                )
                cur = await conn.execute(
                    sql.SQL("SELECT 1 FROM {}.cached_days WHERE day = %s").format(self._schema), (day,)
                )
                if await cur.fetchone() is not None:
                    continue
                fill = sql.SQL(_FILL).format(
                    schema=self._schema, user=SOURCE_COLUMNS.user, model=SOURCE_COLUMNS.model, day=day.isoformat()
                )
                await conn.execute(fill)
                await conn.execute(sql.SQL("INSERT INTO {}.cached_days (day) VALUES (%s)").format(self._schema), (day,))

    async def invalidate(self, day: dt.date) -> None:
        """Pattern delete of every result, then the day's rows."""
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=f"{self._config.prefix}analytics:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self._redis.delete(*batch)
                batch.clear()
        if batch:
            await self._redis.delete(*batch)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(sql.SQL("DELETE FROM {}.daily_usage WHERE day = %s").format(self._schema), (day,))
            await conn.execute(sql.SQL("DELETE FROM {}.cached_days WHERE day = %s").format(self._schema), (day,))


async def create_schema(dsn: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL(_TABLES).format(schema=sql.Identifier(schema)))


async def drop_schema(dsn: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@asynccontextmanager
async def open_peer(config: PeerConfig) -> AsyncIterator[SeedPlan]:
    arrow = ArrowSession(config.dsn)
    redis = Redis.from_url(config.redis_url)
    try:
        async with AsyncConnectionPool(
            config.dsn, min_size=1, max_size=POOL_SIZE, kwargs={"autocommit": True}, open=False
        ) as pool:
            yield SeedPlan(config, pool, arrow, redis)
    finally:
        arrow.close()
        await redis.aclose()
