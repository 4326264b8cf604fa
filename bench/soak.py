"""`python -m bench.soak [--minutes N]` (`make bench`: 3 minutes, `make bench-full`: 30): a compressed soak.

The real `litemaas-cache api` and `litemaas-cache operator` processes run against dataset M (read only), a scratch
cache database (created, then dropped) and a private redis-server, with the operator reconciling resources on a
private Kubernetes control plane (scripts/cluster.sh with LITEMAAS_CLUSTER_DIR, /tmp/soak-cluster by default).
Readers load the API and the operator warms and invalidates (bench/soak_load.py); halfway through, Redis is killed
and started again on the same port. Every second: the resident set of the API and of the operator (VmRSS, with
their children) and Redis's used_memory. After a warm-up (the first WARMUP_FRACTION of the run), a least-squares
line through each series gives its slope, reported as MiB per 24 h. Prints a markdown summary; writes it, and the
raw samples as JSON, under bench/results/, and a plot (bench/plots.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import platform
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import psycopg
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tests.support.redis_server import RedisServer, free_port

from litemaas_cache.db import Database
from litemaas_cache.redis_tier.keys import KeySpace
from litemaas_cache.schema import migrate
from litemaas_cache.seed import LITEMAAS_DDL
from litemaas_cache.source import SOURCE_TABLE

from . import plots
from .dataset import MEDIUM, Dataset, ensure_dataset, user_ids
from .scenarios import stop_child
from .soak_load import HTTP_TIMEOUT, Kube, OperatorLoad, OperatorOutcomes, Readers, Tally, Workload

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
CLI = Path(sys.executable).with_name("litemaas-cache")  # the console script beside this interpreter
WARMUP_FRACTION = 0.10
SAMPLE_SECONDS = 1.0
MIB = 1024 * 1024
SERIES = ("api", "operator", "redis")
LITEMAAS_TABLES = (
    ("users", "id, username, email, created_at"),
    ("api_keys", "id, user_id, key_hash, litellm_key_alias, name, created_at"),
)


# -- the scratch cache database ---------------------------------------------------------------------------------


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def scratch_cache(admin_dsn: str, dataset: Dataset) -> AsyncIterator[str]:
    """A new database for the cache tables, with a copy of LiteMaaS's users and api_keys (the cache reads them for
    labels and key owners); M's LiteLLM table is only read, through LITELLM_DATABASE_URL. Dropped afterwards."""
    name = f"litemaas_soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    dsn = _with_database(admin_dsn, name)
    try:
        with psycopg.connect(dataset.dsn) as source, psycopg.connect(dsn) as target:
            target.execute(LITEMAAS_DDL.encode())
            for table, columns in LITEMAAS_TABLES:
                read = f"COPY (SELECT {columns} FROM {table}) TO STDOUT (FORMAT binary)".encode()
                write = f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)".encode()
                with source.cursor().copy(read) as rows, target.cursor().copy(write) as into:
                    for data in rows:
                        into.write(data)
            target.commit()
        async with Database(dsn) as db:
            await migrate(db)
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


# -- the processes under test and their surroundings ------------------------------------------------------------


def control_plane() -> tuple[Path, Path]:
    """kubectl and the admin kubeconfig of the soak's Kubernetes control plane (started if it is not running)."""
    env = {**os.environ, "LITEMAAS_CLUSTER_DIR": os.environ.get("LITEMAAS_CLUSTER_DIR", "/tmp/soak-cluster")}
    script = str(ROOT / "scripts" / "cluster.sh")
    up = subprocess.run(["bash", script, "up"], env=env, capture_output=True, text=True, timeout=2400, check=False)
    if up.returncode != 0 or not up.stdout.strip():
        raise SystemExit(f"scripts/cluster.sh up failed ({up.returncode}):\n{up.stderr[-3000:]}")
    exports = subprocess.run(["bash", script, "env"], env=env, capture_output=True, text=True, check=True).stdout
    for line in exports.splitlines():
        word = shlex.split(line)[-1]
        if word.startswith("PATH="):
            return Path(word.removeprefix("PATH=").split(os.pathsep)[0]) / "kubectl", Path(up.stdout.split()[-1])
    raise SystemExit(f"scripts/cluster.sh env printed no PATH:\n{exports}")


@contextlib.asynccontextmanager
async def child(log: Path, env: dict[str, str], *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`litemaas-cache ARGS` as a child process, its output in `log`; SIGTERM at the end (SIGKILL after 30 s)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(str(CLI), *args, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            await stop_child(proc, 30)


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        while time.monotonic() < deadline and proc.returncode is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the HTTP API did not become healthy within {seconds:.0f}s (see {log})")


# -- sampling -----------------------------------------------------------------------------------------------------


def tree_rss_bytes(pid: int) -> int:
    """VmRSS of a process and of all its descendants (0 for one that is gone)."""
    total, pending = 0, [pid]
    while pending:
        proc = Path(f"/proc/{pending.pop()}")
        try:
            status = (proc / "status").read_text()
            for task in (proc / "task").iterdir():
                pending.extend(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024  # kB
    return total


async def redis_memory(redis: Redis) -> tuple[int | None, int | None]:
    """INFO memory's used_memory and the number of keys, or Nones while Redis does not answer (the restart)."""
    try:
        info = await redis.info("memory")
        keys = await redis.dbsize()
    except (RedisError, OSError):
        return None, None
    return int(info["used_memory"]), int(keys)


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the load started
    api: int  # bytes
    operator: int
    redis: int | None
    redis_keys: int | None

    def value(self, series: str) -> int | None:
        return {"api": self.api, "operator": self.operator, "redis": self.redis}[series]


async def sample_every_second(
    redis_url: str, pids: dict[str, int], started: float, stop: asyncio.Event, samples: list[Sample]
) -> None:
    redis = Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        tick = started
        while not stop.is_set():
            seconds = round(time.monotonic() - started, 2)
            api, operator = tree_rss_bytes(pids["api"]), tree_rss_bytes(pids["operator"])
            samples.append(Sample(seconds, api, operator, *await redis_memory(redis)))
            tick += SAMPLE_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, tick - time.monotonic()))
    finally:
        await redis.aclose()


# -- fitting ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """A least-squares line through one series over [start, end) seconds, in MiB against hours."""

    series: str
    window: str
    start: float
    end: float
    points: int
    slope_mib_per_hour: float
    slope_error: float  # its standard error (optimistic: successive samples are not independent)
    intercept_mib: float  # at 0 s

    @property
    def mib_per_day(self) -> float:
        return self.slope_mib_per_hour * 24

    def at(self, seconds: float) -> float:
        return self.intercept_mib + self.slope_mib_per_hour * seconds / 3600

    def as_dict(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "window": self.window,
            "startSeconds": round(self.start, 1),
            "endSeconds": round(self.end, 1),
            "points": self.points,
            "mibPerHour": round(self.slope_mib_per_hour, 3),
            "mibPer24h": round(self.mib_per_day, 1),
            "mibPer24hStandardError": round(self.slope_error * 24, 1),
            "interceptMiB": round(self.intercept_mib, 2),
        }


def fit(samples: Sequence[Sample], series: str, window: str, start: float, end: float) -> Fit | None:
    points = [(s.seconds, v) for s in samples if start <= s.seconds < end and (v := s.value(series)) is not None]
    if len(points) < 3:
        return None
    hours, mib = [t / 3600 for t, _ in points], [v / MIB for _, v in points]
    slope, intercept = statistics.linear_regression(hours, mib)
    residuals = sum((y - intercept - slope * x) ** 2 for x, y in zip(hours, mib, strict=True))
    spread = sum((x - statistics.fmean(hours)) ** 2 for x in hours)
    error = math.sqrt(residuals / (len(points) - 2) / spread) if spread else math.nan
    return Fit(series, window, start, end, len(points), slope, error, intercept)


def fits(samples: Sequence[Sample], seconds: float, restart: tuple[float, float]) -> list[Fit]:
    """API and operator: from the end of the warm-up to the end, and over the second half alone (a leak keeps its
    slope there; a cache filling up to its bound flattens). Redis: before the restart, and after it (from the
    restart plus another warm-up), since the restart empties it."""
    warmup = seconds * WARMUP_FRACTION
    windows = [
        *(
            (series, window, start, seconds)
            for series in ("api", "operator")
            for window, start in (("after warm-up", warmup), ("second half", seconds / 2))
        ),
        ("redis", "before restart", warmup, restart[0]),
        ("redis", "after restart", restart[1] + warmup, seconds),
    ]
    found = (fit(samples, *window) for window in windows)
    return [f for f in found if f is not None]


# -- the run ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    dataset: Dataset
    cache_dsn: str
    redis: RedisServer
    kube: Kube
    kubeconfig: Path


async def workload(dataset: Dataset) -> Workload:
    """The readers' material: M's users, and the models with usage on its last complete day (read only)."""
    async with await psycopg.AsyncConnection.connect(dataset.dsn) as conn:
        cur = await conn.execute(
            f"SELECT DISTINCT model FROM {SOURCE_TABLE} WHERE date = %s AND model IS NOT NULL".encode(),
            (dataset.last_full_day.isoformat(),),
        )
        models = sorted(str(row[0]) for row in await cur.fetchall())
    first = dataset.end - dt.timedelta(days=dataset.params.days - 1)
    return Workload(dataset.last_full_day, first, await user_ids(dataset), models)


async def restart_redis(redis: RedisServer, at: float, started: float, down_seconds: float) -> tuple[float, float]:
    """Kill Redis `at` seconds into the load, start it again on the same port `down_seconds` later; returns when
    (seconds into the load) it went down and came back."""
    await asyncio.sleep(max(0.0, started + at - time.monotonic()))
    went_down = time.monotonic() - started
    await asyncio.to_thread(redis.stop)
    await asyncio.sleep(down_seconds)
    await asyncio.to_thread(redis.start)
    return went_down, time.monotonic() - started


async def load_and_sample(setup: Setup, args: argparse.Namespace, logs: dict[str, Path]) -> dict[str, Any]:
    seconds = args.minutes * 60
    token = secrets.token_hex(24)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = {
        **os.environ,
        **dict(pair.split("=", 1) for pair in args.child_env),
        "DATABASE_URL": setup.cache_dsn,
        "LITELLM_DATABASE_URL": setup.dataset.dsn,
        "REDIS_URL": setup.redis.url,
        "REDIS_KEY_PREFIX": f"soak:{uuid.uuid4().hex[:8]}:",
    }
    # The readers are one trusted service (API_TOKEN); LiteMaaS's per-caller limits (10 and 5 a minute) would
    # throttle them to nothing, so they are lifted: the soak loads the serving path, not the limiter.
    api_env = {
        **common,
        "API_TOKEN": token,
        "ADMIN_ANALYTICS_RATE_LIMIT": "1000000",
        "ADMIN_EXPORT_RATE_LIMIT": "1000000",
    }
    operator_env = {**common, "KUBECONFIG": str(setup.kubeconfig), "METRICS_PORT": "0"}
    if args.diagnose:
        api_env, operator_env = diagnosing(api_env, logs["api"]), diagnosing(operator_env, logs["operator"])
    load = await workload(setup.dataset)
    tally, outcomes = Tally(), OperatorOutcomes()
    operator_args = ("operator", "--standalone", "--namespace", setup.kube.namespace)
    async with (
        child(logs["api"], api_env, "api", "--host", "127.0.0.1", "--port", str(port)) as api,
        child(
            logs["operator"], operator_env, *operator_args, "--liveness", f"http://127.0.0.1:{free_port()}/healthz"
        ) as operator,
    ):
        await wait_healthy(url, api, logs["api"])
        operator_load = OperatorLoad(setup.kube, load, outcomes, args.seed)
        await operator_load.start()
        stop = asyncio.Event()
        samples: list[Sample] = []
        started = time.monotonic()
        print(f"soak: {args.minutes:g} minutes of load from {dt.datetime.now(dt.UTC):%H:%M:%S} UTC ...", flush=True)
        tasks = [
            asyncio.create_task(Readers(url, token, load, tally, args.seed).run(args.clients, stop)),
            asyncio.create_task(operator_load.run(stop)),
            asyncio.create_task(
                sample_every_second(setup.redis.url, {"api": api.pid, "operator": operator.pid}, started, stop, samples)
            ),
        ]
        restart = asyncio.create_task(restart_redis(setup.redis, seconds / 2, started, args.redis_down_seconds))
        if args.diagnose:
            pids = (api.pid, operator.pid)
            tasks.append(asyncio.create_task(signal_dumps(pids, seconds * WARMUP_FRACTION, args.diagnose_every, stop)))
        while time.monotonic() - started < seconds:
            await asyncio.sleep(1)
            if api.returncode is not None or operator.returncode is not None:
                raise RuntimeError(
                    f"a process under test exited (api {api.returncode}, operator {operator.returncode})"
                )
            if (done := [t for t in tasks if t.done()]) and done[0].exception():
                raise RuntimeError("a soak task failed") from done[0].exception()
        stop.set()
        restarted = await restart
        await asyncio.gather(*tasks)
        async with Database(setup.cache_dsn) as db:
            keys = KeySpace.of_database(common["REDIS_KEY_PREFIX"], await db.identity())
        census = await redis_census(setup.redis.url, (keys.prefix, common["REDIS_KEY_PREFIX"]))
    return {
        "seconds": seconds,
        "samples": samples,
        "restart": restarted,
        "tally": tally,
        "operator": outcomes,
        "redisCensus": census,
        "users": len(load.users),
        "models": len(load.models),
    }


DIAGNOSE_HOOK = Path(__file__).resolve().parent / "soak_diagnose"


def diagnosing(env: dict[str, str], log: Path) -> dict[str, str]:
    """A child's environment with bench/soak_diagnose/sitecustomize.py loaded: it dumps its memory on SIGUSR1."""
    path = os.pathsep.join(p for p in (str(DIAGNOSE_HOOK), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "SOAK_DIAGNOSE_FILE": str(log.with_suffix(".diagnose.jsonl"))}


async def signal_dumps(pids: Sequence[int], first: float, every: float, stop: asyncio.Event) -> None:
    """SIGUSR1 to each diagnosed child at `first` seconds, then every `every` seconds, and once more at the end."""
    last = await _stopped_within(stop, first)
    while True:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        if last:
            await asyncio.sleep(15)  # a dump takes seconds; the children are stopped after this returns
            return
        last = await _stopped_within(stop, every)


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def key_kind(key: str, prefixes: Sequence[str]) -> str:
    """What a key of the cache is, from its name (redis_tier/keys.py): a day, a result entry by kind and encoding..."""
    prefix = max((p for p in prefixes if key.startswith(p)), key=len, default="")
    parts = key.removeprefix(prefix).split(":")
    if parts[0] == "res" and len(parts) > 1:
        return f"res:{parts[1]}:{parts[-1] if parts[-1] in ('zstd', 'gzip') else 'meta'}"
    return parts[0]


async def redis_census(url: str, prefixes: Sequence[str]) -> list[dict[str, Any]]:
    """Every key at the end of the load, by kind: how many, their memory (MEMORY USAGE), how many never expire."""
    redis = Redis.from_url(url)
    kinds: dict[str, dict[str, Any]] = {}
    try:
        keys = [k.decode() async for k in redis.scan_iter(count=1000)]
        for i in range(0, len(keys), 500):
            batch = keys[i : i + 500]
            async with redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.memory_usage(key, samples=0)
                    pipe.ttl(key)
                found = await pipe.execute()
            for key, usage, ttl in zip(batch, found[::2], found[1::2], strict=True):
                kind = kinds.setdefault(key_kind(key, prefixes), {"keys": 0, "bytes": 0, "noExpiry": 0, "maxTtl": 0})
                kind["keys"] += 1
                kind["bytes"] += usage or 0
                kind["noExpiry"] += ttl == -1
                kind["maxTtl"] = max(kind["maxTtl"], ttl)
    finally:
        await redis.aclose()
    return [{"kind": k, **v, "MiB": round(v["bytes"] / MIB, 1)} for k, v in sorted(kinds.items())]


@contextlib.asynccontextmanager
async def surroundings(admin_dsn: str) -> AsyncIterator[Setup]:
    """Dataset M, the scratch cache database, a private redis-server, the control plane with the CRDs, and a fresh
    namespace; all but M and the control plane removed afterwards."""
    dataset = await ensure_dataset(admin_dsn, MEDIUM, "M")
    kubectl, kubeconfig = await asyncio.to_thread(control_plane)
    kube = Kube(kubectl, kubeconfig, f"soak-{uuid.uuid4().hex[:6]}")
    await kube.run("apply", "-f", str(ROOT / "crds"))
    for crd in ("cachewarmpolicies.cache.litemaas.io", "cacheinvalidations.cache.litemaas.io"):
        await kube.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    await kube.run("create", "namespace", kube.namespace)
    workdir = Path(tempfile.mkdtemp(prefix="soak-redis-"))
    try:
        with RedisServer(workdir) as redis:
            async with scratch_cache(admin_dsn, dataset) as cache_dsn:
                yield Setup(dataset, cache_dsn, redis, kube, kubeconfig)
    finally:
        with contextlib.suppress(RuntimeError):
            await kube.run("delete", "namespace", kube.namespace, "--wait=false")


# -- the report ---------------------------------------------------------------------------------------------------


def _commit() -> dict[str, Any]:
    """The commit measured, and whether the package had uncommitted changes."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(
        ["git", "-C", str(ROOT), "--no-optional-locks", "status", "--porcelain", "--", "operator"],
        capture_output=True,
        text=True,
    )
    return {"commit": head.stdout.strip() or "?", "dirty": bool(status.stdout.strip())}


def summarise(run: dict[str, Any], minutes: float, engine: dict[str, Any], load_before: float) -> dict[str, Any]:
    samples: list[Sample] = run["samples"]
    found = fits(samples, run["seconds"], run["restart"])
    series = {}
    for name in SERIES:
        values = [v for s in samples if (v := s.value(name)) is not None]
        series[name] = {
            "startMiB": round(values[0] / MIB, 1),
            "endMiB": round(values[-1] / MIB, 1),
            "peakMiB": round(max(values) / MIB, 1),
        }
    tally: Tally = run["tally"]
    outcomes: OperatorOutcomes = run["operator"]
    return {
        "mode": "soak",
        "generatedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "engine": engine,
        "machine": {
            "loadAverageBefore": load_before,
            "cpus": os.cpu_count(),
            "loadAverage": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "minutes": minutes,
        "warmupSeconds": round(run["seconds"] * WARMUP_FRACTION, 1),
        "redisRestart": {"downAt": round(run["restart"][0], 1), "upAt": round(run["restart"][1], 1)},
        "series": series,
        "fits": [f.as_dict() for f in found],
        "requests": {
            "total": tally.requests,
            "perSecond": round(tally.requests / run["seconds"], 1),
            "errors": tally.errors,
            "serverErrors": tally.server_errors,
            "throttled": tally.throttled,
            "byKind": tally.as_dict(),
            "examples": tally.examples,
        },
        "operator": outcomes.as_dict(),
        "operatorFailures": outcomes.failed,
        "redisKeysBeforeRestart": next(
            (x.redis_keys for x in reversed(samples) if x.seconds < run["restart"][0] and x.redis_keys is not None),
            None,
        ),
        "redisKeysAtEnd": sum(kind["keys"] for kind in run["redisCensus"]),
        "redisCensus": run["redisCensus"],
        "dataset": {"users": run["users"], "models": run["models"]},
        "samples": {
            "columns": ["seconds", "apiRssMiB", "operatorRssMiB", "redisUsedMemoryMiB", "redisKeys"],
            "rows": [
                [
                    s.seconds,
                    round(s.api / MIB, 2),
                    round(s.operator / MIB, 2),
                    None if s.redis is None else round(s.redis / MIB, 3),
                    s.redis_keys,
                ]
                for s in samples
            ],
        },
    }


LABELS = {"api": "HTTP API RSS", "operator": "operator RSS", "redis": "Redis used_memory"}


def markdown(result: dict[str, Any], plot: Path) -> str:
    req, op = result["requests"], result["operator"]
    kinds = ", ".join(
        f"{kind} {sum(v['statuses'].values())}" for kind, v in sorted(result["requests"]["byKind"].items())
    )
    restart, engine, machine = result["redisRestart"], result["engine"], result["machine"]
    lines = [
        f"## Soak: {result['minutes']:g} minutes ({result['generatedAt']}, commit {engine['commit']}"
        f"{' + uncommitted changes' if engine['dirty'] else ''}, "
        f"load average {machine['loadAverageBefore']} before, {machine['loadAverage']} after)",
        "",
        f"- Reads: {req['total']:,} requests ({req['perSecond']}/s): {kinds}.",
        f"- Errors: {req['errors']} (5xx: {req['serverErrors']}; 429: {req['throttled']}, not counted as errors).",
        f"- Operator: invalidations {op['invalidations'] or '{}'} (median {op['invalidationSecondsMedian']} s, "
        f"max {op['invalidationSecondsMax']} s); {op['policyChanges']} policy changes; warm runs seen "
        f"{op['warmRunsSeen']}; kubectl failures {len(op['kubectlFailures'])}.",
        f"- Redis killed at {restart['downAt']:.0f} s, back at {restart['upAt']:.0f} s; "
        f"Redis keys: {result['redisKeysBeforeRestart']} just before it, {result['redisKeysAtEnd']} at the end.",
        f"- Slopes: least squares over 1 s samples after a warm-up of {result['warmupSeconds']:.0f} s "
        f"(the first {WARMUP_FRACTION:.0%}); Redis after the restart from its end plus the same warm-up.",
        "",
        "| series | start MiB | end MiB | peak MiB | fit 1: MiB/24 h ± s.e. | fit 2: MiB/24 h ± s.e. |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for series in SERIES:
        s = result["series"][series]
        cells = [
            f"{f['mibPer24h']:+.1f} ± {f['mibPer24hStandardError']:.1f} "
            f"({f['window']}, {f['startSeconds']:.0f}-{f['endSeconds']:.0f} s)"
            for f in result["fits"]
            if f["series"] == series
        ]
        lines.append(f"| {LABELS[series]} | {s['startMiB']} | {s['endMiB']} | {s['peakMiB']} | {' | '.join(cells)} |")
    lines += [
        "",
        "Redis at the end, by kind of key: "
        + "; ".join(
            f"{k['kind']} {k['keys']} keys {k['MiB']} MiB"
            + (f" ({k['noExpiry']} without TTL)" if k["noExpiry"] else f" (TTL at most {k['maxTtl']} s)")
            for k in result["redisCensus"]
        ),
    ]
    if req["examples"]:
        lines += ["", "Unexpected answers (first few):", *(f"- `{e}`" for e in req["examples"])]
    lines += ["", f"Plot: {plot}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of load (default 3; bench-full: 30)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent readers of the HTTP API (default 4)")
    parser.add_argument("--redis-down-seconds", type=float, default=5.0, help="how long Redis stays down midway")
    parser.add_argument("--seed", type=int, default=12, help="random seed of the load")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="tracemalloc and object counts in both children, dumped every --diagnose-every s (slows them down)",
    )
    parser.add_argument("--diagnose-every", type=float, default=240.0, help="seconds between two dumps (240)")
    parser.add_argument(
        "--child-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of both processes under test (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    parser.add_argument("--plot", type=Path, default=None, help="default: bench/results/soak-<time>.png")
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/soak-<time>.json (+ .md)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1:
        parser.error("--minutes must be positive and --clients at least 1")
    if bad := [pair for pair in args.child_env if "=" not in pair or pair.startswith("=")]:
        parser.error(f"--child-env takes NAME=VALUE, not {bad[0]!r}")
    return args


async def run(args: argparse.Namespace, logs: dict[str, Path]) -> dict[str, Any]:
    admin_dsn = os.environ.get("DATABASE_URL")
    if not admin_dsn:
        raise SystemExit("DATABASE_URL is not set: run `make bench` (it starts PostgreSQL and Redis)")
    engine, load_before = _commit(), round(os.getloadavg()[0], 2)  # before the run: what was measured
    async with surroundings(admin_dsn) as setup:
        measured = await load_and_sample(setup, args, logs)
    return summarise(measured, args.minutes, engine, load_before)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    output: Path = args.output or RESULTS_DIR / f"soak-{stamp}.json"
    logs = {name: output.with_name(f"{output.stem}-{name}.log") for name in ("api", "operator")}
    result = asyncio.run(run(args, logs))
    plot: Path = args.plot or output.with_suffix(".png")
    plots.soak_memory(result, plot)
    summary = markdown(result, plot)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    output.with_suffix(".md").write_text(summary + "\n")
    print(f"\n{summary}\n\nwrote {output} and {output.with_suffix('.md')}")
    failures = result["requests"]["serverErrors"] + result["operatorFailures"]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
