"""The analytics request: a date range plus filters, validated and normalised into a stable cache identity."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from typing import Annotated

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from .dates import DateRange, check_day, parse_date
from .errors import InvalidRequest
from .vocabulary import UNKNOWN_USER_ID, UNMAPPED_USER_ID

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,256}$")
FILTER_FIELDS = ("user_ids", "model_ids", "provider_ids", "api_key_ids")


def _check_id(value: str) -> str:
    """One filter id; validated per item so an error names its position (userIds[3])."""
    if not ID_PATTERN.match(value):
        raise ValueError(f"{value[:80]!r} is not a valid id (1-256 of A-Z a-z 0-9 _ . : @ / + = -)")
    return value


IdList = Annotated[list[Annotated[str, AfterValidator(_check_id)]], Field(default_factory=list)]


class UsageFilters(BaseModel):
    """Dimension filters; each list is sorted and de-duplicated so equal filters compare equal."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")

    user_ids: IdList
    model_ids: IdList
    provider_ids: IdList
    api_key_ids: IdList

    @field_validator(*FILTER_FIELDS, mode="after")
    @classmethod
    def _normalise(cls, values: list[str]) -> list[str]:
        return sorted(set(values))

    @field_validator("user_ids", mode="after")
    @classmethod
    def _unknown_user_is_unmapped(cls, values: list[str]) -> list[str]:
        """LiteMaaS's Unknown User (the zero UUID) is our UNMAPPED_USER_ID."""
        return sorted({UNMAPPED_USER_ID if v == UNKNOWN_USER_ID else v for v in values})

    def is_empty(self) -> bool:
        return not (self.user_ids or self.model_ids or self.provider_ids or self.api_key_ids)

    def fingerprint(self) -> str:
        """A short stable hash of the normalised filters (part of cache keys)."""
        return _NO_FILTERS_FINGERPRINT if self.is_empty() else _fingerprint(self)


def _fingerprint(filters: UsageFilters) -> str:
    payload = orjson.dumps(filters.model_dump(by_alias=True), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(payload, digest_size=10).hexdigest()


_NO_FILTERS_FINGERPRINT = _fingerprint(UsageFilters())
"""The fingerprint of most dashboard reads, made once."""


class AnalyticsQuery(BaseModel):
    """startDate/endDate (ISO, inclusive, UTC) plus filters."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")

    start_date: dt.date
    end_date: dt.date
    filters: UsageFilters = Field(default_factory=UsageFilters)

    @functools.cached_property
    def range(self) -> DateRange:
        """start_date..end_date, made once (equality and dumps ignore it)."""
        return DateRange(self.start_date, self.end_date)


def build_query(
    start: str | dt.date,
    end: str | dt.date,
    *,
    user_ids: list[str] | None = None,
    model_ids: list[str] | None = None,
    provider_ids: list[str] | None = None,
    api_key_ids: list[str] | None = None,
    max_days: int,
    max_ids: int,
) -> AnalyticsQuery:
    """Validate a request; every problem raises InvalidRequest naming the field."""
    lists = {
        "userIds": user_ids or [],
        "modelIds": model_ids or [],
        "providerIds": provider_ids or [],
        "apiKeyIds": api_key_ids or [],
    }
    for name, values in lists.items():
        if len(values) > max_ids:
            raise InvalidRequest(name, f"{len(values)} ids given, at most {max_ids} allowed")
    if isinstance(start, str):
        start = parse_date(start, "startDate")
    if isinstance(end, str):
        end = parse_date(end, "endDate")
    try:
        query = AnalyticsQuery.model_validate(
            {"startDate": start, "endDate": end, "filters": lists},
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][-1]) if err["loc"] else "request"
        if len(err["loc"]) >= 3 and err["loc"][0] == "filters":
            field = f"{err['loc'][1]}[{err['loc'][2]}]"
        raise InvalidRequest(field, _plain(err["msg"])) from None
    check_day(query.start_date, "startDate")
    check_day(query.end_date, "endDate")
    query.range.check_length(max_days)  # DateRange itself refuses a start after the end
    return query


def _plain(message: str) -> str:
    return message.removeprefix("Value error, ")
