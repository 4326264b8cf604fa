"""Concurrency on real Redis (standalone and cluster) and PostgreSQL: the stampede lock computes a cold key once
across separate managers, and a randomized interleaving of source updates, invalidations, warms and reads
always converges to what a fresh computation from the source gives."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
import pytest

from litemaas_cache.analytics import Page, analytics_document, breakdown_rows, paginate
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.engine import RangeAccumulator
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.frames import empty_frame, encode_day
from litemaas_cache.manager import Answer, CacheManager
from litemaas_cache.source import SourceReader, coded_usage, dimensions_of, load_key_owners
from litemaas_cache.vocabulary import Dimension

OpenManager = Callable[..., Awaitable[CacheManager]]
SOURCE = '"LiteLLM_DailyUserSpend"'
T = TypeVar("T")


def _query(days: DateRange, **filters: list[str]) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000, **filters)


async def _within(seconds: float, what: str, work: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        pytest.fail(f"waited {seconds}s for {what}")


@dataclass(frozen=True)
class Request:
    """One analytics document or one breakdown page."""

    query: AnalyticsQuery
    dimension: Dimension | None = None
    page: Page = field(default_factory=Page)

    async def ask(self, manager: CacheManager) -> Answer:
        if self.dimension is None:
            return await manager.analytics(self.query)
        return await manager.breakdown(self.dimension, self.query, self.page)

    async def oracle(self, manager: CacheManager) -> Any:
        """The answer computed straight from the source by the engine, bypassing every cache tier."""
        current = self.query.range
        previous = current.previous() if self.dimension is None else None
        days = list(DateRange(current.previous().start, current.end))
        reader = SourceReader(manager.settings.litellm_dsn)
        try:
            rows = await reader.fetch(days)
        finally:
            reader.close()
        async with manager.db.cache_connection() as conn:
            dims = dimensions_of(rows, await load_key_owners(conn))
            codes = await manager.dictionary.register(conn, dims.values())
        manager.dictionary.adopt((code, dim, value) for dim, found in codes.items() for value, code in found.items())
        by_day = coded_usage(rows, dims, codes).partition_by("date", as_dict=True, include_key=False)
        frames = [encode_day(d, by_day.get((d.isoformat(),), empty_frame()), is_complete=True, version=0) for d in days]
        accumulator = RangeAccumulator(current, previous, (await manager.service.code_filter(self.query.filters))[0])
        accumulator.add(frames)
        summary = accumulator.summary(manager.dictionary)
        labels = await manager.service.labels(summary, self.dimension, self.query.filters)
        if self.dimension is None:
            return analytics_document(current, summary, labels, manager.service.trend_rule)
        return paginate(self.dimension, breakdown_rows(self.dimension, summary, labels), self.page)


async def test_stampede_computes_a_cold_key_once_across_managers(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    managers = [await open_manager(fresh_dsn, **redis_target) for _ in range(4)]
    today = utc_today()
    query = _query(DateRange(today - dt.timedelta(days=29), today))
    answers = await _within(
        20, "20 concurrent requests", asyncio.gather(*(managers[i % len(managers)].analytics(query) for i in range(20)))
    )

    assert len({repr(a.value) for a in answers}) == 1, "every request got the same document"
    assert sum(m.counters.local.get("computations", 0) for m in managers) == 1
    for m in managers:
        assert m.redis is not None
        await m.redis.flush_stats()
    stats = await managers[0].stats()
    assert stats["computations"] == 1
    assert stats["requests"] == len(managers), "one request per manager reached the tiers; the rest joined it"
    assert stats["postgres"]["daysComputedFromSource"] == 60, "every day computed exactly once"
    assert {a.tier for a in answers} >= {"source", "redis"}

    # the same again for a breakdown, with the managers started at slightly different moments
    by_user = _query(DateRange(today - dt.timedelta(days=50), today - dt.timedelta(days=31)))

    async def late(i: int) -> Answer:
        await asyncio.sleep(0.003 * i)
        return await managers[i % len(managers)].breakdown("user", by_user, Page())

    before = sum(m.counters.local.get("computations", 0) for m in managers)
    answers = await _within(20, "20 staggered requests", asyncio.gather(*(late(i) for i in range(20))))
    assert len({repr(a.value) for a in answers}) == 1
    assert sum(m.counters.local.get("computations", 0) for m in managers) == before + 1


async def test_random_updates_invalidations_warms_and_reads_converge(
    fresh_dsn: str, redis_target: dict[str, object], open_manager: OpenManager
) -> None:
    seed = 20240611
    managers = [await open_manager(fresh_dsn, **redis_target) for _ in range(3)]
    today = utc_today()
    window = DateRange(today - dt.timedelta(days=29), today)
    days = list(window)

    def span(a: int, b: int) -> DateRange:
        return DateRange(window.start + dt.timedelta(days=a), window.start + dt.timedelta(days=b))

    requests = [
        Request(_query(window)),
        Request(_query(span(5, 12), model_ids=["gpt-4o"])),
        Request(_query(span(20, 29), provider_ids=["openai", "anthropic"])),
        Request(_query(span(16, 29)), "user", Page(1, 10)),
        Request(_query(span(0, 9)), "model", Page(1, 50, "totalCost")),
        Request(_query(span(10, 10))),
    ]
    deadline = time.monotonic() + 6.0
    updates: list[tuple[int, dt.date, int]] = []  # (update number, day, requests added)
    invalidated: set[int] = set()
    reads = 0

    async def updater(worker: int) -> None:
        rng = random.Random(seed + worker)
        async with await psycopg.AsyncConnection.connect(fresh_dsn, autocommit=True) as conn:
            for _ in range(15):
                if time.monotonic() > deadline:
                    return
                day, added = rng.choice(days), rng.randint(1, 500)
                cur = await conn.execute(
                    f"UPDATE {SOURCE} SET api_requests = api_requests + %s, spend = spend + %s WHERE id = "
                    f"(SELECT id FROM {SOURCE} WHERE date = %s ORDER BY md5(id || %s) LIMIT 1)",
                    (added, added / 1000, day.isoformat(), str(rng.random())),
                )
                if cur.rowcount == 0:
                    continue
                number = len(updates)
                updates.append((number, day, added))
                await asyncio.sleep(rng.uniform(0, 0.08))  # readers may cache the old numbers meanwhile
                lo = max(window.start, day - dt.timedelta(days=rng.randint(0, 2)))
                report = await rng.choice(managers).invalidate(DateRange(lo, day))
                assert report.complete, report.as_dict()
                invalidated.add(number)

    async def reader(worker: int) -> None:
        nonlocal reads
        rng = random.Random(seed + 100 + worker)
        while time.monotonic() < deadline and reads < 600:
            await rng.choice(requests).ask(rng.choice(managers))
            reads += 1
            if rng.random() < 0.2:
                await asyncio.sleep(rng.uniform(0, 0.02))

    async def warmer() -> None:
        rng = random.Random(seed + 200)
        while time.monotonic() < deadline:
            a = rng.randint(0, 25)
            report = await rng.choice(managers).warm([span(a, min(29, a + rng.randint(0, 6)))], breakdowns=["model"])
            assert report.redis_available
            await asyncio.sleep(rng.uniform(0.05, 0.2))

    workers = asyncio.gather(*(updater(i) for i in range(2)), *(reader(i) for i in range(5)), warmer())
    await _within(30, "the updaters, readers and warmer to finish", workers)

    assert len(updates) >= 10, f"only {len(updates)} source updates ran"
    assert reads >= 50, f"only {reads} reads ran"
    assert invalidated == {n for n, _, _ in updates}, "every source update was followed by its invalidation"
    for request in requests:
        expected = await request.oracle(managers[0])
        for m in managers:
            for attempt in ("first", "second"):
                answer = await request.ask(m)
                assert answer.value == expected, f"{request} via manager {managers.index(m)} ({attempt} read)"
    # and the totals agree with a plain SQL sum
    async with await psycopg.AsyncConnection.connect(fresh_dsn) as conn:
        cur = await conn.execute(
            f"SELECT sum(api_requests) FROM {SOURCE} WHERE date BETWEEN %s AND %s".encode(),
            (window.start.isoformat(), window.end.isoformat()),
        )
        row = await cur.fetchone()
    assert row is not None
    assert (await managers[1].analytics(requests[0].query)).value["totalRequests"] == int(row[0])
