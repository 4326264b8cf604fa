"""The HTTP API's application: the routes of routes.py (their table lists every path and who may call it), the
error boundary that answers everything in LiteMaaS's error shape, and bearer-token authentication.

Every error, 401, 404 and 413 included, is `{"error", "code", "details"?}`. The tier that answered a read is in the
X-Cache-Tier response header. API_TOKEN is one shared bearer token; a caller holding it may use every route.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from ..errors import ConfigurationError
from ..filters import FILTER_FIELDS
from ..manager import CacheManager
from ..settings import Settings
from .openapi import openapi_document
from .problems import ApiError
from .routes import MANAGER, OPENAPI, ROUTES, Handler, guarded, route_of

log = logging.getLogger(__name__)
MAX_ID_BYTES = 256 + 4  # an id at its longest, quoted, with its comma and a space
BODY_SLACK_BYTES = 64 * 1024


def max_body_bytes(max_filter_ids: int) -> int:
    """The largest body a request needs: every filter list full of the longest ids, plus room for the rest
    (1,000 ids a list, the default, gives about 1.1 MB)."""
    return len(FILTER_FIELDS) * max_filter_ids * MAX_ID_BYTES + BODY_SLACK_BYTES


def auth_middleware(token: str) -> Any:
    """Require `Authorization: Bearer <API_TOKEN>` on every route but the public ones (constant-time compare)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if route is None or route.access != "public":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise ApiError(401, "UNAUTHORIZED", "missing or invalid bearer token")
        return await handler(request)

    return middleware


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiErrors, and aiohttp's own 404 / 405 / 413, answered in the error shape; nothing leaks a DSN or secret."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.upper().replace(" ", "_")
        return ApiError(exc.status, code, exc.reason, headers=_kept_headers(exc)).response()


def _kept_headers(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def build_app(manager: CacheManager, token: str) -> web.Application:
    """The aiohttp application around an open manager."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(token)],
        client_max_size=max_body_bytes(manager.settings.max_filter_ids),
    )
    app[MANAGER] = manager
    app[OPENAPI] = orjson.dumps(openapi_document(ROUTES))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, guarded(route, lambda: manager.settings.max_range_days))
    return app


async def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API until cancelled. API_TOKEN is required: there is no unauthenticated mode."""
    if settings.api_token is None or not settings.api_token.get_secret_value():
        raise ConfigurationError("API_TOKEN: required to serve the HTTP API")
    async with CacheManager.open(settings) as manager:
        runner = web.AppRunner(build_app(manager, settings.api_token.get_secret_value()), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.warning("analytics API listening on %s:%d", host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
