"""Domain errors. Each names what went wrong; none carries a secret."""

from __future__ import annotations

import datetime as dt


class CacheError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(CacheError):
    """A setting is missing or invalid."""


class InvalidRequest(CacheError):
    """A request (date range, filters, paging) cannot be served as asked; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BackendUnavailable(CacheError):
    """A backend (PostgreSQL) cannot be reached or answered with an error; temporary."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend} unavailable: {message}")
        self.backend = backend


class SourceMissing(CacheError):
    """LiteLLM's usage table does not exist where LITELLM_DATABASE_URL points."""


class DateOrderInvalid(InvalidRequest):
    """The start date of a range is after its end date."""

    def __init__(self, start: dt.date, end: dt.date) -> None:
        super().__init__("startDate", f"start {start} is after end {end}")
        self.start = start
        self.end = end


class DateRangeTooLarge(InvalidRequest):
    """A range spans more days than its endpoint allows; carries what a caller needs to split it."""

    def __init__(self, start: dt.date, end: dt.date, requested_days: int, max_days: int) -> None:
        super().__init__("endDate", f"range of {requested_days} days exceeds the maximum of {max_days}")
        self.start = start
        self.end = end
        self.requested_days = requested_days
        self.max_days = max_days
