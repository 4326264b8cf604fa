"""Global integer codes for the text dimensions of usage (user, api key, model, provider).

Day aggregates store codes, not strings, so that many days can be concatenated and grouped as plain integers. The
codes live in PostgreSQL (litemaas_cache.dimension_values) and are append-only: a code never changes meaning. Each
process keeps a copy that only grows; whoever meets codes (or filter values) it does not know yet looks up exactly
those. New values are registered inside the transaction that writes the days using them, so a code is visible to
other processes exactly when the first day that uses it is. Codes do not commit in numeric order, so a copy is
never assumed complete up to its highest code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl
import psycopg

from .schema import SCHEMA
from .vocabulary import CODED_COLUMNS, CodedColumn

CODE_TYPE = pl.Int32

_CODES_SQL = f"SELECT code, dimension, value FROM {SCHEMA}.dimension_values WHERE code = ANY(%s)"

# Values are inserted in one global order, so two transactions registering overlapping values cannot deadlock.
_REGISTER_SQL = f"""
INSERT INTO {SCHEMA}.dimension_values (dimension, value)
SELECT d, v FROM unnest(%(dims)s::text[], %(vals)s::text[]) AS t(d, v) ORDER BY d, v
ON CONFLICT (dimension, value) DO NOTHING
"""
_LOOKUP_SQL = f"""
SELECT code, dimension, value FROM {SCHEMA}.dimension_values
WHERE (dimension, value) IN (SELECT * FROM unnest(%(dims)s::text[], %(vals)s::text[]))
"""

Entry = tuple[int, str, str]


class DimensionDictionary:
    """This process's copy of the dictionary; safe to read from worker threads while the event loop extends it."""

    def __init__(self) -> None:
        self._codes: dict[str, dict[str, int]] = {dim: {} for dim in CODED_COLUMNS}
        self._values: dict[int, str] = {}
        self._lock = threading.Lock()

    def adopt(self, entries: Iterable[Entry]) -> None:
        """Add entries read from PostgreSQL (committed ones only)."""
        with self._lock:
            for code, dimension, value in entries:
                self._codes[dimension][value] = code
                self._values[code] = value

    async def learn_codes(self, conn: psycopg.AsyncConnection[Any], codes: Iterable[int]) -> None:
        """Look up the codes among `codes` that this copy does not know yet (written by another process)."""
        unknown = [code for code in codes if code not in self._values]
        if unknown:
            cur = await conn.execute(_CODES_SQL, (unknown,))
            self.adopt(await cur.fetchall())

    async def learn_values(
        self, conn: psycopg.AsyncConnection[Any], wanted: Mapping[CodedColumn, Iterable[str]]
    ) -> None:
        """Look up the codes of the values among `wanted` that this copy does not know yet (absent ones stay absent)."""
        _, unknown = self._split(wanted)
        if unknown["dims"]:
            cur = await conn.execute(_LOOKUP_SQL, unknown)
            self.adopt(await cur.fetchall())

    async def register(
        self, conn: psycopg.AsyncConnection[Any], wanted: Mapping[CodedColumn, Iterable[str]]
    ) -> dict[CodedColumn, dict[str, int]]:
        """Codes for every wanted value, creating the missing ones in `conn`'s transaction.

        The new codes are returned, not adopted: the caller adopts them once its transaction has committed.
        """
        found, unknown = self._split(wanted)
        if unknown["dims"]:
            await conn.execute(_REGISTER_SQL, unknown)
            cur = await conn.execute(_LOOKUP_SQL, unknown)
            for code, dimension, value in await cur.fetchall():
                found[dimension][value] = code
        return found

    def _split(
        self, wanted: Mapping[CodedColumn, Iterable[str]]
    ) -> tuple[dict[CodedColumn, dict[str, int]], dict[str, list[str]]]:
        """The wanted values this copy knows, with their codes, and the others as the parallel arrays (`dims`,
        `vals`) that _REGISTER_SQL and _LOOKUP_SQL take."""
        found: dict[CodedColumn, dict[str, int]] = {dim: {} for dim in wanted}
        unknown: dict[str, list[str]] = {"dims": [], "vals": []}
        for dim, values in wanted.items():
            known = self._codes[dim]
            for value in set(values):
                code = known.get(value)
                if code is None:
                    unknown["dims"].append(dim)
                    unknown["vals"].append(value)
                else:
                    found[dim][value] = code
        return found, unknown

    def codes_of(self, dimension: CodedColumn, values: Iterable[str]) -> list[int]:
        """The codes of the known values among `values` (an unknown value matches no usage)."""
        known = self._codes[dimension]
        return [known[v] for v in values if v in known]

    def names(self, codes: pl.Series) -> pl.Series:
        """The text values of a column of codes (every code must be known: see learn_codes)."""
        if codes.is_empty():  # replace_strict with nothing to replace keeps the codes' integer type
            return codes.cast(pl.String)
        with self._lock:
            mapping = {code: self._values[code] for code in codes.unique().to_list()}
        return codes.replace_strict(mapping, return_dtype=pl.String)
