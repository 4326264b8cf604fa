"""This project, through its library: a CacheManager per process (both tiers, days held in memory at the default
size), answering with `manager.analytics` and invalidating with `manager.invalidate`, as the HTTP API does."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litemaas_cache.dates import DateRange
from litemaas_cache.manager import CacheManager
from litemaas_cache.settings import Settings, load_settings

from .compute import MAX_RANGE_DAYS, Request
from .peer import PeerConfig, Reply


def settings(config: PeerConfig) -> Settings:
    return load_settings(
        database_url=config.dsn,
        litellm_database_url=config.dsn,
        redis_url=config.redis_url,
        redis_key_prefix=config.prefix,
        max_range_days=MAX_RANGE_DAYS,
        ttl_analytics=config.ttl,
    )


class Project:
    def __init__(self, manager: CacheManager) -> None:
        self.manager = manager

    @property
    def computations(self) -> int:
        return self.manager.counters.local.get("computations", 0)

    @property
    def result_hits(self) -> int:
        """Results served as stored: from Redis, or from this process's copy of a Redis entry."""
        counted = self.manager.counters.local
        return counted.get("result:redis:hit", 0) + counted.get("result:memory:hit", 0)

    async def answer(self, request: Request) -> Reply:
        hits = self.result_hits
        answer = await self.manager.analytics(request.query())
        return Reply(answer.value, hit=self.result_hits > hits)

    async def invalidate(self, day: dt.date) -> None:
        report = await self.manager.invalidate(DateRange(day, day))
        if not report.complete:
            raise RuntimeError(f"invalidation incomplete: {report.as_dict()}")

    async def forget(self, days: DateRange) -> None:
        """Purge every tier of `days` (the runner starts the project as cold as the other peers)."""
        report = await self.manager.invalidate(days)
        if not report.complete:
            raise RuntimeError(f"invalidation incomplete: {report.as_dict()}")


@asynccontextmanager
async def open_peer(config: PeerConfig) -> AsyncIterator[Project]:
    async with CacheManager.open(settings(config)) as manager:
        yield Project(manager)
