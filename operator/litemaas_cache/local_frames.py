"""Decoded day frames kept in this process, within a memory budget: the hot days of the views admins look at.

A complete past day read from Redis or PostgreSQL is decoded once and kept here, narrowed (least recently used
first out). It is served again only at the version the tiers hold for that day at the time of the read (the same
check a Redis entry passes), so an invalidation is never served from here; today, and yesterday in its grace
period, are never kept (they still change). Admins asking the same range with one filter after another then skip
the Redis transfer and the decoding, which is most of such a read.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from .frames import DayFrame, narrow, widen


@dataclass(frozen=True)
class _Entry:
    day: DayFrame
    expires: float
    size: int


class LocalFrames:
    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._entries: OrderedDict[dt.date, _Entry] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._budget > 0

    def get(self, day: dt.date, version: int) -> DayFrame | None:
        """The day's decoded frame if it is held at `version` and has not expired."""
        with self._lock:
            entry = self._entries.get(day)
            if entry is None:
                return None
            if entry.day.version != version or entry.expires <= time.monotonic():
                self._drop(day)
                return None
            self._entries.move_to_end(day)
        assert entry.day.frame is not None
        return DayFrame(entry.day.header, widen(entry.day.frame), b"")

    def put(self, day: DayFrame, ttl_seconds: float) -> None:
        """Keep a decoded day, narrowed (about 2.5x smaller); one larger than the whole budget is not kept."""
        if day.frame is None:
            return
        kept = narrow(day.frame)
        size = int(kept.estimated_size())
        if size > self._budget:
            return
        with self._lock:
            self._drop(day.day)
            self._entries[day.day] = _Entry(DayFrame(day.header, kept, b""), time.monotonic() + ttl_seconds, size)
            self._used += size
            while self._used > self._budget:
                self._drop(next(iter(self._entries)))

    def _drop(self, day: dt.date) -> None:
        entry = self._entries.pop(day, None)
        if entry is not None:
            self._used -= entry.size
