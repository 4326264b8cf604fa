"""Domain errors. Each names what went wrong; none carries a secret."""

from __future__ import annotations


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
