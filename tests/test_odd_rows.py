"""Analytics over the odd rows of LiteLLM's current table, each against independent SQL over that table.

The rows: MCP tool calls (NULL model and provider), usage under an empty api_key, a model whose provider is '',
catalog models whose provider is '' or NULL, and rows that differ only by endpoint. The semantics (the spec):

- grain (user, api key, model, provider); user = api_keys.key_hash -> user_id, else the user "unmapped" (also for
  the empty key '', which is counted under the key id '' and never dropped);
- a NULL or '' model is the model "unknown";
- provider = custom_llm_provider when non-empty, else infer_provider(model) ("unknown" without a model);
- rows that differ only by endpoint or mcp_namespaced_tool_name are summed into one grain cell.

The oracle below implements these in SQL; only the model-name -> provider inference is shared with the library
(as a VALUES table of the distinct non-empty models).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import psycopg
import pytest_asyncio

from litemaas_cache.analytics import Page
from litemaas_cache.dates import utc_today
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.providers import infer_provider
from litemaas_cache.vocabulary import UNKNOWN_MODEL, UNKNOWN_PROVIDER, UNKNOWN_USER_ID, UNMAPPED_USER_ID, Dimension
from tests.conftest import SEED_ARGS, make_settings, managed
from tests.support.metrics import assert_metrics, assert_summary, close

TODAY = utc_today()
START = TODAY - dt.timedelta(days=SEED_ARGS["days"] - 1)  # the whole seeded period (40 days)
PAGE = Page(limit=200)  # larger than any breakdown of the seeded data: one page holds every item
LOCAL_MODEL = "local/phi-4"

_CELLS = """
WITH prov AS (SELECT * FROM unnest(%(prov_models)s::text[], %(prov_names)s::text[]) AS p(model, inferred)),
src AS (
    SELECT s.date::date AS day, s.api_key, s.model AS raw_model, s.custom_llm_provider AS raw_provider, s.endpoint,
           COALESCE(k.user_id::text, %(unmapped)s) AS user_id,
           COALESCE(NULLIF(s.model, ''), %(unknown_model)s) AS model,
           COALESCE(NULLIF(s.custom_llm_provider, ''), prov.inferred, %(unknown_provider)s) AS provider,
           s.prompt_tokens, s.completion_tokens, s.api_requests, s.successful_requests, s.failed_requests, s.spend
    FROM "LiteLLM_DailyUserSpend" s
    LEFT JOIN prov ON prov.model = s.model
    LEFT JOIN api_keys k ON k.key_hash = s.api_key
    WHERE s.date BETWEEN %(start)s AND %(end)s
),
cell AS (  -- one UTC day of one (user, key, model, provider), over the rows that pass the test's condition
    SELECT day, user_id, api_key, model, provider, count(*) AS source_rows,
           sum(prompt_tokens)::bigint AS prompt, sum(completion_tokens)::bigint AS completion,
           sum(api_requests)::bigint AS requests, sum(successful_requests)::bigint AS ok,
           sum(failed_requests)::bigint AS failed, sum(spend)::float8 AS spend
    FROM src WHERE {where} GROUP BY day, user_id, api_key, model, provider
)
SELECT {keys_select}
       COALESCE(sum(requests), 0)::bigint, COALESCE(sum(ok), 0)::bigint, COALESCE(sum(failed), 0)::bigint,
       COALESCE(sum(prompt), 0)::bigint, COALESCE(sum(completion), 0)::bigint, COALESCE(sum(spend), 0)::float8,
       count(DISTINCT api_key) FILTER (WHERE requests > 0), count(DISTINCT model) FILTER (WHERE requests > 0),
       count(DISTINCT provider), min(provider), COALESCE(sum(source_rows), 0)::bigint
FROM cell {group_by}
"""


class Sums(NamedTuple):
    requests: int
    ok: int
    failed: int
    prompt: int
    completion: int
    spend: float
    keys: int
    models: int
    providers: int
    provider: str | None
    source_rows: int

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


class Oracle:
    """Independent SQL aggregation of the seeded LiteLLM table under the documented semantics."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], prov_models: list[str]) -> None:
        self.conn = conn
        self.prov_models = prov_models
        self.prov_names = [infer_provider(m) for m in prov_models]

    async def group(self, *keys: str, where: str = "TRUE", params: dict[str, Any] | None = None) -> dict[Any, Sums]:
        """Sums over the seeded period of the rows matching `where` (an SQL condition on the `src` columns), per
        value of `keys` (columns of a grain cell: day, user_id, api_key, model, provider); () for no keys."""
        sql = _CELLS.format(
            where=where,
            keys_select="".join(f"{k}, " for k in keys),
            group_by=f"GROUP BY {', '.join(keys)}" if keys else "",
        )
        values = {
            "prov_models": self.prov_models,
            "prov_names": self.prov_names,
            "unmapped": UNMAPPED_USER_ID,
            "unknown_model": UNKNOWN_MODEL,
            "unknown_provider": UNKNOWN_PROVIDER,
            "start": START.isoformat(),
            "end": TODAY.isoformat(),
            **(params or {}),
        }
        cur = await self.conn.execute(sql.encode(), values)
        n = len(keys)
        out: dict[Any, Sums] = {}
        for r in await cur.fetchall():
            key = r[0] if n == 1 else tuple(r[:n])
            out[key] = Sums(*r[n:])
        return out

    async def total(self, where: str = "TRUE", params: dict[str, Any] | None = None) -> Sums:
        return (await self.group(where=where, params=params))[()]

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(sql.encode(), params)
        return await cur.fetchall()


def same(a: Sums, b: Sums) -> bool:
    """Equal sums (spend up to float summation order)."""
    return a._replace(spend=0.0) == b._replace(spend=0.0) and close(a.spend, b.spend)


def query(
    *,
    users: list[str] | None = None,
    models: list[str] | None = None,
    providers: list[str] | None = None,
    keys: list[str] | None = None,
) -> AnalyticsQuery:
    return build_query(
        START.isoformat(),
        TODAY.isoformat(),
        user_ids=users,
        model_ids=models,
        provider_ids=providers,
        api_key_ids=keys,
        max_days=90,
        max_ids=1000,
    )


async def breakdown_items(mgr: CacheManager, dimension: Dimension, q: AnalyticsQuery) -> dict[str, dict[str, Any]]:
    """Every item of a breakdown (one page holds them all), by name."""
    doc = (await mgr.breakdown(dimension, q, PAGE)).value
    name = {"user": "userId", "model": "modelId", "provider": "provider"}[dimension]
    items = {item[name]: item for item in doc["data"]}
    assert len(items) == len(doc["data"]) == doc["pagination"]["total"], "one row per name, all on one page"
    return items


@pytest_asyncio.fixture
async def oracle(module_dsn: str) -> AsyncIterator[Oracle]:
    async with await psycopg.AsyncConnection.connect(module_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            """SELECT DISTINCT model FROM "LiteLLM_DailyUserSpend" WHERE model IS NOT NULL AND model <> ''"""
        )
        yield Oracle(conn, [m for (m,) in await cur.fetchall()])


@pytest_asyncio.fixture
async def mgr(module_dsn: str, key_prefix: str) -> AsyncIterator[CacheManager]:
    async with managed(module_dsn, key_prefix) as m:
        yield m


# The raw-table conditions of each odd kind (on the `src` columns of the oracle).
NO_MODEL = "(raw_model IS NULL OR raw_model = '')"
EMPTY_KEY = "api_key = ''"
EMPTY_PROVIDER = "raw_provider = ''"
NULL_PROVIDER_WITH_MODEL = "(raw_provider IS NULL AND raw_model IS NOT NULL AND raw_model <> '')"
NOT_IN_API_KEYS = "NOT EXISTS (SELECT 1 FROM api_keys k2 WHERE k2.key_hash = src.api_key)"
ENDPOINT_TWINS = """
SELECT api_key, model, date, count(*) FROM "LiteLLM_DailyUserSpend"
WHERE model IS NOT NULL AND date BETWEEN %s AND %s
GROUP BY user_id, date, api_key, model, custom_llm_provider, mcp_namespaced_tool_name
HAVING count(DISTINCT endpoint) > 1
ORDER BY model, api_key, date
"""


# --- totals --------------------------------------------------------------------------------------------------


async def test_totals_over_a_range_include_every_odd_row(mgr: CacheManager, oracle: Oracle) -> None:
    # Plain sums over every row of LiteLLM's table in the range: no join, no grouping, nothing left out.
    [(requests, ok, failed, prompt, completion, spend)] = await oracle.rows(
        """SELECT sum(api_requests)::bigint, sum(successful_requests)::bigint, sum(failed_requests)::bigint,
                  sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(spend)::float8
           FROM "LiteLLM_DailyUserSpend" WHERE date BETWEEN %s AND %s""",
        (START.isoformat(), TODAY.isoformat()),
    )
    # The range holds every odd kind, so a total that dropped any of them would differ.
    for kind in (NO_MODEL, EMPTY_KEY, EMPTY_PROVIDER, NULL_PROVIDER_WITH_MODEL):
        assert (await oracle.total(kind)).requests > 0, kind
    assert await oracle.rows(ENDPOINT_TWINS, (START.isoformat(), TODAY.isoformat())), "rows differing by endpoint"

    doc = (await mgr.analytics(query())).value
    assert doc["totalRequests"] == requests
    assert doc["totalTokens"] == {"total": prompt + completion, "prompt": prompt, "completion": completion}
    assert close(doc["totalCost"]["total"], spend)
    assert math.isclose(doc["successRate"], 100.0 * ok / requests)
    assert failed > 0, "the range has failed requests: the success rate is below 100"
    assert sum(d["requests"] for d in doc["dailyUsage"]) == requests

    # Day by day, against the oracle's per-day sums (which agree with the plain sums above).
    by_day = await oracle.group("day")
    assert sum(s.requests for s in by_day.values()) == requests
    assert [d["date"] for d in doc["dailyUsage"]] == [day.isoformat() for day in sorted(by_day)]
    for entry in doc["dailyUsage"]:
        assert_summary(entry, by_day[dt.date.fromisoformat(entry["date"])], entry["date"])


# --- the model "unknown" -------------------------------------------------------------------------------------


async def test_filtering_on_the_unknown_model_selects_the_rows_without_a_model(
    mgr: CacheManager, oracle: Oracle
) -> None:
    [(requests, ok, prompt, completion, spend)] = await oracle.rows(
        """SELECT sum(api_requests)::bigint, sum(successful_requests)::bigint, sum(prompt_tokens)::bigint,
                  sum(completion_tokens)::bigint, sum(spend)::float8
           FROM "LiteLLM_DailyUserSpend" WHERE (model IS NULL OR model = '') AND date BETWEEN %s AND %s""",
        (START.isoformat(), TODAY.isoformat()),
    )
    assert requests > 0

    doc = (await mgr.analytics(query(models=[UNKNOWN_MODEL]))).value
    assert doc["totalRequests"] == requests
    assert doc["totalTokens"] == {"total": prompt + completion, "prompt": prompt, "completion": completion}
    assert close(doc["totalCost"]["total"], spend)
    assert math.isclose(doc["successRate"], 100.0 * ok / requests)
    assert set(doc["totalCost"]["byModel"]) == {UNKNOWN_MODEL}
    expected_providers = await oracle.group("provider", where=NO_MODEL)
    assert set(doc["totalCost"]["byProvider"]) == set(expected_providers) == {UNKNOWN_PROVIDER}

    # Each day's rows without a model (several MCP tools, several keys) are one (day, model, provider) entry.
    per_day = await oracle.group("day", where=NO_MODEL)
    entries = [(e["date"], m["modelId"], m["provider"]) for e in doc["dailyModelUsage"] for m in e["models"]]
    assert entries == sorted((day.isoformat(), UNKNOWN_MODEL, UNKNOWN_PROVIDER) for day in per_day)
    for entry in doc["dailyModelUsage"]:
        [model] = entry["models"]
        assert_summary(model, per_day[dt.date.fromisoformat(entry["date"])], entry["date"])
    assert [d["date"] for d in doc["dailyUsage"]] == [day.isoformat() for day in sorted(per_day)]
    for entry in doc["dailyUsage"]:
        assert entry["requests"] == per_day[dt.date.fromisoformat(entry["date"])].requests, entry["date"]


async def test_the_model_breakdown_reports_the_unknown_model(mgr: CacheManager, oracle: Oracle) -> None:
    [(requests, rows)] = await oracle.rows(
        """SELECT sum(api_requests)::bigint, count(*) FROM "LiteLLM_DailyUserSpend"
           WHERE (model IS NULL OR model = '') AND date BETWEEN %s AND %s""",
        (START.isoformat(), TODAY.isoformat()),
    )
    assert rows > 0

    items = await breakdown_items(mgr, "model", query())
    expected = await oracle.group("model")
    assert set(items) == set(expected)
    assert items[UNKNOWN_MODEL]["metrics"]["requests"] == requests
    assert items[UNKNOWN_MODEL]["provider"] == UNKNOWN_PROVIDER
    for model, s in expected.items():
        assert s.providers == 1, f"{model} has one provider in the seeded data"
        assert items[model]["provider"] == s.provider, model
        assert_metrics(items[model]["metrics"], s, model)
    cost = (await mgr.analytics(query())).value["totalCost"]["byModel"]
    assert set(cost) == set(expected)
    assert close(cost[UNKNOWN_MODEL], expected[UNKNOWN_MODEL].spend)


# --- providers: '' and NULL ----------------------------------------------------------------------------------


async def test_the_provider_of_local_phi_4_is_inferred_as_local(mgr: CacheManager, oracle: Oracle) -> None:
    [(rows, empty_provider_rows, requests)] = await oracle.rows(
        """SELECT count(*), count(*) FILTER (WHERE custom_llm_provider = ''), sum(api_requests)::bigint
           FROM "LiteLLM_DailyUserSpend" WHERE model = %s AND date BETWEEN %s AND %s""",
        (LOCAL_MODEL, START.isoformat(), TODAY.isoformat()),
    )
    assert rows == empty_provider_rows > 0, "LiteLLM recorded local/phi-4 with custom_llm_provider ''"
    assert infer_provider(LOCAL_MODEL) == "local"

    models = await breakdown_items(mgr, "model", query())
    assert models[LOCAL_MODEL]["provider"] == "local"
    assert models[LOCAL_MODEL]["metrics"]["requests"] == requests

    expected = (await oracle.group("provider", where="provider = 'local'"))["local"]
    assert expected.requests == requests, "only local/phi-4 is served by 'local'"
    providers = await breakdown_items(mgr, "provider", query())
    assert_metrics(providers["local"]["metrics"], expected, "local")
    assert providers["local"]["metrics"]["models"] == expected.models == 1

    doc = (await mgr.analytics(query(providers=["local"]))).value
    assert doc["totalRequests"] == requests
    assert set(doc["totalCost"]["byModel"]) == {LOCAL_MODEL}
    assert close(doc["totalCost"]["byProvider"]["local"], expected.spend)


async def test_the_provider_breakdown_infers_empty_and_null_providers(mgr: CacheManager, oracle: Oracle) -> None:
    expected = await oracle.group("provider")
    inferred = set(await oracle.group("provider", where=f"{EMPTY_PROVIDER} OR {NULL_PROVIDER_WITH_MODEL}"))
    assert {"local", UNKNOWN_PROVIDER} <= set(expected)
    assert len(inferred - {"local"}) >= 2, "catalog models with '' and NULL providers are inferred"
    assert "" not in expected

    items = await breakdown_items(mgr, "provider", query())
    assert set(items) == set(expected)
    for provider, s in expected.items():
        assert_metrics(items[provider]["metrics"], s, provider)
        assert items[provider]["metrics"]["models"] == s.models, provider
    cost = (await mgr.analytics(query())).value["totalCost"]["byProvider"]
    assert set(cost) == set(expected)
    for provider, s in expected.items():
        assert close(cost[provider], s.spend), provider


# --- the user "unmapped", including the empty api_key ----------------------------------------------------------


async def test_the_unmapped_user_has_every_key_absent_from_api_keys(mgr: CacheManager, oracle: Oracle) -> None:
    per_key = dict(
        await oracle.rows(
            """SELECT api_key, sum(api_requests)::bigint FROM "LiteLLM_DailyUserSpend" s
               WHERE date BETWEEN %s AND %s AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key)
               GROUP BY api_key""",
            (START.isoformat(), TODAY.isoformat()),
        )
    )
    assert per_key.get("", 0) > 0, "usage under the empty api_key"
    assert len(per_key) >= 2, "and under keys LiteMaaS does not know"
    expected = await oracle.total(NOT_IN_API_KEYS)
    assert expected.requests == sum(per_key.values())
    assert expected.keys == len(per_key)
    assert same((await oracle.group("user_id"))[UNMAPPED_USER_ID], expected)

    users = await breakdown_items(mgr, "user", query())
    unmapped = users[UNKNOWN_USER_ID]
    assert (unmapped["username"], unmapped["email"]) == ("Unknown User", "unknown@system.local")
    assert_metrics(unmapped["metrics"], expected, UNMAPPED_USER_ID)
    keys = unmapped["metrics"]["apiKeys"]
    assert {k["keyId"] for k in keys} == set(per_key), "the empty key counts as one key of its own"
    assert "default_user_id" not in users

    doc = (await mgr.analytics(query())).value
    assert close(doc["totalCost"]["byUser"][UNKNOWN_USER_ID], expected.spend)
    filtered = (await mgr.analytics(query(users=[UNMAPPED_USER_ID]))).value
    assert filtered["totalRequests"] == expected.requests
    assert close(filtered["totalCost"]["total"], expected.spend)


async def test_empty_api_key_usage_is_counted_under_the_key_id_empty_string(mgr: CacheManager, oracle: Oracle) -> None:
    empty = await oracle.total(EMPTY_KEY)
    assert empty.requests > 0
    by_model = await oracle.group("model", where=EMPTY_KEY)
    assert by_model
    for model, under_empty_key in by_model.items():
        # The unmapped user's usage of a model the empty key used: every unmapped key's, '' included.
        per_key = await oracle.group(
            "api_key", where=f"{NOT_IN_API_KEYS} AND model = %(model)s", params={"model": model}
        )
        assert same(per_key[""], under_empty_key)
        doc = (await mgr.analytics(query(users=[UNMAPPED_USER_ID], models=[model]))).value
        assert doc["totalRequests"] == sum(s.requests for s in per_key.values()), model
        assert close(doc["totalCost"]["total"], sum(s.spend for s in per_key.values())), model
        # The top API key of that view is the SQL's (most spend, then requests, then key id), '' a key like any.
        active = [kv for kv in per_key.items() if kv[1].requests > 0]
        top_key, top = min(active, key=lambda kv: (-kv[1].spend, -kv[1].requests, kv[0]))
        top_doc = doc["topMetrics"]["topApiKey"]
        assert (top_doc["keyId"], top_doc["keyAlias"], top_doc["userId"]) == (top_key, top_key, UNKNOWN_USER_ID)
        assert top_doc["requests"] == top.requests
        assert close(top_doc["cost"], top.spend)


# --- rows that differ only by endpoint ------------------------------------------------------------------------


async def test_rows_that_differ_only_by_endpoint_are_summed(mgr: CacheManager, oracle: Oracle) -> None:
    twins = await oracle.rows(ENDPOINT_TWINS, (START.isoformat(), TODAY.isoformat()))
    assert twins, "the seed has rows that differ only by endpoint"
    key, model, date, _ = twins[0]

    # The model over the whole range: every endpoint's requests, summed.
    per_endpoint = dict(
        await oracle.rows(
            """SELECT endpoint, sum(api_requests)::bigint FROM "LiteLLM_DailyUserSpend"
               WHERE model = %s AND date BETWEEN %s AND %s GROUP BY endpoint""",
            (model, START.isoformat(), TODAY.isoformat()),
        )
    )
    assert len(per_endpoint) >= 2
    doc = (await mgr.analytics(query(models=[model]))).value
    assert doc["totalRequests"] == sum(per_endpoint.values()) > max(per_endpoint.values())
    assert doc["totalRequests"] == (await oracle.total("model = %(model)s", {"model": model})).requests

    # One key and model on a day with both endpoints: one grain cell, the sum of the two rows.
    rows = await oracle.rows(
        """SELECT endpoint, api_requests, prompt_tokens, completion_tokens FROM "LiteLLM_DailyUserSpend"
           WHERE api_key = %s AND model = %s AND date = %s""",
        (key, model, date),
    )
    assert len({endpoint for endpoint, *_ in rows}) == len(rows) >= 2
    doc = (await mgr.analytics(query(models=[model], keys=[key]))).value
    day = [m for e in doc["dailyModelUsage"] if e["date"] == date for m in e["models"]]
    assert [(m["modelId"], m["requests"], m["prompt_tokens"], m["completion_tokens"]) for m in day] == [
        (model, sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows))
    ]
    per_day = await oracle.group(
        "day", where="api_key = %(key)s AND model = %(model)s", params={"key": key, "model": model}
    )
    for entry in doc["dailyUsage"]:
        d = dt.date.fromisoformat(entry["date"])
        assert entry["requests"] == (per_day[d].requests if d in per_day else 0), entry["date"]


# --- every tier ----------------------------------------------------------------------------------------------


async def test_odd_rows_read_the_same_from_every_tier(manager: CacheManager, fresh_dsn: str) -> None:
    """Source, Redis, then the PostgreSQL daily cache alone: the odd rows' numbers survive the cache's encoding."""
    async with await psycopg.AsyncConnection.connect(fresh_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            """SELECT DISTINCT model FROM "LiteLLM_DailyUserSpend" WHERE model IS NOT NULL AND model <> ''"""
        )
        oracle = Oracle(conn, [m for (m,) in await cur.fetchall()])
        unmapped = await oracle.total(NOT_IN_API_KEYS)
        unknown = await oracle.total(NO_MODEL)
        local = (await oracle.group("provider"))["local"]
        total = await oracle.total()

    def check(doc: dict[str, Any], users: dict[str, dict[str, Any]], where: str) -> None:
        assert doc["totalRequests"] == total.requests, where
        assert close(doc["totalCost"]["total"], total.spend), where
        assert close(doc["totalCost"]["byUser"][UNKNOWN_USER_ID], unmapped.spend), where
        assert close(doc["totalCost"]["byModel"][UNKNOWN_MODEL], unknown.spend), where
        assert close(doc["totalCost"]["byProvider"]["local"], local.spend), where
        daily_models = [m for e in doc["dailyModelUsage"] for m in e["models"]]
        assert sum(m["requests"] for m in daily_models if m["modelId"] == UNKNOWN_MODEL) == unknown.requests
        assert users[UNKNOWN_USER_ID]["metrics"]["requests"] == unmapped.requests, where
        assert len(users[UNKNOWN_USER_ID]["metrics"]["apiKeys"]) == unmapped.keys, where

    q = query()
    cold = await manager.analytics(q)
    cold_users = await breakdown_items(manager, "user", q)
    assert cold.tier == "source"
    check(cold.value, cold_users, "source")
    warm = await manager.analytics(q)
    assert warm.tier == "redis"
    check(warm.value, await breakdown_items(manager, "user", q), "redis")
    async with CacheManager.open(make_settings(fresh_dsn, redis_enabled=False)) as pg_only:
        from_postgres = await pg_only.analytics(q)
        assert from_postgres.tier == "postgres"
        check(from_postgres.value, await breakdown_items(pg_only, "user", q), "postgres")
