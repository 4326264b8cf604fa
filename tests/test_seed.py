"""The synthetic data generator: deterministic, idempotent, and realistic enough to exercise every code path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg

from litemaas_cache.dates import utc_now
from litemaas_cache.db import Database
from litemaas_cache.seed import MODEL_CATALOG, SeedReport, create_source_tables, seed
from litemaas_cache.source import SOURCE_TABLE
from tests.conftest import SEED_ARGS

FIXED_TODAY = dt.date(2025, 3, 14)
ARGS: dict[str, Any] = {"days": 21, "users": 12, "models": 4, "seed_value": 42, "today": FIXED_TODAY}

# Every column but the two timestamps (set to the wall clock at seeding time). A row value's text keeps NULL and ''
# apart (concat_ws would skip NULLs, so a NULL model and a NULL provider could trade places unnoticed).
CHECKSUM_SQL = f"""
SELECT count(*), md5(string_agg(ROW(id, user_id, date, api_key, model, model_group, custom_llm_provider,
       mcp_namespaced_tool_name, endpoint, prompt_tokens, completion_tokens, cache_read_input_tokens,
       cache_creation_input_tokens, spend, api_requests, successful_requests, failed_requests)::text,
       E'\\n' ORDER BY id))
FROM {SOURCE_TABLE}
"""
MAPPING_CHECKSUM_SQL = """
SELECT md5(string_agg(concat_ws('|', u.id, u.username, u.email, k.id, k.key_hash, k.litellm_key_alias, k.name),
       E'\\n' ORDER BY k.key_hash))
FROM api_keys k JOIN users u ON u.id = k.user_id
"""


async def seed_into(dsn: str, **overrides: Any) -> SeedReport:
    async with Database(dsn) as db:
        await create_source_tables(db)
        return await seed(db, **{**ARGS, **overrides})


def fetch(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode(), params).fetchall()


async def test_same_seed_gives_the_same_rows(make_empty_dsn: Callable[[], str]) -> None:
    a, b, c = make_empty_dsn(), make_empty_dsn(), make_empty_dsn()
    report_a = await seed_into(a)
    report_b = await seed_into(b)
    report_c = await seed_into(c, seed_value=43)
    assert report_c.api_keys != report_a.api_keys or report_c.rows_generated != report_a.rows_generated
    assert report_a == report_b
    assert report_a.rows_generated == report_a.rows_inserted > 0
    assert (report_a.start, report_a.end) == (FIXED_TODAY - dt.timedelta(days=20), FIXED_TODAY)

    assert fetch(a, CHECKSUM_SQL) == fetch(b, CHECKSUM_SQL)
    assert fetch(a, CHECKSUM_SQL)[0][0] == report_a.rows_generated
    assert fetch(a, MAPPING_CHECKSUM_SQL) == fetch(b, MAPPING_CHECKSUM_SQL)
    # A different seed gives different data.
    assert fetch(a, CHECKSUM_SQL) != fetch(c, CHECKSUM_SQL)
    assert fetch(a, MAPPING_CHECKSUM_SQL) != fetch(c, MAPPING_CHECKSUM_SQL)
    # Exactly the requested days, no more.
    days = fetch(a, f"SELECT min(date), max(date), count(DISTINCT date) FROM {SOURCE_TABLE}")
    assert days == [(str(report_a.start), str(FIXED_TODAY), 21)]


async def test_seeding_twice_inserts_nothing_new(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    first = await seed_into(dsn)
    before = fetch(dsn, CHECKSUM_SQL)
    users_before = fetch(dsn, "SELECT count(*) FROM users")[0][0]
    second = await seed_into(dsn)
    assert second.rows_generated == first.rows_generated
    assert second.rows_inserted == 0
    assert fetch(dsn, CHECKSUM_SQL) == before
    assert fetch(dsn, "SELECT count(*) FROM users")[0][0] == users_before == ARGS["users"]


async def test_seeding_a_longer_period_keeps_the_past_days(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    await seed_into(dsn, days=5)
    past = CHECKSUM_SQL + " WHERE date < %s"
    before = fetch(dsn, past, (str(FIXED_TODAY),))
    total_before = fetch(dsn, f"SELECT count(*) FROM {SOURCE_TABLE}")[0][0]
    # Two days later, 7 days: the 4 complete past days are regenerated identically (nothing new for them).
    second = await seed_into(dsn, days=7, today=FIXED_TODAY + dt.timedelta(days=2))
    assert fetch(dsn, past, (str(FIXED_TODAY),)) == before
    total_after = fetch(dsn, f"SELECT count(*) FROM {SOURCE_TABLE}")[0][0]
    assert second.rows_inserted == total_after - total_before > 0
    new_days = fetch(dsn, f"SELECT count(DISTINCT date) FROM {SOURCE_TABLE} WHERE date > %s", (str(FIXED_TODAY),))
    assert new_days == [(2,)]


def test_seeded_data_has_unmapped_keys_failures_and_several_keys_per_user(seeded_dsn: str) -> None:
    # Keys LiteMaaS does not know: the seed's unmapped keys, and LiteLLM's empty api_key (one row a day).
    unmapped = fetch(
        seeded_dsn,
        f"""SELECT api_key = '', count(DISTINCT api_key), count(*), min(user_id), max(user_id) FROM {SOURCE_TABLE} s
            WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key)
            GROUP BY 1 ORDER BY 1""",
    )
    assert [(empty, keys, owner, last) for empty, keys, _, owner, last in unmapped] == [
        (False, max(1, SEED_ARGS["users"] // 10), "default_user_id", "default_user_id"),
        (True, 1, "default_user_id", "default_user_id"),
    ]
    assert unmapped[0][2] > 0
    assert unmapped[1][2] == SEED_ARGS["days"]

    failed, successful, requests = fetch(
        seeded_dsn, f"SELECT sum(failed_requests), sum(successful_requests), sum(api_requests) FROM {SOURCE_TABLE}"
    )[0]
    assert failed > 0
    assert successful + failed == requests
    assert fetch(seeded_dsn, f"SELECT count(*) FROM {SOURCE_TABLE} WHERE failed_requests > api_requests") == [(0,)]

    keys_per_user = [n for (n,) in fetch(seeded_dsn, "SELECT count(*) FROM api_keys GROUP BY user_id")]
    assert len(keys_per_user) == SEED_ARGS["users"]
    assert max(keys_per_user) >= 2
    assert sum(1 for n in keys_per_user if n >= 2) >= SEED_ARGS["users"] // 3
    # Every mapped key row's LiteLLM user_id is its owner's (what LiteLLM would record).
    mismatched = fetch(
        seeded_dsn,
        f"SELECT count(*) FROM {SOURCE_TABLE} s JOIN api_keys k ON k.key_hash = s.api_key"
        " WHERE s.user_id <> k.user_id::text",
    )
    assert mismatched == [(0,)]

    # Every catalog model is used, always with its catalog provider; some leave it NULL, some '' (inferred).
    catalog = {model: provider for model, provider, _, _ in MODEL_CATALOG[: SEED_ARGS["models"]]}
    pairs = fetch(
        seeded_dsn,
        f"SELECT DISTINCT model, custom_llm_provider FROM {SOURCE_TABLE} WHERE model = ANY(%s)",
        (list(catalog),),
    )
    assert set(pairs) == set(catalog.items())
    assert {None, ""} <= {provider for _, provider in pairs}, "some rows leave custom_llm_provider NULL or ''"


# The unique key of LiteLLM's current table, in order.
CURRENT_UNIQUE_KEY = [
    "user_id",
    "date",
    "api_key",
    "model",
    "custom_llm_provider",
    "mcp_namespaced_tool_name",
    "endpoint",
]
UNIQUE_INDEXES_SQL = f"""
SELECT i.indexrelid::regclass::text, array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = '{SOURCE_TABLE}'::regclass AND i.indisunique AND NOT i.indisprimary
GROUP BY 1
"""
# Per kind of odd row: (rows, days with such rows).
ODD_KINDS_SQL = f"""
SELECT count(*) FILTER (WHERE model IS NULL), count(DISTINCT date) FILTER (WHERE model IS NULL),
       count(*) FILTER (WHERE api_key = ''), count(DISTINCT date) FILTER (WHERE api_key = ''),
       count(*) FILTER (WHERE custom_llm_provider = ''), count(DISTINCT date) FILTER (WHERE custom_llm_provider = ''),
       count(*) FILTER (WHERE custom_llm_provider IS NULL AND model IS NOT NULL),
       count(DISTINCT date) FILTER (WHERE custom_llm_provider IS NULL AND model IS NOT NULL)
FROM {SOURCE_TABLE}
"""
# Groups of rows equal in every unique-key column but the endpoint (GROUP BY puts NULLs together).
ENDPOINT_TWINS_SQL = f"""
SELECT count(*), coalesce(sum(n), 0), count(*) FILTER (WHERE n = endpoints) FROM (
    SELECT count(*) AS n, count(DISTINCT endpoint) AS endpoints FROM {SOURCE_TABLE}
    GROUP BY user_id, date, api_key, model, custom_llm_provider, mcp_namespaced_tool_name
    HAVING count(*) > 1
) twins
"""


def test_seeded_data_has_each_odd_kind_of_row(seeded_dsn: str) -> None:
    days = SEED_ARGS["days"]
    null_model, null_model_days, no_key, no_key_days, empty_prov, empty_prov_days, null_prov, _ = fetch(
        seeded_dsn, ODD_KINDS_SQL
    )[0]
    # Every day has NULL-model rows, empty-api_key rows and ''-provider rows; NULL providers (with a model) too.
    assert (null_model_days, no_key_days, empty_prov_days) == (days, days, days)
    assert null_model >= days
    assert no_key == days
    assert empty_prov >= days
    assert null_prov > 0

    # The NULL-model rows are MCP tool calls: a tool name, a NULL provider, a key LiteMaaS knows.
    assert fetch(
        seeded_dsn,
        f"""SELECT count(*) FROM {SOURCE_TABLE} s
            WHERE model IS NULL AND (mcp_namespaced_tool_name IS NULL OR custom_llm_provider IS NOT NULL
                  OR NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key))""",
    ) == [(0,)]
    assert fetch(seeded_dsn, f"SELECT count(*) FROM {SOURCE_TABLE} WHERE mcp_namespaced_tool_name IS NOT NULL") == [
        (null_model,)
    ]
    # '' providers: the 'local/phi-4' model, and catalog models.
    empty_models = {
        m for (m,) in fetch(seeded_dsn, f"SELECT DISTINCT model FROM {SOURCE_TABLE} WHERE custom_llm_provider = ''")
    }
    assert "local/phi-4" in empty_models
    assert empty_models - {"local/phi-4"}, "a catalog model with custom_llm_provider ''"

    # Rows that differ only by endpoint: every such group has one row per endpoint.
    groups, rows, distinct = fetch(seeded_dsn, ENDPOINT_TWINS_SQL)[0]
    assert groups > 0
    assert rows == 2 * groups
    assert distinct == groups
    assert fetch(seeded_dsn, f"SELECT count(*) FROM {SOURCE_TABLE} WHERE endpoint IS NULL") == [(0,)]


def test_the_table_has_litellms_current_unique_key_and_nullable_columns(seeded_dsn: str) -> None:
    assert [cols for _, cols in fetch(seeded_dsn, UNIQUE_INDEXES_SQL)] == [CURRENT_UNIQUE_KEY]
    nullable = dict(
        fetch(
            seeded_dsn,
            "SELECT column_name::text, is_nullable::text FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'LiteLLM_DailyUserSpend'",
        )
    )
    assert {c: nullable[c] for c in CURRENT_UNIQUE_KEY} == {
        "user_id": "YES",
        "date": "NO",
        "api_key": "NO",
        "model": "YES",
        "custom_llm_provider": "YES",
        "mcp_namespaced_tool_name": "YES",
        "endpoint": "YES",
    }


# The table as this seeder created it before LiteLLM's MCP and endpoint columns (PostgreSQL cut the index name to 63).
LEGACY_DDL = f"""
CREATE TABLE {SOURCE_TABLE} (
    id TEXT PRIMARY KEY, user_id TEXT, date TEXT NOT NULL, api_key TEXT NOT NULL, model TEXT NOT NULL,
    model_group TEXT, custom_llm_provider TEXT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0, completion_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens BIGINT NOT NULL DEFAULT 0, cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0.0, api_requests BIGINT NOT NULL DEFAULT 0,
    successful_requests BIGINT NOT NULL DEFAULT 0, failed_requests BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX "LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_llm_pr"
    ON {SOURCE_TABLE} (user_id, date, api_key, model, custom_llm_provider);
"""


async def test_seeding_upgrades_a_table_created_before_mcp_and_endpoint(make_empty_dsn: Callable[[], str]) -> None:
    legacy, fresh = make_empty_dsn(), make_empty_dsn()
    with psycopg.connect(legacy) as conn:
        conn.execute(LEGACY_DDL.encode())
    report = await seed_into(legacy)
    # Nothing rejected: not the NULL-model rows (old NOT NULL), not the endpoint twins (old unique key).
    assert report.rows_inserted == report.rows_generated > 0
    assert [cols for _, cols in fetch(legacy, UNIQUE_INDEXES_SQL)] == [CURRENT_UNIQUE_KEY]
    await seed_into(fresh)
    assert fetch(legacy, CHECKSUM_SQL) == fetch(fresh, CHECKSUM_SQL)
    assert fetch(legacy, ENDPOINT_TWINS_SQL)[0][0] > 0


def test_today_is_a_partial_day(seeded_dsn: str) -> None:
    per_day = dict(fetch(seeded_dsn, f"SELECT date, sum(api_requests) FROM {SOURCE_TABLE} GROUP BY date"))
    today = utc_now().date()
    assert len(per_day) == SEED_ARGS["days"]
    assert max(per_day) == today.isoformat()
    others = [v for d, v in per_day.items() if d != today.isoformat()]
    assert per_day[today.isoformat()] > 0
    # Weak on purpose: today is scaled by the fraction of the UTC day elapsed at seeding time.
    fraction = (utc_now() - dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)).total_seconds() / 86400
    if fraction < 0.8:
        assert per_day[today.isoformat()] < max(others)
    if fraction < 0.5:
        assert per_day[today.isoformat()] < sorted(others)[len(others) // 2]  # below the median day
