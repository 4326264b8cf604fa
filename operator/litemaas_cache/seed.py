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
    model TEXT NOT NULL,
    model_group TEXT,
    custom_llm_provider TEXT,
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
CREATE UNIQUE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_llm_provider_key"
    ON {SOURCE_TABLE} (user_id, date, api_key, model, custom_llm_provider);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_date_idx" ON {SOURCE_TABLE} (date);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_user_id_idx" ON {SOURCE_TABLE} (user_id);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_api_key_idx" ON {SOURCE_TABLE} (api_key);
CREATE INDEX IF NOT EXISTS "LiteLLM_DailyUserSpend_model_idx" ON {SOURCE_TABLE} (model);
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

# (model, custom_llm_provider or None when LiteLLM left it empty, $ per 1k prompt tokens, $ per 1k completion)
MODEL_CATALOG: tuple[tuple[str, str | None, float, float], ...] = (
    ("gpt-4o", "openai", 0.0025, 0.01),
    ("llama-3.1-8b-instruct", None, 0.0001, 0.0002),
    ("claude-3-5-sonnet", "anthropic", 0.003, 0.015),
    ("granite-3.1-8b-instruct", "watsonx", 0.0002, 0.0002),
    ("mistral-small", None, 0.0002, 0.0006),
    ("gpt-4o-mini", "openai", 0.00015, 0.0006),
    ("gemini-1.5-pro", None, 0.00125, 0.005),
    ("claude-3-haiku", None, 0.00025, 0.00125),
    ("qwen2.5-72b-instruct", "hosted_vllm", 0.0004, 0.0004),
    ("deepseek-r1", "deepseek", 0.00055, 0.00219),
)

_COPY_COLUMNS = (
    "id, user_id, date, api_key, model, model_group, custom_llm_provider, prompt_tokens, completion_tokens, "
    "cache_read_input_tokens, cache_creation_input_tokens, spend, api_requests, successful_requests, "
    "failed_requests, created_at, updated_at"
)


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
                        failed = sum(1 for _ in range(min(requests, 20)) if rng.random() < 0.03)
                        prompt = requests * rng.randint(200, 1500)
                        completion = requests * rng.randint(50, 600)
                        spend = prompt / 1000 * prompt_price + completion / 1000 * completion_price
                        await copy.write_row(
                            (
                                f"seed-{seed_value}-{date}-{key_index}-{m}",
                                key.user_id or "default_user_id",
                                date,
                                key.key_hash,
                                model,
                                model,
                                provider,
                                prompt,
                                completion,
                                prompt // 10,
                                0,
                                round(spend, 6),
                                requests,
                                requests - failed,
                                failed,
                                now,
                                now,
                            )
                        )
                        generated += 1
                if progress is not None:
                    progress(offset + 1)
        cur = await conn.execute(f"INSERT INTO {SOURCE_TABLE} SELECT * FROM seed_rows ON CONFLICT DO NOTHING")
        inserted = cur.rowcount
        await conn.commit()
    return SeedReport(users, len(key_rows), unmapped, generated, inserted, start, today)
