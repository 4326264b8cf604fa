"""The HTTP analytics API on a real server socket, real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from litemaas_cache.dates import utc_today
from litemaas_cache.errors import ConfigurationError
from litemaas_cache.manager import CacheManager
from litemaas_cache.webapi import serve
from tests.conftest import make_settings
from tests.support.api import SERVICE_TOKEN, Client, authenticator, bearer, serving


@pytest_asyncio.fixture
async def client(fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]]) -> AsyncIterator[Client]:
    """The API with the service token in admin scope, and rate limits no test here reaches."""
    manager = await open_manager(fresh_dsn, admin_analytics_rate_limit=1000, admin_cache_rebuild_limit=1000)
    async with serving(manager, authenticator(service_scope="admin")) as test_client:
        yield test_client


def auth(token: str = SERVICE_TOKEN) -> dict[str, str]:
    return bearer(token)


def week() -> dict[str, str]:
    today = utc_today()
    return {"startDate": (today - dt.timedelta(days=6)).isoformat(), "endDate": today.isoformat()}


async def test_requires_a_credential(client: Client) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": "Bearer "}):
        response = await client.get("/api/v1/analytics", params=week(), headers=headers)
        assert response.status == 401
        body = await response.json()
        assert body["code"] == "UNAUTHORIZED"
        assert SERVICE_TOKEN not in await response.text()
    health = await client.get("/healthz")
    assert health.status == 200


async def test_analytics_cold_then_redis_hit(client: Client, manager: CacheManager) -> None:
    first = await client.get("/api/v1/analytics", params=week(), headers=auth())
    assert first.status == 200
    assert first.headers["X-Cache-Tier"] == "source"
    second = await client.get("/api/v1/analytics", params=week(), headers=auth())
    assert second.headers["X-Cache-Tier"] == "redis"
    document = await second.json()
    assert document == await first.json()
    assert document["period"]["days"] == 7
    assert document["totalRequests"] > 0
    stats = await (await client.get("/api/v1/cache/stats", headers=auth())).json()
    assert stats["redis"]["hits"] == 1


async def test_filters_and_breakdown_pages(client: Client) -> None:
    everything = await (await client.get("/api/v1/analytics", params=week(), headers=auth())).json()
    model = everything["topModels"][0]["model"]
    filtered = await (
        await client.get("/api/v1/analytics", params={**week(), "modelIds": model}, headers=auth())
    ).json()
    assert filtered["totalRequests"] == everything["topModels"][0]["requests"]
    assert list(filtered["totalCost"]["byModel"]) == [model]

    page = await client.get(
        "/api/v1/analytics/user", params={**week(), "pageSize": "3", "page": "2", "sortBy": "cost"}, headers=auth()
    )
    assert page.status == 200
    body = await page.json()
    assert body["pagination"]["page"] == 2
    assert len(body["items"]) <= 3
    assert body["pagination"]["total"] == everything["totalUsers"]
    costs = [item["cost"] for item in body["items"]]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/analytics", {"endDate": "2026-01-01"}, "startDate"),
        ("/api/v1/analytics", {"startDate": "2026-13-01", "endDate": "2026-01-01"}, "startDate"),
        ("/api/v1/analytics", {"startDate": "2026-01-02", "endDate": "2026-01-01"}, "startDate"),
        ("/api/v1/analytics", {"startDate": "2025-01-01", "endDate": "2026-01-01"}, "endDate"),
        ("/api/v1/analytics", {"startDate": "0001-01-01", "endDate": "0001-01-03"}, "startDate"),
        ("/api/v1/analytics", {"startDate": "2026-01-01", "endDate": "2026-01-02", "userIds": "a b"}, "userIds[0]"),
        ("/api/v1/analytics/team", {"startDate": "2026-01-01", "endDate": "2026-01-02"}, "dimension"),
        ("/api/v1/analytics/model", {"startDate": "2026-01-01", "endDate": "2026-01-02", "page": "x"}, "page"),
        ("/api/v1/analytics/model", {"startDate": "2026-01-01", "endDate": "2026-01-02", "sortBy": "x"}, "sortBy"),
    ],
)
async def test_bad_requests_name_the_field(client: Client, path: str, params: dict[str, str], field: str) -> None:
    response = await client.get(path, params=params, headers=auth())
    assert response.status == 400
    assert (await response.json())["error"]["field"] == field


async def test_too_many_ids_is_rejected(client: Client) -> None:
    ids = ",".join(f"u{i}" for i in range(1001))
    response = await client.get("/api/v1/analytics", params={**week(), "userIds": ids}, headers=auth())
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "userIds"


async def test_invalidate_makes_the_next_read_recompute(client: Client) -> None:
    await client.get("/api/v1/analytics", params=week(), headers=auth())
    today = utc_today().isoformat()
    response = await client.post(
        "/api/v1/cache/invalidate", json={"startDate": today, "endDate": today}, headers=auth()
    )
    assert response.status == 200
    report = await response.json()
    assert report["complete"] is True
    assert report["redis"]["keysDeleted"] >= 1
    again = await client.get("/api/v1/analytics", params=week(), headers=auth())
    assert again.headers["X-Cache-Tier"] == "source"
    bad = await client.post("/api/v1/cache/invalidate", data=b"{nope", headers=auth())
    assert bad.status == 400
    assert (await bad.json())["error"]["field"] == "body"


async def test_refuses_to_serve_without_a_credential(fresh_dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET, ADMIN_API_KEYS, API_TOKEN"):
        await serve(make_settings(fresh_dsn), "127.0.0.1", 0)
