"""LiteMaaS's admin usage contract, endpoint by endpoint, over HTTP on real PostgreSQL and Redis.

Every answer (errors included) is validated against the schema our own OpenAPI document (served by the app, generated
from webapi/models.py) gives its route and status; numbers are compared with independent SQL over LiteLLM's table
(tests/support/oracle.py) for each kind of filter; pagination edges, every sort field, and the error shapes.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator, FormatChecker

from litemaas_cache.analytics import SORT_FIELDS
from litemaas_cache.dates import utc_today
from litemaas_cache.manager import CacheManager
from litemaas_cache.vocabulary import UNKNOWN_USER_ID, Dimension
from tests.conftest import SEED_ARGS, managed
from tests.support.api import SERVICE_TOKEN, authenticator, bearer, mint, serving
from tests.support.metrics import assert_metrics, close
from tests.support.oracle import (
    IDENTITY,
    ZERO,
    Filters,
    Oracle,
    Picks,
    assert_row,
    expected_rows,
)

# Contract tests call far more often than LiteMaaS's limits allow a caller; tests/test_ratelimit.py tests those.
UNLIMITED = {
    "admin_analytics_rate_limit": 1_000_000,
    "admin_export_rate_limit": 1_000_000,
    "admin_cache_rebuild_limit": 1_000_000,
}
ADMIN = "/api/v1/admin/usage"
TODAY = utc_today()
START = TODAY - dt.timedelta(days=29)
RANGE = {"startDate": START.isoformat(), "endDate": TODAY.isoformat()}


class Api:
    """A client that checks every answer against the schema our OpenAPI document gives its route and status."""

    def __init__(self, client: TestClient[Any, Any], document: dict[str, Any]) -> None:
        self.client = client
        self.document = document

    async def call(
        self,
        method: str,
        path: str,
        status: int = 200,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = await self.client.request(
            method,
            path,
            json=json,
            data=data,
            params=params,
            headers={**bearer(SERVICE_TOKEN), **(headers or {})},
        )
        body = await response.json()
        assert response.status == status, body
        self.validate(method, path, status, body)
        return body

    def validate(self, method: str, path: str, status: int, body: Any) -> None:
        operation = self.document["paths"][path][method.lower()]
        schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        validator = Draft202012Validator(
            {**schema, "components": self.document["components"]}, format_checker=FormatChecker()
        )
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert not problems, problems[:5]

    async def error(self, method: str, path: str, status: int, code: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = await self.call(method, path, status, **kwargs)
        assert body["code"] == code, body
        return body


async def _open_api(manager: CacheManager) -> AsyncIterator[Api]:
    """The API with the service token in admin scope (every admin route), and LiteMaaS users' JWTs."""
    async with serving(manager, authenticator(service_scope="admin")) as client:
        document = await (await client.get("/api/v1/openapi.json")).json()
        yield Api(client, document)


@pytest_asyncio.fixture
async def api(module_dsn: str, key_prefix: str) -> AsyncIterator[Api]:
    """The API on a module-wide copy of the seeded data (read-only tests), with a Redis prefix of its own."""
    async with managed(module_dsn, key_prefix, **UNLIMITED) as manager:
        async for client in _open_api(manager):
            yield client


@pytest_asyncio.fixture
async def own_api(fresh_dsn: str, key_prefix: str) -> AsyncIterator[Api]:
    """The API on a private copy of the seeded data, for tests that change LiteLLM's table."""
    async with managed(fresh_dsn, key_prefix, **UNLIMITED) as manager:
        async for client in _open_api(manager):
            yield client


FILTER_KINDS: dict[str, Callable[[Picks], Filters]] = {
    "none": lambda p: Filters([], [], [], []),
    "userIds": lambda p: Filters([p.heavy_user, p.second_user], [], [], []),
    "modelIds": lambda p: Filters([], ["gpt-4o", "llama-3.1-8b-instruct"], [], []),
    "providerIds": lambda p: Filters([], [], ["anthropic", "mistral"], []),
    "apiKeyIds (alias)": lambda p: Filters([], [], [], [p.second_user_alias]),
    "apiKeyIds (hash)": lambda p: Filters([], [], [], [p.third_user_key]),
}


def body_of(f: Filters) -> dict[str, Any]:
    return {**RANGE, "userIds": f.users, "modelIds": f.models, "providerIds": f.providers, "apiKeyIds": f.keys}


# --- the document ------------------------------------------------------------------------------------------------


async def test_openapi_lists_every_route_and_only_them(api: Api) -> None:
    app = api.client.app
    assert app is not None
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method.upper(), path) for path, ops in api.document["paths"].items() for method in ops}
    assert served == documented
    assert api.document["openapi"] == "3.1.0"
    for path, ops in api.document["paths"].items():
        for method, operation in ops.items():
            assert "200" in operation["responses"], (method, path)
            if path.startswith(ADMIN):
                assert {"401", "403", "429", "500"} <= set(operation["responses"]), path
                assert operation["x-required-permission"].startswith("admin:usage:"), path
    by_user = api.document["paths"][f"{ADMIN}/by-user"]["post"]
    assert {p["name"] for p in by_user["parameters"]} == {"page", "limit", "sortBy", "sortOrder"}
    sort_by = next(p for p in by_user["parameters"] if p["name"] == "sortBy")
    assert sort_by["schema"]["enum"] == list(SORT_FIELDS["user"])
    assert by_user["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UsageFilterRequest"
    }


# --- POST /analytics ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FILTER_KINDS))
async def test_analytics_equals_sql_for_each_filter_kind(kind: str, api: Api, oracle: Oracle, picks: Picks) -> None:
    f = FILTER_KINDS[kind](picks)
    doc = await api.call("POST", f"{ADMIN}/analytics", json=body_of(f))
    total = (await oracle.group(START, TODAY, f)).get((), ZERO)
    assert total.requests > 0
    assert doc["totalRequests"] == total.requests
    assert doc["totalTokens"] == {"total": total.tokens, "prompt": total.prompt, "completion": total.completion}
    assert close(doc["totalCost"]["total"], total.spend)
    assert math.isclose(doc["successRate"], 100.0 * total.ok / total.requests)
    assert doc["activeUsers"] == total.active_users
    by_provider = await oracle.group(START, TODAY, f, "provider")
    assert set(doc["totalCost"]["byProvider"]) == {p for (p,) in by_provider}  # providerIds applies here too
    for (provider,), s in by_provider.items():
        assert close(doc["totalCost"]["byProvider"][provider], s.spend), provider
    assert doc["topMetrics"]["topApiKey"] is not None
    assert sum(d["requests"] for d in doc["dailyUsage"]) == total.requests
    assert sum(m["requests"] for d in doc["dailyModelUsage"] for m in d["models"]) == total.requests


@pytest.mark.parametrize("kind", ["userIds", "modelIds", "apiKeyIds (hash)"])
async def test_a_filter_read_first_on_a_cold_cache_equals_sql(
    kind: str, own_api: Api, oracle: Oracle, picks: Picks
) -> None:
    """The first read after the cache is filled: its filter values had no dictionary code before the days were read
    from the source (it used to answer 0 requests, and cache that)."""
    f = FILTER_KINDS[kind](picks)
    doc = await own_api.call("POST", f"{ADMIN}/analytics", json=body_of(f))
    assert doc["totalRequests"] == (await oracle.group(START, TODAY, f)).get((), ZERO).requests > 0


async def test_total_users_is_every_litemaas_user_not_only_the_active_ones(api: Api, oracle: Oracle) -> None:
    doc = await api.call("POST", f"{ADMIN}/analytics", json={**RANGE, "modelIds": ["claude-3-5-sonnet"]})
    cur = await oracle.conn.execute("SELECT count(*) FROM users")
    row = await cur.fetchone()
    assert row is not None
    unknown_active = UNKNOWN_USER_ID in doc["totalCost"]["byUser"]
    assert doc["totalUsers"] == row[0] + unknown_active
    assert 0 < doc["activeUsers"] < doc["totalUsers"]


async def test_the_unknown_user_is_litemaas_s(api: Api, oracle: Oracle) -> None:
    by_zero_uuid = await api.call("POST", f"{ADMIN}/analytics", json={**RANGE, "userIds": [UNKNOWN_USER_ID]})
    by_our_name = await api.call("POST", f"{ADMIN}/analytics", json={**RANGE, "userIds": ["unmapped"]})
    assert by_zero_uuid == by_our_name
    unmapped = (await oracle.group(START, TODAY, Filters(["unmapped"], [], [], []))).get((), ZERO)
    assert by_zero_uuid["totalRequests"] == unmapped.requests > 0
    assert list(by_zero_uuid["totalCost"]["byUser"]) == [UNKNOWN_USER_ID]
    assert by_zero_uuid["topMetrics"]["topUser"] is None, "LiteMaaS's topUser is never the Unknown User"
    [unknown] = by_zero_uuid["topUsers"]
    assert {k: unknown[k] for k in ("userId", "username", "email", "role")} == {
        "userId": UNKNOWN_USER_ID,
        "username": "Unknown User",
        "email": "unknown@system.local",
        "role": "user",
    }


async def test_usage_is_not_hidden_when_the_previous_period_is_empty(api: Api, oracle: Oracle) -> None:
    first = TODAY - dt.timedelta(days=SEED_ARGS["days"] - 1)  # the seeded data starts here: nothing before
    days = {"startDate": first.isoformat(), "endDate": (first + dt.timedelta(days=4)).isoformat()}
    doc = await api.call("POST", f"{ADMIN}/analytics", json=days)
    assert doc["totalRequests"] > 0
    requests = doc["trends"]["requestsTrend"]
    assert requests == {
        "metric": "requests",
        "current": doc["totalRequests"],
        "previous": 0,
        "percentageChange": 100.0,
        "direction": "up",
    }


async def test_analytics_answers_a_body_with_1000_user_ids(api: Api, picks: Picks, oracle: Oracle) -> None:
    ids = [picks.heavy_user, *(str(uuid.UUID(int=i + 1)) for i in range(999))]
    doc = await api.call("POST", f"{ADMIN}/analytics", json={**RANGE, "userIds": ids})
    expected = (await oracle.group(START, TODAY, Filters([picks.heavy_user], [], [], []))).get((), ZERO)
    assert doc["totalRequests"] == expected.requests > 0
    too_many = await api.error(
        "POST", f"{ADMIN}/analytics", 400, "VALIDATION_ERROR", json={**RANGE, "userIds": [*ids, UNKNOWN_USER_ID]}
    )
    assert too_many["details"]["field"] == "userIds"


# --- POST /api/v1/usage/analytics --------------------------------------------------------------------------------


async def test_own_analytics_forces_the_caller_s_user_id(api: Api, picks: Picks, oracle: Oracle) -> None:
    asked_for_someone_else = {**RANGE, "userIds": [picks.second_user]}
    doc = await api.call(
        "POST", "/api/v1/usage/analytics", json=asked_for_someone_else, headers=bearer(mint(picks.heavy_user, ["user"]))
    )
    own = (await oracle.group(START, TODAY, Filters([picks.heavy_user], [], [], []))).get((), ZERO)
    assert doc["totalRequests"] == own.requests > 0
    assert list(doc["totalCost"]["byUser"]) == [picks.heavy_user]
    await api.error("POST", "/api/v1/usage/analytics", 403, "FORBIDDEN", json=RANGE)  # no user behind the token


# --- POST /by-user, /by-model, /by-provider ----------------------------------------------------------------------

BREAKDOWN_FILTERS = {  # what each filter kind keeps in each breakdown
    "userIds": lambda p: Filters([p.heavy_user, "unmapped"], [], [], []),
    "modelIds": FILTER_KINDS["modelIds"],
    "providerIds": FILTER_KINDS["providerIds"],
    "apiKeyIds": FILTER_KINDS["apiKeyIds (alias)"],
}


@pytest.mark.parametrize("dimension", ["user", "model", "provider"])
@pytest.mark.parametrize("kind", list(BREAKDOWN_FILTERS))
async def test_breakdown_rows_equal_sql_for_each_filter_kind(
    dimension: Dimension, kind: str, api: Api, oracle: Oracle, picks: Picks
) -> None:
    f = BREAKDOWN_FILTERS[kind](picks)
    doc = await api.call("POST", f"{ADMIN}/by-{dimension}", json=body_of(f), params={"limit": 200})
    expected = await expected_rows(oracle, dimension, START, TODAY, f)
    assert expected
    assert {row[IDENTITY[dimension]] for row in doc["data"]} == set(expected)
    assert doc["pagination"]["total"] == len(expected)
    for row in doc["data"]:
        assert_row(dimension, row, *expected[row[IDENTITY[dimension]]])


async def test_by_provider_honours_provider_ids(api: Api, oracle: Oracle) -> None:
    doc = await api.call("POST", f"{ADMIN}/by-provider", json={**RANGE, "providerIds": ["mistral"]})
    [row] = doc["data"]
    expected = (await oracle.group(START, TODAY, Filters([], [], ["mistral"], []), "provider"))[("mistral",)]
    assert row["provider"] == "mistral"
    assert_metrics(row["metrics"], expected, "mistral")
    assert row["metrics"]["successRate"] < 100, "a real success rate (the seed has failed requests)"


@pytest.mark.parametrize("dimension", ["user", "model", "provider"])
async def test_pagination_edges(dimension: Dimension, api: Api) -> None:
    path = f"{ADMIN}/by-{dimension}"
    everything = await api.call("POST", path, json=RANGE, params={"limit": 200})
    total = everything["pagination"]["total"]
    assert 1 < total <= 200
    assert everything["pagination"] == {
        "page": 1,
        "limit": 200,
        "total": total,
        "totalPages": 1,
        "hasNext": False,
        "hasPrevious": False,
    }
    one = await api.call("POST", path, json=RANGE, params={"limit": 1, "page": 2})
    assert one["data"] == everything["data"][1:2]
    assert one["pagination"] == {
        "page": 2,
        "limit": 1,
        "total": total,
        "totalPages": total,
        "hasNext": total > 2,
        "hasPrevious": True,
    }
    past = await api.call("POST", path, json=RANGE, params={"limit": 1, "page": total + 1})
    assert (past["data"], past["pagination"]["hasNext"], past["pagination"]["hasPrevious"]) == ([], False, True)
    default = await api.call("POST", path, json=RANGE)
    assert default["pagination"]["limit"] == 50
    assert default["data"] == everything["data"][:50], "default: sortBy totalTokens, sortOrder desc"
    empty = await api.call("POST", path, json={"startDate": "2001-01-01", "endDate": "2001-01-02"})
    assert empty == {
        "data": [],
        "pagination": {"page": 1, "limit": 50, "total": 0, "totalPages": 0, "hasNext": False, "hasPrevious": False},
    }
    for params, field in (({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"page": 0}, "page")):
        refused = await api.error("POST", path, 400, "VALIDATION_ERROR", json=RANGE, params=params)
        assert refused["details"]["field"] == field


SORT_KEYS = {
    "totalRequests": lambda r: r["metrics"]["requests"],
    "totalTokens": lambda r: r["metrics"]["tokens"]["total"],
    "promptTokens": lambda r: r["metrics"]["tokens"]["prompt"],
    "completionTokens": lambda r: r["metrics"]["tokens"]["completion"],
    "totalCost": lambda r: r["metrics"]["cost"],
    "username": lambda r: r["username"].casefold(),
    "modelName": lambda r: r["modelName"].casefold(),
    "providerName": lambda r: r["provider"].casefold(),
}


@pytest.mark.parametrize("dimension", ["user", "model", "provider"])
async def test_every_sort_field_both_ways(dimension: Dimension, api: Api) -> None:
    path = f"{ADMIN}/by-{dimension}"
    identity = IDENTITY[dimension]
    for sort_by in SORT_FIELDS[dimension]:
        for order in ("asc", "desc"):
            params = {"limit": 200, "sortBy": sort_by, "sortOrder": order}
            rows = (await api.call("POST", path, json=RANGE, params=params))["data"]
            keys = [(SORT_KEYS[sort_by](r), r[identity]) for r in rows]
            # By the field, then (stable) by the row's id ascending, whichever the direction.
            expected = sorted(keys, key=lambda k: k[1])
            expected.sort(key=lambda k: k[0], reverse=order == "desc")
            assert keys == expected, (sort_by, order)
    refused = await api.error("POST", path, 400, "VALIDATION_ERROR", json=RANGE, params={"sortBy": "cost"})
    assert refused["details"]["field"] == "sortBy"
    assert "totalCost" in refused["error"]


# --- GET /filter-options -----------------------------------------------------------------------------------------


async def test_filter_options_equal_sql(api: Api, oracle: Oracle) -> None:
    doc = await api.call("GET", f"{ADMIN}/filter-options", params=RANGE)
    none = Filters([], [], [], [])
    models = {m: s for (m,), s in (await oracle.group(START, TODAY, none, "model")).items() if s.requests > 0}
    assert doc["models"] == [{"id": m, "name": m, "provider": models[m].provider} for m in sorted(models)]
    users = await oracle.users()
    active = [users[u] for (u,), s in (await oracle.group(START, TODAY, none, "user_id")).items() if s.requests > 0]
    expected = sorted(active, key=lambda u: (u["username"].casefold(), u["userId"]))
    assert doc["users"] == [{k: u[k] for k in ("userId", "username", "email")} for u in expected]
    backwards = {"startDate": RANGE["endDate"], "endDate": RANGE["startDate"]}
    refused = await api.error("GET", f"{ADMIN}/filter-options", 400, "INVALID_DATE_RANGE", params=backwards)
    assert "details" not in refused
    missing = await api.error("GET", f"{ADMIN}/filter-options", 400, "VALIDATION_ERROR", params={"startDate": "x"})
    assert {p["field"] for p in missing["details"]["problems"]} == {"startDate", "endDate"}


# --- dates and schema errors ---------------------------------------------------------------------------------------


async def test_date_errors_as_litemaas_sends_them(api: Api) -> None:
    year = {"startDate": "2025-01-01", "endDate": "2025-12-31"}
    too_large = await api.error("POST", f"{ADMIN}/by-model", 400, "DATE_RANGE_TOO_LARGE", json=year)
    assert too_large["error"] == "Date range too large. Maximum allowed is 90 days, requested 365 days."
    assert too_large["details"] == {
        "field": "endDate",
        "requestedDays": 365,
        "maxAllowedDays": 90,
        "suggestion": "Break your request into 5 smaller date ranges",
        "suggestedRanges": [
            {"startDate": "2025-01-01", "endDate": "2025-03-31"},
            {"startDate": "2025-04-01", "endDate": "2025-06-29"},
            {"startDate": "2025-06-30", "endDate": "2025-09-27"},
            {"startDate": "2025-09-28", "endDate": "2025-12-26"},
        ],
    }
    backwards = {"startDate": "2025-02-10", "endDate": "2025-02-01"}
    order = await api.error("POST", f"{ADMIN}/analytics", 400, "INVALID_DATE_ORDER", json=backwards)
    assert order["details"]["suggestedRanges"] == [{"startDate": "2025-02-01", "endDate": "2025-02-10"}]
    assert "requestedDays" not in order["details"]
    assert order["details"]["field"] == "startDate"
    year_backwards = {"startDate": "2025-12-31", "endDate": "2025-01-01", "format": "csv"}
    export_order = await api.error("POST", f"{ADMIN}/export", 400, "INVALID_DATE_ORDER", json=year_backwards)
    assert export_order["details"]["maxAllowedDays"] == 365, "an export's own limit (ADMIN_ANALYTICS_MAX_EXPORT_DAYS)"
    assert export_order["details"]["suggestedRanges"] == [{"startDate": "2025-01-01", "endDate": "2025-12-31"}]
    for bad, field in (
        ({**RANGE, "startDate": "2024-02-30"}, "startDate"),
        ({**RANGE, "endDate": 20240101}, "endDate"),
        ({"startDate": RANGE["startDate"]}, "endDate"),
        ({**RANGE, "modelIds": "gpt-4o"}, "modelIds"),
        ({**RANGE, "userIds": ["ok", "not ok"]}, "userIds[1]"),
        ({**RANGE, "startDate": "1999-12-31"}, "startDate"),
    ):
        refused = await api.error("POST", f"{ADMIN}/analytics", 400, "VALIDATION_ERROR", json=bad)
        assert refused["details"]["field"] == field, bad
        assert refused["error"].startswith(f"{field}: ")
    not_json = await api.error("POST", f"{ADMIN}/analytics", 400, "VALIDATION_ERROR", data=b"{nope")
    assert not_json["details"]["field"] == "body"
    ignored = await api.call("POST", f"{ADMIN}/analytics", json={**RANGE, "somethingElse": 1})
    assert ignored["period"] == RANGE


# --- GET /cache/metrics, POST /refresh-today, POST /rebuild-cache --------------------------------------------------


async def test_cache_metrics_count_hits_and_misses(api: Api) -> None:
    before = await api.call("GET", f"{ADMIN}/cache/metrics")
    for _ in range(2):
        await api.call("POST", f"{ADMIN}/analytics", json=RANGE)
    after = await api.call("GET", f"{ADMIN}/cache/metrics")
    assert after["cacheMisses"] == before["cacheMisses"] + 1
    assert after["cacheHits"] == before["cacheHits"] + 1
    assert after["lockAcquisitionSuccesses"] == before["lockAcquisitionSuccesses"] + 1
    assert after["cacheHitRate"] == after["cacheHits"] / (after["cacheHits"] + after["cacheMisses"])


async def _add_usage(dsn: str, day: dt.date, requests: int) -> None:
    """A new LiteLLM row on `day`, under a key LiteMaaS knows."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            """INSERT INTO "LiteLLM_DailyUserSpend" (id, date, api_key, model, custom_llm_provider, prompt_tokens,
                   completion_tokens, spend, api_requests, successful_requests, failed_requests)
               SELECT %s, %s, key_hash, 'gpt-4o', 'openai', 10, 5, 0.5, %s, %s, 0 FROM api_keys LIMIT 1""",
            (uuid.uuid4().hex, day.isoformat(), requests, requests),
        )


async def test_refresh_today_reads_today_again(own_api: Api, manager: CacheManager) -> None:
    today = {"startDate": TODAY.isoformat(), "endDate": TODAY.isoformat()}
    before = await own_api.call("POST", f"{ADMIN}/analytics", json=today)
    await _add_usage(manager.settings.database_dsn, TODAY, 777)
    assert (await own_api.call("POST", f"{ADMIN}/analytics", json=today)) == before, "cached, within its TTL"
    refreshed = await own_api.call("POST", f"{ADMIN}/refresh-today")
    assert refreshed["status"] == "success"
    assert dt.datetime.fromisoformat(refreshed["refreshedAt"]).date() == TODAY
    after = await own_api.call("POST", f"{ADMIN}/analytics", json=today)
    assert after["totalRequests"] == before["totalRequests"] + 777


async def test_rebuild_cache_purges_and_recomputes_the_range(own_api: Api, manager: CacheManager) -> None:
    day = TODAY - dt.timedelta(days=10)  # a past day: cached for good until something purges it
    days = {"startDate": day.isoformat(), "endDate": day.isoformat()}
    before = await own_api.call("POST", f"{ADMIN}/analytics", json=days)
    await _add_usage(manager.settings.database_dsn, day, 555)
    assert (await own_api.call("POST", f"{ADMIN}/analytics", json=days)) == before
    rebuilt = await own_api.call("POST", f"{ADMIN}/rebuild-cache", json=days)
    assert (rebuilt["status"], rebuilt["rebuiltCount"]) == ("success", 1)
    assert rebuilt["totalEntries"] >= 1
    after = await own_api.call("POST", f"{ADMIN}/analytics", json=days)
    assert after["totalRequests"] == before["totalRequests"] + 555
    default = await own_api.call("POST", f"{ADMIN}/rebuild-cache")
    assert default["rebuiltCount"] == manager.settings.max_range_days, "by default the last 90 days"
    metrics = await own_api.call("GET", f"{ADMIN}/cache/metrics")
    assert metrics["cacheRebuilds"] == 2
    too_long = {"startDate": "2024-01-01", "endDate": "2025-12-31"}
    await own_api.error("POST", f"{ADMIN}/rebuild-cache", 400, "DATE_RANGE_TOO_LARGE", json=too_long)
