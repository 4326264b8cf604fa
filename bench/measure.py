"""Timing helpers: wall-clock samples in milliseconds and their percentiles."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Samples:
    """Latencies of one measurement, in milliseconds."""

    name: str
    values: list[float] = field(default_factory=list)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    @property
    def runs(self) -> int:
        return len(self.values)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile (p in 0..100); NaN without samples."""
        if not self.values:
            return math.nan
        ordered = sorted(self.values)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    @property
    def p50(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "p50Ms": round(self.p50, 4),
            "p99Ms": round(self.p99, 4),
            "meanMs": round(self.mean, 4),
            "minMs": round(min(self.values), 4) if self.values else None,
            "maxMs": round(max(self.values), 4) if self.values else None,
        }


async def timed(samples: Samples, make: Callable[[], Awaitable[T]]) -> T:
    """Await `make()` once and record how long it took."""
    started = time.perf_counter()
    result = await make()
    samples.add((time.perf_counter() - started) * 1000)
    return result


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan
