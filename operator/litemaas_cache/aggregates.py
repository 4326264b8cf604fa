"""Day aggregates: LiteLLM usage for one UTC day at (user, api key, model, provider) grain."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from .filters import UsageFilters
from .hotpath import gc_paused

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


@gc_paused()
def merge_rows(rows: Iterable[UsageRow], *, ordered: bool = True) -> list[UsageRow]:
    """Sum rows that share a grain key (user, api key, model, provider); sorted by that key unless not `ordered`.

    A row without a twin is kept as it is (no copy): merging is on the path of every cold read.
    """
    merged: dict[GrainKey, UsageRow | list[Any]] = {}
    for row in rows:
        key = (row[0], row[1], row[3], row[4])
        seen = merged.get(key)
        if seen is None:
            merged[key] = row
            continue
        cell = seen if isinstance(seen, list) else list(seen)
        merged[key] = cell
        if cell[2] is None:
            cell[2] = row[2]
        for i in range(5, 11):
            cell[i] += row[i]  # type: ignore[operator]  # the metric fields: int or float
    keys = sorted(merged) if ordered else merged
    return [value if isinstance(value := merged[key], UsageRow) else UsageRow._make(value) for key in keys]


METRIC_COLUMNS = ("prompt", "completion", "requests", "successful", "failed", "spend")
_new_row = partial(tuple.__new__, UsageRow)  # builds a UsageRow from an iterable in C, without a Python __new__


def _dictionary(column: Sequence[str]) -> tuple[list[str], list[int]]:
    """(distinct values in first-seen order, the column as indexes into them)."""
    values = list(dict.fromkeys(column))
    index = {value: i for i, value in enumerate(values)}
    return values, list(map(index.__getitem__, column))


@gc_paused()
def encode_rows(rows: Iterable[UsageRow]) -> dict[str, Any]:
    """Rows as columns, the text ones dictionary-encoded (each distinct user, key, model and provider once).

    Much smaller than a list of rows, encoded and decoded by C loops (zip, map), and decoding shares one string
    object per distinct value.
    """
    columns = list(zip(*rows, strict=True)) or [()] * len(UsageRow._fields)
    users, user_codes = _dictionary(columns[0])
    keys, key_codes = _dictionary(columns[1])
    models, model_codes = _dictionary(columns[3])
    providers, provider_codes = _dictionary(columns[4])
    alias_of = dict(zip(columns[1], columns[2], strict=True))  # an alias belongs to its key
    return {
        "users": users,
        "keys": keys,
        "aliases": list(map(alias_of.__getitem__, keys)),
        "models": models,
        "providers": providers,
        "columns": {
            "user": user_codes,
            "key": key_codes,
            "model": model_codes,
            "provider": provider_codes,
            **{name: list(column) for name, column in zip(METRIC_COLUMNS, columns[5:], strict=True)},
        },
    }


@gc_paused()
def decode_rows(encoded: dict[str, Any]) -> tuple[UsageRow, ...]:
    """The rows of encode_rows(); raises ValueError (or KeyError, IndexError, TypeError) when malformed."""
    users, keys, aliases = encoded["users"], encoded["keys"], encoded["aliases"]
    models, providers, columns = encoded["models"], encoded["providers"], encoded["columns"]
    if not all(isinstance(v, str) for v in (*users, *keys, *models, *providers)) or len(aliases) != len(keys):
        raise ValueError("malformed row dimensions")
    key_codes = columns["key"]
    rows = tuple(
        map(
            _new_row,
            zip(
                map(users.__getitem__, columns["user"]),
                map(keys.__getitem__, key_codes),
                map(aliases.__getitem__, key_codes),
                map(models.__getitem__, columns["model"]),
                map(providers.__getitem__, columns["provider"]),
                *(columns[name] for name in METRIC_COLUMNS),
                strict=True,
            ),
        )
    )
    if rows and not all(isinstance(v, int) for v in rows[0][5:10]):
        raise ValueError("malformed usage row")
    return rows


@dataclass(frozen=True, slots=True)
class DayUsage:
    """A day's aggregates plus its cache metadata (complete or partial, and the version it was built at)."""

    day: dt.date
    rows: tuple[UsageRow, ...]
    is_complete: bool
    version: int
    # The codec's bytes of to_payload(), when this day came from (or was just written to) a cache tier.
    encoded: bytes | None = field(default=None, compare=False, repr=False)

    def to_payload(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "complete": self.is_complete,
            "version": self.version,
            "table": encode_rows(self.rows),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> DayUsage:
        """Rebuild from to_payload(); raises ValueError/KeyError/IndexError/TypeError on a malformed payload."""
        return cls(
            day=dt.date.fromisoformat(payload["day"]),
            rows=decode_rows(payload["table"]),
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
