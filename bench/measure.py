"""Measurement helpers: wall-clock samples in milliseconds, their percentiles, ratios and peak memory."""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Samples:
    """Latencies of one measurement, in milliseconds."""

    values: list[float] = field(default_factory=list)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile (p in 0..100); NaN without samples."""
        if not self.values:
            return math.nan
        ordered = sorted(self.values)
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]

    @property
    def p50(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": len(self.values),
            "p50Ms": round(self.p50, 3),
            "p99Ms": round(self.percentile(99), 3),
            "maxMs": round(max(self.values), 3) if self.values else None,
        }


async def timed(samples: Samples, make: Callable[[], Awaitable[T]]) -> T:
    """Await `make()` once and record how long it took."""
    started = time.perf_counter()
    result = await make()
    samples.add((time.perf_counter() - started) * 1000)
    return result


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (VmHWM; ru_maxrss where /proc is absent), in MiB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
