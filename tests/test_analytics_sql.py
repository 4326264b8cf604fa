"""Every metric of `CacheManager.analytics` and of the breakdowns against an independent SQL computation
(tests/support/oracle.py), for each kind of filter and for ranges with and without a previous period."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from litemaas_cache.analytics import SORT_FIELDS, Page
from litemaas_cache.dates import utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.vocabulary import UNKNOWN_USER_ID, Dimension
from tests.conftest import managed
from tests.support.metrics import assert_summary, close, success_rate, tokens
from tests.support.oracle import (
    IDENTITY,
    ZERO,
    Filters,
    Oracle,
    Picks,
    Sums,
    assert_row,
    expected_order,
    expected_rows,
    expected_trend,
    ranked,
)

TODAY = utc_today()


def days_ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


Resolver = Callable[["Picks"], Filters]


def no_filters(_: Picks) -> Filters:
    return Filters([], [], [], [])


SCENARIOS: dict[str, tuple[tuple[int, int], Resolver]] = {
    "full-range": ((39, 0), no_filters),
    "middle-range-with-previous-data": ((24, 10), no_filters),
    "last-7-days-including-today": ((6, 0), no_filters),
    "today-only": ((0, 0), no_filters),
    "before-seeded-data": ((200, 171), no_filters),
    "user": ((24, 0), lambda p: Filters([p.heavy_user], [], [], [])),
    "two-users": ((24, 0), lambda p: Filters([p.heavy_user, p.second_user], [], [], [])),
    "model-with-inferred-provider": ((24, 0), lambda p: Filters([], ["llama-3.1-8b-instruct"], [], [])),
    "provider-explicit": ((24, 0), lambda p: Filters([], [], ["openai"], [])),
    "provider-inferred": ((24, 0), lambda p: Filters([], [], ["mistral"], [])),
    "api-key-alias": ((24, 0), lambda p: Filters([], [], [], [p.second_user_alias])),
    "api-key-hash": ((24, 0), lambda p: Filters([], [], [], [p.third_user_key])),
    "combined": (
        (24, 0),
        lambda p: Filters([p.heavy_user, p.second_user], ["gpt-4o", "claude-3-5-sonnet"], ["openai", "anthropic"], []),
    ),
    "combined-user-and-key": ((30, 5), lambda p: Filters([p.second_user], [], [], [p.second_user_alias])),
    "no-match": ((24, 0), lambda p: Filters(["no-such-user"], [], [], [])),
    "contradictory-filters": ((24, 0), lambda p: Filters([], ["gpt-4o"], ["anthropic"], [])),
    "unmapped-user": ((39, 0), lambda p: Filters(["unmapped"], [], [], [])),
    "unmapped-key-hash": ((39, 0), lambda p: Filters([], [], [], [p.unmapped_key])),
}
EMPTY_SCENARIOS = {"before-seeded-data", "no-match", "contradictory-filters"}


@pytest_asyncio.fixture
async def mgr(module_dsn: str, key_prefix: str) -> AsyncIterator[CacheManager]:
    async with managed(module_dsn, key_prefix) as m:
        yield m


def scenario(name: str, picks: Picks) -> tuple[dt.date, dt.date, Filters]:
    (start_ago, end_ago), resolve = SCENARIOS[name]
    return days_ago(start_ago), days_ago(end_ago), resolve(picks)


def query_of(start: dt.date, end: dt.date, f: Filters) -> Any:
    return build_query(
        start.isoformat(),
        end.isoformat(),
        user_ids=f.users,
        model_ids=f.models,
        provider_ids=f.providers,
        api_key_ids=f.keys,
        max_days=90,
        max_ids=1000,
    )


# --- analytics -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_analytics_matches_sql(name: str, mgr: CacheManager, oracle: Oracle, picks: Picks) -> None:
    start, end, f = scenario(name, picks)
    doc = (await mgr.analytics(query_of(start, end, f))).value
    n_days = (end - start).days + 1
    prev_start, prev_end = start - dt.timedelta(days=n_days), start - dt.timedelta(days=1)

    total = (await oracle.group(start, end, f)).get((), ZERO)
    prev = (await oracle.group(prev_start, prev_end, f)).get((), ZERO)
    by_user = await oracle.group(start, end, f, "user_id")
    by_model = await oracle.group(start, end, f, "model")
    by_provider = await oracle.group(start, end, f, "provider")
    by_key = await oracle.group(start, end, f, "api_key")
    by_day = await oracle.group(start, end, f, "day")
    by_day_model = await oracle.group(start, end, f, "day", "model")
    users = await oracle.users()

    if name in EMPTY_SCENARIOS:
        assert total.requests == 0
    else:
        assert total.requests > 0, "scenario should select data"

    assert doc["period"] == {"startDate": start.isoformat(), "endDate": end.isoformat()}
    assert doc["totalRequests"] == total.requests
    assert doc["totalTokens"] == tokens(total)
    assert math.isclose(doc["successRate"], success_rate(total), abs_tol=1e-9)
    assert doc["averageLatency"] == 0
    assert doc["activeUsers"] == total.active_users
    unmapped_active = by_user.get(("unmapped",), ZERO).requests > 0
    assert doc["totalUsers"] == await oracle.total_users(f, unmapped_active)

    cost = doc["totalCost"]
    assert close(cost["total"], total.spend)
    for field, groups in (("byProvider", by_provider), ("byModel", by_model)):
        assert set(cost[field]) == {k[0] for k in groups}, field
        for (k,), s in groups.items():
            assert close(cost[field][k], s.spend), (field, k)
    assert set(cost["byUser"]) == {users[u]["userId"] for (u,) in by_user}
    for (user_id,), s in by_user.items():
        assert close(cost["byUser"][users[user_id]["userId"]], s.spend), user_id

    top = doc["topMetrics"]
    top_users = ranked({k: v for k, v in by_user.items() if k != ("unmapped",)})
    if top_users:
        user_id, s = top_users[0]
        assert {k: top["topUser"][k] for k in ("userId", "username", "email", "role")} == users[user_id]
        assert_summary(top["topUser"], s, user_id)
    else:
        assert top["topUser"] is None
    if ranked(by_model):
        model, s = ranked(by_model)[0]
        assert (top["topModel"]["modelId"], top["topModel"]["modelName"]) == (model, model)
        assert top["topModel"]["provider"] == s.provider
        assert_summary(top["topModel"], s, model)
    else:
        assert top["topModel"] is None
    if ranked(by_key):
        key, s = ranked(by_key)[0]
        owner = users[s.owner or "unmapped"]
        key_doc = top["topApiKey"]
        assert (key_doc["keyId"], key_doc["keyAlias"]) == (key, s.alias or key)
        assert (key_doc["userId"], key_doc["username"]) == (owner["userId"], owner["username"])
        assert (key_doc["requests"], key_doc["tokens"]) == (s.requests, s.tokens)
        assert close(key_doc["cost"], s.spend)
    else:
        assert top["topApiKey"] is None

    trend_pairs = {
        "requests": (total.requests, prev.requests),
        "cost": (round(total.spend, 6), round(prev.spend, 6)),
        "users": (total.active_users, prev.active_users),
        "totalTokens": (total.tokens, prev.tokens),
        "promptTokens": (total.prompt, prev.prompt),
        "completionTokens": (total.completion, prev.completion),
    }
    assert set(doc["trends"]) == {f"{metric}Trend" for metric in trend_pairs}
    for metric, (cur, before) in trend_pairs.items():
        t = doc["trends"][f"{metric}Trend"]
        assert t["metric"] == metric
        assert close(t["current"], cur), metric
        assert close(t["previous"], before), metric
        change, direction = expected_trend(cur, before)
        assert math.isclose(t["percentageChange"], change, abs_tol=0.011), metric
        assert t["direction"] == direction, metric

    active_days = sorted(day for (day,), s in by_day.items() if s.requests > 0)
    assert [d["date"] for d in doc["dailyUsage"]] == [day.isoformat() for day in active_days]
    for entry in doc["dailyUsage"]:
        assert_summary(entry, by_day[(dt.date.fromisoformat(entry["date"]),)], entry["date"])

    expected_daily_models: dict[str, list[tuple[str, Sums]]] = {}
    for (day, model), s in sorted(by_day_model.items(), key=lambda kv: (kv[0][0], -kv[1].requests, kv[0][1])):
        if s.requests > 0:
            expected_daily_models.setdefault(day.isoformat(), []).append((model, s))
    assert [d["date"] for d in doc["dailyModelUsage"]] == list(expected_daily_models)
    for entry in doc["dailyModelUsage"]:
        expected = expected_daily_models[entry["date"]]
        assert [m["modelId"] for m in entry["models"]] == [model for model, _ in expected], entry["date"]
        for summary, (model, s) in zip(entry["models"], expected, strict=True):
            assert summary["provider"] == s.provider, model
            assert_summary(summary, s, f"{entry['date']} {model}")

    top_models = ranked(by_model)[:10]
    assert [m["modelId"] for m in doc["topModels"]] == [m for m, _ in top_models]
    for entry, (model, s) in zip(doc["topModels"], top_models, strict=True):
        assert entry["provider"] == s.provider, model
        assert_summary(entry, s, model)
    expected_top_users = ranked(by_user)[:5]
    assert [u["userId"] for u in doc["topUsers"]] == [users[u]["userId"] for u, _ in expected_top_users]
    for entry, (user_id, s) in zip(doc["topUsers"], expected_top_users, strict=True):
        assert {k: entry[k] for k in ("userId", "username", "email", "role")} == users[user_id]
        assert_summary(entry, s, user_id)


async def test_unmapped_usage_is_attributed_to_the_unmapped_user(mgr: CacheManager, oracle: Oracle) -> None:
    start, end = days_ago(39), TODAY
    doc = (await mgr.analytics(query_of(start, end, Filters([], [], [], [])))).value
    cur = await oracle.conn.execute(
        """SELECT sum(spend), sum(api_requests) FROM "LiteLLM_DailyUserSpend" s
           WHERE date BETWEEN %s AND %s AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key)""",
        (start.isoformat(), end.isoformat()),
    )
    row = await cur.fetchone()
    assert row is not None
    spend, requests = row
    assert requests > 0
    assert close(doc["totalCost"]["byUser"][UNKNOWN_USER_ID], float(spend))
    assert "unmapped" not in doc["totalCost"]["byUser"]
    # Nothing attributes these rows to LiteLLM's own user_id column ('default_user_id').
    assert "default_user_id" not in doc["totalCost"]["byUser"]


# --- breakdowns ----------------------------------------------------------------------------------------------

BREAKDOWN_SCENARIOS = [
    "full-range",
    "last-7-days-including-today",
    "before-seeded-data",
    "user",
    "provider-inferred",
    "api-key-alias",
    "combined",
    "no-match",
    "unmapped-user",
]


@pytest.mark.parametrize("dimension", ["user", "model", "provider"])
@pytest.mark.parametrize("name", BREAKDOWN_SCENARIOS)
async def test_breakdown_matches_sql(
    name: str, dimension: Dimension, mgr: CacheManager, oracle: Oracle, picks: Picks
) -> None:
    start, end, f = scenario(name, picks)
    query = query_of(start, end, f)
    expected = await expected_rows(oracle, dimension, start, end, f)
    if name in {"before-seeded-data", "no-match"}:
        assert expected == {}
    else:
        assert expected

    limit = 4
    order = expected_order(expected, dimension, "totalTokens", True)
    pages = max(1, math.ceil(len(order) / limit))
    seen: list[str] = []
    for number in range(1, pages + 2):  # one page past the end: empty
        doc = (await mgr.breakdown(dimension, query, Page(number, limit))).value
        assert doc["pagination"] == {
            "page": number,
            "limit": limit,
            "total": len(expected),
            "totalPages": math.ceil(len(expected) / limit),
            "hasNext": number * limit < len(expected),
            "hasPrevious": number > 1,
        }
        assert len(doc["data"]) <= limit
        if number > pages:
            assert doc["data"] == []
        for row in doc["data"]:
            assert_row(dimension, row, *expected[row[IDENTITY[dimension]]])
        seen += [row[IDENTITY[dimension]] for row in doc["data"]]
    assert seen == order


@pytest.mark.parametrize("dimension", ["user", "model", "provider"])
async def test_breakdown_sorting_matches_sql(dimension: Dimension, mgr: CacheManager, oracle: Oracle) -> None:
    start, end, f = days_ago(39), TODAY, Filters([], [], [], [])
    query = query_of(start, end, f)
    expected = await expected_rows(oracle, dimension, start, end, f)
    assert len(expected) >= 3
    for sort_by in SORT_FIELDS[dimension]:
        for descending in (True, False):
            doc = (await mgr.breakdown(dimension, query, Page(1, 200, sort_by, descending))).value
            names = [row[IDENTITY[dimension]] for row in doc["data"]]
            assert names == expected_order(expected, dimension, sort_by, descending), (sort_by, descending)
            # Cut into pages, the same order comes back page by page.
            paged: list[str] = []
            for number in (1, 2, 3):
                page_doc = (await mgr.breakdown(dimension, query, Page(number, 2, sort_by, descending))).value
                paged += [row[IDENTITY[dimension]] for row in page_doc["data"]]
            assert paged == names[:6]
