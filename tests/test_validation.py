"""Bad inputs are rejected with errors that name what is wrong: requests, paging, presets, settings, the source."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from litemaas_cache.analytics import Page
from litemaas_cache.daily_cache import FreshnessPolicy, PostgresDayCache
from litemaas_cache.dates import DateRange, resolve_range
from litemaas_cache.db import Database
from litemaas_cache.dictionary import DimensionDictionary
from litemaas_cache.errors import ConfigurationError, InvalidRequest, SourceMissing
from litemaas_cache.filters import build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.schema import migrate
from litemaas_cache.settings import load_settings
from litemaas_cache.source import SourceReader, load_key_owners, load_users
from tests.conftest import make_settings

CLI = str(Path(sys.executable).with_name("litemaas-cache"))


def query(start: Any = "2025-01-01", end: Any = "2025-01-31", **kwargs: Any) -> Any:
    kwargs.setdefault("max_days", 90)
    kwargs.setdefault("max_ids", 1000)
    return build_query(start, end, **kwargs)


# --- build_query -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("2025-13-01", "2025-01-31", "startDate"),
        ("yesterday", "2025-01-31", "startDate"),
        ("", "2025-01-31", "startDate"),
        ("2025-01-01", "2025-02-30", "endDate"),
        ("2025-01-01", "31/01/2025", "endDate"),
        ("2025-01-01", "2025-1-5x", "endDate"),
    ],
)
def test_malformed_dates_name_the_field(start: str, end: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        query(start, end)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert "date" in info.value.message


def test_start_after_end() -> None:
    with pytest.raises(InvalidRequest, match=r"^startDate: start 2025-02-02 is after end 2025-02-01$"):
        query("2025-02-02", "2025-02-01")
    with pytest.raises(InvalidRequest, match="after"):
        DateRange(dt.date(2025, 2, 2), dt.date(2025, 2, 1))


def test_range_limit_default_and_configurable() -> None:
    assert query("2025-01-01", "2025-03-31").range.days == 90  # exactly 90 days is allowed
    with pytest.raises(InvalidRequest) as info:
        query("2025-01-01", "2025-04-01")
    assert info.value.field == "endDate"
    assert "91 days exceeds the maximum of 90" in info.value.message
    assert query("2025-01-01", "2025-01-07", max_days=7).range.days == 7
    with pytest.raises(InvalidRequest, match="8 days exceeds the maximum of 7"):
        query("2025-01-01", "2025-01-08", max_days=7)


def test_range_limit_comes_from_settings(seeded_dsn: str) -> None:
    settings = make_settings(seeded_dsn, max_range_days=10, max_filter_ids=2)
    assert settings.max_range_days == 10
    with pytest.raises(InvalidRequest, match="maximum of 10"):
        query("2025-01-01", "2025-01-11", max_days=settings.max_range_days)
    with pytest.raises(InvalidRequest, match="at most 2"):
        query(model_ids=["a", "b", "c"], max_ids=settings.max_filter_ids)


@pytest.mark.parametrize(
    ("kwarg", "name"),
    [("user_ids", "userIds"), ("model_ids", "modelIds"), ("provider_ids", "providerIds"), ("api_key_ids", "apiKeyIds")],
)
def test_too_many_ids_name_the_list(kwarg: str, name: str) -> None:
    ids = [f"id-{i}" for i in range(1000)]
    assert len(getattr(query(**{kwarg: ids}).filters, kwarg)) == 1000  # 1,000 is the limit, inclusive
    with pytest.raises(InvalidRequest) as info:
        query(**{kwarg: [*ids, "one-more"]})
    assert info.value.field == name
    assert "1001 ids given, at most 1000 allowed" in info.value.message


@pytest.mark.parametrize(
    ("kwarg", "values", "field"),
    [
        ("user_ids", ["bad id"], "userIds[0]"),
        ("user_ids", ["ok", "also-ok", "semi;colon"], "userIds[2]"),
        ("model_ids", ["gpt-4o", "x' OR 1=1 --"], "modelIds[1]"),
        ("provider_ids", [""], "providerIds[0]"),
        ("api_key_ids", ["sk-" + "a" * 300], "apiKeyIds[0]"),
        ("api_key_ids", ["key\nnewline"], "apiKeyIds[0]"),
    ],
)
def test_bad_id_names_the_item(kwarg: str, values: list[str], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        query(**{kwarg: values})
    assert info.value.field == field
    assert "is not a valid id" in info.value.message


def test_valid_ids_are_normalised() -> None:
    q = query(user_ids=["b", "a", "b"], api_key_ids=["user0001-key0", "openai/gpt-4o", "a@b.c:d+e=f"])
    assert q.filters.user_ids == ["a", "b"]
    assert q.filters.api_key_ids == sorted({"user0001-key0", "openai/gpt-4o", "a@b.c:d+e=f"})
    assert (
        q.filters.fingerprint()
        == query(user_ids=["a", "b", "a"], api_key_ids=q.filters.api_key_ids).filters.fingerprint()
    )


# --- Page and presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"number": 0}, "page"),
        ({"number": -3}, "page"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"sort_by": "bogus"}, "sortBy"),
        ({"sort_by": "TotalTokens"}, "sortBy"),
        ({"sort_by": "modelName"}, "sortBy"),  # a sort field of the model breakdown, not the user one
    ],
)
def test_bad_page(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Page(**kwargs).check("user")
    assert info.value.field == field


def test_good_pages() -> None:
    assert Page(1, 200, "username", False).check("user").limit == 200
    assert Page(7, 1, "totalCost").check("provider").number == 7
    assert Page().sort_by == "totalTokens"


def test_unknown_preset() -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_range("last-8-days", field="--range")
    assert info.value.field == "--range"
    assert "last-7-days" in info.value.message  # lists the choices
    with pytest.raises(InvalidRequest, match=r"^range: "):
        resolve_range("2025-01-01..2025-01-xx")
    with pytest.raises(InvalidRequest, match="after"):
        resolve_range("2025-01-02..2025-01-01")


def test_presets_resolve() -> None:
    today = dt.date(2025, 3, 15)
    assert resolve_range("last-7-days", today) == DateRange(dt.date(2025, 3, 9), today)
    assert resolve_range("previous-month", today) == DateRange(dt.date(2025, 2, 1), dt.date(2025, 2, 28))
    assert resolve_range(" 2025-01-01..2025-01-31 ", today).days == 31


# --- settings --------------------------------------------------------------------------------------------


def test_missing_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DATABASE_URL") as info:
        load_settings()
    assert "required" in str(info.value).lower()


@pytest.mark.parametrize("port", ["not-a-port", "0", "70000", "-1"])
def test_invalid_redis_port(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:s3cret@127.0.0.1/db")
    monkeypatch.setenv("REDIS_PORT", port)
    with pytest.raises(ConfigurationError, match="REDIS_PORT") as info:
        load_settings()
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("CACHE_TTL_CURRENT_DAY", "0"), ("ANALYTICS_MAX_RANGE_DAYS", "-5"), ("REDIS_ENABLED", "perhaps")],
)
def test_other_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1/db")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_valid_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1/db")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("LITELLM_DATABASE_URL", raising=False)
    monkeypatch.setenv("REDIS_PORT", "6380")
    monkeypatch.setenv("ANALYTICS_MAX_RANGE_DAYS", "30")
    settings = load_settings()
    assert settings.redis_dsn == "redis://127.0.0.1:6380/0"
    assert settings.max_range_days == 30
    assert settings.litellm_dsn == settings.database_dsn


# --- a missing LiteLLM table -----------------------------------------------------------------------------


async def test_missing_source_table(make_empty_dsn: Callable[[], str], key_prefix: str) -> None:
    dsn = make_empty_dsn()
    async with Database(dsn) as db:
        await migrate(db)  # the cache schema exists; LiteLLM's and LiteMaaS's tables do not
        async with db.cache_connection() as conn:
            assert (await load_key_owners(conn)).height == 0
            assert await load_users(conn, ["a-user"]) == {}
        reader = SourceReader(dsn)
        policy = FreshnessPolicy(dt.timedelta(minutes=5), dt.timedelta(hours=2))
        cache = PostgresDayCache(db, policy, reader, DimensionDictionary())
        with pytest.raises(SourceMissing, match='"LiteLLM_DailyUserSpend" does not exist') as info:
            await cache.fill([dt.date(2025, 1, 1)])
        reader.close()
        assert "LITELLM_DATABASE_URL" in str(info.value)
        assert await cache.versions([dt.date(2025, 1, 1)]) == {dt.date(2025, 1, 1): 0}  # nothing was cached

    async with CacheManager.open(make_settings(dsn, redis_key_prefix=key_prefix)) as manager:
        try:
            with pytest.raises(SourceMissing):
                await manager.analytics(query("2025-01-01", "2025-01-07"))
        finally:
            await manager.redis.delete_all()


# --- the CLI: one line, no traceback ---------------------------------------------------------------------


def run_cli(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "DATABASE_URL": dsn, "REDIS_KEY_PREFIX": "test:validation:", **env}
    full_env.pop("LITELLM_DATABASE_URL", None)
    return subprocess.run([CLI, *args], env=full_env, capture_output=True, text=True, timeout=60, check=False)


BAD_CLI_INPUT: list[tuple[list[str], str]] = [
    (["--start", "2025-13-01", "--end", "2025-01-31"], "startDate"),
    (["--start", "2025-01-01", "--end", "not-a-date"], "endDate"),
    (["--start", "2025-02-01", "--end", "2025-01-01"], "after"),
    (["--start", "2025-01-01", "--end", "2025-01-31", "--by", "team"], "--by"),
    (["--start", "2024-01-01", "--end", "2025-01-31"], "exceeds the maximum of 90"),
    (["--start", "2025-01-01", "--end", "2025-01-31", "--user", "bad id"], "userIds[0]"),
    (["--start", "2025-01-01", "--end", "2025-01-31", "--by", "user", "--page", "0"], "page"),
    (["--start", "0001-01-01", "--end", "0001-01-03"], "startDate: 0001-01-01 is outside 2000-01-01..2099-12-31"),
    (["--start", "2099-12-30", "--end", "2100-01-02"], "endDate: 2100-01-02 is outside 2000-01-01..2099-12-31"),
]


@pytest.fixture(scope="module")
def bad_input_runs(seeded_dsn: str) -> list[subprocess.CompletedProcess[str]]:
    """Every BAD_CLI_INPUT case run at once (the console script starts in about half a second)."""
    with ThreadPoolExecutor(max_workers=len(BAD_CLI_INPUT)) as pool:
        return list(pool.map(lambda case: run_cli(seeded_dsn, "analytics", *case[0], "--json"), BAD_CLI_INPUT))


@pytest.mark.parametrize("case", range(len(BAD_CLI_INPUT)), ids=[needle for _, needle in BAD_CLI_INPUT])
def test_cli_rejects_bad_input_in_one_line(bad_input_runs: list[subprocess.CompletedProcess[str]], case: int) -> None:
    result = bad_input_runs[case]
    needle = BAD_CLI_INPUT[case][1]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]


@pytest.mark.parametrize(
    ("start", "end", "needle"),
    [
        ("1900-01-01", "1900-12-31", "--start/--end: 1900-01-01 is outside 2000-01-01..2099-12-31"),
        ("2024-01-01", "2025-01-01", "range of 367 days exceeds the maximum of 366"),
    ],
)
def test_cli_invalidate_refuses_ranges_outside_the_window_or_longer_than_366_days(
    fresh_dsn: str, start: str, end: str, needle: str
) -> None:
    result = run_cli(fresh_dsn, "invalidate", "--start", start, "--end", end)
    assert (result.returncode, result.stdout) == (2, "")
    assert "Traceback" not in result.stderr
    assert needle in result.stderr
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute(b"SELECT count(*) FROM litemaas_cache.daily_usage WHERE day < '2000-01-01'").fetchone()
    assert rows == (0,), "nothing was written for the refused range"


def test_cli_configuration_error_in_one_line(seeded_dsn: str) -> None:
    result = run_cli(seeded_dsn, "analytics", "--start", "2025-01-01", "--end", "2025-01-02", REDIS_PORT="nope")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "REDIS_PORT" in lines[0]


def test_cli_missing_source_table(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    assert run_cli(dsn, "migrate").returncode == 0
    result = run_cli(dsn, "analytics", "--start", "2025-01-01", "--end", "2025-01-02")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "LiteLLM_DailyUserSpend" in lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DATABASE_URL", "", "DATABASE_URL: must be a PostgreSQL URL"),
        ("DATABASE_URL", "mysql://db/x", "DATABASE_URL: must be a PostgreSQL URL"),
        ("LITELLM_DATABASE_URL", "litellm", "LITELLM_DATABASE_URL: must be a PostgreSQL URL"),
        ("REDIS_URL", "http://cache:6379", "REDIS_URL: must start with one of redis://, rediss://, unix://"),
    ],
)
def test_connection_strings_are_checked_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@127.0.0.1:5432/x")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as failure:
        load_settings()
    assert expected in str(failure.value)
    assert "u:p@" not in str(failure.value)
