"""Synthetic LiteLLM usage: LiteLLM's table and LiteMaaS's mapping tables, filled by COPY, deterministic per seed."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .dates import utc_now
from .db import Database
from .source import SOURCE_TABLE

LITELLM_DDL = f"""
CREATE TABLE IF NOT EXISTS {SOURCE_TABLE} (
    id TEXT PRIMARY KEY,
    user_id TEXT,
    date TEXT NOT NULL,
    api_key TEXT NOT NULL,
    model TEXT,
    model_group TEXT,
    custom_llm_provider TEXT,
    mcp_namespaced_tool_name TEXT,
    endpoint TEXT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    api_requests BIGINT NOT NULL DEFAULT 0,
    successful_requests BIGINT NOT NULL DEFAULT 0,
    failed_requests BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
-- A table this seeder created before LiteLLM's MCP and endpoint columns: upgrade it (its old unique key would
-- reject the rows that differ only by endpoint, and its NOT NULL model the MCP rows).
ALTER TABLE {SOURCE_TABLE} ADD COLUMN IF NOT EXISTS mcp_namespaced_tool_name TEXT;
ALTER TABLE {SOURCE_TABLE} ADD COLUMN IF NOT EXISTS endpoint TEXT;
ALTER TABLE {SOURCE_TABLE} ALTER COLUMN model DROP NOT NULL;
DROP INDEX IF EXISTS "LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_llm_pr";
CREATE UNIQUE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_ll_key"
    ON {SOURCE_TABLE} (user_id, date, api_key, model, custom_llm_provider, mcp_namespaced_tool_name, endpoint);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_date_idx" ON {SOURCE_TABLE} (date);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_user_id_idx" ON {SOURCE_TABLE} (user_id);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_api_key_idx" ON {SOURCE_TABLE} (api_key);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_model_idx" ON {SOURCE_TABLE} (model);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_mcp_namespaced_tool_name_idx"
    ON {SOURCE_TABLE} (mcp_namespaced_tool_name);
"""

LITEMAAS_DDL = """
CREATE TABLE IF NOT EXISTS users (
    id UUID PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    email TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api_keys (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users(id),
    key_hash TEXT NOT NULL UNIQUE,
    litellm_key_alias TEXT,
    name TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

# (model, custom_llm_provider: None or "" when LiteLLM left it empty, $ per 1k prompt tokens, $ per 1k completion)
MODEL_CATALOG: tuple[tuple[str, str | None, float, float], ...] = (
    ("gpt-4o", "openai", 0.0025, 0.01),
    ("llama-3.1-8b-instruct", None, 0.0001, 0.0002),
    ("claude-3-5-sonnet", "anthropic", 0.003, 0.015),
    ("granite-3.1-8b-instruct", "watsonx", 0.0002, 0.0002),
    ("mistral-small", "", 0.0002, 0.0006),
    ("gpt-4o-mini", "openai", 0.00015, 0.0006),
    ("gemini-1.5-pro", None, 0.00125, 0.005),
    ("claude-3-haiku", "", 0.00025, 0.00125),
    ("qwen2.5-72b-instruct", "hosted_vllm", 0.0004, 0.0004),
    ("deepseek-r1", "deepseek", 0.00055, 0.00219),
)

_COPY_COLUMNS = (
    "id, user_id, date, api_key, model, model_group, custom_llm_provider, mcp_namespaced_tool_name, endpoint, "
    "prompt_tokens, completion_tokens, "
    "cache_read_input_tokens, cache_creation_input_tokens, spend, api_requests, successful_requests, "
    "failed_requests, created_at, updated_at"
)


CHAT_ENDPOINT = "/v1/chat/completions"
RESPONSES_ENDPOINT = "/v1/responses"
MCP_ENDPOINT = "/mcp"
MCP_TOOLS = ("github/search_issues", "jira/create_issue")
# Every ODD_ROW_EVERY-th key also uses a second endpoint, and each day carries a few rows of LiteLLM's odd kinds.
ODD_ROW_EVERY = 25


@dataclass(frozen=True)
class SeedReport:
    users: int
    api_keys: int
    unmapped_keys: int
    rows_generated: int
    rows_inserted: int
    start: dt.date
    end: dt.date


@dataclass(frozen=True)
class _Key:
    key_hash: str
    user_id: str | None  # None: a key LiteMaaS does not know (counted as "unmapped")
    weight: float
    models: tuple[int, ...]


def _models(count: int) -> list[tuple[str, str | None, float, float]]:
    catalog = list(MODEL_CATALOG)
    for i in range(len(catalog), count):
        catalog.append((f"custom-model-{i}", "hosted_vllm", 0.0003, 0.0006))
    return catalog[:count]


def _usage(
    rng: random.Random,
    requests: int,
    prompt_price: float,
    completion_price: float,
    endpoint: str,
    tool: str | None = None,
) -> tuple[object, ...]:
    """The columns from mcp_namespaced_tool_name to failed_requests of one row with `requests` requests."""
    failed = sum(1 for _ in range(min(requests, 20)) if rng.random() < 0.03)
    prompt = requests * rng.randint(200, 1500)
    completion = requests * rng.randint(50, 600)
    spend = prompt / 1000 * prompt_price + completion / 1000 * completion_price
    return (tool, endpoint, prompt, completion, prompt // 10, 0, round(spend, 6), requests, requests - failed, failed)


def _odd_rows(rng: random.Random, id_prefix: str, date: str, keys: list[_Key]) -> list[tuple[object, ...]]:
    """Rows of the kinds LiteLLM's current table holds besides plain chat usage: MCP tool calls (NULL model and
    provider), usage under an empty api_key, and a model whose provider is the empty string."""
    mapped = [k for k in keys if k.user_id is not None]
    rows: list[tuple[object, ...]] = []
    for i, tool in enumerate(MCP_TOOLS):
        key = mapped[rng.randrange(len(mapped))]
        usage = _usage(rng, rng.randint(1, 40), 0.0, 0.0, MCP_ENDPOINT, tool)
        rows.append((f"{id_prefix}-mcp-{i}", key.user_id, date, key.key_hash, None, None, None, *usage))
    usage = _usage(rng, rng.randint(1, 10), 0.0005, 0.0015, CHAT_ENDPOINT)
    rows.append((f"{id_prefix}-nokey", "default_user_id", date, "", "gpt-4o-mini", "gpt-4o-mini", "openai", *usage))
    key = mapped[rng.randrange(len(mapped))]
    usage = _usage(rng, rng.randint(1, 10), 0.0002, 0.0002, CHAT_ENDPOINT)
    rows.append((f"{id_prefix}-noprovider", key.user_id, date, key.key_hash, "local/phi-4", "phi-4", "", *usage))
    return rows


def _uuid(seed: int, kind: str, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"litemaas-seed:{seed}:{kind}:{index}"))


async def create_source_tables(db: Database) -> None:
    """LiteLLM's usage table (with its unique key and indexes) and LiteMaaS's users/api_keys, when missing."""
    async with db.source_connection() as conn:
        await conn.execute(LITELLM_DDL.encode())
        await conn.commit()
    async with db.cache_connection() as conn:
        await conn.execute(LITEMAAS_DDL.encode())
        await conn.commit()


async def seed(
    db: Database,
    *,
    days: int,
    users: int,
    models: int,
    seed_value: int,
    today: dt.date | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeedReport:
    """Generate a realistic dataset ending today (UTC); the same arguments give the same rows."""
    rng = random.Random(seed_value)
    now = utc_now()
    today = today or now.date()
    start = today - dt.timedelta(days=days - 1)
    catalog = _models(models)
    model_weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(catalog))]  # popular and rare models

    user_rows, key_rows, keys = [], [], []
    for u in range(users):
        user_id = _uuid(seed_value, "user", u)
        user_rows.append((user_id, f"user{u:04d}", f"user{u:04d}@example.com"))
        heavy = 8.0 if u < max(1, users // 20) else 1.0  # a few heavy users
        for k in range(rng.randint(1, 4)):
            key_hash = hashlib.sha256(f"{seed_value}:{u}:{k}".encode()).hexdigest()
            key_rows.append(
                (_uuid(seed_value, "key", u * 10 + k), user_id, key_hash, f"user{u:04d}-key{k}", f"key {k}")
            )
            chosen = sorted(set(rng.choices(range(len(catalog)), weights=model_weights, k=rng.randint(1, 4))))
            keys.append(_Key(key_hash, user_id, heavy * rng.uniform(0.3, 1.5), tuple(chosen)))
    unmapped = max(1, users // 10)
    for k in range(unmapped):
        key_hash = hashlib.sha256(f"{seed_value}:unmapped:{k}".encode()).hexdigest()
        keys.append(_Key(key_hash, None, rng.uniform(0.2, 1.0), (rng.randrange(len(catalog)),)))

    day_fraction = (now - dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)).total_seconds() / 86400
    generated = 0
    async with db.cache_connection() as conn:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO users (id, username, email) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", user_rows
            )
            await cur.executemany(
                "INSERT INTO api_keys (id, user_id, key_hash, litellm_key_alias, name) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                key_rows,
            )
        await conn.commit()

    async with db.source_connection() as conn:
        await conn.execute(f"CREATE TEMP TABLE seed_rows (LIKE {SOURCE_TABLE}) ON COMMIT DROP")
        async with conn.cursor().copy(f"COPY seed_rows ({_COPY_COLUMNS}) FROM STDIN") as copy:
            for offset in range(days):
                day = start + dt.timedelta(days=offset)
                date = day.isoformat()
                scale = max(day_fraction, 0.05) if day == today else 1.0  # today is a partial day
                weekday = 0.4 if day.weekday() >= 5 else 1.0
                for key_index, key in enumerate(keys):
                    for m in key.models:
                        model, provider, prompt_price, completion_price = catalog[m]
                        if rng.random() > min(0.95, 0.55 * key.weight * weekday * scale + 0.05):
                            continue
                        requests = max(1, int(rng.expovariate(1 / (20 * key.weight * model_weights[m] * 3))))
                        row_id = f"seed-{seed_value}-{date}-{key_index}-{m}"
                        owner = key.user_id or "default_user_id"
                        who = (owner, date, key.key_hash, model, model, provider)
                        usage = _usage(rng, requests, prompt_price, completion_price, CHAT_ENDPOINT)
                        await copy.write_row((row_id, *who, *usage, now, now))
                        generated += 1
                        if key_index % ODD_ROW_EVERY == 0:
                            # The same key and model through a second endpoint: a row that differs only by endpoint.
                            usage = _usage(
                                rng, max(1, requests // 4), prompt_price, completion_price, RESPONSES_ENDPOINT
                            )
                            await copy.write_row((f"{row_id}-responses", *who, *usage, now, now))
                            generated += 1
                for row in _odd_rows(rng, f"seed-{seed_value}-{date}", date, keys):
                    await copy.write_row((*row, now, now))
                    generated += 1
                if progress is not None:
                    progress(offset + 1)
        cur = await conn.execute(f"INSERT INTO {SOURCE_TABLE} SELECT * FROM seed_rows ON CONFLICT DO NOTHING")
        inserted = cur.rowcount
        await conn.commit()
    return SeedReport(users, len(key_rows), unmapped, generated, inserted, start, today)
