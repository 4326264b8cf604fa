"""A paced analytics read load from separate processes (each with its own CacheManager, like application replicas),
checking every answer against a document known beforehand; the chaos tests break Redis under it."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import time
from dataclasses import dataclass
from typing import Any, Literal

from litemaas_cache.analytics import Page
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import Answer, CacheManager
from litemaas_cache.settings import load_settings

ReadKind = Literal["analytics", "user", "model", "provider"]


@dataclass(frozen=True)
class Read:
    """One query of the mix: the analytics document, or the first page of a breakdown."""

    kind: ReadKind
    start: str
    end: str
    filters: dict[str, list[str]]

    def query(self) -> AnalyticsQuery:
        return build_query(self.start, self.end, max_days=90, max_ids=1000, **self.filters)

    async def run(self, manager: CacheManager) -> Answer:
        if self.kind == "analytics":
            return await manager.analytics(self.query())
        return await manager.breakdown(self.kind, self.query(), Page(1, 20))


@dataclass(frozen=True)
class LoadPlan:
    """What each worker does: `reads` reads cycling through `mix`, the n-th not before start + n / `rate`."""

    settings: dict[str, Any]  # load_settings overrides: the database, the Redis URL and prefix, timeouts
    mix: list[Read]
    expected: list[Any]  # the value each read of the mix must answer
    reads: int
    rate: float


@dataclass(frozen=True)
class ReadRecord:
    finished: float  # time.monotonic() (one clock for every process of the machine)
    tier: str
    result_hit: bool  # answered by a Redis result entry (no computation)
    verdict: str  # "ok", "wrong" or "error: <exception type>"


@dataclass
class Workers:
    """The worker processes, and what starts them together and collects their reads."""

    processes: list[multiprocessing.process.BaseProcess]
    ready: multiprocessing.synchronize.Barrier  # every worker and the parent: all managers are open
    go: multiprocessing.synchronize.Event  # set by the parent once it has written start_at
    start_at: Any  # a multiprocessing.Value("d"): the time.monotonic() of the first read
    results: multiprocessing.Queue[tuple[list[ReadRecord], dict[str, int]]]

    def start(self, delay: float = 0.2) -> float:
        """Wait until every worker's manager is open, then let them all begin reading `delay` seconds from now."""
        self.ready.wait(timeout=120)
        self.start_at.value = time.monotonic() + delay
        self.go.set()
        return float(self.start_at.value)

    def collect(self, timeout: float = 120) -> list[tuple[list[ReadRecord], dict[str, int]]]:
        collected = [self.results.get(timeout=timeout) for _ in self.processes]
        for process in self.processes:
            process.join(timeout=30)
        return collected

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)


def run_worker(
    plan: LoadPlan,
    ready: multiprocessing.synchronize.Barrier,
    go: multiprocessing.synchronize.Event,
    start_at: Any,
    results: multiprocessing.Queue[tuple[list[ReadRecord], dict[str, int]]],
) -> None:
    """The body of one worker process (see Workers): open a manager, wait for the start, read, and send back every
    read's record and the manager's own counters."""
    results.put(asyncio.run(_read(plan, ready, go, start_at)))


async def _read(
    plan: LoadPlan, ready: multiprocessing.synchronize.Barrier, go: multiprocessing.synchronize.Event, start_at: Any
) -> tuple[list[ReadRecord], dict[str, int]]:
    records: list[ReadRecord] = []
    async with CacheManager.open(load_settings(**plan.settings)) as manager:
        await asyncio.to_thread(ready.wait, 120)
        await asyncio.to_thread(go.wait, 120)
        start = float(start_at.value)
        for n in range(plan.reads):
            delay = start + n / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            read = n % len(plan.mix)
            hits = manager.counters.local.get("result:redis:hit", 0)
            try:
                answer = await plan.mix[read].run(manager)
            except Exception as exc:  # counted, never raised: the figure is how many there were
                records.append(ReadRecord(time.monotonic(), "none", False, f"error: {type(exc).__name__}: {exc}"))
                continue
            verdict = "ok" if answer.value == plan.expected[read] else "wrong"
            hit = manager.counters.local.get("result:redis:hit", 0) > hits
            records.append(ReadRecord(time.monotonic(), answer.tier, hit, verdict))
        return records, dict(manager.counters.local)


def spawn_workers(plan: LoadPlan, count: int) -> Workers:
    """Start `count` workers (spawned: fresh interpreters, nothing inherited from pytest); see Workers.start."""
    context = multiprocessing.get_context("spawn")
    workers = Workers([], context.Barrier(count + 1), context.Event(), context.Value("d", 0.0), context.Queue())
    for _ in range(count):
        shared = (workers.ready, workers.go, workers.start_at, workers.results)
        process = context.Process(target=run_worker, args=(plan, *shared), daemon=True)
        process.start()
        workers.processes.append(process)
    return workers
