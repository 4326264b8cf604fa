"""The composition root: opens the pools and Redis and wires the cache's parts together.

Read path: service.py (query -> result cache -> day store -> engine). Tiers: redis_tier/ (Redis), daily_cache.py
(PostgreSQL), source.py (LiteLLM's table). Warming and invalidation: maintenance.py. Counters: stats.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from .analytics import Page
from .codec import Codec
from .daily_cache import FreshnessPolicy, PostgresDayCache
from .dates import DateRange
from .day_store import DayFetch, TieredDayStore
from .db import Database
from .dictionary import DimensionDictionary
from .filters import AnalyticsQuery, UsageFilters
from .maintenance import InvalidationReport, Maintenance, WarmReport
from .redis_tier import NullRedisStore, RedisStore, RedisTier
from .redis_tier.keys import KeySpace
from .result_cache import Answer, ResultCache
from .service import AnalyticsService
from .settings import Settings
from .source import SourceReader
from .stats import Counters, stats_document
from .vocabulary import Dimension, InvalidationTier

__all__ = ["Answer", "CacheManager", "InvalidationReport", "InvalidationTier", "WarmReport"]


class CacheManager:
    """Analytics, breakdowns, warming, invalidation and statistics over both tiers."""

    def __init__(self, settings: Settings, db: Database, source: SourceReader) -> None:
        self.settings = settings
        self.db = db
        self.keys = KeySpace(settings.redis_key_prefix)
        self.dictionary = DimensionDictionary()
        self.postgres = PostgresDayCache(
            db,
            FreshnessPolicy(
                current_day_ttl=dt.timedelta(seconds=settings.ttl_current_day),
                yesterday_grace=dt.timedelta(seconds=settings.yesterday_grace_seconds),
            ),
            source,
            self.dictionary,
        )
        self.redis: RedisTier = NullRedisStore(self.keys)
        if settings.redis_enabled:
            self.redis = RedisStore(
                settings.redis_dsn,
                self.keys,
                Codec(settings.compress_threshold),
                self.postgres.all_versions,
                cluster=settings.redis_cluster,
                timeout=settings.redis_socket_timeout,
                breaker_failures=settings.redis_breaker_failures,
                breaker_reset_seconds=settings.redis_breaker_reset_seconds,
                resync_seconds=settings.version_resync_seconds,
            )
        self.counters = Counters(self.redis)
        self.days = TieredDayStore(settings, self.redis, self.postgres, self.counters)
        self.results = ResultCache(settings, self.redis, self.counters)
        self.service = AnalyticsService(settings, db, self.keys, self.results, self.days, self.dictionary)
        self.maintenance = Maintenance(self.service, self.postgres, self.redis, self.counters)

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[CacheManager]:
        """Open the PostgreSQL pool and (lazily) Redis; close both on exit."""
        db = Database(settings.database_dsn, max_size=settings.db_pool_max_size)
        await db.open()
        source = SourceReader(settings.litellm_dsn)
        manager: CacheManager | None = None
        try:
            manager = cls(settings, db, source)
            yield manager
        finally:
            if manager is not None:
                await manager.redis.close()
            source.close()
            await db.close()

    async def analytics(self, query: AnalyticsQuery) -> Answer:
        return await self.service.analytics(query)

    async def breakdown(self, dimension: Dimension, query: AnalyticsQuery, page: Page) -> Answer:
        return await self.service.breakdown(dimension, query, page)

    async def get_days(self, days: Sequence[dt.date]) -> DayFetch:
        return await self.days.get(days)

    async def warm(
        self,
        ranges: Sequence[DateRange],
        filter_sets: Sequence[UsageFilters] = (),
        breakdowns: Sequence[Dimension] = (),
        progress: Callable[[str], None] | None = None,
    ) -> WarmReport:
        return await self.maintenance.warm(ranges, filter_sets, breakdowns, progress)

    async def invalidate(
        self, days: DateRange, tiers: Sequence[InvalidationTier] = ("redis", "postgres")
    ) -> InvalidationReport:
        return await self.maintenance.invalidate(days, tiers)

    async def stats(self) -> dict[str, Any]:
        return await stats_document(self.redis, self.counters)
