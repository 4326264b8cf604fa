"""Issue 10: a corpus of malformed inputs, one table per surface (HTTP queries and bodies, CLI arguments, settings).

Every row must be refused with the expected status or exit code, by a message that names the field, with no
traceback anywhere (response, log, stderr) and never a 5xx. The CRD and operator surface is
tests/k8s/test_malformed_resources.py. `test_corpus_size` keeps the corpus at 50 inputs or more.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
import redis

from tests.conftest import managed
from tests.support.api import SERVICE_TOKEN, USER_ID, Client, authenticator, bearer, mint, serving
from tests.test_api_contract import UNLIMITED
from tests.test_cli import CLI

ADMIN = "/api/v1/admin/usage"
ANALYTICS = f"{ADMIN}/analytics"
INVALIDATE = "/api/v1/cache/invalidate"
OK_START, OK_END = "2025-01-01", "2025-01-07"


def body(**fields: Any) -> bytes:
    """A JSON body: a valid week, with `fields` replacing or adding properties (None-valued ones are sent as null)."""
    return orjson.dumps({"startDate": OK_START, "endDate": OK_END, **fields})


def without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in orjson.loads(body()).items() if k != name})


def nested(depth: int) -> bytes:
    return b'{"startDate":' + b"[" * depth + b"]" * depth + b',"endDate":"2025-01-07"}'


@dataclass(frozen=True)
class HttpCase:
    """One request: `raw` is the body as sent; the answer must be `status` and its message must name `field`."""

    name: str
    method: str
    path: str
    status: int
    field: str
    raw: bytes | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    user: bool = False  # as a LiteMaaS user's JWT (the own-usage route), else as the admin service token


def by(dimension: str, status: int, name: str, params: list[tuple[str, str]], fld: str) -> HttpCase:
    return HttpCase(name, "POST", f"{ADMIN}/by-{dimension}", status, fld, body(), params)


HTTP_CASES: list[HttpCase] = [
    # dates in the body
    HttpCase("feb-30", "POST", ANALYTICS, 400, "startDate", body(startDate="2024-02-30")),
    HttpCase("year-1", "POST", ANALYTICS, 400, "startDate", body(startDate="0001-01-01", endDate="0001-01-03")),
    HttpCase("year-2100", "POST", ANALYTICS, 400, "endDate", body(startDate="2099-12-30", endDate="2100-01-01")),
    HttpCase("empty-date", "POST", ANALYTICS, 400, "startDate", body(startDate="")),
    HttpCase("word-date", "POST", ANALYTICS, 400, "startDate", body(startDate="yesterday")),
    HttpCase("number-date", "POST", ANALYTICS, 400, "startDate", body(startDate=20240101)),
    HttpCase("basic-format-date", "POST", ANALYTICS, 400, "endDate", body(endDate="20250107")),
    HttpCase("datetime", "POST", ANALYTICS, 400, "startDate", body(startDate="2025-01-01T00:00:00Z")),
    HttpCase("week-date", "POST", ANALYTICS, 400, "startDate", body(startDate="2025-W01-1")),
    HttpCase("padded-date", "POST", ANALYTICS, 400, "endDate", body(endDate=" 2025-01-07")),
    HttpCase("huge-number-date", "POST", ANALYTICS, 400, "startDate", b'{"startDate":1e400,"endDate":"2025-01-07"}'),
    HttpCase("null-date", "POST", ANALYTICS, 400, "startDate", body(startDate=None)),
    HttpCase("list-date", "POST", ANALYTICS, 400, "startDate", body(startDate=[OK_START])),
    HttpCase("object-date", "POST", ANALYTICS, 400, "endDate", body(endDate={"day": OK_END})),
    HttpCase("missing-start", "POST", ANALYTICS, 400, "startDate", without("startDate")),
    HttpCase("missing-end", "POST", ANALYTICS, 400, "endDate", without("endDate")),
    HttpCase("start-after-end", "POST", ANALYTICS, 400, "startDate", body(startDate="2025-02-01")),
    HttpCase("range-too-long", "POST", ANALYTICS, 400, "endDate", body(startDate="2024-01-01", endDate="2024-12-31")),
    # filter lists
    HttpCase("string-for-list", "POST", ANALYTICS, 400, "userIds", body(userIds="user-1")),
    HttpCase("null-list", "POST", ANALYTICS, 400, "modelIds", body(modelIds=None)),
    HttpCase("object-for-list", "POST", ANALYTICS, 400, "providerIds", body(providerIds={"openai": True})),
    HttpCase("nested-list", "POST", ANALYTICS, 400, "userIds[0]", body(userIds=[["user-1"]])),
    HttpCase("null-id", "POST", ANALYTICS, 400, "apiKeyIds[1]", body(apiKeyIds=["k", None])),
    HttpCase("number-id", "POST", ANALYTICS, 400, "userIds[0]", body(userIds=[42])),
    HttpCase("id-too-long", "POST", ANALYTICS, 400, "modelIds[0]", body(modelIds=["m" * 257])),
    HttpCase("id-control-char", "POST", ANALYTICS, 400, "userIds[0]", body(userIds=["user\u0000-1"])),
    HttpCase("id-newline", "POST", ANALYTICS, 400, "providerIds[0]", body(providerIds=["openai\n"])),
    HttpCase("id-empty", "POST", ANALYTICS, 400, "apiKeyIds[0]", body(apiKeyIds=[""])),
    HttpCase("id-sql", "POST", ANALYTICS, 400, "modelIds[0]", body(modelIds=["x' OR '1'='1"])),
    HttpCase("too-many-ids", "POST", ANALYTICS, 400, "userIds", body(userIds=[f"u{i}" for i in range(1001)])),
    # the body as a whole
    HttpCase("json-array", "POST", ANALYTICS, 400, "body", b"[]"),
    HttpCase("json-string", "POST", ANALYTICS, 400, "body", b'"2025-01-01"'),
    HttpCase("json-null", "POST", ANALYTICS, 400, "body", b"null"),
    HttpCase("not-json", "POST", ANALYTICS, 400, "body", b"startDate=2025-01-01&endDate=2025-01-07"),
    HttpCase("truncated-json", "POST", ANALYTICS, 400, "body", body()[:-5]),
    HttpCase("invalid-utf8", "POST", ANALYTICS, 400, "body", b'{"startDate":"2025-01-01\xff","endDate":"2025-01-07"}'),
    HttpCase("utf16-bom", "POST", ANALYTICS, 400, "body", "\ufeff".encode() + body()),
    HttpCase(
        "duplicate-key",
        "POST",
        ANALYTICS,
        400,
        "startDate",
        b'{"startDate":"2025-01-01","endDate":"2025-01-07","startDate":"2025-01-03"}',
    ),
    HttpCase("deep-nesting", "POST", ANALYTICS, 400, "body", nested(5000)),
    HttpCase("giant-body", "POST", ANALYTICS, 413, "body", body(userIds=["u" * 200] * 30_000)),
    HttpCase(
        "own-usage-bad-date", "POST", "/api/v1/usage/analytics", 400, "endDate", body(endDate="2025-13-01"), [], True
    ),
    # paging of the breakdowns (query string)
    by("user", 400, "page-zero", [("page", "0")], "page"),
    by("user", 400, "page-negative", [("page", "-1")], "page"),
    by("user", 400, "page-word", [("page", "two")], "page"),
    by("user", 400, "page-float", [("page", "1.5")], "page"),
    by("user", 400, "page-huge", [("page", "9" * 30)], "page"),
    by("model", 400, "page-repeated", [("page", "1"), ("page", "2")], "page"),
    by("model", 400, "limit-zero", [("limit", "0")], "limit"),
    by("model", 400, "limit-negative", [("limit", "-10")], "limit"),
    by("provider", 400, "limit-too-big", [("limit", "201")], "limit"),
    by("provider", 400, "limit-huge", [("limit", "1" + "0" * 25)], "limit"),
    by("user", 400, "sortby-unknown", [("sortBy", "bogus")], "sortBy"),
    by("model", 400, "sortby-of-another-breakdown", [("sortBy", "username")], "sortBy"),
    by("user", 400, "sortby-wrong-case", [("sortBy", "TOTALTOKENS")], "sortBy"),
    by("provider", 400, "sortorder-unknown", [("sortOrder", "sideways")], "sortOrder"),
    by("user", 400, "sortorder-empty", [("sortOrder", "")], "sortOrder"),
    # filter options (query string)
    HttpCase("options-missing", "GET", f"{ADMIN}/filter-options", 400, "startDate"),
    HttpCase(
        "options-bad-date",
        "GET",
        f"{ADMIN}/filter-options",
        400,
        "endDate",
        params=[("startDate", OK_START), ("endDate", "2025-02-30")],
    ),
    HttpCase(
        "options-reversed",
        "GET",
        f"{ADMIN}/filter-options",
        400,
        "startDate",
        params=[("startDate", OK_END), ("endDate", OK_START)],
    ),
    HttpCase(
        "options-too-long",
        "GET",
        f"{ADMIN}/filter-options",
        400,
        "endDate",
        params=[("startDate", "2024-01-01"), ("endDate", "2025-01-02")],
    ),
    HttpCase(
        "options-year-1",
        "GET",
        f"{ADMIN}/filter-options",
        400,
        "startDate",
        params=[("startDate", "0001-01-01"), ("endDate", "0001-01-02")],
    ),
    # rebuild and invalidation (nothing may be purged)
    HttpCase(
        "rebuild-before-window",
        "POST",
        f"{ADMIN}/rebuild-cache",
        400,
        "startDate",
        orjson.dumps({"startDate": "1999-12-31"}),
    ),
    HttpCase(
        "rebuild-after-window",
        "POST",
        f"{ADMIN}/rebuild-cache",
        400,
        "endDate",
        orjson.dumps({"endDate": "2100-01-01"}),
    ),
    HttpCase("rebuild-word", "POST", f"{ADMIN}/rebuild-cache", 400, "endDate", orjson.dumps({"endDate": "today"})),
    HttpCase(
        "rebuild-too-long",
        "POST",
        f"{ADMIN}/rebuild-cache",
        400,
        "endDate",
        body(startDate="2023-01-01", endDate="2024-12-31"),
    ),
    HttpCase("invalidate-no-tiers", "POST", INVALIDATE, 400, "tiers", body(tiers=[])),
    HttpCase("invalidate-unknown-tier", "POST", INVALIDATE, 400, "tiers[0]", body(tiers=["memcached"])),
    HttpCase("invalidate-tier-string", "POST", INVALIDATE, 400, "tiers", body(tiers="redis")),
    HttpCase("invalidate-repeated-tier", "POST", INVALIDATE, 400, "tiers", body(tiers=["redis", "redis"])),
    HttpCase(
        "invalidate-1900", "POST", INVALIDATE, 400, "startDate", body(startDate="1900-01-01", endDate="1900-12-31")
    ),
    HttpCase(
        "invalidate-367-days", "POST", INVALIDATE, 400, "endDate", body(startDate="2024-01-01", endDate="2025-01-01")
    ),
    HttpCase("invalidate-reversed", "POST", INVALIDATE, 400, "startDate", body(startDate="2025-01-08")),
    HttpCase("invalidate-no-body", "POST", INVALIDATE, 400, "startDate", b""),
]


@pytest_asyncio.fixture
async def client(module_dsn: str, key_prefix: str) -> AsyncIterator[Client]:
    async with (
        managed(module_dsn, key_prefix, **UNLIMITED) as manager,
        serving(manager, authenticator(service_scope="admin")) as opened,
    ):
        yield opened


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged as an error, with a traceback, or at all above WARNING."""
    assert "Traceback" not in caplog.text, caplog.text
    failures = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not failures, [r.getMessage() for r in failures]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.name for c in HTTP_CASES])
async def test_http_refuses_naming_the_field(client: Client, case: HttpCase, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Content-Type": "application/json", **bearer(mint(USER_ID, ["user"]) if case.user else SERVICE_TOKEN)}
    response = await client.request(case.method, case.path, data=case.raw, params=case.params, headers=headers)
    text = await response.text()
    assert response.status == case.status, text
    assert "Traceback" not in text
    answer = orjson.loads(text)
    assert case.field in answer["error"] or answer.get("details", {}).get("field") == case.field, answer
    assert_no_traceback(caplog)


# --- the CLI -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliCase:
    """`litemaas-cache *args` with `env` on top of a working environment: exit `code`, `field` named on stderr."""

    name: str
    args: tuple[str, ...]
    code: int
    field: str
    env: dict[str, str] = field(default_factory=dict)


def analytics(*args: str, start: str = OK_START, end: str = OK_END) -> tuple[str, ...]:
    return ("analytics", "--start", start, "--end", end, *args)


CLI_CASES: list[CliCase] = [
    CliCase("feb-30", analytics(start="2024-02-30"), 2, "startDate"),
    CliCase("year-1", analytics(start="0001-01-01", end="0001-01-03"), 2, "startDate"),
    CliCase("year-2100", analytics(start="2099-12-30", end="2100-01-01"), 2, "endDate"),
    CliCase("empty-date", analytics(start=""), 2, "startDate"),
    CliCase("word-date", analytics(start="yesterday"), 2, "startDate"),
    CliCase("basic-format-date", analytics(start="20250101"), 2, "startDate"),
    CliCase("week-date", analytics(end="2025-W02-2"), 2, "endDate"),
    CliCase("datetime", analytics(start="2025-01-01T00:00:00"), 2, "startDate"),
    CliCase("start-after-end", analytics(start="2025-02-01"), 2, "startDate"),
    CliCase("range-too-long", analytics(start="2024-01-01", end="2024-12-31"), 2, "endDate"),
    CliCase("missing-start", ("analytics", "--end", OK_END), 2, "--start"),
    CliCase("unknown-option", analytics("--format", "csv"), 2, "--format"),
    CliCase("id-with-space", analytics("--user", "bad id"), 2, "userIds[0]"),
    CliCase("id-control-char", analytics("--model", "gpt\x01"), 2, "modelIds[0]"),
    CliCase("id-too-long", analytics("--provider", "p" * 257), 2, "providerIds[0]"),
    CliCase("id-empty", analytics("--api-key", ""), 2, "apiKeyIds[0]"),
    CliCase("too-many-ids", analytics(*[a for i in range(1001) for a in ("--user", f"u{i}")]), 2, "userIds"),
    CliCase("unknown-breakdown", analytics("--by", "team"), 2, "--by"),
    CliCase("page-zero", analytics("--by", "user", "--page", "0"), 2, "page"),
    CliCase("page-negative", analytics("--by", "model", "--page", "-3"), 2, "page"),
    CliCase("page-word", analytics("--by", "user", "--page", "two"), 2, "--page"),
    CliCase("page-huge", analytics("--by", "user", "--page", "9" * 30), 2, "page"),
    CliCase("limit-zero", analytics("--by", "provider", "--limit", "0"), 2, "limit"),
    CliCase("limit-huge", analytics("--by", "user", "--limit", "100000"), 2, "limit"),
    CliCase("sort-unknown", analytics("--by", "user", "--sort-by", "bogus"), 2, "sortBy"),
    CliCase("sort-of-another-breakdown", analytics("--by", "model", "--sort-by", "username"), 2, "sortBy"),
    CliCase("warm-unknown-preset", ("warm", "--range", "last-8-days"), 2, "--range"),
    CliCase("warm-empty-range", ("warm", "--range", ""), 2, "--range"),
    CliCase("warm-half-range", ("warm", "--range", "2025-01-01.."), 2, "--range"),
    CliCase("warm-reversed", ("warm", "--range", "2025-01-07..2025-01-01"), 2, "--range"),
    CliCase("warm-year-1", ("warm", "--range", "0001-01-01..0001-01-02"), 2, "--range"),
    CliCase("warm-too-long", ("warm", "--range", "2024-01-01..2024-12-31"), 2, "--range"),
    CliCase("warm-unknown-breakdown", ("warm", "--range", "today", "--by", "team"), 2, "--by"),
    CliCase(
        "invalidate-unknown-tier",
        ("invalidate", "--start", OK_START, "--end", OK_END, "--tier", "memcached"),
        2,
        "--tier",
    ),
    CliCase("invalidate-1900", ("invalidate", "--start", "1900-01-01", "--end", "1900-12-31"), 2, "--start"),
    CliCase("invalidate-367-days", ("invalidate", "--start", "2024-01-01", "--end", "2025-01-01"), 2, "endDate"),
    CliCase("invalidate-bad-date", ("invalidate", "--start", "2025-01-01", "--end", "2025-01-32"), 2, "--end"),
    CliCase("seed-zero-days", ("seed", "--days", "0"), 2, "--days"),
    CliCase("seed-huge-days", ("seed", "--days", "99999"), 2, "--days"),
    CliCase("api-port-too-big", ("api", "--port", "70000"), 2, "--port"),
    CliCase("api-port-env", ("api",), 2, "API_PORT", {"API_PORT": "http"}),
]

# Settings: each variable, set to something malformed, stops `litemaas-cache stats` with exit 1 naming it.
SETTINGS_CASES: list[tuple[str, str]] = [
    ("DATABASE_URL", ""),
    ("DATABASE_URL", "mysql://db/litellm"),
    ("DATABASE_URL", "postgresql://u@h:port/db"),
    ("LITELLM_DATABASE_URL", "litellm"),
    ("REDIS_URL", "http://127.0.0.1:6379/0"),
    ("REDIS_URL", "redis://127.0.0.1:notaport/0"),
    ("REDIS_URL", "redis://127.0.0.1:6379/zero"),
    ("REDIS_PORT", "70000"),
    ("REDIS_PORT", "six"),
    ("REDIS_DB", "-1"),
    ("REDIS_ENABLED", "perhaps"),
    ("REDIS_CLUSTER", "2"),
    ("REDIS_KEY_PREFIX", ""),
    ("REDIS_KEY_PREFIX", "p" * 65),
    ("REDIS_SOCKET_TIMEOUT", "0"),
    ("REDIS_SOCKET_TIMEOUT", "nan"),
    ("REDIS_BREAKER_RESET_SECONDS", "inf"),
    ("CACHE_LOCK_SECONDS", "inf"),
    ("CACHE_VERSION_RESYNC_SECONDS", "-1"),
    ("DB_POOL_MAX_SIZE", "0"),
    ("DB_POOL_MAX_SIZE", "-4"),
    ("DB_POOL_MAX_SIZE", "1.5"),
    ("DB_POOL_TIMEOUT_SECONDS", "nan"),
    ("DB_POOL_MAX_WAITING", "0"),
    ("DB_STATEMENT_TIMEOUT_SECONDS", "0"),
    ("CACHE_TTL_HISTORICAL_DAY", "0"),
    ("CACHE_TTL_CURRENT_DAY", "-300"),
    ("CACHE_FRESHNESS_DAYS", "367"),
    ("ANALYTICS_MAX_RANGE_DAYS", "0"),
    ("ANALYTICS_MAX_RANGE_DAYS", "367"),
    ("ANALYTICS_MAX_FILTER_IDS", "0"),
    ("ANALYTICS_CHUNK_DAYS", "0"),
    ("WARM_MAX_CONCURRENT", "17"),
    ("OPERATOR_MAX_RETRIES", "0"),
    ("OPERATOR_RETRY_SECONDS", "-inf"),
    ("OPERATOR_PRIORITY", "-1"),
    ("API_TOKEN_SCOPE", "root"),
    ("JWT_SECRET", "too-short"),
    ("ADMIN_API_KEYS", " , "),
    ("ADMIN_API_KEYS", "ltm_admin_short"),
    ("ADMIN_ANALYTICS_RATE_LIMIT", "0"),
    ("ADMIN_ANALYTICS_TREND_PRECISION", "11"),
]
CLI_CASES += [CliCase(f"{name}={value[:20]}", ("stats",), 1, name, {name: value}) for name, value in SETTINGS_CASES]


def run_case(dsn: str, prefix: str, case: CliCase) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "REDIS_KEY_PREFIX": prefix, "COLUMNS": "200"}
    env.pop("LITELLM_DATABASE_URL", None)
    env.update(case.env)
    return subprocess.run([CLI, *case.args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def cli_runs(module_dsn: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every CLI case, run at once (each is a process of its own); a refused command writes no Redis key."""
    prefix = f"test:malformed:{uuid.uuid4().hex[:10]}:"
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = pool.map(lambda c: run_case(module_dsn, prefix, c), CLI_CASES)
        results = dict(zip([c.name for c in CLI_CASES], runs, strict=True))
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    written = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if written:
        client.delete(*written)
    assert not written, f"refused commands wrote {len(written)} Redis keys"
    return results


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_refuses_naming_the_field(cli_runs: dict[str, subprocess.CompletedProcess[str]], case: CliCase) -> None:
    result = cli_runs[case.name]
    output = result.stdout + result.stderr
    assert result.returncode == case.code, output
    assert "Traceback" not in output
    assert case.field in result.stderr, result.stderr


def test_corpus_size() -> None:
    """The corpus counts each table row once (the CRD and operator rows are counted in their own module)."""
    sizes = {"http": len(HTTP_CASES), "cli": len(CLI_CASES) - len(SETTINGS_CASES), "settings": len(SETTINGS_CASES)}
    print(f"malformed inputs per surface: {sizes}")
    assert len({c.name for c in HTTP_CASES}) == len(HTTP_CASES)
    assert len({c.name for c in CLI_CASES}) == len(CLI_CASES)
    assert sum(sizes.values()) >= 50
