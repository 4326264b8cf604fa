"""The HTTP API on a real server socket, real PostgreSQL and Redis: authentication, the cache tiers behind a route,
the operator-side extras (cache invalidation and statistics) and the error shape of what the router itself refuses.
tests/test_api_contract.py checks each LiteMaaS endpoint against the contract and SQL."""

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

ANALYTICS = "/api/v1/admin/usage/analytics"


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


async def test_requires_the_bearer_token(client: Client) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": "Bearer "}):
        response = await client.post(ANALYTICS, json=week(), headers=headers)
        assert response.status == 401
        assert (await response.json())["code"] == "UNAUTHORIZED"
        assert SERVICE_TOKEN not in await response.text()
    for public in ("/healthz", "/api/v1/openapi.json"):
        assert (await client.get(public)).status == 200, public


async def test_analytics_cold_then_redis_hit(client: Client) -> None:
    first = await client.post(ANALYTICS, json=week(), headers=auth())
    assert first.status == 200
    assert first.headers["X-Cache-Tier"] == "source"
    second = await client.post(ANALYTICS, json=week(), headers=auth())
    assert second.headers["X-Cache-Tier"] == "redis"
    document = await second.json()
    assert document == await first.json()
    assert document["period"] == week()
    assert document["totalRequests"] > 0
    stats = await (await client.get("/api/v1/cache/stats", headers=auth())).json()
    assert stats["redis"]["hits"] == 1


async def test_invalidate_makes_the_next_read_recompute(client: Client) -> None:
    await client.post(ANALYTICS, json=week(), headers=auth())
    today = utc_today().isoformat()
    response = await client.post(
        "/api/v1/cache/invalidate", json={"startDate": today, "endDate": today}, headers=auth()
    )
    assert response.status == 200
    report = await response.json()
    assert report["complete"] is True
    assert report["redis"]["keysDeleted"] >= 1
    again = await client.post(ANALYTICS, json=week(), headers=auth())
    assert again.headers["X-Cache-Tier"] == "source"
    bad = await client.post("/api/v1/cache/invalidate", data=b"{nope", headers=auth())
    assert bad.status == 400
    assert (await bad.json())["details"]["field"] == "body"
    wrong_tier = await client.post(
        "/api/v1/cache/invalidate", json={"startDate": today, "endDate": today, "tiers": ["disk"]}, headers=auth()
    )
    assert (await wrong_tier.json())["details"]["field"] == "tiers[0]"


async def test_what_the_router_refuses_has_the_error_shape(client: Client) -> None:
    missing = await client.get("/api/v1/analytics", params=week(), headers=auth())  # the old route is gone
    assert (missing.status, await missing.json()) == (404, {"error": "Not Found", "code": "NOT_FOUND"})
    wrong_method = await client.get(ANALYTICS, headers=auth())
    assert wrong_method.status == 405
    assert (await wrong_method.json())["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in wrong_method.headers["Allow"]


async def test_refuses_to_serve_without_a_credential(fresh_dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET, ADMIN_API_KEYS, API_TOKEN"):
        await serve(make_settings(fresh_dsn), "127.0.0.1", 0)
