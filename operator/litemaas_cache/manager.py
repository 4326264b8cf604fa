"""The two-tier cache manager: Redis in front of the PostgreSQL daily cache, the LiteLLM table at the bottom.

Reads fall through Redis -> PostgreSQL -> source and fill the tiers on the way back. Redis failures only
make reads slower. Invalidation bumps per-day versions (see redis_tier.store) so nothing stale is served.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from .aggregates import DayUsage
from .analytics import Dimension, Page, compute_analytics, compute_breakdown, paginate
from .codec import Codec
from .daily_cache import FreshnessPolicy, PostgresDayCache
from .dates import DateRange
from .db import Database
from .filters import AnalyticsQuery, UsageFilters
from .redis_tier.keys import KeySpace, ResultKind
from .redis_tier.store import RedisStore
from .settings import Settings
from .source import load_users

log = logging.getLogger(__name__)

Tier = Literal["redis", "postgres", "source"]
TIERS: tuple[Tier, ...] = ("redis", "postgres", "source")
InvalidationTier = Literal["redis", "postgres"]


@dataclass
class DayFetch:
    days: dict[dt.date, DayUsage]
    from_redis: int = 0
    from_postgres: int = 0
    from_source: int = 0
    redis_written: int = 0

    @property
    def tier(self) -> Tier:
        return "source" if self.from_source else "postgres" if self.from_postgres else "redis"


@dataclass(frozen=True)
class Answer:
    """A result and the tier that answered it."""

    value: Any
    tier: Tier
    keys_written: int = 0


@dataclass(frozen=True)
class ResultJob:
    """One range result to read or compute: its key and TTL, the days it reads, and how to compute it."""

    key: str
    ttl: int
    covered: DateRange
    compute: Callable[[DayFetch], Awaitable[Any]]


@dataclass
class WarmReport:
    ranges: list[str] = field(default_factory=list)
    keys_written: int = 0
    days_warmed: int = 0
    results_warmed: int = 0
    duration_seconds: float = 0.0
    redis_available: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "ranges": self.ranges,
            "keysWritten": self.keys_written,
            "daysWarmed": self.days_warmed,
            "resultsWarmed": self.results_warmed,
            "durationSeconds": round(self.duration_seconds, 3),
            "redisAvailable": self.redis_available,
        }


@dataclass
class InvalidationReport:
    range: DateRange
    tiers: tuple[InvalidationTier, ...]
    days_purged: int = 0
    versions_bumped: int = 0
    keys_deleted: int = 0
    redis_status: Literal["done", "unavailable", "disabled", "skipped"] = "skipped"
    duration_seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every requested tier was purged (Redis counts when disabled)."""
        return self.redis_status in ("done", "disabled", "skipped")

    def as_dict(self) -> dict[str, Any]:
        return {
            "startDate": self.range.start.isoformat(),
            "endDate": self.range.end.isoformat(),
            "tiers": list(self.tiers),
            "postgres": {"daysPurged": self.days_purged, "versionsBumped": self.versions_bumped},
            "redis": {"keysDeleted": self.keys_deleted, "status": self.redis_status},
            "complete": self.complete,
            "durationSeconds": round(self.duration_seconds, 3),
        }


class CacheManager:
    """Analytics, breakdowns, warming, invalidation and statistics over both tiers."""

    def __init__(self, settings: Settings, db: Database, redis: RedisStore | None) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis
        self.keys = KeySpace(settings.redis_key_prefix)
        self.codec = Codec(settings.compress_threshold)
        self.postgres = PostgresDayCache(
            db,
            FreshnessPolicy(
                current_day_ttl=dt.timedelta(seconds=settings.ttl_current_day),
                yesterday_grace=dt.timedelta(seconds=settings.yesterday_grace_seconds),
            ),
            self.codec,
        )
        self.local_counters: dict[str, int] = {}
        self._inflight: dict[str, asyncio.Future[Answer]] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[CacheManager]:
        """Open the PostgreSQL pools and (lazily) Redis; close both on exit."""
        db = Database(settings.database_dsn, settings.litellm_dsn, max_size=settings.db_pool_max_size)
        await db.open()
        redis: RedisStore | None = None
        try:
            manager = cls(settings, db, None)
            if settings.redis_enabled:
                redis = RedisStore(
                    settings.redis_dsn,
                    manager.keys,
                    manager.codec,
                    manager.postgres.all_versions,
                    cluster=settings.redis_cluster,
                    timeout=settings.redis_socket_timeout,
                    breaker_failures=settings.redis_breaker_failures,
                    breaker_reset_seconds=settings.redis_breaker_reset_seconds,
                    resync_seconds=settings.version_resync_seconds,
                )
                manager.redis = redis
            yield manager
        finally:
            if redis is not None:
                await redis.close()
            await db.close()

    # -- counters --------------------------------------------------------------------------------------
    def _count(self, name: str, amount: int = 1) -> None:
        if amount <= 0:
            return
        self.local_counters[name] = self.local_counters.get(name, 0) + amount
        if self.redis is not None:
            self.redis.count(name, amount)

    # -- day aggregates --------------------------------------------------------------------------------
    def day_ttl(self, usage: DayUsage) -> int:
        if self.postgres.policy.is_current(usage.day) or not usage.is_complete:
            return self.settings.ttl_current_day
        return self.settings.ttl_historical_day

    async def get_days(self, days: Sequence[dt.date]) -> DayFetch:
        """Day aggregates through Redis -> PostgreSQL -> source, backfilling the tiers above."""
        wanted = sorted(set(days))
        fetch = DayFetch(days={})
        if self.redis is not None:
            fetch.days.update(await self.redis.get_days(wanted))
            fetch.from_redis = len(fetch.days)
            self._count("day:redis:hit", fetch.from_redis)
            self._count("day:redis:miss", len(wanted) - fetch.from_redis)
        missing = [d for d in wanted if d not in fetch.days]
        if missing:
            cached = await self.postgres.get(missing)
            still_missing = [d for d in missing if d not in cached]
            computed: dict[dt.date, DayUsage] = {}
            if still_missing:
                computed, fetch.from_source = await self.postgres.fill(still_missing)
            fetch.from_postgres = len(cached) + len(still_missing) - fetch.from_source
            self._count("day:postgres:hit", fetch.from_postgres)
            self._count("day:postgres:miss", fetch.from_source)
            self._count("day:source:computed", fetch.from_source)
            fresh = {**cached, **computed}
            fetch.days.update(fresh)
            if self.redis is not None:
                fetch.redis_written = await self.redis.put_days(fresh.values(), self.day_ttl)
        return fetch

    # -- range results ---------------------------------------------------------------------------------
    def _result_ttl(self, kind: ResultKind, days: DateRange) -> int:
        ttl = self.settings.ttl_analytics if kind == "analytics" else self.settings.ttl_breakdown
        if self.postgres.policy.is_current(days.end):
            ttl = min(ttl, self.settings.ttl_current_day)
        return ttl

    def _job(
        self, kind: ResultKind, query: AnalyticsQuery, covered: DateRange, compute: Callable[[DayFetch], Awaitable[Any]]
    ) -> ResultJob:
        return ResultJob(
            self.keys.result(kind, query.range, query.filters.fingerprint()),
            self._result_ttl(kind, query.range),
            covered,
            compute,
        )

    async def _cached_result(self, job: ResultJob) -> Answer:
        """One range result through the tiers, computed once per key across coroutines and processes."""
        if job.key in self._inflight:
            return await asyncio.shield(self._inflight[job.key])
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[job.key] = future
        try:
            answer = await self._result_through_tiers(job)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[job.key]

    async def _result_through_tiers(self, job: ResultJob) -> Answer:
        self._count("requests")
        days = list(job.covered)
        redis = self.redis
        if redis is None:
            return await self._compute_result(job)
        hit = await redis.get_result(job.key, days)
        if hit is not None:
            self._count("result:redis:hit")
            await redis.maybe_flush_stats()
            return Answer(hit, "redis")
        self._count("result:redis:miss")
        token = await redis.try_lock(job.key, self.settings.stampede_lock_seconds)
        if token is None and redis.available:
            waited, token = await self._wait_for_result(job.key, days)
            if waited is not None:
                self._count("result:redis:hit")
                return Answer(waited, "redis")
        try:
            if token is not None:
                # Check again under the lock: the previous holder may have stored the result between our miss and
                # our lock, and computing it a second time is what the lock is there to prevent.
                stored = await redis.get_result(job.key, days)
                if stored is not None:
                    self._count("result:redis:hit")
                    return Answer(stored, "redis")
            return await self._compute_result(job)
        finally:
            if token is not None:
                await redis.unlock(job.key, token)
            await redis.maybe_flush_stats()

    async def _wait_for_result(self, key: str, days: list[dt.date]) -> tuple[Any | None, str | None]:
        """Another process holds the lock: poll for its result for a bounded time.

        Returns (result, None) when it appears, (None, token) when the lock could be taken over because the holder
        finished without a readable result (an invalidation overtook it) or its lease ran out, else (None, None).
        """
        assert self.redis is not None
        deadline = time.monotonic() + self.settings.stampede_wait_seconds
        delay = 0.02
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            value = await self.redis.get_result(key, days)
            if value is not None:
                return value, None
            if not self.redis.available:
                break
            token = await self.redis.try_lock(key, self.settings.stampede_lock_seconds)
            if token is not None:
                return None, token
        return None, None

    async def _compute_result(self, job: ResultJob) -> Answer:
        self._count("computations")
        fetch = await self.get_days(list(job.covered))
        if fetch.from_source:
            self._count("requests:source")
        value = await job.compute(fetch)
        written = fetch.redis_written
        if self.redis is not None:
            versions = {day: usage.version for day, usage in fetch.days.items()}
            if await self.redis.put_result(job.key, versions, value, job.ttl):
                written += 1
        return Answer(value, fetch.tier, written)

    async def analytics(self, query: AnalyticsQuery) -> Answer:
        """The admin analytics document for a validated query."""
        current, previous = query.range, query.range.previous()

        async def compute(fetch: DayFetch) -> Any:
            users = await load_users(self.db)
            return compute_analytics(
                current,
                query.filters,
                [fetch.days[d] for d in current],
                [fetch.days[d] for d in previous],
                users,
            )

        return await self._cached_result(self._job("analytics", query, DateRange(previous.start, current.end), compute))

    async def breakdown(self, dimension: Dimension, query: AnalyticsQuery, page: Page) -> Answer:
        """One page of a by-user / by-model / by-provider breakdown (the full list is what gets cached)."""

        async def compute(fetch: DayFetch) -> Any:
            users = await load_users(self.db) if dimension == "user" else {}
            return compute_breakdown(dimension, query.filters, [fetch.days[d] for d in query.range], users)

        kind: ResultKind = f"by-{dimension}"  # type: ignore[assignment]
        answer = await self._cached_result(self._job(kind, query, query.range, compute))
        return Answer(paginate(dimension, query.range, answer.value, page), answer.tier, answer.keys_written)

    # -- warming ---------------------------------------------------------------------------------------
    async def warm(
        self,
        ranges: Sequence[DateRange],
        filter_sets: Sequence[UsageFilters] = (),
        breakdowns: Sequence[Dimension] = (),
        progress: Callable[[str], None] | None = None,
    ) -> WarmReport:
        """Fill day aggregates and range results for every range x filter set (x breakdown)."""
        started = time.monotonic()
        report = WarmReport(ranges=[str(r) for r in ranges])
        warmed_days: set[dt.date] = set()
        for days in ranges:
            for filters in filter_sets or [UsageFilters()]:
                query = AnalyticsQuery(start_date=days.start, end_date=days.end, filters=filters)
                answers = [await self.analytics(query)]
                for dimension in breakdowns:
                    answers.append(await self.breakdown(dimension, query, Page()))
                report.keys_written += sum(a.keys_written for a in answers)
                report.results_warmed += len(answers)
                if progress is not None:
                    progress(f"{days} {filters.fingerprint()}: {len(answers)} results")
            warmed_days.update(days)
            warmed_days.update(days.previous())
        report.days_warmed = len(warmed_days)
        report.redis_available = self.redis is not None and self.redis.available
        report.duration_seconds = time.monotonic() - started
        return report

    # -- invalidation ----------------------------------------------------------------------------------
    async def invalidate(
        self, days: DateRange, tiers: Sequence[InvalidationTier] = ("redis", "postgres")
    ) -> InvalidationReport:
        """Purge a date range from the chosen tiers; once `complete`, no tier serves a stale read."""
        started = time.monotonic()
        report = InvalidationReport(range=days, tiers=tuple(sorted(set(tiers))))
        if "postgres" in tiers:
            purge = await self.postgres.purge(days)
            report.days_purged = purge.days_purged
            report.versions_bumped = len(purge.versions)
            versions = purge.versions
        else:
            versions = {}
        if self.redis is None:
            report.redis_status = "disabled"
        elif "redis" in tiers or versions:
            raised = await self.redis.raise_versions(versions) if versions else True
            deleted = await self.redis.purge(days) if "redis" in tiers else 0
            if raised and deleted is not None:
                report.keys_deleted = deleted
                report.redis_status = "done"
            else:
                report.redis_status = "unavailable"
        report.duration_seconds = time.monotonic() - started
        self._count("invalidations")
        return report

    # -- statistics ------------------------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        """Hit/miss counters per tier (shared through Redis when it is up), key count, memory, breaker."""
        shared = await self.redis.read_stats() if self.redis is not None else None
        counters = shared if shared is not None else dict(self.local_counters)
        info = await self.redis.server_info() if self.redis is not None else None

        def rate(hits: int, misses: int) -> float | None:
            return round(100.0 * hits / (hits + misses), 2) if hits + misses else None

        requests = counters.get("requests", 0)
        from_source = counters.get("requests:source", 0)
        result_hits, result_misses = counters.get("result:redis:hit", 0), counters.get("result:redis:miss", 0)
        day_hits, day_misses = counters.get("day:postgres:hit", 0), counters.get("day:postgres:miss", 0)
        return {
            "counterScope": "shared" if shared is not None else "process",
            "hitRate": rate(requests - from_source, from_source),
            "requests": requests,
            "computations": counters.get("computations", 0),
            "redis": {
                "enabled": self.redis is not None,
                "available": self.redis is not None and self.redis.available and info is not None,
                "breaker": self.redis.breaker.state.value if self.redis is not None else "disabled",
                "hits": result_hits,
                "misses": result_misses,
                "hitRate": rate(result_hits, result_misses),
                "dayHits": counters.get("day:redis:hit", 0),
                "dayMisses": counters.get("day:redis:miss", 0),
                "keyCount": info["keyCount"] if info else None,
                "memoryUsedBytes": info["memoryUsedBytes"] if info else None,
            },
            "postgres": {
                "dayHits": day_hits,
                "dayMisses": day_misses,
                "hitRate": rate(day_hits, day_misses),
                "daysComputedFromSource": counters.get("day:source:computed", 0),
            },
            "invalidations": counters.get("invalidations", 0),
        }
