"""Runs one peer on a workload in worker processes sharing Redis, and measures it.

Each worker process opens its own peer (as each LiteMaaS backend replica would) and waits for the start signal, so
opening costs are not measured. Replay: the workers take the trace's requests in turn (request i goes to worker
i mod WORKERS) and answer them one after another, as fast as the peer answers. Stampede: every worker fires its share
of the identical requests at once. Around each run the parent takes PostgreSQL's counters of the bench database
(pgstats.py); redis_usage gives the MEMORY USAGE of every key under a peer's prefix.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any

from redis.asyncio import Redis

from . import cashews_peer, nocache, project, seedplan
from .compute import Document, Request, fingerprint
from .peer import Peer, PeerConfig, PeerOpener
from .pgstats import PgCounters, snapshot

WORKERS = 4
SPAWN = mp.get_context("spawn")

PEERS: dict[str, PeerOpener] = {
    "no cache, a query per day (LiteMaaS)": nocache.open_per_day,
    "no cache, one SQL pass": nocache.open_one_pass,
    "seed plan (Redis exact key + PG per-day table)": seedplan.open_peer,
    "cashews @cache + tag": cashews_peer.open_peer,
    "this project (library)": project.open_peer,
}


@dataclass(frozen=True)
class Sample:
    index: int  # position in the workload
    started: float  # seconds since the start signal
    ms: float
    hit: bool
    after_invalidation: bool  # started after the invalidation returned


@dataclass
class WorkerResult:
    samples: list[Sample] = field(default_factory=list)
    computations: int = 0
    answers: dict[int, str] = field(default_factory=dict)  # index -> fingerprint, answers after the invalidation
    documents: dict[str, Document] = field(default_factory=dict)  # fingerprint -> one document with it
    error: str | None = None


@dataclass(frozen=True)
class Signals:
    go: Event
    invalidated: Event
    done: Any  # a shared counter of answered requests (multiprocessing.Value)
    t0: Any  # the start signal's time (multiprocessing.Value, time.time())


async def _serve(
    peer: Peer, jobs: list[tuple[int, Request]], signals: Signals, concurrent: bool, out: WorkerResult
) -> None:
    async def one(index: int, request: Request) -> None:
        after = signals.invalidated.is_set()
        started = time.time()
        reply = await peer.answer(request)
        ms = (time.time() - started) * 1000
        out.samples.append(Sample(index, started - signals.t0.value, ms, reply.hit, after))
        if after:
            fp = fingerprint(reply.document)
            out.answers[index] = fp
            out.documents.setdefault(fp, reply.document)
        with signals.done.get_lock():
            signals.done.value += 1

    if concurrent:
        await asyncio.gather(*(one(i, r) for i, r in jobs))
    else:
        for i, r in jobs:
            await one(i, r)


async def _work(
    name: str, config: PeerConfig, jobs: list[tuple[int, Request]], signals: Signals, concurrent: bool, ready: Event
) -> WorkerResult:
    out = WorkerResult()
    async with PEERS[name](config) as peer:
        before = peer.computations
        ready.set()
        await asyncio.to_thread(signals.go.wait)
        await _serve(peer, jobs, signals, concurrent, out)
        out.computations = peer.computations - before
    return out


def worker_main(
    name: str,
    config: PeerConfig,
    jobs: list[tuple[int, Request]],
    signals: Signals,
    concurrent: bool,
    ready: Event,
    results: Any,
) -> None:
    try:
        results.put(asyncio.run(_work(name, config, jobs, signals, concurrent, ready)))
    except Exception as exc:  # reported by the parent, which fails the run
        results.put(WorkerResult(error=f"{type(exc).__name__}: {exc}"))


def _result_of(results: Any, procs: list[Any]) -> WorkerResult:
    """The next worker's result; an error result when every worker has ended without one (a crash at start)."""
    while True:
        try:
            result: WorkerResult = results.get(timeout=1)
            return result
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                return WorkerResult(error="a worker process ended without a result (see its stderr)")


def key_patterns(prefix: str) -> list[str]:
    """Every key a peer writes: under its prefix, and cashews' tag sets, named after the tag."""
    return [f"{prefix}*", f"_tag:{prefix}*"]


async def redis_usage(redis: Redis, prefix: str) -> tuple[int, int]:
    """(keys, bytes): MEMORY USAGE summed over the peer's keys."""
    keys = total = 0
    for pattern in key_patterns(prefix):
        async for key in redis.scan_iter(match=pattern, count=1000):
            keys += 1
            total += int(await redis.memory_usage(key, samples=0) or 0)
    return keys, total


async def delete_keys(redis: Redis, prefix: str) -> None:
    for pattern in key_patterns(prefix):
        batch = [key async for key in redis.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(batch), 1000):
            await redis.delete(*batch[i : i + 1000])


@dataclass
class Run:
    """What one peer did on one workload."""

    samples: list[Sample]
    computations: int
    answers: dict[int, str]
    documents: dict[str, Document]
    pg: PgCounters
    seconds: float
    invalidated_at: float | None  # seconds from the start to the return of `midway`


async def run_workers(
    name: str,
    config: PeerConfig,
    requests: list[Request],
    *,
    concurrent: bool,
    admin_dsn: str,
    database: str,
    midway: Callable[[], Any] | None = None,
) -> Run:
    """Run `requests` on WORKERS processes; `midway` (a coroutine function) runs in the parent once half of them are
    answered, and answers started after it returned are kept for comparison with the truth."""
    results = SPAWN.Queue()
    signals = Signals(SPAWN.Event(), SPAWN.Event(), SPAWN.Value("i", 0), SPAWN.Value("d", 0.0))
    readies = [SPAWN.Event() for _ in range(WORKERS)]
    shares = [[(i, r) for i, r in enumerate(requests) if i % WORKERS == w] for w in range(WORKERS)]
    procs = [
        SPAWN.Process(target=worker_main, args=(name, config, shares[w], signals, concurrent, readies[w], results))
        for w in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    invalidated_at: float | None = None
    try:
        while not all(r.is_set() for r in readies):
            if not all(p.is_alive() for p in procs):
                break
            await asyncio.sleep(0.05)
        before = await snapshot(admin_dsn, database)
        signals.t0.value = time.time()
        signals.go.set()
        if midway is not None:
            half = len(requests) // 2
            while signals.done.value < half and any(p.is_alive() for p in procs):  # noqa: ASYNC110  # another process's counter
                await asyncio.sleep(0.05)
            await midway()
            signals.invalidated.set()
            invalidated_at = time.time() - signals.t0.value
        outs = [await asyncio.to_thread(_result_of, results, procs) for _ in range(WORKERS)]
        seconds = time.time() - signals.t0.value
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    after = await snapshot(admin_dsn, database)  # the workers have ended: their sessions reported their counts
    errors = [o.error for o in outs if o.error]
    if errors:
        raise RuntimeError(f"{name}: a worker failed: {errors[0]}")
    return Run(
        samples=sorted((s for o in outs for s in o.samples), key=lambda s: s.index),
        computations=sum(o.computations for o in outs),
        answers={i: fp for o in outs for i, fp in o.answers.items()},
        documents={fp: d for o in outs for fp, d in o.documents.items()},
        pg=after.since(before),
        seconds=seconds,
        invalidated_at=invalidated_at,
    )
