"""An independent SQL oracle over "LiteLLM_DailyUserSpend" joined to api_keys, and the analytics answers it
expects (the documents' shapes, the breakdown rows and their order); only the model-name -> provider inference is
shared with the library (as a VALUES table of the distinct models)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from litemaas_cache.dates import DateRange
from litemaas_cache.providers import infer_provider
from tests.support.metrics import assert_metrics

_CELLS = """
WITH prov AS (SELECT * FROM unnest(%(prov_models)s::text[], %(prov_names)s::text[]) AS p(model, inferred)),
named AS (SELECT *, COALESCE(NULLIF(model, ''), 'unknown') AS model_name FROM "LiteLLM_DailyUserSpend"),
src AS (
    SELECT s.date::date AS day, s.api_key, s.model_name AS model,
           COALESCE(NULLIF(s.custom_llm_provider, ''), prov.inferred) AS provider,
           COALESCE(k.user_id::text, 'unmapped') AS user_id, k.litellm_key_alias AS key_alias,
           s.prompt_tokens, s.completion_tokens, s.api_requests, s.successful_requests, s.failed_requests, s.spend
    FROM named s
    JOIN prov ON prov.model = s.model_name
    LEFT JOIN api_keys k ON k.key_hash = s.api_key
    WHERE s.date BETWEEN %(start)s AND %(end)s
),
kept AS (
    SELECT * FROM src
    WHERE (cardinality(%(users)s::text[]) = 0 OR user_id = ANY(%(users)s::text[]))
      AND (cardinality(%(models)s::text[]) = 0 OR model = ANY(%(models)s::text[]))
      AND (cardinality(%(providers)s::text[]) = 0 OR provider = ANY(%(providers)s::text[]))
      AND (cardinality(%(keys)s::text[]) = 0 OR api_key = ANY(%(keys)s::text[]) OR key_alias = ANY(%(keys)s::text[]))
),
cell AS (  -- one UTC day of one (user, key, model, provider)
    SELECT day, user_id, api_key, key_alias, model, provider,
           sum(prompt_tokens)::bigint AS prompt, sum(completion_tokens)::bigint AS completion,
           sum(api_requests)::bigint AS requests, sum(successful_requests)::bigint AS ok,
           sum(failed_requests)::bigint AS failed, sum(spend)::float8 AS spend
    FROM kept GROUP BY day, user_id, api_key, key_alias, model, provider
)
"""

_GROUP = """
SELECT {keys_select}
       COALESCE(sum(requests), 0)::bigint, COALESCE(sum(ok), 0)::bigint, COALESCE(sum(failed), 0)::bigint,
       COALESCE(sum(prompt), 0)::bigint, COALESCE(sum(completion), 0)::bigint, COALESCE(sum(spend), 0)::float8,
       count(DISTINCT user_id), count(DISTINCT user_id) FILTER (WHERE requests > 0),
       count(DISTINCT model) FILTER (WHERE requests > 0), count(DISTINCT api_key) FILTER (WHERE requests > 0),
       min(provider), min(key_alias), min(user_id), max(day) FILTER (WHERE requests > 0)
FROM cell GROUP BY {keys_group}
"""


class Sums(NamedTuple):
    requests: int
    ok: int
    failed: int
    prompt: int
    completion: int
    spend: float
    users_seen: int
    active_users: int
    models: int
    keys: int
    provider: str | None
    alias: str | None
    owner: str | None
    last: dt.date | None

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


ZERO = Sums(0, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, None, None, None, None)


@dataclass
class Filters:
    users: list[str]
    models: list[str]
    providers: list[str]
    keys: list[str]


class Oracle:
    """Independent SQL aggregation over the seeded tables."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], prov_models: list[str]) -> None:
        self.conn = conn
        self.prov_models = prov_models
        self.prov_names = [infer_provider(m) for m in prov_models]

    async def group(self, start: dt.date, end: dt.date, f: Filters, *keys: str) -> dict[tuple[Any, ...], Sums]:
        sql = _CELLS + _GROUP.format(
            keys_select="".join(f"{k}, " for k in keys), keys_group=", ".join(keys) if keys else "()"
        )
        params = {
            "prov_models": self.prov_models,
            "prov_names": self.prov_names,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "users": f.users,
            "models": f.models,
            "providers": f.providers,
            "keys": f.keys,
        }
        cur = await self.conn.execute(sql.encode(), params)
        n = len(keys)
        return {tuple(r[:n]): Sums(*r[n:]) for r in await cur.fetchall()}

    async def users(self) -> dict[str, dict[str, str]]:
        """Each user as the API shows it (the unmapped user as LiteMaaS's Unknown User)."""
        cur = await self.conn.execute("SELECT id::text, username, email FROM users")
        shown = {i: {"userId": i, "username": u, "email": e or "", "role": "user"} for i, u, e in await cur.fetchall()}
        shown["unmapped"] = {
            "userId": "00000000-0000-0000-0000-000000000000",
            "username": "Unknown User",
            "email": "unknown@system.local",
            "role": "user",
        }
        return shown

    async def total_users(self, f: Filters, unmapped_active: bool) -> int:
        """LiteMaaS's users (those asked for, if any), plus the unmapped user when it has requests."""
        cur = await self.conn.execute(
            "SELECT count(*) FROM users WHERE cardinality(%(u)s::text[]) = 0 OR id::text = ANY(%(u)s::text[])",
            {"u": f.users},
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]) + int(unmapped_active)


@asynccontextmanager
async def open_oracle(dsn: str) -> AsyncIterator[Oracle]:
    """An oracle on its own connection to `dsn`, knowing every model of the table."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT DISTINCT COALESCE(NULLIF(model, ''), 'unknown') FROM \"LiteLLM_DailyUserSpend\""
        )
        yield Oracle(conn, [m for (m,) in await cur.fetchall()])


def ranked(groups: dict[tuple[Any, ...], Sums]) -> list[tuple[str, Sums]]:
    """The entries with requests: most spend first, then most requests, then name (the ranking of the tops)."""
    active = ((k[0], s) for k, s in groups.items() if s.requests > 0)
    return sorted(active, key=lambda kv: (-kv[1].spend, -kv[1].requests, kv[0]))


def expected_trend(current: float, previous: float) -> tuple[float, str]:
    """LiteMaaS's rule: from 0, 100 % up (or 0 % stable); else stable within 1 %, up or down beyond."""
    if previous == 0:
        return (100.0, "up") if current else (0.0, "stable")
    change = (current - previous) / previous * 100
    return round(change, 2), "stable" if abs(change) <= 1.0 else ("up" if change > 0 else "down")


# --- scenarios -----------------------------------------------------------------------------------------------


@dataclass
class Picks:
    """Real ids taken from the seeded data."""

    heavy_user: str
    second_user: str
    second_user_alias: str
    third_user_key: str
    unmapped_key: str


async def pick_ids(oracle: Oracle) -> Picks:
    """Real ids taken from the seeded data."""
    cur = await oracle.conn.execute(
        """SELECT k.user_id::text FROM "LiteLLM_DailyUserSpend" s JOIN api_keys k ON k.key_hash = s.api_key
           GROUP BY 1 ORDER BY sum(api_requests) DESC, 1 LIMIT 3"""
    )
    users = [u for (u,) in await cur.fetchall()]
    cur = await oracle.conn.execute(
        "SELECT user_id::text, litellm_key_alias, key_hash FROM api_keys WHERE user_id::text = ANY(%s)"
        " ORDER BY key_hash",
        (users,),
    )
    keys = await cur.fetchall()
    cur = await oracle.conn.execute(
        """SELECT min(api_key) FROM "LiteLLM_DailyUserSpend" s
           WHERE api_key <> '' AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.api_key)"""
    )
    row = await cur.fetchone()
    assert row is not None
    assert row[0] is not None, "the seed has unmapped keys"
    return Picks(
        heavy_user=users[0],
        second_user=users[1],
        second_user_alias=next(a for u, a, _ in keys if u == users[1]),
        third_user_key=next(h for u, _, h in keys if u == users[2]),
        unmapped_key=row[0],
    )


IDENTITY = {"user": "userId", "model": "modelId", "provider": "provider"}
SQL_KEY = {"user": "user_id", "model": "model", "provider": "provider"}


def day_start(day: dt.date | None) -> str | None:
    return None if day is None else f"{day.isoformat()}T00:00:00.000Z"


async def expected_rows(
    oracle: Oracle, dimension: str, start: dt.date, end: dt.date, f: Filters
) -> dict[str, tuple[Sums, dict[str, Any]]]:
    """Each breakdown row the SQL expects, by its identity: (its sums, its fields other than the metric numbers)."""
    groups = await oracle.group(start, end, f, SQL_KEY[dimension])
    out: dict[str, tuple[Sums, dict[str, Any]]] = {}
    if dimension == "user":
        users = await oracle.users()
        models = await oracle.group(start, end, f, "user_id", "model")
        keys = await oracle.group(start, end, f, "user_id", "api_key")
        for (user_id,), s in groups.items():
            identity = users.get(user_id, {"userId": user_id, "username": user_id, "email": "", "role": "user"})
            row_models = sorted((m, ms) for (u, m), ms in models.items() if u == user_id and ms.requests > 0)
            row_keys = sorted((k, ks) for (u, k), ks in keys.items() if u == user_id and ks.requests > 0)
            extra = {
                **identity,
                "models": [(m, ms.provider) for m, ms in row_models],
                "model_sums": [ms for _, ms in row_models],
                "apiKeys": [(k, ks.alias or k, day_start(ks.last)) for k, ks in row_keys],
                "key_sums": [ks for _, ks in row_keys],
                "lastActive": day_start(s.last),
            }
            out[identity["userId"]] = (s, extra)
    elif dimension == "model":
        for (name,), s in groups.items():
            out[name] = (s, {"modelId": name, "modelName": name, "provider": s.provider, "users": s.active_users})
    else:
        for (name,), s in groups.items():
            out[name] = (s, {"provider": name, "models": s.models, "users": s.active_users})
    return out


def assert_row(dimension: str, row: dict[str, Any], s: Sums, extra: dict[str, Any]) -> None:
    where = row[IDENTITY[dimension]]
    metrics = row["metrics"]
    assert_metrics(metrics, s, where)
    if dimension == "user":
        assert {k: row[k] for k in ("userId", "username", "email", "role")} == {
            k: extra[k] for k in ("userId", "username", "email", "role")
        }
        assert "successRate" not in metrics
        assert metrics["lastActive"] == extra["lastActive"], where
        assert [(m["modelId"], m["provider"]) for m in metrics["models"]] == extra["models"], where
        for model, ms in zip(metrics["models"], extra["model_sums"], strict=True):
            assert model["modelName"] == model["modelId"]
            assert_metrics(model, ms, f"{where} {model['modelId']}")
        assert [(k["keyId"], k["keyAlias"], k["lastUsed"]) for k in metrics["apiKeys"]] == extra["apiKeys"], where
        for key, ks in zip(metrics["apiKeys"], extra["key_sums"], strict=True):
            assert_metrics(key, ks, f"{where} {key['keyId']}")
    elif dimension == "model":
        assert {k: row[k] for k in ("modelId", "modelName", "provider")} == {
            k: extra[k] for k in ("modelId", "modelName", "provider")
        }
        assert metrics["users"] == extra["users"], where
    else:
        assert (metrics["models"], metrics["users"]) == (extra["models"], extra["users"]), where


def sort_value(s: Sums, extra: dict[str, Any], dimension: str, field: str) -> Any:
    name_field = {"user": "username", "model": "modelName", "provider": "providerName"}[dimension]
    if field == name_field:
        return {"user": extra.get("username"), "model": extra.get("modelName"), "provider": extra.get("provider")}[
            dimension
        ].casefold()
    return {
        "totalRequests": s.requests,
        "totalCost": round(s.spend, 6),
        "totalTokens": s.tokens,
        "promptTokens": s.prompt,
        "completionTokens": s.completion,
    }[field]


def expected_order(
    rows: dict[str, tuple[Sums, dict[str, Any]]], dimension: str, sort_by: str, descending: bool
) -> list[str]:
    """Ordered by the field; ties keep the identity order (a stable sort, either direction)."""
    ordered = sorted(rows)
    ordered.sort(key=lambda ident: sort_value(*rows[ident], dimension, sort_by), reverse=descending)
    return ordered


def sql_requests(dsn: str, days: DateRange) -> int:
    """Requests over `days` in LiteLLM's table, summed by PostgreSQL (a one-number oracle)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            'SELECT coalesce(sum(api_requests), 0) FROM "LiteLLM_DailyUserSpend" WHERE date BETWEEN %s AND %s',
            (days.start.isoformat(), days.end.isoformat()),
        ).fetchone()
    assert row is not None
    return int(row[0])
