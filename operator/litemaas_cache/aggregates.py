"""Day aggregates: LiteLLM usage for one UTC day at (user, api key, model, provider) grain."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .filters import UsageFilters

UNMAPPED_USER_ID = "unmapped"


class UsageRow(NamedTuple):
    """One grain cell of a day: who (user, key), what (model, provider) and how much."""

    user_id: str
    api_key: str
    key_alias: str | None
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    requests: int
    successful: int
    failed: int
    spend: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


GrainKey = tuple[str, str, str, str]


def merge_rows(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """Sum rows that share a grain key (user, api key, model, provider); output is sorted by that key."""
    merged: dict[GrainKey, list[Any]] = {}
    for row in rows:
        key = (row.user_id, row.api_key, row.model, row.provider)
        cell = merged.get(key)
        if cell is None:
            merged[key] = list(row)
        else:
            if cell[2] is None:
                cell[2] = row.key_alias
            for i in range(5, 11):
                cell[i] += row[i]
    return [UsageRow(*merged[key]) for key in sorted(merged)]


@dataclass(frozen=True, slots=True)
class DayUsage:
    """A day's aggregates plus its cache metadata (complete or partial, and the version it was built at)."""

    day: dt.date
    rows: tuple[UsageRow, ...]
    is_complete: bool
    version: int

    def to_payload(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "complete": self.is_complete,
            "version": self.version,
            "rows": [list(row) for row in self.rows],
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> DayUsage:
        """Rebuild from to_payload(); raises ValueError/KeyError/TypeError on a malformed payload."""
        rows = tuple(UsageRow(*row) for row in payload["rows"])
        for row in rows:
            if len(row) != 11 or not isinstance(row.user_id, str) or not isinstance(row.requests, int):
                raise ValueError("malformed usage row")
        return cls(
            day=dt.date.fromisoformat(payload["day"]),
            rows=rows,
            is_complete=bool(payload["complete"]),
            version=int(payload["version"]),
        )

    def totals(self) -> tuple[int, int, float]:
        """(requests, tokens, spend) of the whole day."""
        return (
            sum(r.requests for r in self.rows),
            sum(r.total_tokens for r in self.rows),
            sum(r.spend for r in self.rows),
        )


class RowFilter:
    """Applies UsageFilters to rows: a row passes when every non-empty filter list contains its value."""

    __slots__ = ("_keys", "_models", "_providers", "_users")

    def __init__(self, filters: UsageFilters) -> None:
        self._users = frozenset(filters.user_ids) or None
        self._models = frozenset(filters.model_ids) or None
        self._providers = frozenset(filters.provider_ids) or None
        self._keys = frozenset(filters.api_key_ids) or None

    @property
    def keeps_everything(self) -> bool:
        return self._users is None and self._models is None and self._providers is None and self._keys is None

    def __call__(self, row: UsageRow) -> bool:
        return (
            (self._users is None or row.user_id in self._users)
            and (self._models is None or row.model in self._models)
            and (self._providers is None or row.provider in self._providers)
            and (self._keys is None or row.api_key in self._keys or row.key_alias in self._keys)
        )
