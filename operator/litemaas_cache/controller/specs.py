"""Typed mirrors of the CacheWarmPolicy and CacheInvalidation specs (crds/*.yaml).

The API server already enforces the CRDs' schemas and CEL rules; these models let plain functions work with a typed
spec and re-check the same rules, so a spec that reaches the operator some other way (tests, `kubectl apply` against an
older CRD) fails with the same message. tests/test_crd_specs.py fails when a model and its CRD drift apart.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ..dates import MAX_LONG_RANGE_DAYS, PRESETS, DateRange, check_day, utc_today
from ..errors import InvalidRequest

Preset = Literal["today", "yesterday", "last-7-days", "last-30-days", "last-90-days", "month-to-date", "previous-month"]
Breakdown = Literal["user", "model", "provider"]
Tier = Literal["redis", "postgres"]

FILTER_ID_PATTERN = r"^[A-Za-z0-9_.:@/+=-]+$"
INTERVAL_PATTERN = r"^([0-9]{1,5}h)?([0-9]{1,7}m)?([0-9]{1,9}s)?$"
MIN_INTERVAL = dt.timedelta(minutes=1)
# A finished CacheInvalidation is kept at most a year (and a day) before its ttl deletes it.
MAX_TTL_SECONDS_AFTER_FINISHED = 366 * 86400


def _within_the_window(value: dt.date) -> dt.date:
    """The CRDs' `is outside 2000-01-01..2099-12-31` rule on each date field."""
    try:
        return check_day(value, "date")
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None


WindowDay = Annotated[dt.date, AfterValidator(_within_the_window)]
FilterId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=FILTER_ID_PATTERN)]
FilterIds = Annotated[list[FilterId], Field(default_factory=list, max_length=1000)]

_INTERVAL_RE = re.compile(INTERVAL_PATTERN)


def parse_interval(text: str) -> dt.timedelta:
    """Parse a Go-style duration of hours, minutes and seconds ("10m", "1h30m", "90s") into a timedelta.

    Raises ValueError for anything else (including the empty string and fractions such as "1.5h").
    """
    match = _INTERVAL_RE.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text[:40]!r} is not a duration like 10m or 1h30m (hours, minutes, seconds)")
    hours, minutes, seconds = (int(group[:-1]) if group else 0 for group in match.groups())
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


class _Spec(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected (as the structural schema prunes them)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class WarmRange(_Spec):
    """One date range to warm: either a preset or an explicit start/end pair (UTC, inclusive)."""

    preset: Preset | None = None
    start: WindowDay | None = None
    end: WindowDay | None = None

    @model_validator(mode="after")
    def _preset_xor_dates(self) -> Self:
        has_dates = (self.start is not None, self.end is not None)
        if has_dates != ((False, False) if self.preset is not None else (True, True)):
            raise ValueError("each range sets either preset, or both start and end")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("end must not be before start")
        return self

    def resolve(self, today: dt.date | None = None) -> DateRange:
        """The concrete days of this range, relative to `today` (default: the current UTC day) for a preset."""
        if self.preset is not None:
            return PRESETS[self.preset](today or utc_today())
        assert self.start is not None
        assert self.end is not None
        return DateRange(self.start, self.end)


class FilterSet(_Spec):
    """One combination of dimension filters; an empty list means no filter on that dimension."""

    user_ids: FilterIds
    model_ids: FilterIds
    provider_ids: FilterIds
    api_key_ids: FilterIds


class CacheWarmPolicySpec(_Spec):
    """What a CacheWarmPolicy warms (ranges x filter sets, plus breakdowns) and how often."""

    ranges: list[WarmRange] = Field(min_length=1, max_length=20)
    filters: list[FilterSet] = Field(default_factory=list, max_length=20)
    breakdowns: list[Breakdown] = Field(default_factory=list, max_length=3)
    interval: str = Field(default="10m", min_length=2, max_length=24, pattern=INTERVAL_PATTERN)
    suspend: bool = False

    @field_validator("breakdowns")
    @classmethod
    def _unique_breakdowns(cls, value: list[Breakdown]) -> list[Breakdown]:
        if len(set(value)) != len(value):
            raise ValueError("breakdowns must not repeat a value")
        return value

    @field_validator("interval")
    @classmethod
    def _interval_at_least_a_minute(cls, value: str) -> str:
        if parse_interval(value) < MIN_INTERVAL:
            raise ValueError("interval must be at least 1m")
        return value

    @property
    def interval_delta(self) -> dt.timedelta:
        """The interval as a timedelta."""
        return parse_interval(self.interval)


class CacheInvalidationSpec(_Spec):
    """A one-shot purge of the days startDate..endDate (UTC, inclusive) from some cache tiers. Immutable."""

    start_date: WindowDay
    end_date: WindowDay
    tiers: list[Tier] = Field(default=["redis", "postgres"], min_length=1, max_length=2)
    rewarm: bool = False
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=MAX_TTL_SECONDS_AFTER_FINISHED)

    @field_validator("tiers")
    @classmethod
    def _unique_tiers(cls, value: list[Tier]) -> list[Tier]:
        if len(set(value)) != len(value):
            raise ValueError("tiers must not repeat a value")
        return value

    @model_validator(mode="after")
    def _ordered_and_bounded(self) -> Self:
        if self.start_date > self.end_date:
            raise ValueError("endDate must not be before startDate")
        if (self.end_date - self.start_date).days + 1 > MAX_LONG_RANGE_DAYS:
            raise ValueError(f"a CacheInvalidation covers at most {MAX_LONG_RANGE_DAYS} days")
        return self

    @property
    def range(self) -> DateRange:
        """The days to invalidate."""
        return DateRange(self.start_date, self.end_date)
