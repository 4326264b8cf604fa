"""Maintenance of the cache: warming ranges ahead of readers, and invalidating date ranges in every tier."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .analytics import Page
from .daily_cache import PostgresDayCache
from .dates import MAX_LONG_RANGE_DAYS, DateRange, check_day
from .filters import AnalyticsQuery, UsageFilters
from .freshness import SourceFreshness
from .redis_tier import RedisTier
from .service import AnalyticsService
from .stats import Counters
from .vocabulary import Dimension, InvalidationTier


@dataclass
class WarmReport:
    ranges: list[str] = field(default_factory=list)
    days_refreshed: list[dt.date] = field(default_factory=list)  # their source rows changed since they were cached
    keys_written: int = 0
    days_warmed: int = 0
    results_warmed: int = 0
    duration_seconds: float = 0.0
    redis_available: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "ranges": self.ranges,
            "daysRefreshed": [d.isoformat() for d in self.days_refreshed],
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


@dataclass
class RebuildReport:
    """A rebuild: the purge of a range from every tier, then its recomputation from the source."""

    invalidation: InvalidationReport
    warm: WarmReport


class Maintenance:
    def __init__(
        self,
        service: AnalyticsService,
        postgres: PostgresDayCache,
        redis: RedisTier,
        counters: Counters,
        freshness: SourceFreshness,
        max_concurrent_warms: int,
    ) -> None:
        self._service = service
        self._postgres = postgres
        self._redis = redis
        self._counters = counters
        self._freshness = freshness
        # However many CacheWarmPolicies fall due together, WARM_MAX_CONCURRENT warms run at once; the rest wait.
        self._warm_slots = asyncio.Semaphore(max_concurrent_warms)
        self.warms_running = 0
        self.warms_waiting = 0

    async def warm(
        self,
        ranges: Sequence[DateRange],
        filter_sets: Sequence[UsageFilters] = (),
        breakdowns: Sequence[Dimension] = (),
        progress: Callable[[str], None] | None = None,
    ) -> WarmReport:
        """Fill day aggregates and range results for every range x filter set (x breakdown)."""
        self.warms_waiting += 1
        try:
            await self._warm_slots.acquire()
        finally:
            self.warms_waiting -= 1
        self.warms_running += 1
        try:
            report = await self._warm(ranges, filter_sets, breakdowns, progress)
        except Exception:
            self._counters.add("warm:failed")
            raise
        else:
            self._counters.add("warm:succeeded")
            self._counters.add("warm:keys-written", report.keys_written)
            self._counters.timed("warm", report.duration_seconds)
            return report
        finally:
            self.warms_running -= 1
            self._warm_slots.release()

    async def _warm(
        self,
        ranges: Sequence[DateRange],
        filter_sets: Sequence[UsageFilters],
        breakdowns: Sequence[Dimension],
        progress: Callable[[str], None] | None,
    ) -> WarmReport:
        started = time.monotonic()
        report = WarmReport(ranges=[str(r) for r in ranges], days_refreshed=await self._freshness.check())
        warmed_days: set[dt.date] = set()
        for days in ranges:
            for filters in filter_sets or [UsageFilters()]:
                query = AnalyticsQuery(start_date=days.start, end_date=days.end, filters=filters)
                answers = [await self._service.analytics(query)]
                for dimension in breakdowns:
                    answers.append(await self._service.breakdown(dimension, query, Page()))
                report.keys_written += sum(a.keys_written for a in answers)
                report.results_warmed += len(answers)
                if progress is not None:
                    progress(f"{days} {filters.fingerprint()}: {len(answers)} results")
            warmed_days.update(days)
            warmed_days.update(days.previous())
        report.days_warmed = len(warmed_days)
        report.redis_available = self._redis.available
        report.duration_seconds = time.monotonic() - started
        return report

    async def rebuild(self, days: DateRange, max_range_days: int) -> RebuildReport:
        """Purge `days` from every tier, then compute their analytics again, in ranges of at most `max_range_days`
        (the recomputation reads the source: the purge left nothing else)."""
        invalidation = await self.invalidate(days)
        warmed = await self.warm(days.split(max_range_days))
        self._counters.add("rebuilds")
        return RebuildReport(invalidation, warmed)

    async def invalidate(
        self, days: DateRange, tiers: Sequence[InvalidationTier] = ("redis", "postgres")
    ) -> InvalidationReport:
        """Purge a date range from the chosen tiers; once `complete`, no tier serves a stale read."""
        days.check_length(MAX_LONG_RANGE_DAYS)
        check_day(days.start, "startDate")
        check_day(days.end, "endDate")
        started = time.monotonic()
        report = InvalidationReport(range=days, tiers=tuple(sorted(set(tiers))))
        versions: dict[dt.date, int] = {}
        if "postgres" in tiers:
            purge = await self._postgres.purge(days)
            report.days_purged = purge.days_purged
            report.versions_bumped = len(purge.versions)
            versions = purge.versions
        if not self._redis.enabled:
            report.redis_status = "disabled"
        elif "redis" in tiers or versions:
            raised = await self._redis.raise_versions(versions) if versions else True
            deleted = await self._redis.purge(days) if "redis" in tiers else 0
            if raised and deleted is not None:
                report.keys_deleted = deleted
                report.redis_status = "done"
            else:
                report.redis_status = "unavailable"
        report.duration_seconds = time.monotonic() - started
        self._counters.add("invalidations")
        self._counters.timed("invalidation", report.duration_seconds)
        return report
