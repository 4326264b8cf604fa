"""The `litemaas-cache` console script, run for real: migrate + seed into an empty database, then analytics.

The issue's must-show: `analytics --start <today-29d> --end <today> --json` prints totals equal to a direct SQL sum
over "LiteLLM_DailyUserSpend", with and without --user / --model / --provider / --api-key filters.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from litemaas_cache.dates import utc_today
from litemaas_cache.vocabulary import UNKNOWN_USER_ID
from tests.conftest import create_database, drop_database

CLI = str(Path(sys.executable).with_name("litemaas-cache"))
TODAY = utc_today()
START = TODAY - dt.timedelta(days=29)
RANGE = ["--start", START.isoformat(), "--end", TODAY.isoformat()]

# Provider of each row as the seeded data needs it: LiteLLM's column, else inferred from the model name.
PROVIDER_SQL = """COALESCE(NULLIF(s.custom_llm_provider, ''), CASE
    WHEN s.model LIKE 'gpt-%%' THEN 'openai'
    WHEN s.model LIKE 'llama%%' THEN 'meta_llama'
    WHEN s.model LIKE 'claude%%' THEN 'anthropic'
    WHEN s.model LIKE 'granite%%' THEN 'watsonx'
    WHEN s.model LIKE 'mistral%%' THEN 'mistral'
    ELSE 'unknown' END)"""


def run(dsn: str, *args: str, prefix: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "REDIS_KEY_PREFIX": prefix or f"test:cli:{uuid.uuid4().hex[:10]}:"}
    env.pop("LITELLM_DATABASE_URL", None)
    env["COLUMNS"] = "160"
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def cli_dsn() -> Iterator[str]:
    """A brand-new empty database set up only through the CLI: migrate, then seed (30 days, 50 users, 5 models)."""
    dsn = create_database()
    try:
        migrated = ok(run(dsn, "migrate"))
        assert "applied:" in migrated.stdout
        seeded = ok(run(dsn, "seed", "--days", "30", "--users", "50", "--models", "5", "--seed", "1"))
        assert f"seeded {START}..{TODAY}: 50 users" in seeded.stdout
        yield dsn
    finally:
        drop_database(dsn)


def sql_totals(dsn: str, where: str = "TRUE", params: tuple[Any, ...] = ()) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"""SELECT COALESCE(sum(s.api_requests), 0), COALESCE(sum(s.prompt_tokens), 0),
                       COALESCE(sum(s.completion_tokens), 0), COALESCE(sum(s.spend), 0),
                       COALESCE(sum(s.successful_requests), 0)
                FROM "LiteLLM_DailyUserSpend" s LEFT JOIN api_keys k ON k.key_hash = s.api_key
                WHERE s.date BETWEEN %s AND %s AND ({where})""",
            (START.isoformat(), TODAY.isoformat(), *params),
        ).fetchone()
    assert row is not None
    requests, prompt, completion, spend, successful = (int(row[0]), int(row[1]), int(row[2]), float(row[3]), row[4])
    return {
        "requests": requests,
        "prompt": prompt,
        "completion": completion,
        "spend": spend,
        "successRate": 100.0 * int(successful) / requests if requests else 0.0,
    }


def assert_totals(doc: dict[str, Any], expected: dict[str, Any]) -> None:
    assert doc["totalRequests"] == expected["requests"]
    assert doc["totalTokens"] == {
        "total": expected["prompt"] + expected["completion"],
        "prompt": expected["prompt"],
        "completion": expected["completion"],
    }
    assert math.isclose(doc["totalCost"]["total"], expected["spend"], rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(doc["successRate"], expected["successRate"])
    assert sum(d["requests"] for d in doc["dailyUsage"]) == expected["requests"]


def pick(dsn: str, sql: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    assert row[0] is not None
    return str(row[0])


def test_unfiltered_totals_equal_sql_sum(cli_dsn: str) -> None:
    prefix = f"test:cli:{uuid.uuid4().hex[:10]}:"
    first = ok(run(cli_dsn, "analytics", *RANGE, "--json", prefix=prefix))
    doc = orjson.loads(first.stdout)
    expected = sql_totals(cli_dsn)
    assert expected["requests"] > 0
    assert_totals(doc, expected)
    assert doc["period"] == {"startDate": START.isoformat(), "endDate": TODAY.isoformat()}
    assert [d["date"] for d in doc["dailyUsage"]] == [(START + dt.timedelta(days=i)).isoformat() for i in range(30)]
    assert re.match(r"tier: (source|postgres)\b", first.stderr.strip())  # postgres: another test filled the days
    # The same question again is answered from Redis, with the same document.
    second = ok(run(cli_dsn, "analytics", *RANGE, "--json", prefix=prefix))
    assert re.match(r"tier: redis\b", second.stderr.strip())
    assert orjson.loads(second.stdout) == doc


FILTERS: dict[str, tuple[str, str, str]] = {
    # name: (CLI option, SQL picking a value, SQL condition on the value)
    "user": (
        "--user",
        """SELECT k.user_id FROM "LiteLLM_DailyUserSpend" s JOIN api_keys k ON k.key_hash = s.api_key
           GROUP BY 1 ORDER BY sum(api_requests) DESC LIMIT 1""",
        "k.user_id::text = %s",
    ),
    "unmapped-user": ("--user", "SELECT 'unmapped'", "k.user_id IS NULL AND %s = 'unmapped'"),
    "model": ("--model", "SELECT 'llama-3.1-8b-instruct'", "s.model = %s"),
    "provider": ("--provider", "SELECT 'openai'", f"{PROVIDER_SQL} = %s"),
    "inferred-provider": ("--provider", "SELECT 'mistral'", f"{PROVIDER_SQL} = %s"),
    "api-key-alias": (
        "--api-key",
        "SELECT litellm_key_alias FROM api_keys ORDER BY key_hash LIMIT 1 OFFSET 3",
        "k.litellm_key_alias = %s",
    ),
    "api-key-hash": (
        "--api-key",
        "SELECT key_hash FROM api_keys ORDER BY litellm_key_alias LIMIT 1",
        "s.api_key = %s",
    ),
    "unmapped-api-key-hash": (
        "--api-key",
        """SELECT min(api_key) FROM "LiteLLM_DailyUserSpend" s
           WHERE api_key <> '' AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key)""",
        "s.api_key = %s",
    ),
}


@pytest.fixture(scope="module")
def filtered_runs(cli_dsn: str) -> dict[str, tuple[str, subprocess.CompletedProcess[str]]]:
    """`analytics --json` under each of FILTERS, run at once: name -> (filter value, result)."""

    def one(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        option, pick_sql, _ = FILTERS[name]
        value = pick(cli_dsn, pick_sql)
        return value, run(cli_dsn, "analytics", *RANGE, option, value, "--json")

    with ThreadPoolExecutor(max_workers=len(FILTERS)) as pool:
        return dict(zip(FILTERS, pool.map(one, FILTERS), strict=True))


@pytest.mark.parametrize("name", list(FILTERS))
def test_filtered_totals_equal_sql_sum(
    cli_dsn: str, filtered_runs: dict[str, tuple[str, subprocess.CompletedProcess[str]]], name: str
) -> None:
    value, result = filtered_runs[name]
    doc = orjson.loads(ok(result).stdout)
    expected = sql_totals(cli_dsn, FILTERS[name][2], (value,))
    assert expected["requests"] > 0, f"{name}={value} should select data"
    assert expected["requests"] < sql_totals(cli_dsn)["requests"]
    assert_totals(doc, expected)


def test_combined_filters_equal_sql_sum(cli_dsn: str) -> None:
    user = pick(cli_dsn, FILTERS["user"][1])
    args = ["--user", user, "--user", "unmapped", "--provider", "openai", "--provider", "meta_llama"]
    doc = orjson.loads(ok(run(cli_dsn, "analytics", *RANGE, *args, "--json")).stdout)
    expected = sql_totals(
        cli_dsn,
        f"COALESCE(k.user_id::text, 'unmapped') IN (%s, 'unmapped') AND {PROVIDER_SQL} IN ('openai', 'meta_llama')",
        (user,),
    )
    assert expected["requests"] > 0
    assert_totals(doc, expected)


def test_filter_without_matches_gives_zeros(cli_dsn: str) -> None:
    doc = orjson.loads(ok(run(cli_dsn, "analytics", *RANGE, "--model", "no-such-model", "--json")).stdout)
    assert doc["totalRequests"] == 0
    assert doc["totalCost"]["total"] == 0
    assert doc["topModels"] == []
    assert doc["dailyUsage"] == []


def test_breakdown_by_model_is_paginated(cli_dsn: str) -> None:
    with psycopg.connect(cli_dsn) as conn:
        rows = conn.execute(
            """SELECT COALESCE(NULLIF(model, ''), 'unknown'), sum(api_requests)::bigint, sum(spend)
               FROM "LiteLLM_DailyUserSpend" WHERE date BETWEEN %s AND %s GROUP BY 1 ORDER BY 2 DESC, 1""",
            (START.isoformat(), TODAY.isoformat()),
        ).fetchall()
    assert len(rows) == 8, "5 catalog models, gpt-4o-mini (the empty key's), local/phi-4 and unknown (MCP tools)"
    prefix = f"test:cli:{uuid.uuid4().hex[:10]}:"
    seen = []
    for page in (1, 2, 3, 4):
        result = ok(
            run(
                cli_dsn,
                "analytics",
                *RANGE,
                "--by",
                "model",
                "--page",
                str(page),
                "--page-size",
                "2",
                "--sort-by",
                "totalRequests",
                "--json",
                prefix=prefix,
            )
        )
        doc = orjson.loads(result.stdout)
        assert doc["pagination"] == {
            "page": page,
            "limit": 2,
            "total": 8,
            "totalPages": 4,
            "hasNext": page < 4,
            "hasPrevious": page > 1,
        }
        assert len(doc["data"]) == 2
        seen += doc["data"]
    assert [(row["modelId"], row["metrics"]["requests"]) for row in seen] == [(m, r) for m, r, _ in rows]
    for row, (_, _, spend) in zip(seen, rows, strict=True):
        assert math.isclose(row["metrics"]["cost"], spend, rel_tol=1e-9, abs_tol=1e-6)


def test_breakdown_by_user_sorted_by_cost_ascending(cli_dsn: str) -> None:
    result = ok(
        run(cli_dsn, "analytics", *RANGE, "--by", "user", "--sort-by", "totalCost", "--asc", "--limit", "100", "--json")
    )
    doc = orjson.loads(result.stdout)
    costs = [row["metrics"]["cost"] for row in doc["data"]]
    assert costs == sorted(costs)
    assert doc["pagination"]["total"] == len(doc["data"]) > 10
    assert UNKNOWN_USER_ID in {row["userId"] for row in doc["data"]}
    assert math.isclose(sum(costs), sql_totals(cli_dsn)["spend"], rel_tol=1e-9, abs_tol=1e-4)


def test_table_mode(cli_dsn: str) -> None:
    result = ok(run(cli_dsn, "analytics", *RANGE))
    expected = sql_totals(cli_dsn)
    assert f"Usage {START} .. {TODAY} (30 days)" in result.stdout
    assert f"{expected['requests']:,}" in result.stdout
    assert f"{expected['prompt'] + expected['completion']:,}" in result.stdout
    assert "Top models" in result.stdout
    assert "gpt-4o" in result.stdout
    assert re.match(r"answered by: (source|postgres)\b", result.stdout.rstrip().splitlines()[-1])
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(result.stdout)


def test_breakdown_table_mode(cli_dsn: str) -> None:
    result = ok(run(cli_dsn, "analytics", *RANGE, "--by", "provider"))
    assert "By provider (page 1/1, 7 rows)" in result.stdout
    for provider in ("openai", "meta_llama", "anthropic", "watsonx", "mistral", "local", "unknown"):
        assert provider in result.stdout


def test_bad_input_exits_non_zero_without_traceback(cli_dsn: str) -> None:
    cases = {
        "bad date": (["--start", "2025-02-30", "--end", TODAY.isoformat()], "startDate"),
        "bad --by": ([*RANGE, "--by", "weekday"], "--by"),
        "start after end": (["--start", TODAY.isoformat(), "--end", START.isoformat()], "after"),
    }
    for name, (args, needle) in cases.items():
        result = run(cli_dsn, "analytics", *args, "--json")
        assert result.returncode == 2, name
        assert "Traceback" not in result.stderr, name
        assert result.stdout == "", name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("error: "), name
        assert needle in lines[0], name
