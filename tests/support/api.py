"""The HTTP API under test: credentials of every kind, and JWTs minted as LiteMaaS mints them."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import orjson
from aiohttp.test_utils import TestClient, TestServer

from litemaas_cache.manager import CacheManager
from litemaas_cache.webapi import build_app
from litemaas_cache.webapi.auth import Authenticator

JWT_SECRET = "jwt-secret-for-tests-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF"  # 64 chars: long enough for HS512
ADMIN_KEY = "ltm_admin_tests_0123456789abcdef"
SERVICE_TOKEN = "service-token-for-tests-0123456789"
ADMIN_ID = "00000000-0000-4000-8000-00000000a001"
READONLY_ID = "00000000-0000-4000-8000-00000000a002"
USER_ID = "00000000-0000-4000-8000-00000000a003"

Client = TestClient[Any, Any]


def mint(
    user_id: str | None = ADMIN_ID,
    roles: Any = None,
    *,
    algorithm: str = "HS256",
    secret: str = JWT_SECRET,
    lifetime: float | None = 3600,
    **claims: Any,
) -> str:
    """A LiteMaaS session token: userId, username, roles, iat, exp (a negative lifetime: expired; None: no exp)."""
    now = int(time.time())
    payload: dict[str, Any] = {"username": "tester", "iat": now}
    if lifetime is not None:
        payload["exp"] = now + int(lifetime)
    if user_id is not None:
        payload["userId"] = user_id
    payload["roles"] = ["admin", "user"] if roles is None else roles
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token with any header (alg none, RS256, ...) that PyJWT would not produce for an HMAC secret."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return ".".join([part(orjson.dumps(header)), part(orjson.dumps(payload)), part(signature)])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def authenticator(**overrides: Any) -> Authenticator:
    """All three credentials configured (the service token with `service_scope`, read unless overridden)."""
    settings: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "admin_keys": [ADMIN_KEY],
        "service_token": SERVICE_TOKEN,
        "service_scope": "read",
    }
    settings.update(overrides)
    return Authenticator(**settings)


@asynccontextmanager
async def serving(manager: CacheManager, auth: Authenticator | None = None) -> AsyncIterator[Client]:
    """The API of `manager` on a real loopback socket."""
    async with TestClient(TestServer(build_app(manager, auth or authenticator()))) as client:
        yield client
