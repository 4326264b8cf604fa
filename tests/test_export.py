"""POST /api/v1/admin/usage/export: LiteMaaS's CSV and JSON files, over HTTP on real PostgreSQL and Redis, their
numbers compared with independent SQL over LiteLLM's table (tests/support/oracle.py); plus the pure formatting rules.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from litemaas_cache.export import csv_field, fixed4
from litemaas_cache.vocabulary import UNKNOWN_USER_ID
from tests.conftest import managed
from tests.support.api import ADMIN_KEY, READONLY_ID, bearer, mint, serving
from tests.support.oracle import Filters, Oracle, Picks, Sums, expected_rows
from tests.test_api_contract import ADMIN, RANGE, START, TODAY, UNLIMITED, Api, _open_api

EXPORT = f"{ADMIN}/export"
HEADER = "User ID,Username,Email,Total Requests,Total Tokens,Prompt Tokens,Completion Tokens,Total Cost (USD)"


@pytest_asyncio.fixture
async def api(module_dsn: str, key_prefix: str) -> AsyncIterator[Api]:
    async with managed(module_dsn, key_prefix, **UNLIMITED) as manager:
        async for client in _open_api(manager):
            yield client


async def export(api: Api, body: dict[str, Any]) -> tuple[Any, str]:
    response = await api.client.post(EXPORT, json=body, headers=bearer(ADMIN_KEY))
    text = await response.text()
    assert response.status == 200, text[:500]
    return response, text


def _sort_key(s: Sums, user_id: str) -> tuple[int, str]:
    return (-s.tokens, user_id)


def assert_csv_row(line: list[str], s: Sums, extra: dict[str, Any]) -> None:
    assert line[:3] == [extra["userId"], extra["username"], extra["email"]]
    assert [int(v) for v in line[3:7]] == [s.requests, s.tokens, s.prompt, s.completion]
    assert len(line[7].split(".")[1]) == 4
    assert abs(float(line[7]) - s.spend) <= 0.00005 + 1e-9, (line, s.spend)


# --- formatting rules (pure) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("Doe, Jane", '"Doe, Jane"'),
        ('say "hi"', '"say ""hi"""'),
        ("two\nlines", '"two\nlines"'),
        ("", ""),
        (12, "12"),
    ],
)
def test_csv_fields_are_quoted_only_when_they_must_be(value: object, written: str) -> None:
    assert csv_field(value) == written


@pytest.mark.parametrize(
    ("cost", "written"),
    [(0, "0.0000"), (1.5, "1.5000"), (0.03125, "0.0313"), (2.00004999, "2.0000"), (123456.78912, "123456.7891")],
)
def test_costs_have_four_decimals_as_javascript_s_to_fixed(cost: float, written: str) -> None:
    assert fixed4(cost) == written  # 0.03125 is a tie in binary too: toFixed rounds it up, Python's format down


# --- CSV -------------------------------------------------------------------------------------------------------------


async def test_csv_export_is_litemaas_s_file_with_numbers_equal_to_sql(api: Api, oracle: Oracle) -> None:
    response, text = await export(api, RANGE)
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="admin-usage-export-{START.isoformat()}-to-{TODAY.isoformat()}.csv"'
    )
    assert response.headers.get("Transfer-Encoding") == "chunked", "streamed"
    assert response.headers["x-ratelimit-limit"] == "1000000", "counted in the export bucket"
    assert not text.endswith("\n"), "lines joined by \\n, none after the last"
    lines = text.split("\n")
    assert lines[0] == HEADER
    parsed = list(csv.reader(io.StringIO(text)))[1:]
    expected = await expected_rows(oracle, "user", START, TODAY, Filters([], [], [], []))
    assert [line[0] for line in parsed] == sorted(expected, key=lambda u: _sort_key(expected[u][0], u))
    assert UNKNOWN_USER_ID in expected, "the Unknown User is exported too"
    for line in parsed:
        assert_csv_row(line, *expected[line[0]])


async def test_csv_quotes_a_name_holding_a_comma_and_a_quote(fresh_dsn: str, key_prefix: str, picks: Picks) -> None:
    async with await psycopg.AsyncConnection.connect(fresh_dsn, autocommit=True) as conn:
        await conn.execute("UPDATE users SET username = %s WHERE id::text = %s", ('Doe, "JJ"', picks.heavy_user))
    async with managed(fresh_dsn, key_prefix, **UNLIMITED) as manager:
        async for own_api in _open_api(manager):
            _, text = await export(own_api, {**RANGE, "userIds": [picks.heavy_user]})
    assert len(text.split("\n")) == 2, text
    assert text.split("\n")[1].startswith(f'{picks.heavy_user},"Doe, ""JJ""",')
    [line] = list(csv.reader(io.StringIO(text)))[1:]
    assert line[1] == 'Doe, "JJ"'


async def test_the_currency_code_is_a_setting(module_dsn: str, key_prefix: str) -> None:
    settings = {"currency_code": "EUR", "admin_export_rate_limit": 5}
    async with managed(module_dsn, key_prefix, **settings) as manager, serving(manager) as client:
        response = await client.post(EXPORT, json=RANGE, headers=bearer(ADMIN_KEY))
        assert (await response.text()).split("\n")[0].endswith(",Total Cost (EUR)")
        assert response.headers["x-ratelimit-limit"] == "5", "ADMIN_EXPORT_RATE_LIMIT"


# --- JSON ------------------------------------------------------------------------------------------------------------


async def test_json_export_has_litemaas_s_metadata_and_service_rows(api: Api, oracle: Oracle, picks: Picks) -> None:
    body = {**RANGE, "userIds": [picks.heavy_user, picks.second_user], "format": "json"}
    response, text = await export(api, body)
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Content-Disposition"].endswith(f'-to-{TODAY.isoformat()}.json"')
    document = json.loads(text)
    assert text == json.dumps(document, indent=2, ensure_ascii=False), "JSON.stringify(value, null, 2)'s layout"
    api.validate("POST", EXPORT, 200, document)
    meta = document["metadata"]
    assert meta["breakdownType"] == "user"
    assert meta["filters"] == {**RANGE, "userIds": [picks.heavy_user, picks.second_user]}, "only the lists sent"
    exported_at = dt.datetime.fromisoformat(meta["exportedAt"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - exported_at).total_seconds()) < 60
    assert meta["exportedAt"].endswith("Z")
    assert meta["recordCount"] == len(document["data"]) == 2
    expected = await expected_rows(
        oracle, "user", START, TODAY, Filters([picks.heavy_user, picks.second_user], [], [], [])
    )
    for row in document["data"]:
        s, extra = expected[row["userId"]]
        assert (row["metrics"]["requests"], row["metrics"]["tokens"]["total"]) == (s.requests, s.tokens)
        assert [m["modelId"] for m in row["metrics"]["models"]] == [m for m, _ in extra["models"]]
        assert {m["averageLatency"] for m in row["metrics"]["models"]} == {0}
    empty = json.loads((await export(api, {"startDate": "2001-01-01", "endDate": "2001-01-02", "format": "json"}))[1])
    assert (empty["data"], empty["metadata"]["recordCount"], empty["metadata"]["filters"]) == (
        [],
        0,
        {"startDate": "2001-01-01", "endDate": "2001-01-02"},
    )


# --- filters and ranges ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["userIds", "modelIds", "providerIds", "apiKeyIds"])
async def test_every_filter_applies_to_the_export(kind: str, api: Api, oracle: Oracle, picks: Picks) -> None:
    f = {
        "userIds": Filters([picks.heavy_user, "unmapped"], [], [], []),
        "modelIds": Filters([], ["gpt-4o"], [], []),
        "providerIds": Filters([], [], ["anthropic"], []),
        "apiKeyIds": Filters([], [], [], [picks.second_user_alias]),
    }[kind]
    body = {**RANGE, "userIds": f.users, "modelIds": f.models, "providerIds": f.providers, "apiKeyIds": f.keys}
    _, text = await export(api, body)
    parsed = list(csv.reader(io.StringIO(text)))[1:]
    expected = await expected_rows(oracle, "user", START, TODAY, f)
    assert expected
    assert {line[0] for line in parsed} == set(expected)
    for line in parsed:
        assert_csv_row(line, *expected[line[0]])


async def test_up_to_365_days_and_no_more(api: Api) -> None:
    end = TODAY
    year = {"startDate": (end - dt.timedelta(days=364)).isoformat(), "endDate": end.isoformat()}
    _, text = await export(api, year)
    assert text.startswith(HEADER)
    longer = {**year, "startDate": (end - dt.timedelta(days=365)).isoformat()}
    refused = await api.error("POST", EXPORT, 400, "DATE_RANGE_TOO_LARGE", json=longer)
    assert (refused["details"]["requestedDays"], refused["details"]["maxAllowedDays"]) == (366, 365)
    bad = await api.error("POST", EXPORT, 400, "VALIDATION_ERROR", json={**RANGE, "format": "xlsx"})
    assert bad["details"]["field"] == "format"
    readonly = await api.client.post(EXPORT, json=RANGE, headers=bearer(mint(READONLY_ID, ["admin-readonly"])))
    assert readonly.status == 200, "reading usage: admin-readonly may export"
    await readonly.read()
