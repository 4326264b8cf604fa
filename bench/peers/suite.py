"""The peers part of a bench run: every peer on every workload, on one dataset, and the figures of each.

Order, per peer: the stampede (its caches are empty: the project's tiers are purged for every day the workloads
read first, the seed plan's table starts empty, the Redis prefix is new), then the dashboard replay with one day's
source rows changed and invalidated midway. Then the new ranges and filters, the peers interleaved request by
request. A real extra row is written into the dataset's LiteLLM table for the changed day and deleted again in a
`finally` (the project's cache of that day is invalidated afterwards, so the dataset is left as it was).
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from redis.asyncio import Redis

from litemaas_cache.dates import DateRange

from ..dataset import Dataset
from ..measure import Samples
from . import nocache, project, seedplan
from .compute import Document, Request, fingerprint, same
from .peer import Peer, PeerConfig
from .pgstats import PgCounters, snapshot
from .runner import PEERS, Run, delete_keys, redis_usage, run_workers
from .workloads import Values, dashboard_trace, dataset_values, new_requests, stampede_request

STAMPEDE_REQUESTS = 50
PROJECT = "this project (library)"
NO_CACHE = ("no cache, a query per day (LiteMaaS)", "no cache, one SQL pass")
BASELINE = NO_CACHE[0]  # what LiteMaaS admins have today: the ratios are against it


@dataclass(frozen=True)
class Plan:
    replay_minutes: float  # simulated admin traffic of the dashboard replay
    no_cache_requests: int  # the no-cache peers answer the trace's first requests only (seconds each)
    new_requests: int


QUICK_PLAN = Plan(replay_minutes=3, no_cache_requests=24, new_requests=8)
FULL_PLAN = Plan(replay_minutes=10, no_cache_requests=40, new_requests=16)


class ChangedDay:
    """One extra LiteLLM row on a day of the dataset, written midway through a replay and always deleted after."""

    def __init__(self, dsn: str, day: dt.date, values: Values, run_id: str) -> None:
        self.dsn = dsn
        self.day = day
        self.row_id = f"bench-peers-{run_id}"
        self._values = values

    async def write(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(
                b"""INSERT INTO "LiteLLM_DailyUserSpend" (id, user_id, date, api_key, model, model_group,
                        custom_llm_provider, endpoint, prompt_tokens, completion_tokens, spend, api_requests,
                        successful_requests, failed_requests)
                    VALUES (%s, 'bench-peers', %s, %s, %s, %s, NULL, 'bench-peers',
                            40000, 20000, 12.5, 500, 480, 20)""",
                (
                    self.row_id,
                    self.day.isoformat(),
                    self._values.keys[0],
                    self._values.models[0],
                    self._values.models[0],
                ),
            )

    async def delete(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(b'DELETE FROM "LiteLLM_DailyUserSpend" WHERE id = %s', (self.row_id,))

    async def delete_leftovers(self) -> list[dt.date]:
        """Delete the extra rows of an earlier run that was killed before its `finally`; returns their days."""
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cur = await conn.execute(
                b"""DELETE FROM "LiteLLM_DailyUserSpend" WHERE id LIKE 'bench-peers-%%' AND endpoint = 'bench-peers'
                    RETURNING date"""
            )
            return sorted({dt.date.fromisoformat(str(row[0])) for row in await cur.fetchall()})


class Truth:
    """The right answer of a request with the changed day's extra row in place: the one SQL pass, computed once per
    request (every replay writes the same row, so the answers hold for every peer)."""

    def __init__(self, peer: nocache.NoCache) -> None:
        self._peer = peer
        self._documents: dict[str, Document] = {}

    async def of(self, request: Request) -> Document:
        identity = request.identity()
        if identity not in self._documents:
            self._documents[identity] = await self._peer.compute(request)
        return self._documents[identity]

    async def wrong(self, requests: list[Request], run: Run) -> int:
        """How many answers given after the invalidation differ from the truth."""
        wrong = 0
        for index, fp in run.answers.items():
            truth = await self.of(requests[index])
            if fp != fingerprint(truth) and not same(run.documents[fp], truth):
                wrong += 1
        return wrong


def _slug(name: str) -> str:
    return "".join(c for c in name.split(" (")[0].replace(" ", "-") if c.isalnum() or c == "-")[:20]


def _latency(samples: list[float]) -> dict[str, Any]:
    s = Samples(list(samples))
    return s.as_dict()


def _pg(pg: PgCounters, requests: int) -> dict[str, Any]:
    return {
        "calls": pg.calls,
        "rows": pg.rows,
        "blocks": pg.blocks,
        "tuplesRead": pg.tuples_read,
        "callsPerRequest": pg.calls / requests if requests else None,
        "tuplesReadPerRequest": pg.tuples_read / requests if requests else None,
        "rowsPerRequest": pg.rows / requests if requests else None,
        "blocksPerRequest": pg.blocks / requests if requests else None,
    }


def _workload(run: Run) -> dict[str, Any]:
    n = len(run.samples)
    return {
        "requests": n,
        "seconds": round(run.seconds, 1),
        "latency": _latency([s.ms for s in run.samples]),
        "hitRate": sum(s.hit for s in run.samples) / n if n else None,
        "computations": run.computations,
        "pg": _pg(run.pg, n),
        "series": [[round(s.started, 3), round(s.ms, 2), int(s.hit)] for s in run.samples],
    }


@asynccontextmanager
async def _peer(name: str, config: PeerConfig) -> AsyncIterator[Peer]:
    async with PEERS[name](config) as peer:
        yield peer


async def run_peers(admin_dsn: str, dataset: Dataset, redis_url: str, plan: Plan, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    today = dataset.last_full_day
    first_day = dataset.end - dt.timedelta(days=dataset.params.days - 1)
    database = dataset.params.database_name
    values = await dataset_values(dataset.dsn, rng)
    trace = dashboard_trace(today, values, plan.replay_minutes, rng)
    fresh = new_requests(today, first_day, values, plan.new_requests, rng)
    stampede = [stampede_request(today)] * STAMPEDE_REQUESTS
    run_id = uuid.uuid4().hex[:8]
    schema = f"bench_seedplan_{run_id}"
    changed = ChangedDay(dataset.dsn, today - dt.timedelta(days=2), values, run_id)
    configs = {
        name: PeerConfig(dataset.dsn, redis_url, f"bench:peers:{run_id}:{_slug(name)}:", schema) for name in PEERS
    }
    redis = Redis.from_url(redis_url)
    results: dict[str, dict[str, Any]] = {name: {} for name in PEERS}
    for day in await changed.delete_leftovers():
        print(f"[peers {dataset.name}] deleted an extra row a killed run left on {day}", flush=True)
        async with project.open_peer(configs[PROJECT]) as cleaner:
            await cleaner.invalidate(day)
    await seedplan.create_schema(dataset.dsn, schema)
    try:
        async with AsyncExitStack() as stack:
            truth = Truth(await stack.enter_async_context(nocache.open_one_pass(configs[NO_CACHE[1]])))
            for name in PEERS:
                config = configs[name]
                if name == PROJECT:
                    async with project.open_peer(config) as cold:
                        await cold.forget(DateRange(today - dt.timedelta(days=365), today))
                print(f"[peers {dataset.name}] {name}: stampede of {STAMPEDE_REQUESTS} ...", flush=True)
                run = await run_workers(name, config, stampede, concurrent=True, admin_dsn=admin_dsn, database=database)
                results[name]["stampede"] = _workload(run)
                requests = trace[: plan.no_cache_requests] if name in NO_CACHE else trace
                print(f"[peers {dataset.name}] {name}: replay of {len(requests)} requests ...", flush=True)
                async with _peer(name, config) as invalidator:

                    async def midway(invalidator: Peer = invalidator, name: str = name) -> None:
                        await changed.write()
                        started = time.perf_counter()
                        await invalidator.invalidate(changed.day)
                        results[name]["invalidationMs"] = round((time.perf_counter() - started) * 1000, 1)

                    try:
                        run = await run_workers(
                            name,
                            config,
                            requests,
                            concurrent=False,
                            admin_dsn=admin_dsn,
                            database=database,
                            midway=midway,
                        )
                        replay = _workload(run)
                        replay["invalidatedAt"] = run.invalidated_at
                        replay["answersAfterInvalidation"] = len(run.answers)
                        replay["wrongAfterInvalidation"] = await truth.wrong(requests, run)
                        replay["redisKeys"], replay["redisBytes"] = await redis_usage(redis, config.prefix)
                        results[name]["replay"] = replay
                    finally:
                        await changed.delete()
                        async with project.open_peer(configs[PROJECT]) as cleaner:
                            await cleaner.invalidate(changed.day)
            print(f"[peers {dataset.name}] new ranges and filters, peers interleaved ...", flush=True)
            results_new = await _new_ranges(stack, configs, fresh, admin_dsn, database)
            for name, figures in results_new.items():
                results[name]["newRanges"] = figures
    finally:
        await changed.delete()
        for config in configs.values():
            await delete_keys(redis, config.prefix)
        await redis.aclose()
        await seedplan.drop_schema(dataset.dsn, schema)
    return {
        "dataset": dataset.name,
        "today": today.isoformat(),
        "changedDay": changed.day.isoformat(),
        "plan": {
            "replayMinutes": plan.replay_minutes,
            "noCacheRequests": plan.no_cache_requests,
            "traceRequests": len(trace),
            "newRequests": len(fresh),
            "stampede": STAMPEDE_REQUESTS,
        },
        "baseline": BASELINE,
        "trace": [r.label for r in trace],
        "peers": results,
    }


async def _new_ranges(
    stack: AsyncExitStack, configs: dict[str, PeerConfig], requests: list[Request], admin_dsn: str, database: str
) -> dict[str, dict[str, Any]]:
    """Each request asked of every peer in turn (the order rotating), one at a time in this process."""
    peers = {name: await stack.enter_async_context(_peer(name, config)) for name, config in configs.items()}
    figures: dict[str, dict[str, Any]] = {n: {"ms": [], "hits": 0, "pg": PgCounters()} for n in peers}
    names = list(peers)
    for i, request in enumerate(requests):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            before = await snapshot(admin_dsn, database)
            started = time.perf_counter()
            reply = await peers[name].answer(request)
            figures[name]["ms"].append((time.perf_counter() - started) * 1000)
            figures[name]["pg"] = figures[name]["pg"] + (await snapshot(admin_dsn, database)).since(before)
            figures[name]["hits"] += int(reply.hit)
    return {
        name: {
            "requests": len(f["ms"]),
            "latency": _latency(f["ms"]),
            "hitRate": f["hits"] / len(f["ms"]) if f["ms"] else None,
            "pg": _pg(f["pg"], len(f["ms"])),
        }
        for name, f in figures.items()
    }
