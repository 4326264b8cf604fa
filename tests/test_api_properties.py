"""Property-based tests of the HTTP API: schemathesis generates requests for every operation of the OpenAPI document
the server itself serves (/api/v1/openapi.json), fitting the schema (positive) and breaking it (negative), and sends
them to `litemaas-cache api` running as a real server on real PostgreSQL and Redis, as the service token with the
admin scope. No answer may be a 5xx, and every answer must fit what the document declares for its operation: a
declared status, a declared content type, a body valid against the declared schema.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from litemaas_cache.webapi.routes import OPENAPI_PATH, ROUTES

CLI = str(Path(sys.executable).with_name("litemaas-cache"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 25}
"""Cases per operation and mode: the whole run stays within a minute or two (figures in the report)."""
START_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(module_dsn: str) -> Iterator[tuple[str, str]]:
    """`litemaas-cache api` on a copy of the seeded data, with a Redis prefix of its own and limits far above what
    the test sends (tests/test_ratelimit.py tests the limits); yields its URL and service token."""
    token = secrets.token_hex(24)
    port = _free_port()
    prefix = f"test:{secrets.token_hex(5)}:"
    env = {
        **os.environ,
        "DATABASE_URL": module_dsn,
        "REDIS_KEY_PREFIX": prefix,
        "API_TOKEN": token,
        "API_TOKEN_SCOPE": "admin",
        "ADMIN_ANALYTICS_RATE_LIMIT": "1000000",
        "ADMIN_EXPORT_RATE_LIMIT": "1000000",
        "ADMIN_CACHE_REBUILD_LIMIT": "1000000",
    }
    proc = subprocess.Popen(
        [CLI, "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the API did not answer /healthz within {START_SECONDS}s")
            time.sleep(0.1)
        yield url, token
    finally:
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        _delete_keys(prefix)
        assert b"Traceback" not in stderr, stderr.decode()[-3000:]


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.unlink(key)
    finally:
        client.close()


def _call(case: Case, url: str, session: requests.Session, auth: dict[str, str]) -> None:
    response = case.call(base_url=url, session=session, headers=auth, timeout=120)
    case.validate_response(response, checks=CHECKS)


def _explore(operation: APIOperation, mode: GenerationMode, examples: int, call: Callable[[Case], None]) -> int:
    """Run up to `examples` generated cases of one operation through `call`; returns how many ran (shrinking
    included). A failing case is raised, shrunk to its simplest form."""
    ran = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Case) -> None:
        nonlocal ran
        ran += 1
        call(case)

    check()
    return ran


def test_every_operation_answers_within_its_own_schema(served: tuple[str, str]) -> None:
    url, token = served
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    cases: dict[str, int] = {}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # schemathesis leaves out the route serving the document it was loaded from
    routes = {f"{r.method} {r.path}" for r in ROUTES} - {f"GET {OPENAPI_PATH}"}
    assert {op.label for op in operations} == routes, "every route, and only them"
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
                continue  # nothing to break: no body, no query string
            label = f"{operation.label} ({mode.value})"
            try:
                cases[label] = _explore(operation, mode, examples, lambda case: _call(case, url, session, auth))
            except Exception as exc:  # every operation is tried; the failures are listed together at the end
                failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    total = sum(cases.values())
    print(f"\nschemathesis: {total} cases over {len(operations)} operations, {len(failures)} failing")
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert total >= len(operations) * 10, cases
