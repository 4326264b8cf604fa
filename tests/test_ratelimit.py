"""Per-caller rate limits of the HTTP API on a real server socket, real PostgreSQL and Redis: LiteMaaS's defaults and
headers, one count shared by every instance through Redis, per-process counting when Redis is down, and token
guessing limited by address."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from litemaas_cache.dates import utc_today
from litemaas_cache.manager import CacheManager
from litemaas_cache.webapi.ratelimit import LOCAL_PRUNE_AT, LocalWindows, RateRule, rules_from_settings
from tests.conftest import make_settings
from tests.support.api import ADMIN_ID, ADMIN_KEY, READONLY_ID, Client, bearer, mint, serving
from tests.support.redis_server import free_port

OpenManager = Callable[..., Awaitable[CacheManager]]
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def month_to_date() -> dict[str, str]:
    today = utc_today()
    return {"startDate": today.replace(day=1).isoformat(), "endDate": today.isoformat()}


async def analytics(client: Client, token: str) -> Any:
    response = await client.post("/api/v1/admin/usage/analytics", json=month_to_date(), headers=bearer(token))
    await response.read()
    return response


async def assert_limited(response: Any, limit: int, window_seconds: int) -> dict[str, Any]:
    """A 429 in the {error, code, details} shape with every header, retry-after within the window."""
    assert response.status == 429, (await response.text())[:300]
    body: dict[str, Any] = await response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == "RATE_LIMITED"
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window_seconds
    assert int(response.headers["x-ratelimit-reset"]) == retry_after
    assert body["details"]["retryAfterSeconds"] == retry_after
    assert body["details"]["limit"] == limit
    return body


async def test_the_eleventh_analytics_call_in_a_minute_gets_429(fresh_dsn: str, open_manager: OpenManager) -> None:
    manager = await open_manager(fresh_dsn)
    admin, other = mint(ADMIN_ID, ["admin"]), mint(READONLY_ID, ["admin-readonly"])
    async with serving(manager) as client:
        for served in range(1, 11):
            response = await analytics(client, admin)
            assert response.status == 200
            assert response.headers["x-ratelimit-limit"] == "10"
            assert response.headers["x-ratelimit-remaining"] == str(10 - served)
            assert 1 <= int(response.headers["x-ratelimit-reset"]) <= 60
            assert "retry-after" not in response.headers
        body = await assert_limited(await analytics(client, admin), 10, 60)
        assert body["details"]["bucket"] == "analytics"
        # The stats route draws on the same bucket; another caller has an allowance of its own.
        await assert_limited(await client.get("/api/v1/cache/stats", headers=bearer(admin)), 10, 60)
        assert (await analytics(client, other)).status == 200
    key = manager.keys.rate_limit("analytics", f"user:{ADMIN_ID}")
    async with Redis.from_url(make_settings(fresh_dsn).redis_dsn) as redis:
        assert int(await redis.get(key)) == 12
        assert 0 < await redis.pttl(key) <= 60_000


async def test_requests_answered_before_redis_counts_them_are_all_counted(
    fresh_dsn: str, open_manager: OpenManager
) -> None:
    """Below half its limit a caller's requests are answered first and counted in Redis a moment later: Redis ends
    up with every one, soon after, and when the API stops before that moment."""
    manager = await open_manager(fresh_dsn)
    admin, readonly = mint(ADMIN_ID, ["admin"]), mint(READONLY_ID, ["admin-readonly"])
    async with Redis.from_url(make_settings(fresh_dsn).redis_dsn) as redis:

        async def counted(user: str) -> int:
            return int(await redis.get(manager.keys.rate_limit("analytics", f"user:{user}")) or 0)

        async with serving(manager) as client:
            for served in range(1, 5):
                response = await analytics(client, admin)
                assert response.headers["x-ratelimit-remaining"] == str(10 - served)
            for _ in range(250):  # up to 5 s
                if await counted(ADMIN_ID) >= 4:
                    break
                await asyncio.sleep(0.02)
            assert await counted(ADMIN_ID) == 4
            for _ in range(4):
                assert (await analytics(client, readonly)).status == 200
        assert await counted(READONLY_ID) == 4, "the API sent what it had not counted yet as it stopped"


async def test_rebuild_bucket_allows_one_per_five_minutes(fresh_dsn: str, open_manager: OpenManager) -> None:
    manager = await open_manager(fresh_dsn)
    today = utc_today().isoformat()
    body = {"startDate": today, "endDate": today}
    async with serving(manager) as client:
        first = await client.post("/api/v1/cache/invalidate", json=body, headers=bearer(ADMIN_KEY))
        assert first.status == 200, await first.text()
        assert first.headers["x-ratelimit-remaining"] == "0"
        again = await client.post("/api/v1/cache/invalidate", json=body, headers=bearer(ADMIN_KEY))
        refusal = await assert_limited(again, 1, 300)
        assert refusal["details"]["bucket"] == "rebuild"
        assert refusal["details"]["windowSeconds"] == 300
        # Reads are another bucket.
        assert (await client.get("/api/v1/cache/stats", headers=bearer(ADMIN_KEY))).status == 200


async def test_two_instances_sharing_redis_share_the_count(fresh_dsn: str, open_manager: OpenManager) -> None:
    """Two managers (own pools, like two pods) on one Redis prefix: 5 calls on each, the 11th is refused by either."""
    admin = mint(ADMIN_ID, ["admin"])
    first, second = await open_manager(fresh_dsn), await open_manager(fresh_dsn)
    async with serving(first) as one, serving(second) as two:
        for client in (one, two):
            for _ in range(5):
                assert (await analytics(client, admin)).status == 200
        await assert_limited(await analytics(one, admin), 10, 60)
        await assert_limited(await analytics(two, admin), 10, 60)


async def test_with_redis_down_each_process_still_limits(
    fresh_dsn: str, open_manager: OpenManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on Redis's port: every answer is 200 or 429, never a 5xx, and each instance counts alone."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    first = await open_manager(fresh_dsn, redis_url=dead, redis_socket_timeout=0.25)
    second = await open_manager(fresh_dsn, redis_url=dead, redis_socket_timeout=0.25)
    admin = mint(ADMIN_ID, ["admin"])
    async with serving(first) as one, serving(second) as two:
        statuses = [(await analytics(one, admin)).status for _ in range(10)]
        assert statuses == [200] * 10
        await assert_limited(await analytics(one, admin), 10, 60)
        response = await analytics(two, admin)
        assert response.status == 200, "the second process counts on its own while Redis is down"
        assert response.headers["x-ratelimit-remaining"] == "9"
    assert not first.redis.available
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_token_guessing_is_limited_by_address(fresh_dsn: str, open_manager: OpenManager) -> None:
    """Refused credentials count against the client's address; a verified caller there keeps its own allowance."""
    manager = await open_manager(fresh_dsn, admin_analytics_rate_limit=3)
    async with serving(manager) as client:
        for attempt in range(3):
            response = await analytics(client, f"ltm_admin_guess-{attempt:04d}-0123456789")
            assert response.status == 401
            assert response.headers["x-ratelimit-remaining"] == str(2 - attempt)
        await assert_limited(await analytics(client, mint(secret="z" * 64)), 3, 60)
        assert (await analytics(client, mint(ADMIN_ID, ["admin"]))).status == 200


def test_limits_are_settings(fresh_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = rules_from_settings(make_settings(fresh_dsn))
    assert defaults == {"analytics": RateRule(10, 60), "export": RateRule(5, 60), "rebuild": RateRule(1, 300)}
    monkeypatch.setenv("ADMIN_ANALYTICS_RATE_LIMIT", "30")
    monkeypatch.setenv("ADMIN_EXPORT_RATE_LIMIT", "2")
    monkeypatch.setenv("ADMIN_CACHE_REBUILD_LIMIT", "3")
    rules = rules_from_settings(make_settings(fresh_dsn))
    assert [rules[bucket].limit for bucket in ("analytics", "export", "rebuild")] == [30, 2, 3]


async def test_redis_window_counts_and_always_expires(fresh_dsn: str, open_manager: OpenManager) -> None:
    manager = await open_manager(fresh_dsn)
    key = manager.keys.rate_limit("export", "user:someone")
    assert await manager.redis.count_in_window(key, 60_000) == (1, 60_000)
    second = await manager.redis.count_in_window(key, 60_000)
    assert second is not None
    assert second[0] == 2
    assert 0 < second[1] <= 60_000
    async with Redis.from_url(make_settings(fresh_dsn).redis_dsn) as redis:
        stray = manager.keys.rate_limit("export", "user:no-expiry")
        await redis.set(stray, 7)  # a window that lost its expiry would never close: the next count gives it one
        assert await manager.redis.count_in_window(stray, 60_000) == (8, 60_000)
        assert 0 < await redis.pttl(stray) <= 60_000


def test_local_windows_close_and_are_forgotten() -> None:
    now = [1000.0]
    windows = LocalWindows(clock=lambda: now[0])
    assert [windows.count_in_window("a", 60_000)[0] for _ in range(3)] == [1, 2, 3]
    now[0] += 30
    assert windows.count_in_window("a", 60_000) == (4, 30_000)
    now[0] += 30
    assert windows.count_in_window("a", 60_000) == (1, 60_000), "a closed window starts over"
    for batch in range(4):  # callers of one window each, the windows of a batch closed before the next
        for caller in range(LOCAL_PRUNE_AT):
            windows.count_in_window(f"{batch}-{caller}", 1_000)
        now[0] += 2
    assert len(windows) <= 2 * LOCAL_PRUNE_AT, "closed windows are swept: memory is bounded by recent callers"
