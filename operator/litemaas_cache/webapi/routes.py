"""The routes: LiteMaaS's admin usage API under /api/v1/admin/usage, its non-admin analytics, and our operator-side
extras. ROUTES is the one table of them: the router, the OpenAPI document and the security layer (the permission
each route requires) all read it. Handlers stay thin: parse through models.py, call the manager, answer JSON.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..analytics import Page
from ..dates import MAX_LONG_RANGE_DAYS, DateRange, check_day, utc_now, utc_today
from ..errors import BackendUnavailable, CacheError, DateOrderInvalid, DateRangeTooLarge, InvalidRequest, SourceMissing
from ..filters import AnalyticsQuery, build_query
from ..manager import CacheManager
from ..result_cache import Answer
from ..vocabulary import Dimension, Permission, RateBucket
from . import models as m
from .metrics_endpoint import METRICS_PATH, prometheus_metrics
from .problems import ApiError, date_order, invalid_request, range_too_large, schema_error, unavailable
from .security import CALLER

log = logging.getLogger(__name__)
MANAGER = web.AppKey("manager", CacheManager)
TIER_HEADER = "X-Cache-Tier"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Access = Literal["public"] | Permission
"""public: no credentials; else the permission the caller must hold (vocabulary.Permission)."""
ADMIN = "/api/v1/admin/usage"
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Route:
    """One route: what it takes and answers (models.py), who may call it, the rate-limit bucket its calls count
    in, and its 500 code (LiteMaaS's)."""

    method: str
    path: str
    handler: Handler
    summary: str
    access: Access
    response: type[BaseModel]
    bucket: RateBucket = "analytics"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    failure_code: str = "INTERNAL_ERROR"
    errors: tuple[int, ...] = (400, 401, 403, 429, 500, 503)
    media_type: str = "application/json"


# --- parsing and answering ---------------------------------------------------------------------------------------


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json", headers=headers)


def _answer(answer: Answer) -> web.Response:
    return _json(answer.value, headers={TIER_HEADER: answer.tier})


async def _body(request: web.Request, model: type[M]) -> M:
    """The JSON body through its model; an empty body is an empty object."""
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise schema_error(exc) from None


def _query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise schema_error(exc) from None


def _manager(request: web.Request) -> CacheManager:
    return request.app[MANAGER]


async def _analytics_query(request: web.Request, user_ids: list[str] | None = None) -> AnalyticsQuery:
    """The filters of the body as a validated query (ANALYTICS_MAX_RANGE_DAYS and _MAX_FILTER_IDS apply)."""
    body = await _body(request, m.UsageFilterRequest)
    settings = _manager(request).settings
    return build_query(
        body.startDate,
        body.endDate,
        user_ids=body.userIds if user_ids is None else user_ids,
        model_ids=body.modelIds,
        provider_ids=body.providerIds,
        api_key_ids=body.apiKeyIds,
        max_days=settings.max_range_days,
        max_ids=settings.max_filter_ids,
    )


def _range(start: dt.date, end: dt.date, max_days: int) -> DateRange:
    check_day(start, "startDate")
    check_day(end, "endDate")
    return DateRange(start, end).check_length(max_days)


# --- handlers ----------------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def analytics(request: web.Request) -> web.Response:
    return _answer(await _manager(request).analytics(await _analytics_query(request)))


async def own_analytics(request: web.Request) -> web.Response:
    """The analytics of the caller's own usage: its user id replaces any userIds in the body."""
    caller = request.get(CALLER)
    user_id = caller.user_id if caller is not None else None
    if not user_id:
        raise ApiError(403, "FORBIDDEN", "this route answers for a LiteMaaS user: the caller has no user id")
    return _answer(await _manager(request).analytics(await _analytics_query(request, [user_id])))


def _breakdown(dimension: Dimension) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        paging = _query(request, m.PAGINATION_QUERIES[dimension])
        page = Page(paging.page, paging.limit, paging.sortBy, paging.sortOrder == "desc")  # type: ignore[attr-defined]
        return _answer(await _manager(request).breakdown(dimension, await _analytics_query(request), page))

    handler.__name__ = f"by_{dimension}"
    return handler


async def filter_options(request: web.Request) -> web.Response:
    asked = _query(request, m.RangeQuery)
    if asked.startDate > asked.endDate:
        raise ApiError(400, "INVALID_DATE_RANGE", "startDate must be before or equal to endDate")
    days = _range(asked.startDate, asked.endDate, MAX_LONG_RANGE_DAYS)
    return _answer(await _manager(request).filter_options(days))


async def cache_metrics(request: web.Request) -> web.Response:
    return _json(await _manager(request).cache_metrics())


async def refresh_today(request: web.Request) -> web.Response:
    """Today purged from every tier and computed again from LiteLLM's table."""
    today = utc_today()
    report = await _manager(request).rebuild(DateRange(today, today))
    return _json(
        {
            "message": f"Usage of {today.isoformat()} was refreshed from LiteLLM",
            "refreshedAt": utc_now().isoformat(),
            "status": "success" if report.invalidation.complete else "partial",
        }
    )


async def rebuild_cache(request: web.Request) -> web.Response:
    """A range (by default the last ANALYTICS_MAX_RANGE_DAYS days) purged and computed again."""
    asked = await _body(request, m.RebuildCacheRequest)
    manager = _manager(request)
    end = asked.endDate or utc_today()
    start = asked.startDate or end - dt.timedelta(days=manager.settings.max_range_days - 1)
    days = _range(start, end, MAX_LONG_RANGE_DAYS)
    report = await manager.rebuild(days)
    return _json(
        {
            "message": f"Rebuilt {days.days} days ({days})",
            "rebuiltCount": days.days,
            "totalEntries": report.warm.keys_written,
            "status": "success" if report.invalidation.complete else "partial",
        }
    )


async def invalidate(request: web.Request) -> web.Response:
    asked = await _body(request, m.InvalidateRequest)
    days = _range(asked.startDate, asked.endDate, MAX_LONG_RANGE_DAYS)
    report = await _manager(request).invalidate(days, asked.tiers)
    return _json(report.as_dict(), status=200 if report.complete else 202)


async def stats(request: web.Request) -> web.Response:
    return _json(await _manager(request).stats())


OPENAPI = web.AppKey("openapi", bytes)
OPENAPI_PATH = "/api/v1/openapi.json"
_FILTERS_DOC = "Filters in the JSON body, paging in the query string."

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, "Liveness", "public", m.Health, errors=()),
    Route("GET", OPENAPI_PATH, openapi, "This document", "public", m.OpenApiDocument, errors=()),
    Route(
        "GET",
        METRICS_PATH,
        prometheus_metrics,
        "Prometheus metrics (public: the chart's NetworkPolicy decides who reaches the port)",
        "public",
        m.PrometheusText,
        errors=(),
        media_type="text/plain",
    ),
    Route(
        "POST",
        f"{ADMIN}/analytics",
        analytics,
        "Global usage analytics",
        "admin:usage:read",
        m.AnalyticsResponse,
        body=m.UsageFilterRequest,
        failure_code="GLOBAL_METRICS_FAILED",
    ),
    *(
        Route(
            "POST",
            f"{ADMIN}/by-{dimension}",
            _breakdown(dimension),
            f"Usage by {dimension}, paginated. {_FILTERS_DOC}",
            "admin:usage:read",
            m.BREAKDOWN_PAGES[dimension],
            body=m.UsageFilterRequest,
            query=m.PAGINATION_QUERIES[dimension],
            failure_code=f"{dimension.upper()}_BREAKDOWN_FAILED",
        )
        for dimension in m.BREAKDOWN_PAGES
    ),
    Route(
        "GET",
        f"{ADMIN}/filter-options",
        filter_options,
        "Models and users with usage in a range",
        "admin:usage:read",
        m.FilterOptionsResponse,
        query=m.RangeQuery,
        failure_code="FILTER_OPTIONS_FAILED",
    ),
    Route(
        "GET",
        f"{ADMIN}/cache/metrics",
        cache_metrics,
        "Cache counters",
        "admin:usage:read",
        m.CacheMetrics,
        failure_code="CACHE_METRICS_FAILED",
        errors=(401, 403, 429, 500, 503),
    ),
    Route(
        "POST",
        f"{ADMIN}/refresh-today",
        refresh_today,
        "Purge today and compute it again",
        "admin:usage:write",
        m.RefreshTodayResponse,
        failure_code="REFRESH_FAILED",
        errors=(401, 403, 429, 500, 503),
    ),
    Route(
        "POST",
        f"{ADMIN}/rebuild-cache",
        rebuild_cache,
        "Purge a range and compute it again",
        "admin:usage:write",
        m.RebuildCacheResponse,
        bucket="rebuild",
        body=m.RebuildCacheRequest,
        failure_code="REBUILD_FAILED",
    ),
    Route(
        "POST",
        "/api/v1/usage/analytics",
        own_analytics,
        "The caller's own usage analytics (its user id is the userIds filter)",
        "usage:own",
        m.AnalyticsResponse,
        body=m.UsageFilterRequest,
        failure_code="GLOBAL_METRICS_FAILED",
    ),
    Route(
        "POST",
        "/api/v1/cache/invalidate",
        invalidate,
        "Purge a range from chosen tiers (202: Redis unreachable)",
        "admin:usage:write",
        m.InvalidationResponse,
        bucket="rebuild",
        body=m.InvalidateRequest,
        failure_code="INVALIDATION_FAILED",
    ),
    Route(
        "GET",
        "/api/v1/cache/stats",
        stats,
        "The cache's own statistics",
        "admin:usage:read",
        m.CacheStats,
        failure_code="CACHE_STATS_FAILED",
        errors=(401, 403, 429, 500, 503),
    ),
)


_BY_ENDPOINT = {(r.method, r.path): r for r in ROUTES}


def route_of(request: web.Request) -> Route | None:
    """The ROUTES entry a request matched (None: no route, a 404 or 405 to come)."""
    resource = request.match_info.route.resource
    return None if resource is None else _BY_ENDPOINT.get((request.method, resource.canonical))


def guarded(route: Route, max_days: Callable[[], int]) -> Handler:
    """The route's handler, with every failure answered in LiteMaaS's error shape: request mistakes as 400s that
    name the field, a backend that is down as 503, anything else as 500 with the route's code (and logged)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await route.handler(request)
        except ApiError:
            raise
        except DateRangeTooLarge as exc:
            raise range_too_large(exc) from None
        except DateOrderInvalid as exc:
            raise date_order(exc, max_days()) from None
        except InvalidRequest as exc:
            raise invalid_request(exc) from None
        except (BackendUnavailable, SourceMissing) as exc:
            raise unavailable(exc) from None
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", "the request body is too large") from None
        except CacheError as exc:
            log.error("%s %s failed: %s", route.method, route.path, exc)
            raise ApiError(500, route.failure_code, "internal error") from None
        except Exception:
            log.exception("%s %s failed", route.method, route.path)
            raise ApiError(500, route.failure_code, "internal error") from None

    return handler
