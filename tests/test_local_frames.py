"""Days held decoded in the process (local_frames.py): a new filter over days already read answers from memory
with the same numbers as the source, an invalidation is never served from memory, and the budget is kept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import polars as pl
import psycopg

from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.frames import empty_frame, encode_day, narrow
from litemaas_cache.local_frames import LocalFrames
from litemaas_cache.manager import CacheManager

OpenManager = Callable[..., Awaitable[CacheManager]]
SOURCE = '"LiteLLM_DailyUserSpend"'
# A past range (no current day, which is never held), the previous period included in what it reads.
END = utc_today() - dt.timedelta(days=3)
RANGE = DateRange(END - dt.timedelta(days=9), END)


def _sql(dsn: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []


def _model_requests(dsn: str, model: str) -> int:
    rows = _sql(
        dsn,
        f"SELECT coalesce(sum(api_requests), 0) FROM {SOURCE} WHERE date BETWEEN %s AND %s AND model = %s",
        (RANGE.start.isoformat(), RANGE.end.isoformat(), model),
    )
    return int(rows[0][0])  # type: ignore[call-overload]


async def test_a_new_filter_over_days_already_read_answers_from_memory(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    manager = await open_manager(fresh_dsn)
    first = await manager.analytics(build_query(RANGE.start, RANGE.end, max_days=90, max_ids=10))
    assert first.tier == "source"
    # The days are in Redis now but were computed, not read from a tier: the next filter reads them from Redis.
    gpt = await manager.analytics(build_query(RANGE.start, RANGE.end, model_ids=["gpt-4o"], max_days=90, max_ids=10))
    assert gpt.tier == "redis"
    claude = build_query(RANGE.start, RANGE.end, model_ids=["claude-3-5-sonnet"], max_days=90, max_ids=10)
    answer = await manager.analytics(claude)
    assert answer.tier == "memory"
    assert answer.value["totalRequests"] == _model_requests(fresh_dsn, "claude-3-5-sonnet") > 0
    assert gpt.value["totalRequests"] == _model_requests(fresh_dsn, "gpt-4o") > 0
    assert manager.counters.local["day:memory:hit"] == 2 * RANGE.days


async def test_an_invalidated_day_is_never_served_from_memory(fresh_dsn: str, open_manager: OpenManager) -> None:
    manager = await open_manager(fresh_dsn)
    reader = await open_manager(fresh_dsn)  # another process: it holds the days, and learns of nothing directly
    await manager.analytics(build_query(RANGE.start, RANGE.end, max_days=90, max_ids=10))
    for model in ("gpt-4o", "claude-3-5-sonnet"):
        await reader.analytics(build_query(RANGE.start, RANGE.end, model_ids=[model], max_days=90, max_ids=10))
    day = RANGE.start + dt.timedelta(days=4)
    _sql(
        fresh_dsn,
        f"UPDATE {SOURCE} SET api_requests = api_requests + 1000 WHERE date = %s AND model = 'gpt-4o'"
        " AND id = (SELECT min(id) FROM " + SOURCE + " WHERE date = %s AND model = 'gpt-4o')",
        (day.isoformat(), day.isoformat()),
    )
    report = await manager.invalidate(DateRange(day, day))
    assert report.complete
    # The reader's result entry for this filter is unreadable now (its day versions changed): it computes again.
    answer = await reader.analytics(build_query(RANGE.start, RANGE.end, model_ids=["gpt-4o"], max_days=90, max_ids=10))
    assert answer.value["totalRequests"] == _model_requests(fresh_dsn, "gpt-4o")
    assert answer.tier == "source", "the invalidated day was recomputed, not taken from the reader's memory"


def test_the_budget_evicts_the_least_recently_used_day() -> None:
    days = [dt.date(2025, 1, d) for d in range(1, 5)]
    frames = [
        encode_day(
            day,
            empty_frame().vstack(pl.DataFrame(_cells(1000), schema=empty_frame().schema)),
            is_complete=True,
            version=1,
        )
        for day in days
    ]
    assert frames[0].frame is not None
    size = int(narrow(frames[0].frame).estimated_size())  # held days are kept narrowed
    held = LocalFrames(budget_bytes=size * 3)
    for frame in frames[:3]:
        held.put(frame, 60)
    assert held.get(days[0], 1) is not None  # used: now the most recent
    held.put(frames[3], 60)
    assert held.get(days[1], 1) is None, "the least recently used day went first"
    assert [held.get(d, 1) is not None for d in (days[0], days[2], days[3])] == [True, True, True]
    assert held.get(days[0], 2) is None, "another version is a miss"
    assert held.get(days[0], 1) is None, "and the stale copy is dropped"


def _cells(n: int) -> dict[str, list[object]]:
    return {
        "user": list(range(n)),
        "key": list(range(n)),
        "model": [1] * n,
        "provider": [2] * n,
        "prompt": [10] * n,
        "completion": [5] * n,
        "requests": [1] * n,
        "successful": [1] * n,
        "failed": [0] * n,
        "spend": [0.5] * n,
    }
