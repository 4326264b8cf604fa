"""Every metric of `CacheManager.analytics` and of the breakdowns against an independent SQL computation.

The oracle below aggregates "LiteLLM_DailyUserSpend" joined to api_keys with its own GROUP BYs; only the
model-name -> provider inference is shared with the library (as a VALUES table of the distinct models).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
import pytest
import pytest_asyncio

from litemaas_cache.analytics import BREAKDOWN_SORT_FIELDS, Page
from litemaas_cache.dates import utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.providers import infer_provider
from tests.conftest import managed
from tests.support.metrics import assert_metrics, close

TODAY = utc_today()

_CELLS = """
WITH prov AS (SELECT * FROM unnest(%(prov_models)s::text[], %(prov_names)s::text[]) AS p(model, inferred)),
named AS (SELECT *, COALESCE(NULLIF(model, ''), 'unknown') AS model_name FROM "LiteLLM_DailyUserSpend"),
src AS (
    SELECT s.date::date AS day, s.api_key, s.model_name AS model,
           COALESCE(NULLIF(s.custom_llm_provider, ''), prov.inferred) AS provider,
           COALESCE(k.user_id::text, 'unmapped') AS user_id, k.litellm_key_alias AS key_alias,
           s.prompt_tokens, s.completion_tokens, s.api_requests, s.successful_requests, s.failed_requests, s.spend
    FROM named s
    JOIN prov ON prov.model = s.model_name
    LEFT JOIN api_keys k ON k.key_hash = s.api_key
    WHERE s.date BETWEEN %(start)s AND %(end)s
),
kept AS (
    SELECT * FROM src
    WHERE (cardinality(%(users)s::text[]) = 0 OR user_id = ANY(%(users)s::text[]))
      AND (cardinality(%(models)s::text[]) = 0 OR model = ANY(%(models)s::text[]))
      AND (cardinality(%(providers)s::text[]) = 0 OR provider = ANY(%(providers)s::text[]))
      AND (cardinality(%(keys)s::text[]) = 0 OR api_key = ANY(%(keys)s::text[]) OR key_alias = ANY(%(keys)s::text[]))
),
cell AS (  -- one UTC day of one (user, key, model, provider)
    SELECT day, user_id, api_key, key_alias, model, provider,
           sum(prompt_tokens)::bigint AS prompt, sum(completion_tokens)::bigint AS completion,
           sum(api_requests)::bigint AS requests, sum(successful_requests)::bigint AS ok,
           sum(failed_requests)::bigint AS failed, sum(spend)::float8 AS spend
    FROM kept GROUP BY day, user_id, api_key, key_alias, model, provider
)
"""

_GROUP = """
SELECT {keys_select}
       COALESCE(sum(requests), 0)::bigint, COALESCE(sum(ok), 0)::bigint, COALESCE(sum(failed), 0)::bigint,
       COALESCE(sum(prompt), 0)::bigint, COALESCE(sum(completion), 0)::bigint, COALESCE(sum(spend), 0)::float8,
       count(DISTINCT user_id), count(DISTINCT user_id) FILTER (WHERE requests > 0),
       count(DISTINCT model) FILTER (WHERE requests > 0), count(DISTINCT api_key) FILTER (WHERE requests > 0),
       min(provider), min(key_alias), min(user_id)
FROM cell GROUP BY {keys_group}
"""


class Sums(NamedTuple):
    requests: int
    ok: int
    failed: int
    prompt: int
    completion: int
    spend: float
    users_seen: int
    active_users: int
    models: int
    keys: int
    provider: str | None
    alias: str | None
    owner: str | None

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion

    @property
    def success_rate(self) -> float:
        return round(100.0 * self.ok / self.requests, 2) if self.requests else 0.0


ZERO = Sums(0, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, None, None, None)


@dataclass
class Filters:
    users: list[str]
    models: list[str]
    providers: list[str]
    keys: list[str]


class Oracle:
    """Independent SQL aggregation over the seeded tables."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], prov_models: list[str]) -> None:
        self.conn = conn
        self.prov_models = prov_models
        self.prov_names = [infer_provider(m) for m in prov_models]

    async def group(self, start: dt.date, end: dt.date, f: Filters, *keys: str) -> dict[tuple[Any, ...], Sums]:
        sql = _CELLS + _GROUP.format(
            keys_select="".join(f"{k}, " for k in keys), keys_group=", ".join(keys) if keys else "()"
        )
        params = {
            "prov_models": self.prov_models,
            "prov_names": self.prov_names,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "users": f.users,
            "models": f.models,
            "providers": f.providers,
            "keys": f.keys,
        }
        cur = await self.conn.execute(sql.encode(), params)
        n = len(keys)
        return {tuple(r[:n]): Sums(*r[n:]) for r in await cur.fetchall()}

    async def users(self) -> dict[str, tuple[str, str | None]]:
        cur = await self.conn.execute("SELECT id::text, username, email FROM users")
        return {i: (u, e) for i, u, e in await cur.fetchall()}


def ranked(groups: dict[tuple[Any, ...], Sums]) -> list[tuple[str, Sums]]:
    """Most requests first, then most spend, then name (the documented ranking of tops)."""
    return sorted(((k[0], s) for k, s in groups.items()), key=lambda kv: (-kv[1].requests, -kv[1].spend, kv[0]))


def expected_trend(current: float, previous: float) -> tuple[float, str]:
    if previous == 0:
        change = 0.0 if current == 0 else 100.0
    else:
        change = round((current - previous) / previous * 100, 2)
    direction = "stable" if current == previous else ("up" if current > previous else "down")
    return change, direction


# --- scenarios -----------------------------------------------------------------------------------------------


def days_ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


Resolver = Callable[["Picks"], Filters]


@dataclass
class Picks:
    """Real ids taken from the seeded data."""

    heavy_user: str
    second_user: str
    second_user_alias: str
    third_user_key: str
    unmapped_key: str


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
async def oracle(module_dsn: str) -> AsyncIterator[Oracle]:
    async with await psycopg.AsyncConnection.connect(module_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT DISTINCT COALESCE(NULLIF(model, ''), 'unknown') FROM \"LiteLLM_DailyUserSpend\""
        )
        yield Oracle(conn, [m for (m,) in await cur.fetchall()])


@pytest_asyncio.fixture
async def picks(oracle: Oracle) -> Picks:
    cur = await oracle.conn.execute(
        """SELECT k.user_id::text FROM "LiteLLM_DailyUserSpend" s JOIN api_keys k ON k.key_hash = s.api_key
           GROUP BY 1 ORDER BY sum(api_requests) DESC, 1 LIMIT 3"""
    )
    users = [u for (u,) in await cur.fetchall()]
    cur = await oracle.conn.execute(
        "SELECT user_id::text, litellm_key_alias, key_hash FROM api_keys WHERE user_id::text = ANY(%s)"
        " ORDER BY key_hash",
        (users,),
    )
    keys = await cur.fetchall()
    cur = await oracle.conn.execute(
        """SELECT min(api_key) FROM "LiteLLM_DailyUserSpend" s
           WHERE api_key <> '' AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key)"""
    )
    row = await cur.fetchone()
    assert row is not None
    assert row[0] is not None, "the seed has unmapped keys"
    return Picks(
        heavy_user=users[0],
        second_user=users[1],
        second_user_alias=next(a for u, a, _ in keys if u == users[1]),
        third_user_key=next(h for u, _, h in keys if u == users[2]),
        unmapped_key=row[0],
    )


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
    by_day_model = await oracle.group(start, end, f, "day", "model", "provider")
    users = await oracle.users()

    if name in EMPTY_SCENARIOS:
        assert total.requests == 0
    else:
        assert total.requests > 0, "scenario should select data"

    assert doc["period"] == {"startDate": start.isoformat(), "endDate": end.isoformat(), "days": n_days}
    assert doc["totalRequests"] == total.requests
    assert doc["totalTokens"] == {"total": total.tokens, "prompt": total.prompt, "completion": total.completion}
    assert doc["successRate"] == total.success_rate
    assert doc["totalUsers"] == total.users_seen
    assert doc["activeUsers"] == total.active_users

    cost = doc["totalCost"]
    assert close(cost["total"], total.spend)
    for field, groups in (("byProvider", by_provider), ("byModel", by_model), ("byUser", by_user)):
        assert set(cost[field]) == {k[0] for k in groups}, field
        for (k,), s in groups.items():
            assert close(cost[field][k], s.spend), (field, k)

    def user_entry_ok(entry: dict[str, Any], user_id: str, s: Sums) -> None:
        username, email = users.get(user_id, (user_id, None))
        assert entry["userId"] == user_id
        assert (entry["username"], entry["email"]) == (username, email)
        assert (entry["requests"], entry["totalTokens"], entry["models"]) == (s.requests, s.tokens, s.models)
        assert close(entry["cost"], s.spend)

    def model_entry_ok(entry: dict[str, Any], model: str, s: Sums) -> None:
        assert (entry["model"], entry["provider"], entry["users"]) == (model, s.provider, s.active_users)
        assert_metrics(entry, s, model)

    top = doc["topMetrics"]
    if total.requests == 0 and not by_user:
        assert top == {"topUser": None, "topModel": None, "topApiKey": None}
    else:
        user_id, s = ranked(by_user)[0]
        user_entry_ok(top["topUser"], user_id, s)
        model, s = ranked(by_model)[0]
        model_entry_ok(top["topModel"], model, s)
        key, s = ranked(by_key)[0]
        key_doc = top["topApiKey"]
        assert (key_doc["apiKey"], key_doc["keyAlias"], key_doc["userId"]) == (key, s.alias, s.owner or "unmapped")
        assert key_doc["requests"] == s.requests
        assert close(key_doc["cost"], s.spend)

    trend_pairs = {
        "requests": (total.requests, prev.requests),
        "cost": (round(total.spend, 6), round(prev.spend, 6)),
        "users": (total.active_users, prev.active_users),
        "totalTokens": (total.tokens, prev.tokens),
        "promptTokens": (total.prompt, prev.prompt),
        "completionTokens": (total.completion, prev.completion),
    }
    assert set(doc["trends"]) == set(trend_pairs)
    for metric, (cur, before) in trend_pairs.items():
        t = doc["trends"][metric]
        assert close(t["current"], cur), metric
        assert close(t["previous"], before), metric
        change, direction = expected_trend(cur, before)
        assert math.isclose(t["percentageChange"], change, abs_tol=0.011), metric
        assert t["direction"] == direction, metric

    daily = doc["dailyUsage"]
    assert [d["date"] for d in daily] == [(start + dt.timedelta(days=i)).isoformat() for i in range(n_days)]
    for entry in daily:
        s = by_day.get((dt.date.fromisoformat(entry["date"]),), ZERO)
        assert_metrics(entry, s, entry["date"])
        assert entry["activeUsers"] == s.active_users
    if name in EMPTY_SCENARIOS:
        assert all(d["requests"] == 0 and d["cost"] == 0 for d in daily)

    dmu = doc["dailyModelUsage"]
    assert [(d["date"], d["model"], d["provider"]) for d in dmu] == sorted(
        (day.isoformat(), model, provider) for day, model, provider in by_day_model
    )
    for entry in dmu:
        s = by_day_model[(dt.date.fromisoformat(entry["date"]), entry["model"], entry["provider"])]
        expected = (s.requests, s.tokens, s.prompt, s.completion)
        assert (entry["requests"], entry["totalTokens"], entry["promptTokens"], entry["completionTokens"]) == expected
        assert close(entry["cost"], s.spend)

    top_models = ranked(by_model)[:10]
    assert [m["model"] for m in doc["topModels"]] == [m for m, _ in top_models]
    for entry, (model, s) in zip(doc["topModels"], top_models, strict=True):
        model_entry_ok(entry, model, s)
    top_users = ranked(by_user)[:5]
    assert [u["userId"] for u in doc["topUsers"]] == [u for u, _ in top_users]
    for entry, (user_id, s) in zip(doc["topUsers"], top_users, strict=True):
        user_entry_ok(entry, user_id, s)


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
    assert close(doc["totalCost"]["byUser"]["unmapped"], float(spend))
    # Nothing attributes these rows to LiteLLM's own user_id column ('default_user_id').
    assert "default_user_id" not in doc["totalCost"]["byUser"]


# --- breakdowns ----------------------------------------------------------------------------------------------

NAME_FIELD = {"user": "userId", "model": "model", "provider": "provider"}
SQL_KEY = {"user": "user_id", "model": "model", "provider": "provider"}


async def expected_items(
    oracle: Oracle, dimension: str, start: dt.date, end: dt.date, f: Filters
) -> dict[str, tuple[Sums, dict[str, Any]]]:
    groups = await oracle.group(start, end, f, SQL_KEY[dimension])
    users = await oracle.users()
    out: dict[str, tuple[Sums, dict[str, Any]]] = {}
    for (name,), s in groups.items():
        if dimension == "user":
            username, email = users.get(name, (name, None))
            extra = {"userId": name, "username": username, "email": email, "models": s.models, "apiKeys": s.keys}
        elif dimension == "model":
            extra = {"model": name, "provider": s.provider, "users": s.active_users}
        else:
            extra = {"provider": name, "models": s.models, "users": s.active_users}
        out[name] = (s, extra)
    return out


def assert_item(item: dict[str, Any], s: Sums, extra: dict[str, Any]) -> None:
    assert {k: item[k] for k in extra} == extra
    assert_metrics(item, s, str(extra))


def sort_value(s: Sums, field: str) -> float:
    return {
        "requests": s.requests,
        "cost": round(s.spend, 6),
        "totalTokens": s.tokens,
        "promptTokens": s.prompt,
        "completionTokens": s.completion,
        "successRate": s.success_rate,
    }[field]


def expected_order(items: dict[str, tuple[Sums, dict[str, Any]]], sort_by: str, descending: bool) -> list[str]:
    if sort_by == "name":
        return sorted(items, reverse=descending)
    sign = -1 if descending else 1
    return sorted(items, key=lambda name: (sign * sort_value(items[name][0], sort_by), name))


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
    name: str, dimension: str, mgr: CacheManager, oracle: Oracle, picks: Picks
) -> None:
    start, end, f = scenario(name, picks)
    query = query_of(start, end, f)
    expected = await expected_items(oracle, dimension, start, end, f)
    if name in {"before-seeded-data", "no-match"}:
        assert expected == {}
    else:
        assert expected

    size = 4
    order = expected_order(expected, "requests", True)
    pages = max(1, math.ceil(len(order) / size))
    seen: list[str] = []
    for number in range(1, pages + 2):  # one page past the end: empty
        doc = (await mgr.breakdown(dimension, query, Page(number, size))).value
        assert doc["dimension"] == dimension
        assert doc["period"] == {"startDate": start.isoformat(), "endDate": end.isoformat(), "days": query.range.days}
        assert doc["pagination"] == {
            "page": number,
            "pageSize": size,
            "total": len(expected),
            "totalPages": math.ceil(len(expected) / size),
        }
        assert (doc["sortBy"], doc["sortOrder"]) == ("requests", "desc")
        assert len(doc["items"]) <= size
        if number > pages:
            assert doc["items"] == []
        for item in doc["items"]:
            s, extra = expected[item[NAME_FIELD[dimension]]]
            assert_item(item, s, extra)
        seen += [item[NAME_FIELD[dimension]] for item in doc["items"]]
    assert seen == order


@pytest.mark.parametrize("dimension", ["user", "model", "provider"])
async def test_breakdown_sorting_matches_sql(dimension: str, mgr: CacheManager, oracle: Oracle) -> None:
    start, end, f = days_ago(39), TODAY, Filters([], [], [], [])
    query = query_of(start, end, f)
    expected = await expected_items(oracle, dimension, start, end, f)
    assert len(expected) >= 3
    for sort_by in (*BREAKDOWN_SORT_FIELDS, "name"):
        for descending in (True, False):
            doc = (await mgr.breakdown(dimension, query, Page(1, 500, sort_by, descending))).value
            names = [item[NAME_FIELD[dimension]] for item in doc["items"]]
            assert names == expected_order(expected, sort_by, descending), (sort_by, descending)
            assert doc["sortOrder"] == ("desc" if descending else "asc")
            # Cut into pages, the same order comes back page by page.
            paged: list[str] = []
            for number in (1, 2, 3):
                page_doc = (await mgr.breakdown(dimension, query, Page(number, 2, sort_by, descending))).value
                paged += [item[NAME_FIELD[dimension]] for item in page_doc["items"]]
            assert paged == names[:6]
