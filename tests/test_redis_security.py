"""Redis AUTH and TLS (rediss://) on real redis-servers; a wrong password degrades to PostgreSQL, never to an error,
and the password appears in no log line."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from litemaas_cache.dates import utc_today
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from tests.support.redis_server import RedisServer

PASSWORD = "n0t-in-any-log"


def week_query() -> AnalyticsQuery:
    today = utc_today()
    return build_query((today - dt.timedelta(days=6)).isoformat(), today.isoformat(), max_days=90, max_ids=10)


async def test_auth_password_in_the_url(
    tmp_path: Path,
    fresh_dsn: str,
    open_manager: Callable[..., Awaitable[CacheManager]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with RedisServer(tmp_path, extra_args=["--requirepass", PASSWORD]) as server:
        good = await open_manager(fresh_dsn, redis_url=f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0")
        query = week_query()
        assert (await good.analytics(query)).tier == "source"
        assert (await good.analytics(query)).tier == "redis"

        wrong = await open_manager(fresh_dsn, redis_url=f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0")
        answer = await wrong.analytics(query)
        assert answer.tier == "postgres"  # Redis refused us: served from the daily cache, no error
        assert answer.value == (await good.analytics(query)).value
        assert wrong.redis is not None
        assert wrong.redis.breaker.consecutive_failures >= 1
    assert PASSWORD not in caplog.text


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    for command in (
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca_crt,
            "-days",
            "1",
            "-subj",
            "/CN=litemaas-test-ca",
        ],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            crt,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
    ):
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ca_crt, crt, key


async def test_tls_with_rediss_url(
    tmp_path: Path, fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]]
) -> None:
    ca, crt, key = make_certificates(tmp_path)
    server = RedisServer(tmp_path / "redis")
    tls = [
        "--port",
        "0",
        "--tls-port",
        str(server.port),
        "--tls-cert-file",
        str(crt),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        PASSWORD,
    ]
    server.extra_args = tls
    with server:
        manager = await open_manager(
            fresh_dsn, redis_url=f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0?ssl_ca_certs={ca}"
        )
        query = week_query()
        assert (await manager.analytics(query)).tier == "source"
        assert (await manager.analytics(query)).tier == "redis"
        stats = await manager.stats()
        assert stats["redis"]["available"] is True
        assert stats["redis"]["keyCount"] > 0

        # A client that does not trust the CA is refused by TLS, and falls back without an error.
        untrusting = await open_manager(fresh_dsn, redis_url=f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0")
        assert (await untrusting.analytics(query)).tier == "postgres"
