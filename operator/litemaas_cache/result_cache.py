"""A generic cache of range results in Redis: computed once per key across coroutines (single flight) and across
processes (a lease lock whose waiters poll for the result, and take the lock over if its holder gave up).

A result entry carries the version of every day it was computed from; it is served only while those versions are
current (see redis_tier.store), so an invalidation makes it unreadable at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .dates import DateRange
from .redis_tier import RedisTier
from .settings import Settings
from .stats import Counters
from .vocabulary import Tier


@dataclass(frozen=True)
class Answer:
    """A result and the tier that answered it."""

    value: Any
    tier: Tier
    keys_written: int = 0


@dataclass(frozen=True)
class Computed:
    """A freshly computed result: its value, the day versions it was computed from, and where the days came from."""

    value: Any
    versions: dict[dt.date, int]
    tier: Tier
    keys_written: int


@dataclass(frozen=True)
class ResultJob:
    """One range result to read or compute: its key and TTL, the days it reads, and how to compute it."""

    key: str
    ttl: int
    covered: DateRange
    compute: Callable[[], Awaitable[Computed]]


class ResultCache:
    def __init__(self, settings: Settings, redis: RedisTier, counters: Counters) -> None:
        self._settings = settings
        self._redis = redis
        self._counters = counters
        self._inflight: dict[str, asyncio.Future[Answer]] = {}

    async def get(self, job: ResultJob) -> Answer:
        """The job's result, from Redis or computed; one computation per key at a time in this process."""
        if job.key in self._inflight:
            return await asyncio.shield(self._inflight[job.key])
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[job.key] = future
        try:
            answer = await self._through_redis(job)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[job.key]

    async def _through_redis(self, job: ResultJob) -> Answer:
        self._counters.add("requests")
        days = list(job.covered)
        redis = self._redis
        hit = await redis.get_result(job.key, days)
        if hit is not None:
            self._counters.add("result:redis:hit")
            await redis.maybe_flush_stats()
            return Answer(hit, "redis")
        if redis.enabled:
            self._counters.add("result:redis:miss")
        token = await redis.try_lock(job.key, self._settings.stampede_lock_seconds)
        if redis.available:
            self._counters.add("lock:acquired" if token is not None else "lock:contended")
        if token is None and redis.available:
            waited, token = await self._wait_for_result(job.key, days)
            if waited is not None:
                self._counters.add("result:redis:hit")
                return Answer(waited, "redis")
        try:
            if token is not None:
                # Check again under the lock: the previous holder may have stored the result between our miss and
                # our lock, and computing it a second time is what the lock is there to prevent.
                stored = await redis.get_result(job.key, days)
                if stored is not None:
                    self._counters.add("result:redis:hit")
                    return Answer(stored, "redis")
            return await self._compute(job)
        finally:
            if token is not None:
                await redis.unlock(job.key, token)
            await redis.maybe_flush_stats()

    async def _wait_for_result(self, key: str, days: list[dt.date]) -> tuple[Any | None, str | None]:
        """Another process holds the lock: poll for its result for a bounded time.

        Returns (result, None) when it appears, (None, token) when the lock could be taken over because the holder
        finished without a readable result (an invalidation overtook it) or its lease ran out, else (None, None).
        """
        deadline = time.monotonic() + self._settings.stampede_wait_seconds
        delay = 0.02
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            value = await self._redis.get_result(key, days)
            if value is not None:
                return value, None
            if not self._redis.available:
                break
            token = await self._redis.try_lock(key, self._settings.stampede_lock_seconds)
            if token is not None:
                return None, token
        return None, None

    async def _compute(self, job: ResultJob) -> Answer:
        self._counters.add("computations")
        computed = await job.compute()
        if computed.tier == "source":
            self._counters.add("requests:source")
        written = computed.keys_written
        if await self._redis.put_result(job.key, computed.versions, computed.value, job.ttl):
            written += 1
        return Answer(computed.value, computed.tier, written)
