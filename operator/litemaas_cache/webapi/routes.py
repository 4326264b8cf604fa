"""The routes: LiteMaaS's admin usage API under /api/v1/admin/usage, its non-admin analytics, and our operator-side
extras. ROUTES is the one table of them: the router, the OpenAPI document and the security layer (the permission
each route requires) all read it. Handlers stay thin: parse through models.py, call the manager, answer JSON.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import export as files
from ..analytics import Page, ordered
from ..dates import MAX_LONG_RANGE_DAYS, DateRange, check_day, utc_now, utc_today
from ..errors import BackendUnavailable, CacheError, DateOrderInvalid, DateRangeTooLarge, InvalidRequest, SourceMissing
from ..filters import AnalyticsQuery, build_query
from ..manager import CacheManager
from ..result_cache import Answer
from ..settings import Settings
from ..vocabulary import ContentEncoding, Dimension, Permission, RateBucket
from . import models as m
from .metrics_endpoint import METRICS_PATH, prometheus_metrics
from .negotiation import accepted, encoded_response
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
EXPORT_ID_LISTS = ("userIds", "modelIds", "providerIds", "apiKeyIds")
RangeLimit = Literal["analytics", "export", "long"]
"""The longest range a route's dates may span: ANALYTICS_MAX_RANGE_DAYS, ADMIN_ANALYTICS_MAX_EXPORT_DAYS, or
MAX_LONG_RANGE_DAYS (filter options, rebuilds and invalidations)."""


def longest_range(limit: RangeLimit, settings: Settings) -> int:
    if limit == "analytics":
        return settings.max_range_days
    return settings.max_export_days if limit == "export" else MAX_LONG_RANGE_DAYS


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
    longest: RangeLimit = "analytics"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    failure_code: str = "INTERNAL_ERROR"
    errors: tuple[int, ...] = (400, 401, 403, 429, 500, 503)
    media_type: str = "application/json"
    files: tuple[str, ...] = ()
    """Media types other than JSON a 200 may have (a file, described as text)."""


# --- parsing and answering ---------------------------------------------------------------------------------------


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json", headers=headers)


def _stored(request: web.Request) -> ContentEncoding:
    """The stored encoding to fetch for this client: the one it accepts best (zstd for identity: the fastest to
    decompress)."""
    return accepted(request.headers.get("Accept-Encoding")) or "zstd"


async def _answer(request: web.Request, answer: Answer) -> web.Response:
    return await encoded_response(request, answer.body, {TIER_HEADER: answer.tier})


async def _body(request: web.Request, model: type[M]) -> M:
    return _parsed(await request.read(), model)


def _parsed(raw: bytes, model: type[M]) -> M:
    """A JSON body through its model; an empty body is an empty object. A property given twice is refused: which
    of the two counts differs between parsers (a proxy and us could read different dates)."""
    raw = raw or b"{}"
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        raise schema_error(exc) from None
    json.loads(raw, object_pairs_hook=_unique_keys)
    return parsed


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidRequest(key[:80], "is given more than once in the JSON body")
        obj[key] = value
    return obj


def _query(request: web.Request, model: type[M]) -> M:
    """The query string through its model; a parameter of the model given twice is refused (which one counts?)."""
    for name in model.model_fields:
        if len(request.query.getall(name, [])) > 1:
            raise InvalidRequest(name, "is given more than once in the query string")
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise schema_error(exc) from None


def _manager(request: web.Request) -> CacheManager:
    return request.app[MANAGER]


async def _analytics_query(request: web.Request, user_ids: list[str] | None = None) -> AnalyticsQuery:
    """The filters of the body as a validated query (ANALYTICS_MAX_RANGE_DAYS and _MAX_FILTER_IDS apply)."""
    settings = _manager(request).settings
    raw = await request.read()
    forced = None if user_ids is None else tuple(user_ids)
    parse = _remembered_query if len(raw) <= REMEMBERED_BODY_BYTES else _analytics_query_of
    return parse(raw, forced, settings.max_range_days, settings.max_filter_ids)


REMEMBERED_BODY_BYTES = 4096


@functools.lru_cache(maxsize=512)
def _remembered_query(raw: bytes, user_ids: tuple[str, ...] | None, max_days: int, max_ids: int) -> AnalyticsQuery:
    """_analytics_query_of, remembered for the last bodies of up to REMEMBERED_BODY_BYTES: admin pages send the
    same few bodies again and again, and parsing one is a good part of what a warm read costs. (A body that is
    refused raises again each time: errors are not remembered.)"""
    return _analytics_query_of(raw, user_ids, max_days, max_ids)


def _analytics_query_of(raw: bytes, user_ids: tuple[str, ...] | None, max_days: int, max_ids: int) -> AnalyticsQuery:
    forced = None if user_ids is None else list(user_ids)
    return _query_of(_parsed(raw, m.UsageFilterRequest), max_days, max_ids, forced)


def _query_of(
    body: m.UsageFilterRequest, max_days: int, max_ids: int, user_ids: list[str] | None = None
) -> AnalyticsQuery:
    """A request's filters as a validated query of at most `max_days` and `max_ids` ids a list."""
    return build_query(
        body.startDate,
        body.endDate,
        user_ids=body.userIds if user_ids is None else user_ids,
        model_ids=body.modelIds,
        provider_ids=body.providerIds,
        api_key_ids=body.apiKeyIds,
        max_days=max_days,
        max_ids=max_ids,
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
    return await _answer(request, await _manager(request).analytics(await _analytics_query(request), _stored(request)))


async def own_analytics(request: web.Request) -> web.Response:
    """The analytics of the caller's own usage: its user id replaces any userIds in the body."""
    caller = request.get(CALLER)
    user_id = caller.user_id if caller is not None else None
    if not user_id:
        raise ApiError(403, "FORBIDDEN", "this route answers for a LiteMaaS user: the caller has no user id")
    query = await _analytics_query(request, [user_id])
    return await _answer(request, await _manager(request).analytics(query, _stored(request)))


def _breakdown(dimension: Dimension) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        paging = _query(request, m.PAGINATION_QUERIES[dimension])
        page = Page(paging.page, paging.limit, paging.sortBy, paging.sortOrder == "desc")  # type: ignore[attr-defined]
        query = await _analytics_query(request)
        return await _answer(request, await _manager(request).breakdown(dimension, query, page, _stored(request)))

    handler.__name__ = f"by_{dimension}"
    return handler


async def export(request: web.Request) -> web.StreamResponse:
    """Every by-user row of the range (up to ADMIN_ANALYTICS_MAX_EXPORT_DAYS) as LiteMaaS's CSV or JSON file, in the
    by-user default order. Streamed a chunk of rows at a time, each made off the event loop: the rows are held once,
    the file never whole."""
    asked = await _body(request, m.ExportRequest)
    manager = _manager(request)
    settings = manager.settings
    query = _query_of(asked, settings.max_export_days, settings.max_filter_ids)
    answer = await manager.rows("user", query)
    rows = await asyncio.to_thread(lambda: ordered("user", answer.value, Page()))
    if asked.format == "csv":
        chunks = files.csv_chunks(rows, settings.currency_code)
    else:
        sent = {name: getattr(asked, name) for name in EXPORT_ID_LISTS if name in asked.model_fields_set}
        chunks = files.json_chunks(rows, files.metadata(utc_now(), query.range, sent, len(rows)))
    name = files.filename(query.range, asked.format)
    response = web.StreamResponse(
        headers={"Content-Disposition": f'attachment; filename="{name}"', TIER_HEADER: answer.tier}
    )
    response.content_type = files.CONTENT_TYPES[asked.format]
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    await response.prepare(request)
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        await response.write(chunk)
    await response.write_eof()
    return response


async def filter_options(request: web.Request) -> web.Response:
    asked = _query(request, m.RangeQuery)
    if asked.startDate > asked.endDate:
        raise ApiError(400, "INVALID_DATE_RANGE", "startDate must be before or equal to endDate")
    days = _range(asked.startDate, asked.endDate, MAX_LONG_RANGE_DAYS)
    return await _answer(request, await _manager(request).filter_options(days, _stored(request)))


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
    end = check_day(asked.endDate, "endDate") if asked.endDate else utc_today()  # before any arithmetic on it
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
        "POST",
        f"{ADMIN}/export",
        export,
        "Every by-user row of a range as a CSV or JSON file, streamed",
        "admin:usage:read",
        m.ExportDocument,
        bucket="export",
        longest="export",
        body=m.ExportRequest,
        failure_code="EXPORT_FAILED",
        files=("text/csv",),
    ),
    Route(
        "GET",
        f"{ADMIN}/filter-options",
        filter_options,
        "Models and users with usage in a range",
        "admin:usage:read",
        m.FilterOptionsResponse,
        longest="long",
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
        longest="long",
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
        longest="long",
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
