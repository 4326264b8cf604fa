"""The tiered day store: a day's payload through Redis -> PostgreSQL -> LiteLLM's table, filling the tiers above.

A range is read in chunks of a few days, one chunk ahead of its consumer, so that fetching the next days (I/O, and
PostgreSQL's own CPU) overlaps with aggregating the current ones. Payloads are decoded in a worker thread as they
arrive; one that cannot be decoded is a miss of its tier and is read from the tier below.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from .daily_cache import PostgresDayCache
from .frames import DayFrame, UnreadablePayload, decode_columns
from .redis_tier import RedisTier
from .settings import Settings
from .stats import Counters
from .vocabulary import Tier


@dataclass
class DayFetch:
    """Where the days of one read came from, and the version of each (what a result computed from them carries).
    `days` holds the days themselves only for a single read (`get`), not for a streamed range."""

    days: dict[dt.date, DayFrame] = field(default_factory=dict)
    versions: dict[dt.date, int] = field(default_factory=dict)
    from_redis: int = 0
    from_postgres: int = 0
    from_source: int = 0
    redis_written: int = 0

    @property
    def tier(self) -> Tier:
        return "source" if self.from_source else "postgres" if self.from_postgres else "redis"


class TieredDayStore:
    def __init__(self, settings: Settings, redis: RedisTier, postgres: PostgresDayCache, counters: Counters) -> None:
        self._settings = settings
        self._redis = redis
        self._postgres = postgres
        self._counters = counters

    def is_current(self, day: dt.date) -> bool:
        """Still changing (today, or yesterday within the grace period): cached only for a short TTL."""
        return self._postgres.policy.is_current(day)

    def day_ttl(self, day: DayFrame) -> int:
        if self.is_current(day.day) or not day.is_complete:
            return self._settings.ttl_current_day
        return self._settings.ttl_historical_day

    async def get(self, days: Sequence[dt.date]) -> DayFetch:
        """Every day of `days`, decoded, in one read through the tiers."""
        fetch = DayFetch()
        for day in await self._read(sorted(set(days)), fetch):
            fetch.days[day.day] = day
        return fetch

    async def stream(self, days: Sequence[dt.date], fetch: DayFetch) -> AsyncIterator[list[DayFrame]]:
        """The days in chunks of ANALYTICS_CHUNK_DAYS, the next chunk read while the caller folds this one."""
        ordered = sorted(set(days))
        size = self._settings.chunk_days
        chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        pending: asyncio.Task[list[DayFrame]] | None = None
        try:
            for index, chunk in enumerate(chunks):
                current = pending or asyncio.ensure_future(self._read(chunk, fetch))
                pending = None
                frames = await current
                if index + 1 < len(chunks):
                    pending = asyncio.ensure_future(self._read(chunks[index + 1], fetch))
                yield frames
        finally:
            if pending is not None:
                pending.cancel()

    async def _read(self, wanted: list[dt.date], fetch: DayFetch) -> list[DayFrame]:
        found = await _decoded(await self._redis.get_days(wanted))
        fetch.from_redis += len(found)
        self._counters.add("day:redis:hit", len(found))
        self._counters.add("day:redis:miss", len(wanted) - len(found))
        missing = [d for d in wanted if d not in found]
        if missing:
            stored = await self._postgres.get(missing)
            cached = await _decoded(stored)
            still_missing = [d for d in missing if d not in cached]
            filled: dict[dt.date, DayFrame] = {}
            computed = 0
            if still_missing:
                damaged = stored.keys() - cached.keys()
                from_fill, computed = await self._postgres.fill(still_missing, recompute=damaged)
                filled = await _decoded(from_fill)
            from_postgres = len(cached) + len(still_missing) - computed
            fetch.from_postgres += from_postgres
            fetch.from_source += computed
            self._counters.add("day:postgres:hit", from_postgres)
            self._counters.add("day:postgres:miss", computed)
            self._counters.add("day:source:computed", computed)
            fresh = {**cached, **filled}
            found.update(fresh)
            fetch.redis_written += await self._redis.put_days(fresh.values(), self.day_ttl)
        fetch.versions.update({d: found[d].version for d in wanted})
        return [found[d] for d in wanted]


async def _decoded(days: dict[dt.date, DayFrame]) -> dict[dt.date, DayFrame]:
    """The days with their columns decoded (in a worker thread); a day whose payload is damaged is left out."""
    if all(d.frame is not None for d in days.values()):
        return days

    def decode() -> dict[dt.date, DayFrame]:
        readable: dict[dt.date, DayFrame] = {}
        for day, frame in days.items():
            try:
                readable[day] = (
                    frame
                    if frame.frame is not None
                    else DayFrame(frame.header, decode_columns(frame.payload), frame.payload)
                )
            except UnreadablePayload:
                continue
        return readable

    return await asyncio.to_thread(decode)
