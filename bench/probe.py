"""`python -m bench.probe START END`: the fresh process of the memory measurement.

It only opens the manager (settings from the environment), invalidates every tier of the range and its previous
period, runs that one cold analytics query, and prints one JSON line: its peak RSS before and after the query, the
query's time and the tier that answered.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from litemaas_cache.dates import DateRange
from litemaas_cache.filters import build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.settings import load_settings

from .measure import peak_rss_mib


async def cold_query(start: str, end: str) -> dict[str, Any]:
    settings = load_settings()
    async with CacheManager.open(settings) as manager:
        query = build_query(start, end, max_days=settings.max_range_days, max_ids=settings.max_filter_ids)
        report = await manager.invalidate(DateRange(query.range.previous().start, query.range.end))
        if not report.complete:
            raise SystemExit(f"invalidation incomplete: {report.as_dict()}")
        before = peak_rss_mib()
        started = time.perf_counter()
        answer = await manager.analytics(query)
        ms = (time.perf_counter() - started) * 1000
        return {
            "rssBeforeMiB": round(before, 1),
            "peakRssMiB": round(peak_rss_mib(), 1),
            "ms": round(ms, 1),
            "tier": answer.tier,
        }


def main() -> None:
    start, end = sys.argv[1:3]
    print(json.dumps(asyncio.run(cold_query(start, end))))


if __name__ == "__main__":
    main()
