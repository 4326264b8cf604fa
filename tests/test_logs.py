"""LOG_FORMAT=json: one JSON object per line (time, level, logger, message), kopf's records included, a request id in
the API's lines and answers, and no secret in any line, whatever part of a record carries it."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from litemaas_cache.dates import utc_today
from litemaas_cache.logs import JsonFormatter, use_log_format
from litemaas_cache.manager import CacheManager
from litemaas_cache.redaction import install_log_redaction
from litemaas_cache.settings import load_settings
from tests.support.api import bearer, mint, serving
from tests.support.redis_server import free_port

CLI = str(Path(sys.executable).with_name("litemaas-cache"))
PG_PASSWORD = "pg-S3cret-in-no-log"
REDIS_PASSWORD = "redis-S3cret-in-no-log"
SECRETS = (PG_PASSWORD, REDIS_PASSWORD)


def _lines(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object (a line that is not one fails the test)."""
    entries = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        dt.datetime.fromisoformat(entry["time"])
    return entries


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger writing LOG_FORMAT=json into a buffer, with the settings' secrets redacted (as the CLI
    sets it up: handler first, then use_log_format, then install_log_redaction)."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    settings = load_settings(
        database_url=f"postgresql://cache:{PG_PASSWORD}@127.0.0.1:5432/cache",
        redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
    )
    use_log_format("json")
    install_log_redaction(settings.redact)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_secret_in_any_part_of_a_record_never_shows_in_the_json_line(json_log: io.StringIO) -> None:
    log = logging.getLogger("litemaas_cache.test")
    log.warning("connecting to %s", f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0")
    try:
        raise ConnectionError(f"password authentication failed: password={PG_PASSWORD}")
    except ConnectionError:
        log.exception("could not connect")
    log.info("with extras", extra={"dsn": f"postgresql://cache:{PG_PASSWORD}@db/cache"}, stack_info=True)

    text = json_log.getvalue()
    for secret in SECRETS:
        assert secret not in text
    first, second, third = _lines(text)
    assert (first["level"], first["logger"]) == ("WARNING", "litemaas_cache.test")
    assert first["message"] == "connecting to ***"
    assert second["message"] == "could not connect"
    assert "ConnectionError: password authentication failed: password=***" in second["exception"]
    assert third["message"] == "with extras"
    assert "dsn" not in third, "extra values, which no filter redacts, are not written"
    assert "test_a_secret_in_any_part" in third["stack"]


def test_kopf_records_go_through_the_same_formatter(json_log: io.StringIO) -> None:
    """kopf's per-object loggers carry the object as `k8s_ref`; `kopf run` installs a handler of its own on the root
    logger, which use_log_format (called again by the operator's startup handler) formats as JSON too."""
    kopf_handler = logging.StreamHandler(io.StringIO())
    kopf_handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)-20.20s [%(levelname)-8.8s] %(message)s"))
    logging.getLogger().addHandler(kopf_handler)
    try:
        use_log_format("json")
        assert isinstance(kopf_handler.formatter, JsonFormatter)
        reference = {"apiVersion": "cache.litemaas.io/v1alpha1", "kind": "CacheWarmPolicy", "uid": "u1"}
        logging.getLogger("kopf.objects").warning(
            "warm failed: %s",
            f"password={PG_PASSWORD}",
            extra={"k8s_ref": reference | {"namespace": "team-a", "name": "daily"}, "k8s_skip": True},
        )
    finally:
        logging.getLogger().removeHandler(kopf_handler)
    (entry,) = _lines(json_log.getvalue())
    assert entry["logger"] == "kopf.objects"
    assert entry["message"] == "warm failed: password=***"
    assert entry["object"] == {"kind": "CacheWarmPolicy", "namespace": "team-a", "name": "daily"}


def test_the_cli_logs_json_lines_without_secrets(fresh_dsn: str) -> None:
    """An analytics command with Redis unreachable: its warnings are JSON lines, and the Redis password is in none."""
    env = {k: v for k, v in os.environ.items() if k not in ("LITELLM_DATABASE_URL", "REDIS_CLUSTER")}
    env.update(
        DATABASE_URL=fresh_dsn,
        REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        REDIS_KEY_PREFIX="logs-test:",
        LOG_FORMAT="json",
    )
    today = utc_today().isoformat()
    proc = subprocess.run(
        [CLI, "--verbose", "analytics", "--start", today, "--end", today, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert REDIS_PASSWORD not in proc.stderr
    # stderr also carries the command's own one-line notes ("tier: ..."), which are output, not log records.
    entries = _lines("\n".join(line for line in proc.stderr.splitlines() if line.startswith("{")))
    assert any(e["logger"] == "litemaas_cache.redis_tier.store" and e["level"] == "WARNING" for e in entries)

    env["LOG_FORMAT"] = "yaml"
    refused = subprocess.run([CLI, "stats"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0
    assert "LOG_FORMAT" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_the_api_returns_and_logs_each_requests_id(
    fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]], json_log: io.StringIO
) -> None:
    manager = await open_manager(fresh_dsn)
    async with serving(manager) as client:
        given = await client.get("/api/v1/cache/stats", headers={"X-Request-Id": "trace-0042"} | bearer(mint()))
        assert given.status == 200
        assert given.headers["X-Request-Id"] == "trace-0042"

        made = await client.get("/api/v1/cache/stats", headers=bearer(mint()))
        assert len(made.headers["X-Request-Id"]) == 32

        forged = 'x", "level": "CRITICAL'
        refused = await client.get("/api/v1/cache/stats", headers={"X-Request-Id": forged, "Authorization": "Bearer x"})
        assert refused.status == 401
        assert refused.headers["X-Request-Id"] not in (forged, made.headers["X-Request-Id"])
        assert len(refused.headers["X-Request-Id"]) == 32

        missing = await client.get("/no/such/route", headers={"X-Request-Id": "trace-0043"})
        assert missing.status == 404
        assert missing.headers["X-Request-Id"] == "trace-0043"

    refusals = [e for e in _lines(json_log.getvalue()) if e["message"].startswith("refused GET")]
    assert [e["request_id"] for e in refusals] == [refused.headers["X-Request-Id"]]
