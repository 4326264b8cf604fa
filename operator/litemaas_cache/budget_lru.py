"""A least-recently-used map within a byte budget, each value until its own expiry: what this process keeps in
memory of the cache tiers (local_frames.py: decoded days; local_results.py: encoded result bodies).

Thread-safe: days are kept and looked up from worker threads as well as from the event loop.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class _Kept(Generic[V]):
    value: V
    expires: float
    size: int


class BudgetLru(Generic[K, V]):
    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._entries: OrderedDict[K, _Kept[V]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._budget > 0

    @property
    def used_bytes(self) -> int:
        return self._used

    def get(self, key: K, usable: Callable[[V], bool] = lambda _: True) -> V | None:
        """The value kept under `key`, unless it expired or is not `usable` any more (then it is dropped)."""
        with self._lock:
            kept = self._entries.get(key)
            if kept is None:
                return None
            if kept.expires <= time.monotonic() or not usable(kept.value):
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return kept.value

    def put(self, key: K, value: V, size: int, ttl_seconds: float) -> None:
        """Keep `value` (`size` bytes) for `ttl_seconds`, dropping the least recently used to stay in the budget; a
        value larger than the whole budget, or already expired, is not kept."""
        if size > self._budget or ttl_seconds <= 0:
            return
        with self._lock:
            self._drop(key)
            self._entries[key] = _Kept(value, time.monotonic() + ttl_seconds, size)
            self._used += size
            while self._used > self._budget:
                self._drop(next(iter(self._entries)))

    def drop(self, key: K) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: K) -> None:
        kept = self._entries.pop(key, None)
        if kept is not None:
            self._used -= kept.size
