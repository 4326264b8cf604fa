"""A day's usage as columns, and its payload: the bytes both cache tiers store for the day.

A day frame holds one row per (user, api key, model, provider) cell of that UTC day, the four dimensions as integer
codes (see dictionary.py) and the metrics as integers (spend as a float). The payload is:

    MAGIC | layout (1 byte) | header length (4 bytes, big-endian) | header (JSON) | Arrow IPC (zstd-compressed)

The header carries the day, whether it is complete and the version it was built at, and can be read without
touching the columns. A payload of another layout is not an error: it is read as a
miss and rewritten, so a change of layout needs no purge.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from .dictionary import CODE_TYPE
from .vocabulary import CODED_COLUMNS, METRICS

MAGIC = b"LMCD"
LAYOUT = 1
_LENGTH = struct.Struct(">I")
_PREFIX = len(MAGIC) + 1 + _LENGTH.size

SCHEMA: dict[str, pl.DataType] = {
    **{name: CODE_TYPE() for name in CODED_COLUMNS},
    **{name: pl.Int64() for name in METRICS if name != "spend"},
    "spend": pl.Float64(),
}
GRAIN = list(CODED_COLUMNS)


class UnreadablePayload(ValueError):
    """Bytes that are not a day payload of the current layout: the reader treats them as a miss."""


@dataclass(frozen=True, slots=True)
class DayHeader:
    day: dt.date
    is_complete: bool
    version: int


@dataclass(frozen=True, slots=True)
class DayFrame:
    """One day's payload and header; `frame` holds its columns when they are at hand (just computed), else they
    are decoded on demand by `columns()`, in the worker thread that aggregates them."""

    header: DayHeader
    frame: pl.DataFrame | None
    payload: bytes

    def columns(self) -> pl.DataFrame:
        return self.frame if self.frame is not None else decode_columns(self.payload)

    @property
    def day(self) -> dt.date:
        return self.header.day

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def is_complete(self) -> bool:
        return self.header.is_complete


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def encode_day(day: dt.date, frame: pl.DataFrame, *, is_complete: bool, version: int) -> DayFrame:
    """Build a day's payload (the frame must have SCHEMA's columns, one row per grain cell)."""
    frame = frame.select(pl.col(name).cast(dtype) for name, dtype in SCHEMA.items())
    header = DayHeader(day, is_complete, version)
    meta = orjson.dumps({"day": day.isoformat(), "complete": is_complete, "version": version})
    body = io.BytesIO()
    frame.write_ipc(body, compression="zstd")
    payload = MAGIC + bytes([LAYOUT]) + _LENGTH.pack(len(meta)) + meta + body.getvalue()
    return DayFrame(header, frame, payload)


def read_header(payload: bytes) -> DayHeader:
    """The header alone (cheap: the columns are not decoded); raises UnreadablePayload."""
    if len(payload) < _PREFIX or not payload.startswith(MAGIC):
        raise UnreadablePayload("not a day payload")
    if payload[len(MAGIC)] != LAYOUT:
        raise UnreadablePayload(f"layout {payload[len(MAGIC)]} is not the current layout {LAYOUT}")
    (length,) = _LENGTH.unpack_from(payload, len(MAGIC) + 1)
    try:
        meta: dict[str, Any] = orjson.loads(payload[_PREFIX : _PREFIX + length])
        return DayHeader(dt.date.fromisoformat(meta["day"]), bool(meta["complete"]), int(meta["version"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UnreadablePayload(f"bad header: {type(exc).__name__}") from None


def decode_columns(payload: bytes) -> pl.DataFrame:
    """The columns of a payload whose header was read; raises UnreadablePayload when they are damaged."""
    (length,) = _LENGTH.unpack_from(payload, len(MAGIC) + 1)
    try:
        frame = pl.read_ipc(io.BytesIO(payload[_PREFIX + length :]))
    except Exception as exc:  # polars raises several error types for a damaged IPC body
        raise UnreadablePayload(f"bad columns: {type(exc).__name__}") from None
    if dict(frame.schema) != SCHEMA:
        raise UnreadablePayload("unexpected columns")
    return frame
