"""A marker password in every secret setting, for tests that grep everything the process says for it.

Every value here points at a real service with a wrong password (or is malformed on purpose), so the run that
uses it fails, and any leak of the password is a leak of the marker.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from pydantic import SecretStr

from litemaas_cache.settings import Settings

MARKER = "MARKERpw-0xC0FFEE"
# What must never appear, in any output: the marker and pieces of it a parser could echo on its own.
LEAK_PROBES = ("MARKER", "C0FFEE")


def secret_aliases() -> set[str]:
    """The environment variables of every SecretStr setting, derived from Settings (so new ones are included)."""
    return {
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }


def url_with_password(dsn: str, password: str) -> str:
    """`dsn` (a URL) with its password replaced by `password` (percent-encoded)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{quote(password, safe='')}@{host}"))


def keyword_dsn(dsn: str, password: str, *, quoted: bool = True) -> str:
    """`dsn` as a libpq key=value string with `password`; unquoted, a password with a space is malformed."""
    params = {k: v for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items() if k != "password"}
    written = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'" if quoted else password
    return " ".join(f"{key}={value}" for key, value in params.items()) + f" password={written}"


def leaks(text: str) -> list[str]:
    """The lines of `text` holding any probe of the marker."""
    return [line for line in text.splitlines() if any(probe in line for probe in LEAK_PROBES)]
