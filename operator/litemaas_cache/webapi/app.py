"""The HTTP analytics API that application instances read: aiohttp, bearer-token auth, JSON in camelCase.

GET  /healthz                                  (no auth)
GET  /api/v1/analytics?startDate=&endDate=&userIds=&modelIds=&providerIds=&apiKeyIds=
GET  /api/v1/analytics/{user|model|provider}?...&page=&pageSize=&sortBy=&sortOrder=asc|desc
POST /api/v1/cache/invalidate  {"startDate": "...", "endDate": "...", "tiers": ["redis", "postgres"]}
GET  /api/v1/cache/stats
The tier that answered is in the X-Cache-Tier response header.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..analytics import Page
from ..dates import DateRange, parse_date
from ..errors import BackendUnavailable, CacheError, ConfigurationError, InvalidRequest, SourceMissing
from ..filters import build_query
from ..manager import CacheManager
from ..redaction import install_log_redaction
from ..settings import Settings
from ..vocabulary import DIMENSIONS, Dimension, InvalidationTier

log = logging.getLogger(__name__)
MANAGER = web.AppKey("manager", CacheManager)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 64 * 1024


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return _json({"error": {"message": message, "field": field}}, status=status)


def auth_middleware(token: str) -> Any:
    """Require `Authorization: Bearer <API_TOKEN>` on everything but /healthz (constant-time compare)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or invalid bearer token")
        return await handler(request)

    return middleware


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors become JSON answers that name the problem; every secret of the settings is redacted."""
    redact = request.app[MANAGER].settings.redact
    try:
        return await handler(request)
    except InvalidRequest as exc:
        return _error(400, redact(exc.message), exc.field)
    except (BackendUnavailable, SourceMissing) as exc:
        return _error(503, redact(str(exc)))
    except CacheError as exc:
        return _error(500, redact(str(exc)))


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


def build_app(manager: CacheManager, token: str) -> web.Application:
    """The aiohttp application around an open manager."""
    app = web.Application(middlewares=[error_middleware, auth_middleware(token)], client_max_size=MAX_BODY_BYTES)
    app[MANAGER] = manager
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/analytics", analytics)
    app.router.add_get("/api/v1/analytics/{dimension}", breakdown)
    app.router.add_post("/api/v1/cache/invalidate", invalidate)
    app.router.add_get("/api/v1/cache/stats", stats)
    return app


async def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API until cancelled. API_TOKEN is required: there is no unauthenticated mode."""
    if settings.api_token is None or not settings.api_token.get_secret_value():
        raise ConfigurationError("API_TOKEN: required to serve the HTTP API")
    install_log_redaction(settings.redact)
    async with CacheManager.open(settings) as manager:
        runner = web.AppRunner(build_app(manager, settings.api_token.get_secret_value()), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.warning("analytics API listening on %s:%d", host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
