"""LiteMaaS's usage export as files: the by-user rows as CSV or JSON, formatted exactly as LiteMaaS formats them and
produced in chunks of rows, so a caller can stream the file without ever holding it whole (pure; no I/O).

CSV: LiteMaaS's header and columns; lines joined by "\\n" with no newline at the end; a field is quoted (a quote
doubled) only when it holds a comma, a quote or a line break; cost with 4 decimals, halves rounded up as JavaScript's
toFixed rounds them. JSON: `{metadata, data}` indented by two spaces as JSON.stringify(value, null, 2) writes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson

from .dates import DateRange
from .vocabulary import ExportFormat

CHUNK_ROWS = 500
"""Rows per chunk: a few hundred KB of text at most, whatever the number of rows."""
CONTENT_TYPES: dict[ExportFormat, str] = {"csv": "text/csv", "json": "application/json"}
_CSV_SPECIAL = (",", '"', "\n", "\r")
_CENTS = Decimal("0.0001")
Row = Mapping[str, Any]


def filename(days: DateRange, file_format: ExportFormat) -> str:
    """LiteMaaS's file name: admin-usage-export-<startDate>-to-<endDate>.<format>."""
    return f"admin-usage-export-{days.start.isoformat()}-to-{days.end.isoformat()}.{file_format}"


def csv_field(value: object) -> str:
    text = str(value)
    if any(c in text for c in _CSV_SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


def fixed4(value: float) -> str:
    """JavaScript's value.toFixed(4): the exact binary value rounded, a tie going up."""
    return str(Decimal(value).quantize(_CENTS, rounding=ROUND_HALF_UP))


def csv_header(currency: str) -> str:
    columns = ("User ID", "Username", "Email", "Total Requests", "Total Tokens", "Prompt Tokens", "Completion Tokens")
    return ",".join(csv_field(c) for c in (*columns, f"Total Cost ({currency})"))


def csv_line(row: Row) -> str:
    metrics = row["metrics"]
    tokens = metrics["tokens"]
    fields = (
        row["userId"],
        row["username"],
        row["email"],
        metrics["requests"],
        tokens["total"],
        tokens["prompt"],
        tokens["completion"],
        fixed4(metrics["cost"]),
    )
    return ",".join(csv_field(f) for f in fields)


def csv_chunks(rows: Sequence[Row], currency: str) -> Iterator[bytes]:
    """The CSV file, a chunk of CHUNK_ROWS lines at a time (the header first)."""
    yield csv_header(currency).encode()
    for first in range(0, len(rows), CHUNK_ROWS):
        yield "".join("\n" + csv_line(row) for row in rows[first : first + CHUNK_ROWS]).encode()


def service_row(row: Row) -> Row:
    """A by-user row as LiteMaaS's service returns it to the export: its models carry averageLatency (always 0:
    LiteLLM's daily table records no latency)."""
    metrics = row["metrics"]
    models = [{**model, "averageLatency": 0} for model in metrics["models"]]
    return {**row, "metrics": {**metrics, "models": models}}


def metadata(
    exported_at: dt.datetime, days: DateRange, filters: Mapping[str, list[str]], record_count: int
) -> dict[str, Any]:
    """LiteMaaS's export metadata; `filters` holds the id lists the request sent."""
    return {
        "exportedAt": exported_at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "breakdownType": "user",
        "filters": {"startDate": days.start.isoformat(), "endDate": days.end.isoformat(), **filters},
        "recordCount": record_count,
    }


def _indented(value: Any, depth: int) -> bytes:
    """`value` as JSON.stringify(value, null, 2) writes it when nested `depth` levels deep."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n" + b"  " * depth)


def json_chunks(rows: Sequence[Row], meta: Mapping[str, Any]) -> Iterator[bytes]:
    """The JSON file, a chunk of CHUNK_ROWS rows at a time."""
    head = b'{\n  "metadata": ' + _indented(meta, 1) + b',\n  "data": '
    if not rows:
        yield head + b"[]\n}"
        return
    yield head + b"["
    for first in range(0, len(rows), CHUNK_ROWS):
        separator = b"\n    " if first == 0 else b",\n    "
        chunk = rows[first : first + CHUNK_ROWS]
        yield separator + b",\n    ".join(_indented(service_row(row), 2) for row in chunk)
    yield b"\n  ]\n}"
