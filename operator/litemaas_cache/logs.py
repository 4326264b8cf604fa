"""Log output: text for people, or LOG_FORMAT=json for log collectors (one JSON object per line).

Every handler keeps its RedactingFilter (redaction.py), which rewrites a record's message and traceback before any
formatter sees them. The JSON line is built from those redacted parts and a fixed set of fields only: a record's
`extra` values, which no filter redacts, never reach it.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextvars import ContextVar
from typing import Any

import orjson

from .vocabulary import LogFormat

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the HTTP request being served (set by the API), written into each JSON line logged while serving it."""


class JsonFormatter(logging.Formatter):
    """time (UTC, ISO 8601), level, logger, message; request_id while serving a request; the Kubernetes object of
    a kopf record (kind, namespace, name); exception and stack when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        reference = getattr(record, "k8s_ref", None)  # set by kopf's per-object loggers
        if isinstance(reference, dict):
            entry["object"] = {key: reference.get(key) for key in ("kind", "namespace", "name")}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry).decode()


def use_log_format(log_format: LogFormat) -> None:
    """Format every handler of the root logger (the CLI's, or the one `kopf run` installs) as `log_format`.
    Text leaves them as they are: the CLI's format, or kopf's own."""
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
