"""A generic cache of range results in Redis: computed once per key across coroutines (single flight) and across
processes (a lease lock whose waiters poll for the result, and take the lock over if its holder gave up).

A result entry carries the version of every day it was computed from; it is served only while those versions are
current (see redis_tier.store), so an invalidation makes it unreadable at once. The bodies this process read from
Redis are also kept in its memory (local_results.py), served under the same check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .codec import Body
from .dates import DateRange
from .local_results import HeldResult, LocalResults
from .redis_tier import RedisTier
from .redis_tier.store import StoredResult
from .settings import Settings
from .stats import Counters
from .vocabulary import ContentEncoding, CounterName, Tier


@dataclass(frozen=True)
class Answer:
    """A result (as a Body: decoded only if a caller asks for its value), the tier that answered it, and the day
    versions it was computed from."""

    body: Body
    tier: Tier
    keys_written: int = 0
    versions: dict[dt.date, int] = field(default_factory=dict)

    @property
    def value(self) -> Any:
        return self.body.value()


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
    counted: bool = True
    """False for a lookup made on behalf of another job (the full list a breakdown page is cut from): the client's
    request, and its hit or miss, are counted once, on the job it asked for."""
    derived: bool = False
    """True when the computation only cuts another cached result (a breakdown page): not counted as one."""


class ResultCache:
    def __init__(self, settings: Settings, redis: RedisTier, counters: Counters) -> None:
        self._settings = settings
        self._redis = redis
        self._counters = counters
        self._inflight: dict[str, asyncio.Future[Answer]] = {}
        self._local = LocalResults(settings.local_results_mib * 1024 * 1024)

    async def get(self, job: ResultJob, encoding: ContentEncoding = "zstd") -> Answer:
        """The job's result, from this process's copy of its Redis entry, from Redis (its stored `encoding`) or
        computed; one computation per key at a time in this process."""
        held = await self._held(job, encoding)
        if held is not None:
            return held
        if job.key in self._inflight:
            return await asyncio.shield(self._inflight[job.key])
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[job.key] = future
        try:
            answer = await self._through_redis(job, encoding)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[job.key]

    async def _through_redis(self, job: ResultJob, encoding: ContentEncoding) -> Answer:
        days = list(job.covered)
        redis = self._redis

        def count(counter: CounterName) -> None:
            self._count(job, counter)

        def hit(found: StoredResult) -> Answer:
            count("result:redis:hit")
            if self._local.enabled:
                held = HeldResult(found.vector, found.body.encoded(encoding))
                self._local.put(job.key, encoding, held, found.ttl_seconds)
            return Answer(found.body, "redis", versions=dict(zip(days, found.vector, strict=True)))

        count("requests")
        found = await redis.get_result(job.key, days, encoding)
        if found is not None:
            answer = hit(found)
            await redis.maybe_flush_stats()
            return answer
        if redis.enabled:
            count("result:redis:miss")
        token = await redis.try_lock(job.key, self._settings.stampede_lock_seconds)
        if redis.available:
            self._counters.add("lock:acquired" if token is not None else "lock:contended")
        if token is None and redis.available:
            waited, token = await self._wait_for_result(job.key, days, encoding)
            if waited is not None:
                return hit(waited)
        try:
            if token is not None:
                # Check again under the lock: the previous holder may have stored the result between our miss and
                # our lock, and computing it a second time is what the lock is there to prevent.
                stored = await redis.get_result(job.key, days, encoding)
                if stored is not None:
                    return hit(stored)
            return await self._compute(job)
        finally:
            if token is not None:
                await redis.unlock(job.key, token)
            await redis.maybe_flush_stats()

    def _count(self, job: ResultJob, counter: CounterName) -> None:
        if job.counted:
            self._counters.add(counter)

    async def _held(self, job: ResultJob, encoding: ContentEncoding) -> Answer | None:
        """The body this process holds for the job, if its versions are still the mirror's (asked of Redis now)."""
        held = self._local.get(job.key, encoding)
        if held is None:
            return None
        days = tuple(job.covered)
        if not await self._redis.still_current(days, held.vector):
            self._local.drop(job.key, encoding)
            return None
        self._count(job, "requests")
        self._count(job, "result:memory:hit")
        await self._redis.maybe_flush_stats()
        body = Body(encoded={encoding: held.body})
        return Answer(body, "memory", versions=dict(zip(days, held.vector, strict=True)))

    async def _wait_for_result(
        self, key: str, days: list[dt.date], encoding: ContentEncoding
    ) -> tuple[StoredResult | None, str | None]:
        """Another process holds the lock: poll for its result for a bounded time.

        Returns (result, None) when it appears, (None, token) when the lock could be taken over because the holder
        finished without a readable result (an invalidation overtook it) or its lease ran out, else (None, None).
        """
        deadline = time.monotonic() + self._settings.stampede_wait_seconds
        delay = 0.02
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            found = await self._redis.get_result(key, days, encoding)
            if found is not None:
                return found, None
            if not self._redis.available:
                break
            token = await self._redis.try_lock(key, self._settings.stampede_lock_seconds)
            if token is not None:
                return None, token
        return None, None

    async def _compute(self, job: ResultJob) -> Answer:
        if not job.derived:
            self._counters.add("computations")
        computed = await job.compute()
        if computed.tier == "source":
            self._counters.add("requests:source")
        written = computed.keys_written
        body = Body.of(computed.value)
        if await self._redis.put_result(job.key, computed.versions, body, job.ttl):
            written += 1
        return Answer(body, computed.tier, written, computed.versions)
