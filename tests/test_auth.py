"""Authentication and permissions of the HTTP API, on a real server socket, real PostgreSQL and Redis: LiteMaaS's JWTs
(HS256/384/512 only, exp enforced), its admin API keys and the scoped service token; admin-readonly may read but not
change the caches; every refusal has the {error, code, details} shape and never repeats a credential."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from litemaas_cache.dates import utc_today
from litemaas_cache.errors import ConfigurationError
from litemaas_cache.manager import CacheManager
from litemaas_cache.vocabulary import Permission
from litemaas_cache.webapi import build_app
from litemaas_cache.webapi.auth import Authenticator, Caller
from litemaas_cache.webapi.problems import ApiError
from litemaas_cache.webapi.security import CALLER
from tests.conftest import make_settings
from tests.support.api import (
    ADMIN_ID,
    ADMIN_KEY,
    JWT_SECRET,
    READONLY_ID,
    SERVICE_TOKEN,
    USER_ID,
    Client,
    authenticator,
    bearer,
    mint,
    serving,
    unsigned,
)

STATS = "/api/v1/cache/stats"
INVALIDATE = "/api/v1/cache/invalidate"
GENEROUS = {"admin_analytics_rate_limit": 1000, "admin_cache_rebuild_limit": 1000}


@pytest_asyncio.fixture
async def api_manager(fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]]) -> CacheManager:
    """A manager whose rate limits no test here reaches (test_ratelimit.py tests the limits)."""
    return await open_manager(fresh_dsn, **GENEROUS)


@pytest_asyncio.fixture
async def client(api_manager: CacheManager) -> AsyncIterator[Client]:
    async with serving(api_manager) as test_client:
        yield test_client


def today_range() -> dict[str, str]:
    today = utc_today().isoformat()
    return {"startDate": today, "endDate": today}


async def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    body: dict[str, Any] = await response.json()
    assert set(body) <= {"error", "code", "details"}
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    return body


def hs256_forged_as(alg: str) -> str:
    """The classic confusion attack: a token claiming `alg`, signed with HMAC-SHA256 using the secret as the key."""
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT"}
    payload = {"userId": ADMIN_ID, "roles": ["admin"], "iat": now, "exp": now + 3600}
    unsigned_token = unsigned(header, payload)
    signing_input = unsigned_token.rsplit(".", 1)[0].encode()
    signature = hmac.new(JWT_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return unsigned(header, payload, signature)


def tampered_roles() -> str:
    """A readonly token whose payload was swapped for an admin one, keeping the original signature."""
    genuine = mint(READONLY_ID, ["admin-readonly"])
    forged = mint(READONLY_ID, ["admin"], secret="x" * 64)
    return ".".join([*forged.split(".")[:2], genuine.split(".")[2]])


NOW = int(time.time())
REFUSED: dict[str, tuple[dict[str, str], str]] = {
    "no header": ({}, "missing bearer token"),
    "empty bearer": ({"Authorization": "Bearer "}, "missing bearer token"),
    "expired": (bearer(mint(lifetime=-3600)), "token has expired"),
    "alg none": (
        bearer(unsigned({"alg": "none", "typ": "JWT"}, {"userId": ADMIN_ID, "roles": ["admin"], "exp": NOW + 3600})),
        "algorithm is not accepted",
    ),
    "alg NONE": (
        bearer(unsigned({"alg": "NONE", "typ": "JWT"}, {"userId": ADMIN_ID, "roles": ["admin"], "exp": NOW + 3600})),
        "algorithm is not accepted",
    ),
    "RS256 claimed": (bearer(hs256_forged_as("RS256")), "algorithm is not accepted"),
    "wrong secret": (bearer(mint(secret="another-secret-of-the-same-length-0123456789-abcdefghijklmno")), "signature"),
    "tampered payload": (bearer(tampered_roles()), "signature is invalid"),
    "no exp": (bearer(mint(lifetime=None)), "no exp claim"),
    "unknown admin key": (bearer("ltm_admin_not-one-of-ours-0123456789"), "unknown admin API key"),
    "user API key": (bearer("sk-litellm-user-key-0123456789"), "user API keys"),
    "garbage": (bearer("not-a-token"), "malformed"),
    "no user": (bearer(mint(None)), "names no user"),
    "roles not a list": (bearer(mint(ADMIN_ID, roles="admin")), "roles claim"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_refused_credentials_get_401_naming_the_reason(client: Client, case: str) -> None:
    headers, reason = REFUSED[case]
    response = await client.get(STATS, headers=headers)
    body = await assert_problem(response, 401, "UNAUTHORIZED")
    assert reason in body["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    if token:
        assert token not in await response.text()


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
async def test_hmac_algorithms_are_accepted(client: Client, algorithm: str) -> None:
    response = await client.get(STATS, headers=bearer(mint(algorithm=algorithm)))
    assert response.status == 200, await response.text()


async def test_accepted_credentials(client: Client) -> None:
    within_leeway = mint(lifetime=-5)
    sub_only = mint(None, ["admin-readonly"], sub=READONLY_ID)
    for headers in (
        bearer(within_leeway),
        bearer(sub_only),
        {"Authorization": mint()},  # the Bearer prefix is optional, as in LiteMaaS
        {"Authorization": f"bearer  {mint()}"},
        bearer(ADMIN_KEY),
        bearer(SERVICE_TOKEN),
    ):
        response = await client.get(STATS, headers=headers)
        assert response.status == 200, await response.text()


async def test_admin_readonly_may_read_but_not_change_the_caches(client: Client) -> None:
    readonly = bearer(mint(READONLY_ID, ["admin-readonly", "user"]))
    assert (await client.post("/api/v1/admin/usage/analytics", json=today_range(), headers=readonly)).status == 200
    assert (await client.post("/api/v1/admin/usage/by-model", json=today_range(), headers=readonly)).status == 200
    refused = await client.post(INVALIDATE, json=today_range(), headers=readonly)
    body = await assert_problem(refused, 403, "FORBIDDEN")
    assert body["details"] == {"requiredPermission": "admin:usage:write"}

    admin = await client.post(INVALIDATE, json=today_range(), headers=bearer(mint(ADMIN_ID, ["admin"])))
    assert admin.status == 200, await admin.text()


async def test_admin_key_may_change_the_caches(client: Client) -> None:
    response = await client.post(INVALIDATE, json=today_range(), headers=bearer(ADMIN_KEY))
    assert response.status == 200, await response.text()


async def test_service_token_scope(api_manager: CacheManager) -> None:
    async with serving(api_manager, authenticator(service_scope="read")) as client:
        assert (await client.get(STATS, headers=bearer(SERVICE_TOKEN))).status == 200
        refused = await client.post(INVALIDATE, json=today_range(), headers=bearer(SERVICE_TOKEN))
        await assert_problem(refused, 403, "FORBIDDEN")
    async with serving(api_manager, authenticator(service_scope="admin")) as client:
        allowed = await client.post(INVALIDATE, json=today_range(), headers=bearer(SERVICE_TOKEN))
        assert allowed.status == 200, await allowed.text()


async def test_a_plain_user_may_not_read_everyones_usage(client: Client) -> None:
    user = bearer(mint(USER_ID, ["user"]))
    for response in (
        await client.get(STATS, headers=user),
        await client.post("/api/v1/admin/usage/analytics", json=today_range(), headers=user),
    ):
        body = await assert_problem(response, 403, "FORBIDDEN")
        assert body["details"] == {"requiredPermission": "admin:usage:read"}


async def test_public_unknown_and_unlisted_routes(api_manager: CacheManager) -> None:
    """/healthz needs nothing; an unknown path is aiohttp's 404; a route left out of the policy table is refused to
    everyone, its handler never runs; HEAD follows its GET route's policy; the route sees the verified caller."""
    reached: list[Caller] = []

    async def unlisted(request: web.Request) -> web.Response:
        reached.append(request[CALLER])
        return web.json_response({})

    app = build_app(api_manager, authenticator())
    app.router.add_get("/api/v1/unlisted", unlisted)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/api/v1/nowhere")).status == 404
        assert (await client.get("/api/v1/nowhere", headers=bearer(mint()))).status == 404
        assert (await client.delete(STATS, headers=bearer(mint()))).status == 405
        refused = await client.get("/api/v1/unlisted", headers=bearer(mint()))
        await assert_problem(refused, 403, "FORBIDDEN")
        assert reached == []
        assert (await client.head(STATS, headers=bearer(mint(READONLY_ID, ["admin-readonly"])))).status == 200
        assert (await client.head(STATS, headers=bearer(mint(USER_ID, ["user"])))).status == 403


@pytest.mark.parametrize(
    ("caller", "granted"),
    [
        (Caller("user:a", "a", frozenset({"admin", "user"})), {"usage:own", "admin:usage:read", "admin:usage:write"}),
        (Caller("user:b", "b", frozenset({"admin-readonly"})), {"usage:own", "admin:usage:read"}),
        (Caller("user:c", "c", frozenset({"user"})), {"usage:own"}),
        (Caller("user:d", "d", frozenset({"adminReadonly", "api"})), {"usage:own"}),
        (Caller("adminkey:0", None, frozenset({"admin", "api"})), {"admin:usage:read", "admin:usage:write"}),
        (Caller("service:read", None, frozenset({"admin-readonly"})), {"admin:usage:read"}),
    ],
)
def test_permissions_of_roles(caller: Caller, granted: set[Permission]) -> None:
    every: list[Permission] = ["usage:own", "admin:usage:read", "admin:usage:write"]
    assert {permission for permission in every if caller.may(permission)} == granted


def test_subjects_never_hold_the_secret() -> None:
    auth = authenticator()
    admin = auth.authenticate(f"Bearer {ADMIN_KEY}")
    assert admin.subject.startswith("adminkey:")
    assert ADMIN_KEY not in admin.subject
    assert admin.roles == frozenset({"admin", "api"})
    service = auth.authenticate(SERVICE_TOKEN)
    assert service.subject == "service:read"
    assert auth.authenticate(mint(USER_ID, ["user"])).subject == f"user:{USER_ID}"


def test_no_credential_configured_is_a_configuration_error(fresh_dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET, ADMIN_API_KEYS, API_TOKEN"):
        Authenticator()
    with pytest.raises(ConfigurationError, match="JWT_SECRET, ADMIN_API_KEYS, API_TOKEN"):
        Authenticator.from_settings(make_settings(fresh_dsn, jwt_secret="", admin_api_keys=" ", api_token=""))
    only_keys = Authenticator.from_settings(
        make_settings(fresh_dsn, admin_api_keys=f" {ADMIN_KEY} , ltm_admin_{'b' * 20},")
    )
    assert only_keys.authenticate(f"ltm_admin_{'b' * 20}").roles == frozenset({"admin", "api"})
    with pytest.raises(ApiError, match="JWT_SECRET is not set"):
        only_keys.authenticate(mint())


@pytest.mark.parametrize(
    ("overrides", "setting", "secret"),
    [
        ({"jwt_secret": "short-secret"}, "JWT_SECRET", "short-secret"),
        ({"admin_api_keys": f"{ADMIN_KEY},ltm_admin_x"}, "ADMIN_API_KEYS", "ltm_admin_x"),
        ({"admin_api_keys": ",,"}, "ADMIN_API_KEYS", None),
        ({"api_token_scope": "write"}, "API_TOKEN_SCOPE", None),
    ],
)
def test_bad_settings_name_the_setting_not_the_secret(
    fresh_dsn: str, overrides: dict[str, str], setting: str, secret: str | None
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_settings(fresh_dsn, **overrides)
    assert f"{setting}:" in str(raised.value)
    for value in (secret, ADMIN_KEY):
        if value is not None:
            assert value not in str(raised.value)


async def test_no_credential_appears_in_a_response_or_a_log_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expired, wrong = mint(lifetime=-3600), mint(secret="y" * 64)
    tokens = [mint(), mint(READONLY_ID, ["admin-readonly"]), expired, wrong, ADMIN_KEY, SERVICE_TOKEN]
    tokens += ["ltm_admin_guessed-key-0123456789", "sk-user-key-0123456789"]
    secrets = [*tokens, JWT_SECRET]
    seen: list[str] = []
    for token in tokens:
        for response in (
            await client.get(STATS, headers=bearer(token)),
            await client.post("/api/v1/admin/usage/analytics", json=today_range(), headers=bearer(token)),
            await client.post(INVALIDATE, json=today_range(), headers=bearer(token)),
        ):
            seen.append(await response.text())
            seen.append(repr(dict(response.headers)))
    assert any("UNAUTHORIZED" in text for text in seen)
    assert any("FORBIDDEN" in text for text in seen)
    seen += [record.getMessage() for record in caplog.records]
    assert any("refused" in record.getMessage() for record in caplog.records), "the refusals are logged"
    for secret in secrets:
        for text in seen:
            assert secret not in text
            for part in secret.split(".")[1:] if secret.count(".") == 2 else []:
                assert part not in text  # nor the payload or signature of a JWT
