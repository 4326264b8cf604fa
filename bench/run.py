"""`python -m bench.run [--full]` (`make bench`, `make bench-full`): every ratio of the cache, measured in one run.

Each path (cold, PostgreSQL tier, Redis day tier with a new filter, Redis result hit, concurrent HTTP requests) is
reported as its p50 over the p50 of one SQL pass that computes the same document's ingredients (bench/baseline.py),
measured in the same run on the same range. Quick: dataset M (91 days, 9000 users, 25 models), 30- and 90-day views.
Full: more runs, plus dataset L (365 days) for a 365-day view. Needs DATABASE_URL (a role that may create databases)
and REDIS_URL, as the make targets set them; prints a table and writes it with every sample's summary as JSON.
Then the peers' comparison (bench/peers/suite.py: no cache, the seed plan's design, cashews and this project on the
same workloads; M, and L too with --full) prints its tables and draws its plots into docs/benchmarks/.
`--part paths` or `--part peers` runs one half.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis

from . import plots, report
from .dataset import LARGE, MEDIUM, Dataset, ensure_dataset
from .measure import ratio
from .peers.suite import FULL_PLAN, QUICK_PLAN, run_peers
from .scenarios import (
    FULL,
    QUICK,
    ROOT,
    Bench,
    Runs,
    concurrent_requests,
    export_memory,
    memory_probe,
    range_view,
    warm_http_reads,
    year_view,
)

RESULTS_DIR = ROOT / "bench" / "results"
PLOTS_DIR = ROOT / "docs" / "benchmarks"


def _engine() -> dict[str, Any]:
    """The commit measured, and whether the package had uncommitted changes (read-only git, no index refresh)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "?",
        "dirty": bool(git("--no-optional-locks", "status", "--porcelain", "--", "operator")),
    }


async def _versions(dataset: Dataset, redis_url: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(dataset.dsn) as conn:
        cur = await conn.execute(b"SHOW server_version")
        row = await cur.fetchone()
    redis = Redis.from_url(redis_url)
    try:
        info = await redis.info("server")
    finally:
        await redis.aclose()
    return {
        "postgres": str(row[0]).split()[0] if row else "?",
        "redis": str(info.get("redis_version", "?")),
        "python": platform.python_version(),
    }


async def _medium(dataset: Dataset, redis_url: str, runs: Runs, rng: random.Random) -> dict[str, Any]:
    """M: the 30- and 90-day views, then the memory probe (it invalidates), then the HTTP API (own Redis prefix)."""
    async with Bench.open(dataset, redis_url, runs, rng) as (bench, manager, pg_only, sql):
        views = [await range_view(bench, manager, pg_only, sql, bench.last_days(n)) for n in (30, 90)]
        memory = await memory_probe(bench, bench.last_days(90))
        concurrency = await concurrent_requests(bench, bench.last_days(30))
        warm_http = await warm_http_reads(bench, manager, bench.last_days(30))
        export = await export_memory(bench, bench.last_days(365))
    # The concurrent requests are a path of the 30-day view: same column, same SQL pass to compare with.
    thirty = views[0]
    thirty["paths"]["apiConcurrent"] = concurrency["answers"]
    thirty["overSqlP50"]["apiConcurrent"] = ratio(concurrency["answers"]["p50Ms"], thirty["paths"]["sqlPass"]["p50Ms"])
    return {"views": views, "memory": [memory], "concurrency": concurrency, "warmHttp": warm_http, "export": export}


async def _large(dataset: Dataset, redis_url: str, runs: Runs, rng: random.Random) -> dict[str, Any]:
    async with Bench.open(dataset, redis_url, runs, rng) as (bench, _, pg_only, sql):
        view, memory = await year_view(bench, pg_only, sql, bench.last_days(365))
    return {"views": [view], "memory": [memory]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn = os.environ.get("DATABASE_URL")
    if not admin_dsn:
        raise SystemExit("DATABASE_URL is not set: run `make bench` (it starts PostgreSQL and Redis)")
    redis_url = args.redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    runs = FULL if args.full else QUICK
    rng = random.Random(args.seed)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    load = round(os.getloadavg()[0], 2)
    # Both datasets exist before anything is measured: a seed never runs during a measurement.
    datasets = [await ensure_dataset(admin_dsn, MEDIUM, "M")]
    if args.full and (args.part != "peers" or "L" in args.peers_on.split(",")):
        datasets.append(await ensure_dataset(admin_dsn, LARGE, "L"))
    results: dict[str, Any] = {"views": [], "memory": []}
    if args.part in ("all", "paths"):
        results = await _medium(datasets[0], redis_url, runs, rng)
        if args.full:
            large = await _large(datasets[1], redis_url, runs, rng)
            results["views"] += large["views"]
            results["memory"] += large["memory"]
    if args.part in ("all", "peers"):
        plan = FULL_PLAN if args.full else QUICK_PLAN
        on = [ds for ds in datasets if ds.name in args.peers_on.split(",")]
        results["peers"] = [await run_peers(admin_dsn, ds, redis_url, plan, args.seed) for ds in on]
    return {
        "mode": "full" if args.full else "quick",
        "generatedAt": started,
        "engine": _engine(),
        "machine": {"cpus": os.cpu_count(), "loadAverage": load},
        "versions": await _versions(datasets[0], redis_url),
        "datasets": {ds.name: ds.as_dict() for ds in datasets},
        "runs": {
            "cold": runs.cold,
            "postgresTier": runs.postgres,
            "redisDayTier": runs.redis_day,
            "warm": runs.warm,
            "year": runs.year,
        },
        **results,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="more runs, and dataset L with a 365-day view")
    parser.add_argument("--seed", type=int, default=8, help="random seed of the user filters")
    parser.add_argument("--redis-url", default=None, help="default: $REDIS_URL")
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/<mode>-<time>.json")
    parser.add_argument(
        "--part",
        choices=("all", "paths", "peers"),
        default="all",
        help="the cache's own paths, the peers' comparison (bench/peers/), or both",
    )
    parser.add_argument(
        "--peers-on", default=None, help="datasets of the peers' comparison (default: M; with --full: M,L)"
    )
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """A terminated run still runs its `finally` blocks (the peers' extra source row is deleted)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    args.peers_on = args.peers_on or ("M,L" if args.full else "M")
    results = asyncio.run(run(args))
    tables = [report.render(results) if results["views"] else "\n".join(report.header(results))]
    for peers in results.get("peers", []):
        tables.append(report.render_peers(peers))
        name = peers["dataset"]
        plots.peers_latency_cdf(peers["peers"], PLOTS_DIR / f"peers-latency-cdf-{name}.png")
        plots.peers_hit_rate(peers["peers"], PLOTS_DIR / f"peers-hit-rate-{name}.png")
    table = "\n\n".join(tables)
    stamp = results["generatedAt"].replace(":", "").replace("-", "").removesuffix("+0000")
    output = args.output or RESULTS_DIR / f"{results['mode']}-{stamp}Z.json"
    report.write(results, table, output)
    print(f"\n{table}\n\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
