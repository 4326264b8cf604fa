"""The columnar analytics engine: folds day frames into a range's aggregates with polars, chunk by chunk.

A range is read a few days at a time (see day_store.py). Each chunk is filtered on integer codes and reduced at
once to what the documents need: sums at (user, key, model, provider) grain over the whole range so far, and for
each day its totals, active users and per-model sums. Memory is bounded by one chunk plus the grain (the distinct
cells of the range, not its rows), whatever the length of the range. Every method here is synchronous CPU work,
called from a worker thread; polars releases the GIL while it computes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from .dates import DateRange
from .dictionary import DimensionDictionary
from .frames import ACTIVE, GRAIN, SCHEMA, SUMS, DayFrame
from .vocabulary import CODED_COLUMNS, METRICS, CodedColumn

# Rows of the range are grouped once this many are buffered: grouping a few chunks at once costs less than grouping
# each (measured on a 365-day range of dataset L: 1.66 s in 7-day groups, 1.26 s in 28-day ones).
GROUP_ROWS = 200_000
# The grain is folded again once this many partials are pending (bounds memory and the cost of a fold).
FOLD_EVERY = 4


LAST_ACTIVE = pl.col("day").filter(ACTIVE).max().alias("last")
"""The last day a group of rows has requests (null when it has none)."""


def distinct_active(column: str) -> pl.Expr:
    """How many distinct values of `column` have usage (rows with zero requests do not count)."""
    return pl.col(column).filter(ACTIVE).n_unique()


@dataclass(frozen=True)
class CodeFilter:
    """Per coded column, the codes a row must have (None: no condition). An empty tuple matches nothing."""

    user: tuple[int, ...] | None = None
    key: tuple[int, ...] | None = None
    model: tuple[int, ...] | None = None
    provider: tuple[int, ...] | None = None

    def expression(self) -> pl.Expr | None:
        conditions = [
            pl.col(column).is_in(codes)
            for column, codes in zip(CODED_COLUMNS, (self.user, self.key, self.model, self.provider), strict=True)
            if codes is not None
        ]
        if not conditions:
            return None
        combined = conditions[0]
        for condition in conditions[1:]:
            combined = combined & condition
        return combined


@dataclass(frozen=True)
class RangeSummary:
    """A range's aggregates with text dimensions: what the documents are built from."""

    grain: pl.DataFrame  # user, key, model, provider (text) + METRICS + last (the cell's last day with requests)
    daily: pl.DataFrame  # day, METRICS, activeUsers: one row per day of the range with usage
    daily_models: pl.DataFrame  # day, model, provider (text), METRICS
    previous_totals: dict[str, float]  # METRICS summed over the previous period
    previous_active_users: int


class RangeAccumulator:
    """Folds the day frames of a range (and of its previous period, for trends) into a RangeSummary."""

    def __init__(
        self, current: DateRange, previous: DateRange | None, where: CodeFilter, *, per_day: bool = True
    ) -> None:
        self.current = current
        self.previous = previous
        self._where = where.expression()
        self._per_day = per_day
        self._grain: pl.DataFrame = pl.DataFrame(schema=_GRAIN_SCHEMA)
        self._pending: list[pl.DataFrame] = []
        self._buffer: list[pl.DataFrame] = []
        self._buffered_rows = 0
        self._daily: list[pl.DataFrame] = []
        self._daily_models: list[pl.DataFrame] = []
        self._previous_parts: list[pl.DataFrame] = []
        self._previous_users: list[pl.Series] = []

    def filter_by(self, where: CodeFilter) -> None:
        """Fold the chunks still to come with `where` (the same filters, now knowing codes registered since)."""
        self._where = where.expression()

    def needs_columns(self, day: dt.date) -> bool:
        """Whether folding `day` needs its columns, or its header's summary is enough (unfiltered, and only the
        day's totals, active users and per-model sums are wanted: every day of the previous period, and the daily
        series of the current one)."""
        return self._where is not None or self.current.start <= day <= self.current.end

    def add(self, days: Sequence[DayFrame]) -> None:
        """Fold a chunk of days (each day of the range must be added exactly once)."""
        current = [d for d in days if self.current.start <= d.day <= self.current.end]
        previous = [d for d in days if self.previous and self.previous.start <= d.day <= self.previous.end]
        if current:
            rows = self._stack(current)
            self._buffer.append(rows)
            self._buffered_rows += rows.height
            if self._where is None and self._per_day:
                self._daily.append(_daily_of(current))
                self._daily_models.append(_daily_models_of(current))
            if self._buffered_rows >= GROUP_ROWS:
                self._group_buffer()
        if previous and self._where is None:
            self._previous_parts.append(
                pl.DataFrame([d.header.totals for d in previous], schema=_SUMS_SCHEMA, orient="row")
            )
            self._previous_users.append(pl.Series([u for d in previous for u in d.header.active_users], dtype=pl.Int32))
        elif previous:
            rows = self._stack(previous)
            self._previous_parts.append(rows.select(SUMS))
            self._previous_users.append(rows.filter(ACTIVE)["user"].unique())

    def _stack(self, days: Iterable[DayFrame]) -> pl.DataFrame:
        stacked = pl.concat([d.columns().with_columns(day=pl.lit(d.day, dtype=pl.Date)) for d in days])
        return stacked if self._where is None else stacked.filter(self._where)

    def _group_buffer(self) -> None:
        if self._buffer:
            rows = pl.concat(self._buffer)
            self._buffer.clear()
            self._buffered_rows = 0
            self._add_current(rows)

    def _add_current(self, rows: pl.DataFrame) -> None:
        self._pending.append(rows.group_by(GRAIN).agg(*SUMS, LAST_ACTIVE))
        if len(self._pending) >= FOLD_EVERY:
            self._fold()
        if self._per_day and self._where is not None:  # unfiltered: from the headers, in add()
            self._daily.append(rows.group_by("day").agg(*SUMS, distinct_active("user").alias("activeUsers")))
            self._daily_models.append(rows.group_by("day", "model", "provider").agg(SUMS))

    def _fold(self) -> None:
        if not self._pending:  # codes() and summary() both fold: the second finds nothing new
            return
        self._grain = pl.concat([self._grain, *self._pending]).group_by(GRAIN).agg(*SUMS, pl.col("last").max())
        self._pending.clear()

    def codes(self) -> set[int]:
        """Every dictionary code the summary will name."""
        self._group_buffer()
        self._fold()
        found: set[int] = set()
        for column in GRAIN:
            found.update(self._grain[column].unique().to_list())
        for frame in self._daily_models:
            found.update(frame["model"].unique().to_list())
            found.update(frame["provider"].unique().to_list())
        return found

    def summary(self, dictionary: DimensionDictionary) -> RangeSummary:
        """The folded range with its codes turned back into text (the dictionary must know every code)."""
        self._group_buffer()
        self._fold()
        previous = pl.concat(self._previous_parts).select(SUMS) if self._previous_parts else None
        users = pl.concat(self._previous_users).unique() if self._previous_users else pl.Series([], dtype=pl.Int32)
        return RangeSummary(
            grain=_named(self._grain, GRAIN, dictionary),
            daily=pl.concat(self._daily) if self._daily else pl.DataFrame(schema=_DAILY_SCHEMA),
            daily_models=_named(
                pl.concat(self._daily_models) if self._daily_models else pl.DataFrame(schema=_MODELS_SCHEMA),
                ["model", "provider"],
                dictionary,
            ),
            previous_totals={m: (previous[m][0] if previous is not None else 0) for m in METRICS},
            previous_active_users=users.len(),
        )


_SUMS_SCHEMA = {m: SCHEMA[m] for m in METRICS}
_GRAIN_SCHEMA = {**SCHEMA, "last": pl.Date()}
_DAILY_SCHEMA = {"day": pl.Date(), **_SUMS_SCHEMA, "activeUsers": pl.UInt32()}
_MODELS_SCHEMA = {"day": pl.Date(), "model": pl.Int32(), "provider": pl.Int32(), **_SUMS_SCHEMA}


def _daily_of(days: Sequence[DayFrame]) -> pl.DataFrame:
    """Each day's totals and active users, from its header."""
    rows = [(d.day, *d.header.totals, len(d.header.active_users)) for d in days]
    return pl.DataFrame(rows, schema=_DAILY_SCHEMA, orient="row")


def _daily_models_of(days: Sequence[DayFrame]) -> pl.DataFrame:
    """Each day's sums per model and provider, from its header."""
    rows = [(d.day, *row) for d in days for row in d.header.models]
    return pl.DataFrame(rows, schema=_MODELS_SCHEMA, orient="row")


def _named(frame: pl.DataFrame, columns: Sequence[CodedColumn | str], dictionary: DimensionDictionary) -> pl.DataFrame:
    return frame.with_columns(dictionary.names(frame[c]).alias(c) for c in columns)
