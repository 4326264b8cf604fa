"""The requests of each workload, generated with a fixed seed from the dataset's own users, keys and models.

- dashboard replay: LiteMaaS's date presets x common filters (none, one model, one provider, a few users, one API
  key), each picked by a Zipf law over its popularity rank; arrivals are a Poisson process at ADMIN_RATE requests a
  second over the trace's simulated minutes. The trace is then replayed as fast as a peer answers (the arrival
  times only fix which requests, and in which order).
- new ranges and filters: ranges of random length and position that no preset gives, each with a filter value the
  replay never uses (or none).
- stampede: one request no other workload asks (a 2-day range 40 days back, unfiltered).

"today" is the dataset's last complete day, so no range holds the partial day of the seed.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, replace

import psycopg

from litemaas_cache.dates import PRESETS
from litemaas_cache.providers import provider_of

from .compute import Request

ADMIN_RATE = 1.0  # requests a second: a few admins with the dashboard open, each change of preset or filter
ZIPF_EXPONENT = 1.1
# By popularity: what a dashboard opens on first, then the usual choices.
PRESET_RANKS = ("last-7-days", "last-30-days", "month-to-date", "today", "previous-month", "last-90-days", "yesterday")
POOL_SIZE = 3  # values per filter kind in the replay; the others stay never asked
USERS_PER_SET = 3


@dataclass(frozen=True)
class Values:
    """Filter values drawn from the dataset, in a seeded order: the replay's first POOL_SIZE, then fresh ones."""

    models: list[str]
    providers: list[str]
    users: list[str]
    keys: list[str]


async def dataset_values(dsn: str, rng: random.Random) -> Values:
    """Models by requests (most first), providers as the project resolves them, users with keys and keys, shuffled."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            b"""SELECT coalesce(nullif(model, ''), 'unknown'), nullif(custom_llm_provider, ''), sum(api_requests)
                FROM "LiteLLM_DailyUserSpend" GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"""
        )
        pairs = await cur.fetchall()
        cur = await conn.execute(b"SELECT DISTINCT user_id::text FROM api_keys ORDER BY 1")
        users = [str(r[0]) for r in await cur.fetchall()]
        cur = await conn.execute(b"SELECT key_hash FROM api_keys WHERE key_hash IS NOT NULL ORDER BY 1")
        keys = [str(r[0]) for r in await cur.fetchall()]
    models = list(dict.fromkeys(str(m) for m, _, _ in pairs))
    providers = list(dict.fromkeys(provider_of(str(m), p) for m, p, _ in pairs))
    rng.shuffle(users)
    rng.shuffle(keys)
    return Values(models, providers, users, keys)


def _filters(values: Values) -> list[tuple[str, Request]]:
    """The replay's filters by popularity rank, as (kind, a request template with only the filter set)."""
    blank = Request(dt.date.min, dt.date.min)
    ranked: list[tuple[str, Request]] = [("none", blank)]
    for i in range(POOL_SIZE):
        users = values.users[i * USERS_PER_SET : (i + 1) * USERS_PER_SET]
        ranked += [
            ("model", replace(blank, model_ids=(values.models[i],))),
            ("provider", replace(blank, provider_ids=(values.providers[i],))),
            ("users", replace(blank, user_ids=tuple(users))),
            ("key", replace(blank, api_key_ids=(values.keys[i],))),
        ]
    return ranked


def _zipf(n: int) -> list[float]:
    return [1 / (rank**ZIPF_EXPONENT) for rank in range(1, n + 1)]


def dashboard_trace(today: dt.date, values: Values, minutes: float, rng: random.Random) -> list[Request]:
    """The requests of `minutes` of simulated admin traffic, in arrival order."""
    filters = _filters(values)
    count, clock = 0, rng.expovariate(ADMIN_RATE)
    while clock < minutes * 60:
        count += 1
        clock += rng.expovariate(ADMIN_RATE)
    presets = rng.choices(PRESET_RANKS, weights=_zipf(len(PRESET_RANKS)), k=count)
    chosen = rng.choices(filters, weights=_zipf(len(filters)), k=count)
    trace = []
    for preset, (kind, template) in zip(presets, chosen, strict=True):
        days = PRESETS[preset](today)
        trace.append(replace(template, start=days.start, end=days.end, label=f"{preset} / {kind}"))
    return trace


def new_requests(today: dt.date, first_day: dt.date, values: Values, n: int, rng: random.Random) -> list[Request]:
    """`n` requests no preset and no replay filter gives: random ranges, unfiltered or with a fresh user, API key or
    model in turn."""
    fresh_users = values.users[POOL_SIZE * USERS_PER_SET :]
    fresh_models = values.models[POOL_SIZE:]
    taken = {(r.start, r.end) for r in (PRESETS[p](today) for p in PRESET_RANKS)}
    requests: list[Request] = []
    while len(requests) < n:
        length = rng.randint(2, 45)
        end = today - dt.timedelta(days=rng.randint(1, (today - first_day).days - length))
        start = end - dt.timedelta(days=length - 1)
        if (start, end) in taken:
            continue
        taken.add((start, end))
        i = len(requests)
        request = Request(start, end, label=f"{length}-day new range")
        kind = i % 4
        if kind == 1:
            request = replace(request, user_ids=(fresh_users[i],))
        elif kind == 2:
            request = replace(request, api_key_ids=(values.keys[POOL_SIZE + i],))
        elif kind == 3:
            request = replace(request, model_ids=(fresh_models[i % len(fresh_models)],))
        requests.append(request)
    return requests


def stampede_request(today: dt.date) -> Request:
    """Asked by no other workload: the 2 days ending 40 days before `today` (short, so that the peers computing it
    50 times over finish in a minute or two on 2 cores; what is counted is how many times each computes it)."""
    end = today - dt.timedelta(days=40)
    return Request(end - dt.timedelta(days=1), end, label="2-day range, 40 days back")
