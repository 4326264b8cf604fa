"""Self-healing freshness: past days whose source rows changed after they were cached are found and invalidated.

A past day becomes complete by the clock, but LiteLLM writes spend in batches, so its rows can still arrive late:
after an outage, from a server whose clock is not UTC, or from a backfill. Each cached day keeps the fingerprint of
the source rows it was computed from (source.py: row count, requests, spend, latest updated_at). Comparing those
with the source's fingerprints of the last CACHE_FRESHNESS_DAYS days, in one indexed query, finds exactly the days
that changed; only those are invalidated (both tiers, through the normal invalidation) and recomputed by the next
read or warm. Every warm checks; reads check at most every CACHE_FRESHNESS_CHECK_MINUTES.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

from .daily_cache import PostgresDayCache
from .dates import DateRange, utc_now
from .errors import CacheError
from .source import SourceReader
from .stats import Counters

log = logging.getLogger(__name__)

Invalidate = Callable[[DateRange], Awaitable[object]]


class SourceFreshness:
    def __init__(
        self,
        postgres: PostgresDayCache,
        source: SourceReader,
        counters: Counters,
        invalidate: Invalidate,
        *,
        read_check_seconds: float,
    ) -> None:
        self._postgres = postgres
        self._source = source
        self._counters = counters
        self._invalidate = invalidate
        self._window_days = postgres.policy.fingerprinted_days  # the days whose fills record a fingerprint
        self._read_check_seconds = read_check_seconds
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    def window(self, now: dt.datetime | None = None) -> list[dt.date]:
        """The past days checked: the last CACHE_FRESHNESS_DAYS before today that are complete (today and the
        grace-period yesterday are refreshed by their short TTL anyway)."""
        now = now or utc_now()
        days = (now.date() - dt.timedelta(days=n) for n in range(self._window_days, 0, -1))
        return [d for d in days if not self._postgres.policy.is_current(d, now)]

    async def check(self) -> list[dt.date]:
        """Invalidate the cached days of the window whose source rows changed; returns them (ascending)."""
        async with self._lock:
            self._checked_at = time.monotonic()
            stored = await self._postgres.fingerprints(self.window())
            if not stored:
                return []
            current = await self._source.fingerprints(sorted(stored))
            changed = sorted(day for day, fingerprint in stored.items() if fingerprint != current[day])
            for days in _runs(changed):
                await self._invalidate(days)
            if changed:
                self._counters.add("freshness:days-refreshed", len(changed))
                log.warning("source rows changed after caching; invalidated %s", ", ".join(map(str, changed)))
            return changed

    async def check_if_due(self) -> None:
        """On the read path: check when the last check is older than CACHE_FRESHNESS_CHECK_MINUTES. A failed check
        (PostgreSQL busy) is logged and left to the next read: it must not fail the read itself."""
        if not self._window_days or self._lock.locked():
            return
        if self._checked_at is not None and time.monotonic() - self._checked_at < self._read_check_seconds:
            return
        try:
            await self.check()
        except CacheError as exc:
            log.warning("source freshness check skipped: %s", exc)


def _runs(days: list[dt.date]) -> list[DateRange]:
    """Sorted days as ranges of consecutive days."""
    runs: list[DateRange] = []
    for day in days:
        if runs and runs[-1].end + dt.timedelta(days=1) == day:
            runs[-1] = DateRange(runs[-1].start, day)
        else:
            runs.append(DateRange(day, day))
    return runs
