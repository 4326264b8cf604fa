"""The HTTP API's application: the routes of routes.py (their table lists every path and who may call it), the
error boundary that answers everything in LiteMaaS's error shape, and the security layer of security.py
(LiteMaaS JWTs, admin API keys, the service token; permissions and rate limits per route).

Every error, 401, 403, 404, 413 and 429 included, is `{"error", "code", "details"?}`. The tier that answered a read is
in the X-Cache-Tier response header, and every answer carries its request's X-Request-Id (request_ids.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from ..filters import FILTER_FIELDS
from ..manager import CacheManager
from ..metrics import NO_TIER, UNMATCHED_ROUTE, CacheMetrics
from ..redaction import install_log_redaction
from ..settings import Settings
from .auth import Authenticator
from .metrics_endpoint import METRICS
from .openapi import openapi_document
from .problems import ApiError
from .ratelimit import RateLimiter, rules_from_settings
from .request_ids import install_request_ids
from .routes import MANAGER, OPENAPI, ROUTES, TIER_HEADER, Handler, guarded, longest_range
from .security import RoutePolicy, install_security

log = logging.getLogger(__name__)
MAX_ID_BYTES = 256 + 4  # an id at its longest, quoted, with its comma and a space
BODY_SLACK_BYTES = 64 * 1024
KNOWN_METHODS = frozenset(hdrs.METH_ALL)


def max_body_bytes(max_filter_ids: int) -> int:
    """The largest body a request needs: every filter list full of the longest ids, plus room for the rest
    (1,000 ids a list, the default, gives about 1.1 MB)."""
    return len(FILTER_FIELDS) * max_filter_ids * MAX_ID_BYTES + BODY_SLACK_BYTES


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiErrors, and aiohttp's own 404 / 405 / 413, answered in the error shape; every secret of the settings is
    redacted from what goes out."""
    redact = request.app[MANAGER].settings.redact
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.redacted(redact).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.upper().replace(" ", "_")
        return ApiError(exc.status, code, exc.reason, headers=_kept_headers(exc)).response()


def metrics_middleware(metrics: CacheMetrics) -> Middleware:
    """Every answer's latency by route template, method, status and the tier that answered (X-Cache-Tier). Labels
    are bounded whatever a client sends: unknown paths share one route label, unknown methods one method label."""

    @web.middleware
    async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _observe(metrics, request, exc.status, NO_TIER, started)
            raise
        except Exception:
            _observe(metrics, request, 500, NO_TIER, started)
            raise
        _observe(metrics, request, response.status, response.headers.get(TIER_HEADER, NO_TIER), started)
        return response

    return observed


def _observe(metrics: CacheMetrics, request: web.Request, status: int, tier: str, started: float) -> None:
    resource = request.match_info.route.resource
    route = UNMATCHED_ROUTE if resource is None else resource.canonical
    method = request.method if request.method in KNOWN_METHODS else "other"
    metrics.observe_request(route, method, status, tier, time.perf_counter() - started)


def _kept_headers(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def build_app(manager: CacheManager, authenticator: Authenticator) -> web.Application:
    """The aiohttp application around an open manager; rate limits are counted in the manager's Redis, metrics in
    a registry of this application's own (served at /metrics)."""
    metrics = CacheMetrics()
    metrics.attach(manager)
    app = web.Application(
        middlewares=[metrics_middleware(metrics), error_middleware],
        client_max_size=max_body_bytes(manager.settings.max_filter_ids),
    )
    limiter = RateLimiter(rules_from_settings(manager.settings), manager.redis, manager.keys)
    policies = {(r.method, r.path): None if r.access == "public" else RoutePolicy(r.access, r.bucket) for r in ROUTES}
    install_request_ids(app)
    install_security(app, authenticator, limiter, policies)
    app.on_cleanup.append(lambda _: limiter.close())
    app[MANAGER] = manager
    app[METRICS] = metrics
    app[OPENAPI] = orjson.dumps(openapi_document(ROUTES))
    for route in ROUTES:
        handler = guarded(route, functools.partial(longest_range, route.longest, manager.settings))
        if route.method == "GET":
            app.router.add_get(route.path, handler)  # and HEAD, with the GET route's policy
        else:
            app.router.add_route(route.method, route.path, handler)
    return app


async def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API until cancelled. There is no unauthenticated mode: without JWT_SECRET, ADMIN_API_KEYS or API_TOKEN
    it refuses to start."""
    authenticator = Authenticator.from_settings(settings)
    install_log_redaction(settings.redact)
    async with CacheManager.open(settings) as manager:
        runner = web.AppRunner(build_app(manager, authenticator), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.warning("analytics API listening on %s:%d", host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
