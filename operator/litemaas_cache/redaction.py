"""Secrets out of every message that leaves the process: logs, CLI errors, HTTP error bodies, events and status.

What is secret is derived, not listed: every SecretStr field of the settings (fields added later included), the
password embedded in each (a URL's userinfo, a libpq `password=`), their percent-encoded and decoded forms, and the
pieces of a password that a parser may echo when the password itself breaks the parse (`:ab:cSECRET?d` in a URL
makes urllib complain about the "port" `ab:cSECRET`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from pydantic import BaseModel, SecretStr

REDACTED = "***"
# Pieces of a password shorter than this are left alone: they are too short to reveal it, and redacting every
# "ab" in a message would make it unreadable. A whole secret is redacted whatever its length.
MIN_FRAGMENT_LENGTH = 4
# A libpq key=value `password`, or a URL query `password=`: quoted ('...' with \-escapes), or up to the next
# `key=` / `&` / the end. An unquoted value with a space is not valid libpq, but it is what users write.
_PASSWORD_SETTING = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|.*?)(?=\s+\w+\s*=|&|$)", re.IGNORECASE)
_DELIMITERS = re.compile(r"[\s:/?#@&='\"\\]+")


def embedded_passwords(value: str) -> Iterator[str]:
    """The passwords a connection string carries: a URL's userinfo password, and any `password=` setting."""
    _, scheme, rest = value.partition("://")
    if scheme:
        # The last @ ends the userinfo: an unencoded password may itself hold / ? # or :.
        userinfo = rest.rpartition("@")[0]
        if userinfo:
            yield userinfo.partition(":")[2]
    for match in _PASSWORD_SETTING.finditer(value):
        password = match.group(1).strip()
        if len(password) >= 2 and password[0] == password[-1] == "'":
            password = re.sub(r"\\(.)", r"\1", password[1:-1])
        yield password


def _forms(password: str) -> set[str]:
    """A password as written, percent-encoded and percent-decoded, and the pieces of each between delimiters."""
    forms = {password, unquote(password), quote(password, safe="")}
    pieces = {piece for form in forms for piece in _DELIMITERS.split(form) if len(piece) >= MIN_FRAGMENT_LENGTH}
    return {form for form in forms | pieces if form}


def secret_values(secret: str) -> set[str]:
    """Every string to redact for one secret setting: the whole value, and its password(s) in all forms."""
    is_connection_string = "://" in secret or _PASSWORD_SETTING.search(secret) is not None
    passwords = list(embedded_passwords(secret)) if is_connection_string else [secret]
    return {secret} | {form for password in passwords for form in _forms(password)}


class Redactor:
    """Replaces every known secret in a text with ***; one instance per loaded settings (Settings.redact)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({value for secret in secrets if secret for value in secret_values(secret)}, key=len)
        # Longest first, so a piece never breaks the redaction of the whole secret it belongs to.
        self._pattern = re.compile("|".join(re.escape(v) for v in reversed(values))) if values else None

    @classmethod
    def of(cls, model: BaseModel) -> Redactor:
        """The redactor of every SecretStr field of `model` (settings): none is listed by hand."""
        fields = (getattr(model, name) for name in type(model).model_fields)
        return cls(field.get_secret_value() for field in fields if isinstance(field, SecretStr))

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(REDACTED, text)

    def deep(self, value: Any) -> Any:
        """`value` with every string inside it (dicts, lists) redacted: a status patch, an event."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {key: self.deep(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.deep(item) for item in value)
        return value


class RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments and traceback before any handler formats it."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: the handler reports that, quoting nothing
            record.msg, record.args = f"unformattable log message from {record.name}", None
        else:
            record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_log_redaction(redact: Callable[[str], str]) -> None:
    """Put a RedactingFilter on every handler that exists now: the root logger's, and those of libraries that log
    on their own (kopf posts its log records as Kubernetes events through a handler of its own). Called at
    start-up, once settings are loaded; calling it again replaces the previous filter's secrets."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            existing = [f for f in handler.filters if isinstance(f, RedactingFilter)]
            if existing:
                existing[0].redact = redact
            else:
                handler.addFilter(RedactingFilter(redact))
