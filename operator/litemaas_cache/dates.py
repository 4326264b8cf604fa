"""UTC calendar helpers: today, date ranges, the previous period and the warm-range presets."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import DateOrderInvalid, DateRangeTooLarge, InvalidRequest

UTC = dt.UTC
# The days this cache answers for. Far outside them a date's previous period or a lock per day stops making sense
# (0001-01-01 has no previous period at all), so they are refused where they come in, naming the field.
EARLIEST_DAY = dt.date(2000, 1, 1)
LATEST_DAY = dt.date(2099, 12, 31)
# The longest range one invalidation, rebuild or filter-options request may cover (LiteMaaS exports up to 365 days).
MAX_LONG_RANGE_DAYS = 366
# A day is written YYYY-MM-DD and nothing else: date.fromisoformat alone also takes 20250101 and 2025-W02-2.
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def utc_today() -> dt.date:
    return utc_now().date()


def parse_date(value: str, field: str) -> dt.date:
    """Parse an ISO date (YYYY-MM-DD) within EARLIEST_DAY..LATEST_DAY; the error names the field."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        if not ISO_DAY.match(text):
            raise ValueError(text)
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(field, f"{str(value)[:40]!r} is not an ISO date (YYYY-MM-DD)") from None
    return check_day(day, field)


def check_day(day: dt.date, field: str) -> dt.date:
    """`day`, when it lies within EARLIEST_DAY..LATEST_DAY; else InvalidRequest naming the field."""
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise InvalidRequest(field, f"{day.isoformat()} is outside {EARLIEST_DAY}..{LATEST_DAY}")
    return day


@dataclass(frozen=True, order=True)
class DateRange:
    """An inclusive range of UTC days."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise DateOrderInvalid(self.start, self.end)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __iter__(self) -> Iterator[dt.date]:
        return iter(_days(self.start, self.end))

    def previous(self) -> DateRange:
        """The period of equal length that ends the day before this one starts."""
        end = self.start - dt.timedelta(days=1)
        return DateRange(end - dt.timedelta(days=self.days - 1), end)

    def check_length(self, max_days: int) -> DateRange:
        """This range, when it spans at most `max_days`; else DateRangeTooLarge."""
        if self.days > max_days:
            raise DateRangeTooLarge(self.start, self.end, self.days, max_days)
        return self

    def split(self, max_days: int) -> list[DateRange]:
        """Consecutive ranges of at most `max_days` that cover this one, in order."""
        parts = []
        start = self.start
        while start <= self.end:
            end = min(start + dt.timedelta(days=max_days - 1), self.end)
            parts.append(DateRange(start, end))
            start = end + dt.timedelta(days=1)
        return parts

    def overlaps(self, other: DateRange) -> bool:
        return self.start <= other.end and other.start <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@functools.lru_cache(maxsize=1024)
def _days(start: dt.date, end: dt.date) -> tuple[dt.date, ...]:
    """The days of start..end: built once per range (a warm read walks its range's days several times)."""
    return tuple(map(dt.date.fromordinal, range(start.toordinal(), end.toordinal() + 1)))


def _month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _previous_month(today: dt.date) -> DateRange:
    last = _month_start(today) - dt.timedelta(days=1)
    return DateRange(_month_start(last), last)


def _last_days(n: int) -> Callable[[dt.date], DateRange]:
    return lambda today: DateRange(today - dt.timedelta(days=n - 1), today)


PRESETS: dict[str, Callable[[dt.date], DateRange]] = {
    "today": lambda today: DateRange(today, today),
    "yesterday": lambda today: DateRange(today - dt.timedelta(days=1), today - dt.timedelta(days=1)),
    "last-7-days": _last_days(7),
    "last-30-days": _last_days(30),
    "last-90-days": _last_days(90),
    "month-to-date": lambda today: DateRange(_month_start(today), today),
    "previous-month": _previous_month,
}


def resolve_range(spec: str, today: dt.date | None = None, field: str = "range") -> DateRange:
    """Resolve a preset name or an explicit 'START..END' to a DateRange (UTC)."""
    today = today or utc_today()
    spec = spec.strip()
    if spec in PRESETS:
        return PRESETS[spec](today)
    if ".." in spec:
        start, _, end = spec.partition("..")
        try:
            return DateRange(parse_date(start, field), parse_date(end, field))
        except InvalidRequest as exc:
            raise InvalidRequest(field, exc.message) from None
    choices = ", ".join(PRESETS)
    raise InvalidRequest(field, f"{spec!r} is neither a preset ({choices}) nor START..END")
