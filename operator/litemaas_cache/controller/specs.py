"""The CacheWarmPolicy and CacheInvalidation specs: the source of their CRDs' spec schemas (controller/crdgen.py).

Descriptions, bounds, defaults and CEL rules (x-kubernetes-validations, carried in json_schema_extra) are written here
once; `make generate` turns them into crds/*.yaml. The API server enforces the CRDs; these models re-check the same
rules with the same messages, so a spec that reaches the operator some other way (tests, an object stored under an
older CRD) fails alike. Docstrings of the models and of their fields are the API's descriptions.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ..dates import EARLIEST_DAY, LATEST_DAY, MAX_LONG_RANGE_DAYS, PRESETS, DateRange, check_day, utc_today
from ..errors import InvalidRequest

Preset = Literal["today", "yesterday", "last-7-days", "last-30-days", "last-90-days", "month-to-date", "previous-month"]
Breakdown = Literal["user", "model", "provider"]
Tier = Literal["redis", "postgres"]

FILTER_ID_PATTERN = r"^[A-Za-z0-9_.:@/+=-]+$"
INTERVAL_PATTERN = r"^([0-9]{1,5}h)?([0-9]{1,7}m)?([0-9]{1,9}s)?$"
MIN_INTERVAL_TEXT = "1m"
# A finished CacheInvalidation is kept at most a year (and a day) before its ttl deletes it.
MAX_TTL_SECONDS_AFTER_FINISHED = 366 * 86400

# The messages of the rules the CRDs check in CEL and the models in Python.
PRESET_XOR_DATES = "each range sets either preset, or both start and end"
END_BEFORE_START = "end must not be before start"
INTERVAL_TOO_SHORT = f"interval must be at least {MIN_INTERVAL_TEXT}"
END_DATE_BEFORE_START_DATE = "endDate must not be before startDate"
INVALIDATION_TOO_LONG = f"a CacheInvalidation covers at most {MAX_LONG_RANGE_DAYS} days"
OUTSIDE_THE_WINDOW = f"is outside {EARLIEST_DAY}..{LATEST_DAY}"

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


MIN_INTERVAL = parse_interval(MIN_INTERVAL_TEXT)


def cel_rules(*rules: tuple[str, str]) -> dict[str, Any]:
    """json_schema_extra carrying CEL validation rules, as (rule, message) pairs, into the CRD."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class CrdModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected (as the structural schema prunes them);
    field docstrings become the CRD's descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_attribute_docstrings=True
    )


class WarmRange(CrdModel):
    """One date range, either a preset or a start/end pair."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "has(self.preset) ? !has(self.start) && !has(self.end) : has(self.start) && has(self.end)",
                PRESET_XOR_DATES,
            ),
            ("!has(self.start) || !has(self.end) || self.start <= self.end", END_BEFORE_START),
        )
    )

    preset: Preset | None = None
    """A range relative to the current UTC day."""
    start: dt.date | None = None
    """First day of the range (YYYY-MM-DD, UTC, inclusive). Needs end; excludes preset."""
    end: dt.date | None = None
    """Last day of the range (YYYY-MM-DD, UTC, inclusive). Needs start; excludes preset."""

    @model_validator(mode="after")
    def _preset_xor_dates(self) -> Self:
        has_dates = (self.start is not None, self.end is not None)
        if has_dates != ((False, False) if self.preset is not None else (True, True)):
            raise ValueError(PRESET_XOR_DATES)
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(END_BEFORE_START)
        return self

    def resolve(self, today: dt.date | None = None) -> DateRange:
        """The concrete days of this range, relative to `today` (default: the current UTC day) for a preset."""
        if self.preset is not None:
            return PRESETS[self.preset](today or utc_today())
        assert self.start is not None
        assert self.end is not None
        return DateRange(self.start, self.end)


class FilterSet(CrdModel):
    """One combination of dimension filters (the lists are ANDed, ids within a list ORed)."""

    user_ids: FilterIds
    """LiteMaaS user ids."""
    model_ids: FilterIds
    """Model names as LiteLLM reports them."""
    provider_ids: FilterIds
    """Provider names (for example openai, vllm)."""
    api_key_ids: FilterIds
    """LiteMaaS API key ids."""


# The guard leaves malformed values to the length and pattern errors (duration() would fail on them too).
_INTERVAL_RULE = (
    f"self == '' || !self.matches('{INTERVAL_PATTERN}') || duration(self) >= duration('{MIN_INTERVAL_TEXT}')"
)


class CacheWarmPolicySpec(CrdModel):
    """What to warm and how often."""

    ranges: list[WarmRange] = Field(min_length=1, max_length=20)
    """Date ranges (UTC, inclusive) to warm. Each item is either a preset or an explicit start/end pair. A range may
    cover at most ANALYTICS_MAX_RANGE_DAYS days (90 by default); the operator checks that."""
    filters: list[FilterSet] = Field(default_factory=list, max_length=20)
    """Filter sets to warm in addition to the unfiltered analytics. Each set is warmed for every range. Omitted lists
    mean "no filter on this dimension"."""
    breakdowns: list[Breakdown] = Field(
        default_factory=list, max_length=3, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Breakdowns to warm along with the totals (per user, per model, per provider)."""
    interval: str = Field(
        default="10m",
        min_length=2,
        max_length=24,
        pattern=INTERVAL_PATTERN,
        json_schema_extra=cel_rules((_INTERVAL_RULE, INTERVAL_TOO_SHORT)),
    )
    """How often to warm, as a Go-style duration made of hours, minutes and seconds (for example 10m, 1h30m). At
    least 1m; at most 5 digits of hours, 7 of minutes, 9 of seconds."""
    suspend: bool = False
    """Stop warming (the cache keeps what it has until the TTLs expire)."""

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
            raise ValueError(INTERVAL_TOO_SHORT)
        return value

    @property
    def interval_delta(self) -> dt.timedelta:
        """The interval as a timedelta."""
        return parse_interval(self.interval)


def _cel_day(day: dt.date) -> str:
    return f"timestamp('{day.isoformat()}T00:00:00Z')"


class CacheInvalidationSpec(CrdModel):
    """The days to invalidate and where. Immutable."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            ("self == oldSelf", "spec is immutable; create a new CacheInvalidation"),
            ("self.startDate <= self.endDate", END_DATE_BEFORE_START_DATE),
            (f"self.endDate - self.startDate <= duration('{(MAX_LONG_RANGE_DAYS - 1) * 24}h')", INVALIDATION_TOO_LONG),
            (
                f"self.startDate >= {_cel_day(EARLIEST_DAY)} && self.endDate <= {_cel_day(LATEST_DAY)}",
                OUTSIDE_THE_WINDOW,
            ),
        )
    )

    start_date: dt.date
    """First day to invalidate (YYYY-MM-DD, UTC, inclusive)."""
    end_date: dt.date
    """Last day to invalidate (YYYY-MM-DD, UTC, inclusive). At most 366 days in all."""
    tiers: list[Tier] = Field(
        default=["redis", "postgres"], min_length=1, max_length=2, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Which cache tiers to purge."""
    rewarm: bool = False
    """After purging, recompute the days from LiteLLM's data into the purged tiers."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=MAX_TTL_SECONDS_AFTER_FINISHED)
    """Delete this object that many seconds after it succeeded or failed (at most 366 days); unset keeps it."""

    @field_validator("start_date", "end_date")
    @classmethod
    def _within_the_window(cls, value: dt.date) -> dt.date:
        try:
            return check_day(value, "date")
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None

    @field_validator("tiers")
    @classmethod
    def _unique_tiers(cls, value: list[Tier]) -> list[Tier]:
        if len(set(value)) != len(value):
            raise ValueError("tiers must not repeat a value")
        return value

    @model_validator(mode="after")
    def _ordered_and_bounded(self) -> Self:
        if self.start_date > self.end_date:
            raise ValueError(END_DATE_BEFORE_START_DATE)
        if (self.end_date - self.start_date).days + 1 > MAX_LONG_RANGE_DAYS:
            raise ValueError(INVALIDATION_TOO_LONG)
        return self

    @property
    def range(self) -> DateRange:
        """The days to invalidate."""
        return DateRange(self.start_date, self.end_date)
