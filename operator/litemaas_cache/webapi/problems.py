"""Error answers in LiteMaaS's shape, `{"error": message, "code": CODE, "details": {...}}`, for every status, and the
translation of domain errors and request validation failures into them."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from ..dates import DateRange
from ..errors import BackendUnavailable, DateOrderInvalid, DateRangeTooLarge, InvalidRequest, SourceMissing
from ..redaction import Redactor

MAX_SUGGESTED_RANGES = 4


class ApiError(Exception):
    """An HTTP error answer: raised anywhere below a route, rendered once by the error middleware."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def redacted(self, redact: Redactor) -> ApiError:
        """The same answer with every secret of the settings taken out of its message and details."""
        details = None if self.details is None else redact.deep(self.details)
        return ApiError(self.status, self.code, redact(self.message), details, self.headers)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return web.Response(
            body=orjson.dumps(body), status=self.status, content_type="application/json", headers=self.headers
        )


def _ranges(parts: list[DateRange]) -> list[dict[str, str]]:
    return [{"startDate": p.start.isoformat(), "endDate": p.end.isoformat()} for p in parts[:MAX_SUGGESTED_RANGES]]


def range_too_large(exc: DateRangeTooLarge) -> ApiError:
    """LiteMaaS's DATE_RANGE_TOO_LARGE (its message, word for word), with the field it blames and the range cut into
    allowed pieces (the first four)."""
    parts = DateRange(exc.start, exc.end).split(exc.max_days)
    return ApiError(
        400,
        "DATE_RANGE_TOO_LARGE",
        f"Date range too large. Maximum allowed is {exc.max_days} days, requested {exc.requested_days} days.",
        {
            "field": exc.field,
            "requestedDays": exc.requested_days,
            "maxAllowedDays": exc.max_days,
            "suggestion": f"Break your request into {len(parts)} smaller date ranges",
            "suggestedRanges": _ranges(parts),
        },
    )


def date_order(exc: DateOrderInvalid, max_days: int) -> ApiError:
    """LiteMaaS's INVALID_DATE_ORDER (its message, word for word), with the field it blames; the suggested ranges are
    the range the caller probably meant (swapped)."""
    swapped = DateRange(exc.end, exc.start).split(max_days)
    return ApiError(
        400,
        "INVALID_DATE_ORDER",
        "Start date must be before or equal to end date.",
        {
            "field": exc.field,
            "maxAllowedDays": max_days,
            "suggestion": "Swap startDate and endDate",
            "suggestedRanges": _ranges(swapped),
        },
    )


def invalid_request(exc: InvalidRequest) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", f"{exc.field}: {exc.message}", {"field": exc.field})


def unavailable(exc: BackendUnavailable | SourceMissing) -> ApiError:
    return ApiError(503, "SERVICE_UNAVAILABLE", str(exc))


def schema_error(exc: ValidationError) -> ApiError:
    """A request that does not fit its model: every problem listed, the first one named in the message."""
    problems = [
        {"field": _field(err["loc"]), "message": err["msg"].removeprefix("Value error, ")} for err in exc.errors()
    ]
    first = problems[0]
    details = {"field": first["field"], "problems": problems}
    return ApiError(400, "VALIDATION_ERROR", f"{first['field']}: {first['message']}", details)


def _field(loc: tuple[int | str, ...]) -> str:
    """('userIds', 3) -> 'userIds[3]'; an error about the whole document -> 'body'."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"
