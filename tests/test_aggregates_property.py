"""Property tests (pure Python): merging day aggregates equals aggregating the whole range at once."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from litemaas_cache.aggregates import DayUsage, RowFilter, UsageRow, merge_rows
from litemaas_cache.analytics import compute_analytics, compute_breakdown
from litemaas_cache.dates import DateRange
from litemaas_cache.filters import UsageFilters
from litemaas_cache.source import UserInfo

USERS = ["u1", "u2", "u3", "unmapped"]
KEYS = {"k1": ("u1", "alias-1"), "k2": ("u1", None), "k3": ("u2", "alias-3"), "k4": ("u3", "alias-4")}
UNMAPPED_KEYS = ["kx", "ky"]
MODELS = {"gpt-4o": "openai", "claude-3-haiku": "anthropic", "llama-3": "meta_llama", "mistral-small": "mistral"}
START = dt.date(2025, 3, 1)

# Spend in multiples of 1/1024 below 2**20: every sum is exact in binary floating point, so float results
# compare exactly whatever the order of addition.
spend = st.integers(min_value=0, max_value=2**20).map(lambda i: i / 1024)


@st.composite
def usage_rows(draw: st.DrawFn) -> UsageRow:
    key = draw(st.sampled_from([*KEYS, *UNMAPPED_KEYS]))
    user, alias = KEYS.get(key, ("unmapped", None))
    model = draw(st.sampled_from(list(MODELS)))
    successful = draw(st.integers(0, 500))
    failed = draw(st.integers(0, 50))
    return UsageRow(
        user_id=user,
        api_key=key,
        key_alias=alias,
        model=model,
        provider=MODELS[model],
        prompt_tokens=draw(st.integers(0, 10**6)),
        completion_tokens=draw(st.integers(0, 10**6)),
        requests=successful + failed,
        successful=successful,
        failed=failed,
        spend=draw(spend),
    )


# A range of 1..6 days, each with 0..8 raw rows (possibly repeating a grain cell).
days_of_rows = st.lists(st.lists(usage_rows(), max_size=8), min_size=1, max_size=6)

filters = st.builds(
    UsageFilters,
    user_ids=st.lists(st.sampled_from([*USERS, "nobody"]), max_size=2),
    model_ids=st.lists(st.sampled_from(list(MODELS)), max_size=2),
    provider_ids=st.lists(st.sampled_from(sorted(set(MODELS.values()))), max_size=2),
    api_key_ids=st.lists(st.sampled_from([*KEYS, *UNMAPPED_KEYS, "alias-1", "alias-3"]), max_size=2),
)

USER_INFO = {u: UserInfo(u, f"name-{u}", f"{u}@example.com") for u in USERS if u != "unmapped"}


def reference_merge(rows: list[UsageRow]) -> dict[tuple[str, str, str, str], tuple[Any, ...]]:
    """Straightforward group-by of the grain (user, key, model, provider): the sums of every metric."""
    sums: dict[tuple[str, str, str, str], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0.0])
    aliases: dict[tuple[str, str, str, str], str | None] = {}
    for r in rows:
        key = (r.user_id, r.api_key, r.model, r.provider)
        cell = sums[key]
        for i, value in enumerate((r.prompt_tokens, r.completion_tokens, r.requests, r.successful, r.failed, r.spend)):
            cell[i] += value
        if aliases.get(key) is None:
            aliases[key] = r.key_alias
    return {k: (aliases[k], *v) for k, v in sums.items()}


def as_cells(rows: list[UsageRow]) -> dict[tuple[str, str, str, str], tuple[Any, ...]]:
    return {(r.user_id, r.api_key, r.model, r.provider): (r.key_alias, *r[5:]) for r in rows}


def day_usages(days: list[list[UsageRow]], merge: bool = True) -> list[DayUsage]:
    return [
        DayUsage(START + dt.timedelta(days=i), tuple(merge_rows(rows) if merge else rows), True, 1)
        for i, rows in enumerate(days)
    ]


@settings(max_examples=200, deadline=None)
@given(days_of_rows)
def test_merging_day_aggregates_equals_aggregating_the_range(days: list[list[UsageRow]]) -> None:
    everything = [row for rows in days for row in rows]
    merged_days = merge_rows(row for rows in days for row in merge_rows(rows))
    at_once = merge_rows(everything)
    assert merged_days == at_once
    assert as_cells(at_once) == reference_merge(everything)
    # Output: one row per grain cell, sorted by the grain key.
    keys = [(r.user_id, r.api_key, r.model, r.provider) for r in at_once]
    assert keys == sorted(set(keys))


@settings(max_examples=200, deadline=None)
@given(days_of_rows, st.randoms(use_true_random=False))
def test_merge_is_order_independent_and_idempotent(days: list[list[UsageRow]], rnd: Any) -> None:
    rows = [row for day in days for row in day]
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert merge_rows(shuffled) == merge_rows(rows)
    assert merge_rows(merge_rows(rows)) == merge_rows(rows)


@settings(max_examples=200, deadline=None)
@given(days_of_rows, filters)
def test_analytics_over_days_equals_one_merged_range(days: list[list[UsageRow]], f: UsageFilters) -> None:
    """compute_analytics over N day aggregates has the same range totals as over one day holding the merge."""
    n = len(days)
    per_day = compute_analytics(DateRange(START, START + dt.timedelta(days=n - 1)), f, day_usages(days), [], USER_INFO)
    whole = [DayUsage(START, tuple(merge_rows(r for rows in days for r in rows)), True, 1)]
    at_once = compute_analytics(DateRange(START, START), f, whole, [], USER_INFO)

    for field in ("totalUsers", "activeUsers", "totalRequests", "totalTokens", "totalCost", "successRate"):
        assert per_day[field] == at_once[field], field
    assert per_day["topMetrics"] == at_once["topMetrics"]
    assert per_day["topModels"] == at_once["topModels"]
    assert per_day["topUsers"] == at_once["topUsers"]
    assert per_day["trends"] == at_once["trends"]

    # The daily series adds up to the range totals, and has one entry per day.
    daily = per_day["dailyUsage"]
    assert len(daily) == n
    assert sum(d["requests"] for d in daily) == per_day["totalRequests"]
    assert sum(d["totalTokens"] for d in daily) == per_day["totalTokens"]["total"]
    assert math.isclose(sum(d["cost"] for d in daily), per_day["totalCost"]["total"], abs_tol=1e-6 * (n + 1))
    assert sum(d["requests"] for d in per_day["dailyModelUsage"]) == per_day["totalRequests"]

    # And the totals equal a plain sum over the filtered raw rows.
    keep = RowFilter(f)
    kept = [r for rows in days for r in rows if keep(r)]
    assert per_day["totalRequests"] == sum(r.requests for r in kept)
    assert per_day["totalTokens"]["prompt"] == sum(r.prompt_tokens for r in kept)
    assert per_day["totalCost"]["total"] == round(sum(r.spend for r in kept), 6)
    assert per_day["activeUsers"] == len({r.user_id for r in kept if r.requests > 0})


@settings(max_examples=200, deadline=None)
@given(days_of_rows, filters, st.sampled_from(["user", "model", "provider"]))
def test_breakdown_over_days_equals_one_merged_range(
    days: list[list[UsageRow]], f: UsageFilters, dimension: Any
) -> None:
    whole = [DayUsage(START, tuple(merge_rows(r for rows in days for r in rows)), True, 1)]
    name = {"user": "userId", "model": "model", "provider": "provider"}[dimension]

    def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {i[name]: i for i in items}

    per_day = by_name(compute_breakdown(dimension, f, day_usages(days), USER_INFO))
    at_once = by_name(compute_breakdown(dimension, f, whole, USER_INFO))
    unmerged = by_name(compute_breakdown(dimension, f, day_usages(days, merge=False), USER_INFO))
    assert per_day == at_once == unmerged
    analytics = compute_analytics(DateRange(START, START), f, whole, [], USER_INFO)
    assert sum(i["requests"] for i in per_day.values()) == analytics["totalRequests"]


@settings(max_examples=100, deadline=None)
@given(st.lists(usage_rows(), max_size=10))
def test_day_usage_payload_round_trip(rows: list[UsageRow]) -> None:
    usage = DayUsage(START, tuple(merge_rows(rows)), False, 3)
    assert DayUsage.from_payload(usage.to_payload()) == usage
    assert usage.totals() == (
        sum(r.requests for r in rows),
        sum(r.total_tokens for r in rows),
        sum(r.spend for r in rows),
    )
