"""Decoded day frames kept in this process, within a memory budget: the hot days of the views admins look at.

A complete past day read from Redis or PostgreSQL is decoded once and kept here, narrowed (least recently used
first out). It is served again only at the version the tiers hold for that day at the time of the read (the same
check a Redis entry passes), so an invalidation is never served from here; today, and yesterday in its grace
period, are never kept (they still change). Admins asking the same range with one filter after another then skip
the Redis transfer and the decoding, which is most of such a read.
"""

from __future__ import annotations

import datetime as dt

from .budget_lru import BudgetLru
from .frames import DayFrame, narrow, widen


class LocalFrames:
    def __init__(self, budget_bytes: int) -> None:
        self._kept: BudgetLru[dt.date, DayFrame] = BudgetLru(budget_bytes)

    @property
    def enabled(self) -> bool:
        return self._kept.enabled

    def get(self, day: dt.date, version: int) -> DayFrame | None:
        """The day's decoded frame if it is held at `version` and has not expired."""
        held = self._kept.get(day, lambda frame: frame.version == version)
        if held is None:
            return None
        assert held.frame is not None
        return DayFrame(held.header, widen(held.frame), b"")

    def put(self, day: DayFrame, ttl_seconds: float) -> None:
        """Keep a decoded day, narrowed (about 2.5x smaller); one larger than the whole budget is not kept."""
        if day.frame is None:
            return
        kept = narrow(day.frame)
        self._kept.put(day.day, DayFrame(day.header, kept, b""), int(kept.estimated_size()), ttl_seconds)
