"""The composition root: opens the pools and Redis and wires the cache's parts together.

Read path: service.py (query -> result cache -> day store -> engine). Tiers: redis_tier/ (Redis), daily_cache.py
(PostgreSQL), source.py (LiteLLM's table). Warming and invalidation: maintenance.py. Counters: stats.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .daily_cache import FreshnessPolicy, PostgresDayCache
from .dates import DateRange
from .day_store import TieredDayStore
from .db import Database, SessionLimits
from .dictionary import DimensionDictionary
from .freshness import SourceFreshness
from .maintenance import InvalidationReport, Maintenance, RebuildReport, WarmReport
from .redis_tier import NullRedisStore, RedisStore, RedisTier
from .redis_tier.keys import KeySpace
from .result_cache import Answer, ResultCache
from .service import AnalyticsService
from .settings import Settings
from .source import SourceReader
from .stats import Counters, cache_metrics, stats_document
from .vocabulary import InvalidationTier

__all__ = ["Answer", "CacheManager", "InvalidationReport", "InvalidationTier", "RebuildReport", "WarmReport"]


class CacheManager:
    """Analytics, breakdowns, warming, invalidation and statistics over both tiers."""

    def __init__(self, settings: Settings, db: Database, source: SourceReader, database_identity: str) -> None:
        self.settings = settings
        self.db = db
        self.keys = KeySpace.of_database(settings.redis_key_prefix, database_identity)
        self.dictionary = DimensionDictionary()
        self.postgres = PostgresDayCache(
            db,
            FreshnessPolicy(
                current_day_ttl=dt.timedelta(seconds=settings.ttl_current_day),
                yesterday_grace=dt.timedelta(seconds=settings.yesterday_grace_seconds),
                fingerprinted_days=settings.freshness_days,
            ),
            source,
            self.dictionary,
        )
        self.redis: RedisTier = NullRedisStore(self.keys)
        if settings.redis_enabled:
            self.redis = RedisStore(
                settings.redis_dsn,
                self.keys,
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
        self.freshness = SourceFreshness(
            self.postgres,
            source,
            self.counters,
            lambda days: self.maintenance.invalidate(days),
            read_check_seconds=settings.freshness_check_minutes * 60,
        )
        self.service = AnalyticsService(
            settings, db, self.keys, self.results, self.days, self.dictionary, self.freshness
        )
        self.maintenance = Maintenance(
            self.service, self.postgres, self.redis, self.counters, self.freshness, settings.warm_max_concurrent
        )
        # What callers use, each one part's own method.
        self.analytics = self.service.analytics
        self.breakdown = self.service.breakdown
        self.rows = self.service.rows
        self.filter_options = self.service.filter_options
        self.warm = self.maintenance.warm
        self.invalidate = self.maintenance.invalidate
        self.get_days = self.days.get

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[CacheManager]:
        """Open the PostgreSQL pool and (lazily) Redis; close both on exit."""
        limits = SessionLimits(
            statement_timeout_seconds=settings.db_statement_timeout_seconds,
            lock_timeout_seconds=settings.db_lock_timeout_seconds,
            pool_timeout_seconds=settings.db_pool_timeout_seconds,
            max_waiting=settings.db_pool_max_waiting,
        )
        db = Database(settings.database_dsn, max_size=settings.db_pool_max_size, limits=limits)
        await db.open()
        source = SourceReader(settings.litellm_dsn, limits)
        manager: CacheManager | None = None
        try:
            manager = cls(settings, db, source, await db.identity())
            yield manager
        finally:
            if manager is not None:
                await manager.redis.close()
            source.close()
            await db.close()

    async def stats(self) -> dict[str, Any]:
        return await stats_document(self.redis, self.counters)

    async def cache_metrics(self) -> dict[str, Any]:
        return await cache_metrics(self.redis, self.counters)

    async def rebuild(self, days: DateRange) -> RebuildReport:
        """Purge `days` from every tier and compute them again (in ranges of at most ANALYTICS_MAX_RANGE_DAYS)."""
        return await self.maintenance.rebuild(days, self.settings.max_range_days)
