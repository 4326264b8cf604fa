"""Issue 10, item 4: no secret in any output. A marker password goes into every secret setting (each pointing at a
real service with a wrong password, or malformed on purpose); the CLI commands and the HTTP API are run for real and
fail; their stdout, stderr, logs and HTTP bodies are grepped for the marker: 0 hits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from pydantic import SecretStr

from litemaas_cache.redaction import REDACTED, RedactingFilter, Redactor
from litemaas_cache.settings import Settings, load_settings
from tests.conftest import base_dsn
from tests.support.markers import MARKER, keyword_dsn, leaks, secret_aliases, url_with_password
from tests.support.redis_server import RedisServer, free_port

CLI = str(Path(sys.executable).with_name("litemaas-cache"))
COMMANDS = ("analytics", "warm", "invalidate", "stats", "migrate")


def command_args(scenario_index: int) -> dict[str, list[str]]:
    """The commands, on days of the scenario's own (no other scenario fills them): a read needs LiteLLM's table."""
    start, end = f"2001-03-{2 * scenario_index + 1:02d}", f"2001-03-{2 * scenario_index + 2:02d}"
    return {
        "analytics": ["analytics", "--start", start, "--end", end],
        "warm": ["warm", "--range", f"{start}..{end}"],
        "invalidate": ["invalidate", "--start", start, "--end", end],
        "stats": ["stats"],
        "migrate": ["migrate"],
    }


UNENCODED_REDIS_URL = f"redis://:ab:c{MARKER}?d@127.0.0.1:6379/0"


@dataclass(frozen=True)
class Scenario:
    """Settings with the marker, and what each command must then do: fail with `expect` in stderr, or succeed."""

    env: dict[str, str]
    expect: str
    failing: tuple[str, ...] = COMMANDS
    api_fails: bool = True
    unset: tuple[str, ...] = field(default=())


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with a password (not the marker): one without accepts any password at all."""
    with RedisServer(tmp_path_factory.mktemp("redis"), extra_args=["--requirepass", "the-real-password"]) as server:
        yield server


def scenarios(good_dsn: str, redis: RedisServer) -> dict[str, Scenario]:
    wrong_redis_url = f"redis://:{quote(MARKER + '?d', safe='')}@127.0.0.1:{redis.port}/0"
    wrong_redis_password = {"REDIS_PASSWORD": MARKER, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port)}
    return {
        "DATABASE_URL as a URL": Scenario(
            {"DATABASE_URL": url_with_password(good_dsn, MARKER)}, "postgresql unavailable"
        ),
        "DATABASE_URL as key=value": Scenario(
            {"DATABASE_URL": keyword_dsn(good_dsn, f"my {MARKER}")}, "postgresql unavailable"
        ),
        "DATABASE_URL as malformed key=value": Scenario(
            {"DATABASE_URL": keyword_dsn(good_dsn, f"my {MARKER}", quoted=False)},
            "DATABASE_URL: is not a valid PostgreSQL connection string",
        ),
        "LITELLM_DATABASE_URL": Scenario(
            {"DATABASE_URL": good_dsn, "LITELLM_DATABASE_URL": keyword_dsn(good_dsn, MARKER)},
            "postgresql unavailable",
            failing=("analytics", "warm", "migrate"),  # the others never read LiteLLM's table
            api_fails=False,
        ),
        "REDIS_URL with unencoded characters": Scenario(
            {"DATABASE_URL": good_dsn, "REDIS_URL": UNENCODED_REDIS_URL}, "REDIS_URL: is not a valid Redis URL"
        ),
        "REDIS_URL with a wrong password": Scenario(
            {"DATABASE_URL": good_dsn, "REDIS_URL": wrong_redis_url}, "falling back", failing=(), api_fails=False
        ),
        "REDIS_PASSWORD": Scenario(
            {"DATABASE_URL": good_dsn, **wrong_redis_password},
            "falling back",
            failing=(),
            api_fails=False,
            unset=("REDIS_URL",),
        ),
    }


def marker_env(scenario: Scenario) -> dict[str, str]:
    env = {
        **os.environ,
        "API_TOKEN": f"token-{MARKER}",
        "API_TOKEN_SCOPE": "admin",
        "JWT_SECRET": f"jwt-{MARKER}-{'s' * 32}",
        "ADMIN_API_KEYS": f"ltm_admin_{MARKER}",
        "ADMIN_CACHE_REBUILD_LIMIT": "100",  # the API test invalidates twice
        "COLUMNS": "200",
        **scenario.env,
    }
    env["REDIS_KEY_PREFIX"] = f"test:redaction:{uuid.uuid4().hex[:8]}:"
    for name in (*scenario.unset, *(["LITELLM_DATABASE_URL"] if "LITELLM_DATABASE_URL" not in scenario.env else [])):
        env.pop(name, None)
    return env


@dataclass(frozen=True)
class Run:
    scenario: str
    command: str
    result: subprocess.CompletedProcess[str]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def _run(name: str, scenario: Scenario, command: str, args: list[str]) -> Run:
    result = subprocess.run(
        [CLI, "--verbose", *args], env=marker_env(scenario), capture_output=True, text=True, timeout=120, check=False
    )
    return Run(name, command, result)


@pytest.fixture(scope="module")
def runs(module_dsn: str, secured_redis: RedisServer) -> list[Run]:
    """Every command under every scenario, at once (the failing connections each wait for the pool's timeout)."""
    jobs = []
    for index, (name, scenario) in enumerate(scenarios(module_dsn, secured_redis).items()):
        commands = command_args(index)
        if scenario.api_fails:
            commands["api"] = ["api", "--host", "127.0.0.1", "--port", str(free_port())]
        jobs += [(name, scenario, command, args) for command, args in commands.items()]
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: _run(*job), jobs))


def test_the_scenarios_cover_every_secret_setting(module_dsn: str, secured_redis: RedisServer) -> None:
    covered = {name for scenario in scenarios(module_dsn, secured_redis).values() for name in scenario.env}
    covered |= {"API_TOKEN", "JWT_SECRET", "ADMIN_API_KEYS"}  # in every scenario (marker_env)
    assert secret_aliases() <= covered, f"no scenario puts the marker into {secret_aliases() - covered}"
    assert {
        "DATABASE_URL",
        "LITELLM_DATABASE_URL",
        "REDIS_URL",
        "REDIS_PASSWORD",
        "API_TOKEN",
        "JWT_SECRET",
        "ADMIN_API_KEYS",
    } <= secret_aliases()


def test_cli_commands_fail_without_printing_the_secret(
    runs: list[Run], module_dsn: str, secured_redis: RedisServer
) -> None:
    expected = scenarios(module_dsn, secured_redis)
    assert len(runs) == sum(len(COMMANDS) + s.api_fails for s in expected.values())
    for run in runs:
        scenario = expected[run.scenario]
        where = f"{run.scenario} / {run.command}:\n{run.output}"
        assert not leaks(run.output), where
        assert "Traceback" not in run.output, where
        if run.command in scenario.failing or run.command == "api":
            assert run.result.returncode == 1, where
            assert scenario.expect in run.result.stderr, where
        else:
            assert run.result.returncode == 0, where
    for name, scenario in expected.items():
        # Not vacuous: every scenario's broken secret was met, and said so (without saying the secret).
        assert any(scenario.expect in run.result.stderr for run in runs if run.scenario == name), name


def test_malformed_urls_are_rejected_without_echoing_them() -> None:
    for name, value in {
        "REDIS_URL": UNENCODED_REDIS_URL,
        "DATABASE_URL": keyword_dsn(base_dsn(), f"my {MARKER}", quoted=False),
        "LITELLM_DATABASE_URL": url_with_password(base_dsn(), "x").replace("x@", f"a b {MARKER}@"),
    }.items():
        field_name = next(n for n, f in Settings.model_fields.items() if f.validation_alias == name)
        overrides = {"database_url": base_dsn(), field_name: value}
        with pytest.raises(Exception, match=f"{name}: is not a valid") as caught:
            load_settings(**overrides)
        assert not leaks(str(caught.value)), caught.value


def test_redactor_knows_every_secret_field_and_the_pieces_a_parser_echoes() -> None:
    settings = load_settings(
        database_url=keyword_dsn(base_dsn(), f"my {MARKER}"),
        litellm_database_url=url_with_password(base_dsn(), f"{MARKER}/x"),
        redis_url=f"redis://:{MARKER}%3Fd@127.0.0.1:6379/0",
        redis_password=f"p {MARKER}",
        api_token=f"token-{MARKER}",
    )
    secret_fields = [
        name for name, f in Settings.model_fields.items() if isinstance(getattr(settings, name), SecretStr)
    ]
    assert len(secret_fields) >= 5
    for name in secret_fields:
        value = getattr(settings, name).get_secret_value()
        assert not leaks(settings.redact(f"error with {value}!")), name
    # What urllib and libpq actually said when these broke the parse:
    assert settings.redact(f"Port could not be cast to integer value as 'ab:c{MARKER}'") == (
        f"Port could not be cast to integer value as 'ab:c{REDACTED}'"
    )
    assert settings.redact(f'missing "=" after "{MARKER}" in connection info string') == (
        f'missing "=" after "{REDACTED}" in connection info string'
    )
    assert settings.redact(f"{MARKER}?d and {MARKER}%3Fd") == f"{REDACTED} and {REDACTED}"
    # Hosts, users and database names stay readable.
    assert settings.redact("connection to 127.0.0.1 port 5432 failed") == "connection to 127.0.0.1 port 5432 failed"


def test_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    url = f"postgresql://u:{MARKER}@h/db"
    redactor = Redactor([url])
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("error connecting: %s", f"password {MARKER} rejected")
        try:
            raise ValueError(f"bad url {url}")  # (the traceback quotes this line: no marker in it)
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2
    assert "rejected" in records[0]
    assert "ValueError: bad url" in records[1]
    assert not leaks("\n".join(records)), records


# -- the HTTP API, served by the CLI with the marker in every secret it can start with -------------------------


@pytest.fixture(scope="module")
def api_url(
    module_dsn: str, secured_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """`litemaas-cache api` whose LiteLLM database and Redis both refuse the marker password."""
    port = free_port()
    scenario = Scenario(
        {
            "DATABASE_URL": module_dsn,
            "LITELLM_DATABASE_URL": keyword_dsn(module_dsn, f"my {MARKER}"),
            "REDIS_PASSWORD": MARKER,
            "REDIS_PORT": str(secured_redis.port),
        },
        expect="",
        unset=("REDIS_URL",),
    )
    log = tmp_path_factory.mktemp("api") / "api.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CLI, "--verbose", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=marker_env(scenario),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=5).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def _request(url: str, path: str, *, token: str | None, body: dict[str, object] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(
        url + path,
        data=None if body is None else orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}"} if token else {},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_http_error_bodies_and_the_api_log_hold_no_secret(api_url: tuple[str, Path]) -> None:
    url, log = api_url
    token = f"token-{MARKER}"
    days = {"startDate": "2001-03-01", "endDate": "2001-03-02"}
    admin = "/api/v1/admin/usage"
    answers = {
        "unavailable source": _request(url, f"{admin}/analytics", token=token, body=days),
        "unavailable source, breakdown": _request(url, f"{admin}/by-user", token=token, body=days),
        "wrong token": _request(url, f"{admin}/analytics", token=MARKER, body=days),
        "no token": _request(url, "/api/v1/cache/stats", token=None),
        "bad date": _request(url, f"{admin}/analytics", token=token, body={**days, "startDate": MARKER}),
        "bad body": _request(url, "/api/v1/cache/invalidate", token=token, body={"startDate": 1}),
        "invalidate with redis refusing": _request(url, "/api/v1/cache/invalidate", token=token, body=days),
        "stats with redis refusing": _request(url, "/api/v1/cache/stats", token=token),
    }
    statuses = {name: status for name, (status, _) in answers.items()}
    assert statuses == {
        "unavailable source": 503,
        "unavailable source, breakdown": 503,
        "wrong token": 401,
        "no token": 401,
        "bad date": 400,
        "bad body": 400,
        "invalidate with redis refusing": 202,
        "stats with redis refusing": 200,
    }, answers
    assert "LiteLLM's database" in answers["unavailable source"][1]
    assert orjson.loads(answers["stats with redis refusing"][1])["redis"]["available"] is False
    # The bad date is the marker itself, typed by a client: the answer names the field, and still redacts it.
    assert orjson.loads(answers["bad date"][1])["details"]["field"] == "startDate"
    for name, (_, body) in answers.items():
        assert not leaks(body), (name, body)
    logged = log.read_text()
    assert "falling back" in logged  # redis refused the password, and that was logged
    assert not leaks(logged), logged
