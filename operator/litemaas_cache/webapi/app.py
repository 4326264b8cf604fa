"""The HTTP analytics API that application instances read: aiohttp, JSON in camelCase; callers are authenticated,
authorised and rate-limited by security.py (LiteMaaS JWTs, admin API keys, the service token).

GET  /healthz                                  (no auth)
GET  /api/v1/analytics?startDate=&endDate=&userIds=&modelIds=&providerIds=&apiKeyIds=
GET  /api/v1/analytics/{user|model|provider}?...&page=&pageSize=&sortBy=&sortOrder=asc|desc
POST /api/v1/cache/invalidate  {"startDate": "...", "endDate": "...", "tiers": ["redis", "postgres"]}
GET  /api/v1/cache/stats
The tier that answered is in the X-Cache-Tier response header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..analytics import Page
from ..dates import DateRange, parse_date
from ..errors import BackendUnavailable, CacheError, InvalidRequest, SourceMissing
from ..filters import build_query
from ..manager import CacheManager
from ..settings import Settings
from ..vocabulary import DIMENSIONS, Dimension, InvalidationTier
from .auth import Authenticator
from .ratelimit import RateLimiter, rules_from_settings
from .security import RoutePolicies, RoutePolicy, install_security

log = logging.getLogger(__name__)
MANAGER = web.AppKey("manager", CacheManager)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 64 * 1024

POLICIES: RoutePolicies = {
    ("GET", "/api/v1/analytics"): RoutePolicy("admin:usage:read", "analytics"),
    ("GET", "/api/v1/analytics/{dimension}"): RoutePolicy("admin:usage:read", "analytics"),
    ("POST", "/api/v1/cache/invalidate"): RoutePolicy("admin:usage:write", "rebuild"),
    ("GET", "/api/v1/cache/stats"): RoutePolicy("admin:usage:read", "analytics"),
}
"""Who may call each route and which rate bucket it counts in; a route not listed here is refused."""


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return _json({"error": {"message": message, "field": field}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors become JSON answers that name the problem; nothing leaks a DSN or a secret."""
    try:
        return await handler(request)
    except InvalidRequest as exc:
        return _error(400, exc.message, exc.field)
    except (BackendUnavailable, SourceMissing) as exc:
        return _error(503, str(exc))
    except CacheError as exc:
        return _error(500, str(exc))


def _ids(request: web.Request, name: str) -> list[str]:
    """Repeated (?userIds=a&userIds=b) or comma-separated (?userIds=a,b) ids."""
    return [part for value in request.query.getall(name, []) for part in value.split(",") if part]


def _query(request: web.Request) -> Any:
    manager = request.app[MANAGER]
    for required in ("startDate", "endDate"):
        if required not in request.query:
            raise InvalidRequest(required, "is required (YYYY-MM-DD)")
    return build_query(
        request.query["startDate"],
        request.query["endDate"],
        user_ids=_ids(request, "userIds"),
        model_ids=_ids(request, "modelIds"),
        provider_ids=_ids(request, "providerIds"),
        api_key_ids=_ids(request, "apiKeyIds"),
        max_days=manager.settings.max_range_days,
        max_ids=manager.settings.max_filter_ids,
    )


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(name, f"{raw[:40]!r} is not an integer") from None


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def analytics(request: web.Request) -> web.Response:
    answer = await request.app[MANAGER].analytics(_query(request))
    return _json(answer.value, headers={"X-Cache-Tier": answer.tier})


async def breakdown(request: web.Request) -> web.Response:
    dimension = request.match_info["dimension"]
    if dimension not in DIMENSIONS:
        raise InvalidRequest("dimension", f"{dimension!r} is not one of {', '.join(DIMENSIONS)}")
    order = request.query.get("sortOrder", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("sortOrder", f"{order!r} is not asc or desc")
    page = Page(
        _int(request, "page", 1),
        _int(request, "pageSize", 50),
        request.query.get("sortBy", "requests"),
        order == "desc",
    )
    dim: Dimension = dimension
    answer = await request.app[MANAGER].breakdown(dim, _query(request), page)
    return _json(answer.value, headers={"X-Cache-Tier": answer.tier})


async def invalidate(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("body", "is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    days = DateRange(
        parse_date(str(body.get("startDate", "")), "startDate"), parse_date(str(body.get("endDate", "")), "endDate")
    )
    tiers = body.get("tiers", ["redis", "postgres"])
    if not isinstance(tiers, list) or not tiers or any(t not in ("redis", "postgres") for t in tiers):
        raise InvalidRequest("tiers", "must be a non-empty list of redis and/or postgres")
    chosen: list[InvalidationTier] = tiers
    report = await request.app[MANAGER].invalidate(days, chosen)
    return _json(report.as_dict(), status=200 if report.complete else 202)


async def stats(request: web.Request) -> web.Response:
    return _json(await request.app[MANAGER].stats())


def build_app(manager: CacheManager, authenticator: Authenticator) -> web.Application:
    """The aiohttp application around an open manager; rate limits are counted in the manager's Redis."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    limiter = RateLimiter(rules_from_settings(manager.settings), manager.redis, manager.keys)
    install_security(app, authenticator, limiter, POLICIES)
    app[MANAGER] = manager
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/analytics", analytics)
    app.router.add_get("/api/v1/analytics/{dimension}", breakdown)
    app.router.add_post("/api/v1/cache/invalidate", invalidate)
    app.router.add_get("/api/v1/cache/stats", stats)
    return app


async def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API until cancelled. There is no unauthenticated mode: without JWT_SECRET, ADMIN_API_KEYS or API_TOKEN
    it refuses to start."""
    authenticator = Authenticator.from_settings(settings)
    async with CacheManager.open(settings) as manager:
        runner = web.AppRunner(build_app(manager, authenticator), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.warning("analytics API listening on %s:%d", host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
