"""The measured paths of one dataset, each next to the SQL pass of the same range, all in one run.

A view is a range ending on the dataset's last complete day. For each view: the SQL pass (interleaved with the cold
reads), a cold read (every tier invalidated for the range and its previous period), the PostgreSQL tier (a manager
with Redis disabled), the Redis day tier (a user filter never asked before, so no result entry exists), a Redis result
hit and a raw GET + decode of the same key (interleaved). Then: peak RSS of a cold query in a fresh process, and six
concurrent new-filter requests against the HTTP API while /healthz is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import random
import secrets
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from litemaas_cache.codec import ENCODINGS, Body, decode_entry
from litemaas_cache.dates import DateRange
from litemaas_cache.filters import AnalyticsQuery, UsageFilters, build_query
from litemaas_cache.manager import Answer, CacheManager
from litemaas_cache.redis_tier.keys import KeySpace
from litemaas_cache.settings import Settings, load_settings

from .baseline import PassResult, SqlPass
from .dataset import Dataset, user_ids
from .measure import Samples, ratio, timed

ROOT = Path(__file__).resolve().parent.parent
API_LOG = ROOT / "bench" / "results" / "api.log"  # the HTTP API child's stderr, kept for a failed run
MAX_RANGE_DAYS = 366  # the 365-day view of L
CONCURRENT_REQUESTS = 6
HEALTH_POLL_SECONDS = 0.02
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=600)


@dataclass(frozen=True)
class Runs:
    cold: int  # cold reads, and as many SQL passes, per view
    postgres: int  # PostgreSQL-tier reads per view
    redis_day: int  # new-filter reads from the Redis day tier per view
    warm: int  # Redis result hits, and as many raw GET + decode, per view
    year: int  # SQL passes and PostgreSQL-tier reads of the 365-day view of L


QUICK = Runs(cold=3, postgres=5, redis_day=5, warm=50, year=0)
FULL = Runs(cold=5, postgres=10, redis_day=10, warm=300, year=3)


class Bench:
    """What the scenarios of one dataset share: its managers, a raw Redis client, the SQL session, the user pool."""

    def __init__(self, dataset: Dataset, redis_url: str, runs: Runs) -> None:
        self.dataset = dataset
        self.redis_url = redis_url
        self.runs = runs
        self.redis = Redis.from_url(redis_url)
        self.prefixes: list[str] = []
        self._users: list[str] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, dataset: Dataset, redis_url: str, runs: Runs, rng: random.Random
    ) -> AsyncIterator[tuple[Bench, CacheManager, CacheManager, SqlPass]]:
        """The bench, a manager with both tiers, one with Redis disabled, and the SQL session; Redis keys removed."""
        bench = cls(dataset, redis_url, runs)
        bench._users = await user_ids(dataset)
        rng.shuffle(bench._users)
        sql = await SqlPass.connect(dataset.dsn)
        try:
            prefix = bench.new_prefix()
            # Neither holds decoded days or result bodies in memory: each path measures its own tier (range_view
            # measures held days, warm_http_reads held results).
            alone = {"local_frames_mib": 0, "local_results_mib": 0}
            async with (
                CacheManager.open(bench.settings(prefix, **alone)) as manager,
                CacheManager.open(bench.settings(prefix, redis_enabled=False, **alone)) as pg_only,
            ):
                yield bench, manager, pg_only, sql
        finally:
            await sql.close()
            await bench._delete_keys()
            await bench.redis.aclose()

    def new_prefix(self) -> str:
        prefix = f"bench:{uuid.uuid4().hex[:8]}:"
        self.prefixes.append(prefix)
        return prefix

    def env(self, prefix: str) -> dict[str, str]:
        """The environment of a child process (the memory probe, the HTTP API) on this dataset."""
        return {
            **os.environ,
            "DATABASE_URL": self.dataset.dsn,
            "LITELLM_DATABASE_URL": self.dataset.dsn,
            "REDIS_URL": self.redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "ANALYTICS_MAX_RANGE_DAYS": str(MAX_RANGE_DAYS),
        }

    def settings(self, prefix: str, **overrides: object) -> Settings:
        return load_settings(
            database_url=self.dataset.dsn,
            litellm_database_url=self.dataset.dsn,
            redis_url=self.redis_url,
            redis_key_prefix=prefix,
            max_range_days=MAX_RANGE_DAYS,
            **overrides,
        )

    def last_days(self, n: int) -> DateRange:
        end = self.dataset.last_full_day
        return DateRange(end - dt.timedelta(days=n - 1), end)

    def say(self, days: DateRange, what: str) -> None:
        print(f"[{self.dataset.name} {days.days}-day {days}] {what} ...", flush=True)

    def fresh_user(self) -> str:
        """A random user id no query of this run has filtered on yet."""
        return self._users.pop()

    async def _delete_keys(self) -> None:
        for prefix in self.prefixes:
            keys = [key async for key in self.redis.scan_iter(match=f"{prefix}*", count=1000)]
            for i in range(0, len(keys), 1000):
                await self.redis.delete(*keys[i : i + 1000])


def query(days: DateRange, user: str | None = None) -> AnalyticsQuery:
    return build_query(days.start, days.end, user_ids=[user] if user else None, max_days=MAX_RANGE_DAYS, max_ids=1000)


def covered(days: DateRange) -> DateRange:
    """What an analytics query reads: its range and the previous period of equal length."""
    return DateRange(days.previous().start, days.end)


def expect(answer: Answer, tier: str, path: str) -> None:
    if answer.tier != tier:
        raise RuntimeError(f"{path}: answered by the {answer.tier} tier, expected {tier}; the measurement is invalid")


def result_decoder() -> Callable[[bytes], Any]:
    """How the raw read decodes a Redis result entry (its zstd copy): the codec's own functions. The only code of
    the bench that knows the entry encoding."""
    return lambda data: Body(encoded={"zstd": decode_entry(data, "zstd")[1]}).value()


async def raw_get_decode(redis: Redis, decode: Callable[[bytes], Any], key: str) -> Any:
    """The floor of a Redis result hit: a bare GET of the result key and a decode of the entry."""
    data = await redis.get(key)
    if not isinstance(data, bytes):
        raise RuntimeError(f"{key} is not in Redis")
    return decode(data)


async def interleaved(runs: int, *steps: Callable[[], Awaitable[object]]) -> None:
    """Run the steps `runs` times, reversing their order every other time so neither always goes first."""
    for i in range(runs):
        for step in steps if i % 2 == 0 else steps[::-1]:
            await step()


def view(
    dataset: Dataset,
    days: DateRange,
    paths: dict[str, Samples],
    sql: PassResult,
    document: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """One column of the report: every path's samples, its p50 over the SQL pass's p50, and what both computed."""
    return {
        "label": f"{days.days}-day",
        "dataset": dataset.name,
        "range": str(days),
        "paths": {name: samples.as_dict() for name, samples in paths.items()},
        "overSqlP50": {
            name: ratio(samples.p50, paths["sqlPass"].p50) for name, samples in paths.items() if name != "sqlPass"
        },
        "sqlRows": sql.rows,
        "sqlRequests": sql.current_requests,
        "documentRequests": document["totalRequests"],
        **extra,
    }


async def range_view(
    bench: Bench, manager: CacheManager, pg_only: CacheManager, sql: SqlPass, days: DateRange
) -> dict[str, Any]:
    """Every path of one range, measured side by side."""
    runs = bench.runs
    paths = {name: Samples() for name in ("sqlPass", "cold", "postgresTier", "redisDayTier", "memoryDayTier")}
    unfiltered = query(days)
    bench.say(days, "cold reads and SQL passes")
    sql_result = PassResult(0, 0, 0)

    async def cold() -> None:
        report = await manager.invalidate(covered(days))  # every tier: the next read computes from the source
        if not report.complete:
            raise RuntimeError(f"invalidation incomplete: {report.as_dict()}")
        expect(await timed(paths["cold"], lambda: manager.analytics(unfiltered)), "source", "cold")

    async def sql_pass() -> None:
        nonlocal sql_result
        sql_result = await timed(paths["sqlPass"], lambda: sql.run(days))

    await interleaved(runs.cold, cold, sql_pass)

    await postgres_reads(bench, pg_only, days, paths["postgresTier"], runs.postgres)

    bench.say(days, "Redis day tier, new user filters")
    for _ in range(runs.redis_day):
        filtered = query(days, bench.fresh_user())
        key = manager.keys.result_entry(
            manager.keys.result("analytics", filtered.range, filtered.filters.fingerprint()), "zstd"
        )
        if await bench.redis.exists(key):
            raise RuntimeError(f"{key} exists: the filter was asked before")
        answer = await timed(paths["redisDayTier"], functools.partial(manager.analytics, filtered))
        expect(answer, "redis", "redisDayTier")

    bench.say(days, "days held in memory, new user filters")
    # CACHE_LOCAL_FRAMES_MIB at its default
    async with CacheManager.open(bench.settings(manager.settings.redis_key_prefix)) as holding:
        await holding.analytics(query(days, bench.fresh_user()))  # reads the days from Redis, and holds them
        for _ in range(runs.redis_day):
            answer = await timed(
                paths["memoryDayTier"], functools.partial(holding.analytics, query(days, bench.fresh_user()))
            )
            expect(answer, "memory", "memoryDayTier")

    bench.say(days, "Redis result hits against raw GET + decode")
    document = (await manager.analytics(unfiltered)).value  # stores the result again if its TTL ran out
    key = manager.keys.result_entry(
        manager.keys.result("analytics", unfiltered.range, unfiltered.filters.fingerprint()), "zstd"
    )
    hit, raw = Samples(), Samples()
    decode = result_decoder()

    async def decoded_hit() -> Answer:
        answer = await manager.analytics(unfiltered)
        answer.value  # noqa: B018  # an in-process caller reads the document: the hit decodes it
        return answer

    async def hit_read() -> None:
        expect(await timed(hit, decoded_hit), "redis", "redisResultHit")

    async def raw_read() -> None:
        await timed(raw, lambda: raw_get_decode(bench.redis, decode, key))

    await interleaved(runs.warm, hit_read, raw_read)
    paths.update(redisResultHit=hit, rawGetDecode=raw)
    return view(
        bench.dataset,
        days,
        paths,
        sql_result,
        document,
        hitOverRaw=ratio(hit.p50, raw.p50),
        resultBytes=await bench.redis.strlen(key),
    )


async def postgres_reads(
    bench: Bench, pg_only: CacheManager, days: DateRange, samples: Samples, runs: int
) -> dict[str, Any]:
    """Reads with Redis disabled, once the days are cached: every read computes from PostgreSQL's day rows.

    Returns the document of the untimed first read, which refreshes anything left stale since the days were cached.
    """
    bench.say(days, "PostgreSQL tier")
    unfiltered = query(days)
    document: dict[str, Any] = (await pg_only.analytics(unfiltered)).value
    for _ in range(runs):
        expect(await timed(samples, lambda: pg_only.analytics(unfiltered)), "postgres", "postgresTier")
    return document


async def memory_probe(bench: Bench, days: DateRange) -> dict[str, Any]:
    """Peak RSS of one cold query in a fresh process that does nothing else (bench/probe.py).

    It invalidates the range and its previous period in PostgreSQL too: run it after the views that use those days.
    """
    bench.say(days, "peak RSS of a cold query in a fresh process")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.probe",
        days.start.isoformat(),
        days.end.isoformat(),
        cwd=ROOT,
        env=bench.env(bench.new_prefix()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    if result["tier"] != "source":
        raise RuntimeError(f"memory probe: answered by the {result['tier']} tier, expected source")
    return {"view": f"{days.days}-day", "dataset": bench.dataset.name, "range": str(days), **result}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ApiProcess:
    """`litemaas-cache api` running as a child: its URL, process id and Redis key prefix."""

    url: str
    pid: int
    prefix: str


@contextlib.asynccontextmanager
async def api_server(bench: Bench, token: str, **settings: str) -> AsyncIterator[ApiProcess]:
    """`litemaas-cache api` as a child process on a free loopback port, with its own key prefix (and `settings`, as
    environment variables)."""
    port = _free_port()
    prefix = bench.new_prefix()
    API_LOG.parent.mkdir(parents=True, exist_ok=True)
    log = API_LOG.open("wb")
    # The benchmark measures serving, not the per-caller limits (LiteMaaS's defaults would stop it at 10 and 5).
    unlimited = {"ADMIN_ANALYTICS_RATE_LIMIT": "1000000", "ADMIN_EXPORT_RATE_LIMIT": "1000000"}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "litemaas-cache"),
        "api",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env={**bench.env(prefix), "API_TOKEN": token, **unlimited, **settings},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield ApiProcess(f"http://127.0.0.1:{port}", proc.pid, prefix)
    finally:
        await stop_child(proc, 15)
        log.close()


async def stop_child(proc: asyncio.subprocess.Process, grace_seconds: float) -> None:
    """SIGTERM a child still running, and SIGKILL it if it has not exited within `grace_seconds`."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace_seconds)
        except TimeoutError:
            proc.kill()
            await proc.wait()


ANALYTICS_PATH = "/api/v1/admin/usage/analytics"


async def _wait_healthy(session: aiohttp.ClientSession, url: str, seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            async with session.get(f"{url}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"the HTTP API did not answer /healthz within {seconds:.0f}s (see {API_LOG})")
        await asyncio.sleep(0.1)


async def _analytics(session: aiohttp.ClientSession, url: str, days: DateRange, user: str | None = None) -> str:
    """POST for the analytics document (LiteMaaS's route), read it whole, return the tier that answered."""
    body: dict[str, Any] = {"startDate": days.start.isoformat(), "endDate": days.end.isoformat()}
    if user is not None:
        body["userIds"] = [user]
    async with session.post(f"{url}{ANALYTICS_PATH}", json=body) as resp:
        answer = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST {ANALYTICS_PATH}: {resp.status} {answer[:300]!r}")
        return resp.headers.get("X-Cache-Tier", "?")


async def _health(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(f"{url}/healthz") as resp:
        await resp.read()


async def _poll_health(session: aiohttp.ClientSession, url: str, samples: Samples, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await timed(samples, lambda: _health(session, url))
        await asyncio.sleep(HEALTH_POLL_SECONDS)


async def concurrent_requests(bench: Bench, days: DateRange) -> dict[str, Any]:
    """Six concurrent new-filter requests for a view the day tiers hold, while /healthz is polled every 20 ms."""
    bench.say(days, f"HTTP API, {CONCURRENT_REQUESTS} concurrent requests")
    token = secrets.token_hex(16)
    async with (
        api_server(bench, token) as api,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT) as session,
    ):
        url = api.url
        await _wait_healthy(session, url)
        warm_tier = await _analytics(session, url, days)  # the day tiers (Redis under the API's prefix) hold the days
        answers, health = Samples(), Samples()
        stop = asyncio.Event()
        poller = asyncio.create_task(_poll_health(session, url, health, stop))
        users = [bench.fresh_user() for _ in range(CONCURRENT_REQUESTS)]
        tiers = await asyncio.gather(
            *(timed(answers, functools.partial(_analytics, session, url, days, u)) for u in users)
        )
        stop.set()
        await poller
    return {
        "view": f"{days.days}-day",
        "dataset": bench.dataset.name,
        "range": str(days),
        "warmTier": warm_tier,
        "tiers": tiers,
        "answers": answers.as_dict(),
        "healthz": health.as_dict(),
    }


async def year_view(
    bench: Bench, pg_only: CacheManager, sql: SqlPass, days: DateRange
) -> tuple[dict[str, Any], dict[str, Any]]:
    """L's 365-day view: SQL passes, one cold query in a fresh process (time and peak RSS), PostgreSQL-tier reads."""
    paths = {name: Samples() for name in ("sqlPass", "cold", "postgresTier")}
    bench.say(days, "SQL passes")
    sql_result = PassResult(0, 0, 0)
    for _ in range(bench.runs.year):
        sql_result = await timed(paths["sqlPass"], lambda: sql.run(days))
    memory = await memory_probe(bench, days)  # also the cold read that fills PostgreSQL
    paths["cold"].add(memory["ms"])
    document = await postgres_reads(bench, pg_only, days, paths["postgresTier"], bench.runs.year)
    return view(bench.dataset, days, paths, sql_result, document), memory


async def _served(
    session: aiohttp.ClientSession, url: str, days: DateRange, encoding: str, tier: str | None = None
) -> int:
    """One warm read of the unfiltered document as the client gets it (not decompressed: the session's
    auto_decompress is off); returns its size, after checking it was served in the asked encoding (by `tier`)."""
    body = {"startDate": days.start.isoformat(), "endDate": days.end.isoformat()}
    async with session.post(f"{url}{ANALYTICS_PATH}", json=body, headers={"Accept-Encoding": encoding}) as resp:
        data = await resp.read()
        served = resp.headers.get("Content-Encoding", "identity")
        if (
            resp.status != 200
            or resp.headers.get("X-Cache-Tier") != (tier or resp.headers.get("X-Cache-Tier"))
            or served != encoding
        ):
            raise RuntimeError(f"warm read: {resp.status}, tier {resp.headers.get('X-Cache-Tier')}, {served}")
        return len(data)


async def _raw_get(redis: Redis, key: str) -> int:
    data = await redis.get(key)
    if not isinstance(data, bytes):
        raise RuntimeError(f"{key} is not in Redis")
    return len(data)


WARM_TIERS = {"memory": {}, "redis": {"CACHE_LOCAL_RESULTS_MIB": "0"}}
"""The tiers a warm read is measured from: the API process's copy of the Redis entry (the default), and the Redis
entry itself (an API that keeps no copy)."""


async def warm_http_reads(bench: Bench, manager: CacheManager, days: DateRange) -> dict[str, Any]:
    """Warm HTTP reads of the view's analytics document (POST, served as stored) interleaved with raw GETs of the
    Redis entry each is served from, per encoding the client accepts (identity clients for reference), from each of
    WARM_TIERS."""
    bench.say(days, "warm HTTP reads against raw Redis GETs of the same key")
    token = secrets.token_hex(16)
    headers = {"Authorization": f"Bearer {token}"}
    result: dict[str, Any] = {
        "view": f"{days.days}-day",
        "dataset": bench.dataset.name,
        "range": str(days),
        "tiers": {},
    }
    for tier, settings in WARM_TIERS.items():
        async with (
            api_server(bench, token, **settings) as api,
            aiohttp.ClientSession(headers=headers, timeout=HTTP_TIMEOUT, auto_decompress=False) as session,
        ):
            await _wait_healthy(session, api.url)
            await _analytics(session, api.url, days)  # computes the document and stores it
            keys = KeySpace.of_database(api.prefix, await manager.db.identity())
            key = keys.result("analytics", days, UsageFilters().fingerprint())
            result["tiers"][tier] = measured = {}
            for encoding in (*ENCODINGS, "identity"):
                http, raw = Samples(), Samples()
                entry = keys.result_entry(key, "zstd" if encoding == "identity" else encoding)  # type: ignore[arg-type]
                sizes: dict[str, int] = {}
                await _served(session, api.url, days, encoding)  # the first read from Redis fills the API's copy

                async def http_read(
                    encoding: str = encoding, http: Samples = http, sizes: dict[str, int] = sizes, tier: str = tier
                ) -> None:
                    sizes["body"] = await timed(http, lambda: _served(session, api.url, days, encoding, tier))

                async def raw_read(entry: str = entry, raw: Samples = raw, sizes: dict[str, int] = sizes) -> None:
                    sizes["entry"] = await timed(raw, lambda: _raw_get(bench.redis, entry))

                await interleaved(bench.runs.warm, http_read, raw_read)
                measured[encoding] = {
                    "http": http.as_dict(),
                    "rawGet": raw.as_dict(),
                    "httpOverRawGet": ratio(http.p50, raw.p50),
                    "bodyBytes": sizes["body"],
                    "entryBytes": sizes["entry"],
                }
    return result


EXPORT_PATH = "/api/v1/admin/usage/export"


def _process_memory_mib(pid: int) -> dict[str, float]:
    """A child's resident set now (VmRSS) and at its peak so far (VmHWM), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB
    return {"rssMiB": round(fields["VmRSS"], 1), "peakRssMiB": round(fields["VmHWM"], 1)}


async def _stream_export(session: aiohttp.ClientSession, url: str, days: DateRange, file_format: str) -> dict[str, Any]:
    body = {"startDate": days.start.isoformat(), "endDate": days.end.isoformat(), "format": file_format}
    started = time.perf_counter()
    first_byte: float | None = None
    size = chunks = 0
    async with session.post(f"{url}{EXPORT_PATH}", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"POST {EXPORT_PATH}: {resp.status} {(await resp.read())[:300]!r}")
        if resp.headers.get("Transfer-Encoding") != "chunked":
            raise RuntimeError("the export was not streamed (no chunked transfer encoding)")
        async for data, _ in resp.content.iter_chunks():
            first_byte = first_byte or time.perf_counter()
            size += len(data)
            chunks += 1
        tier = resp.headers.get("X-Cache-Tier", "?")
    ended = time.perf_counter()
    return {
        "format": file_format,
        "bytes": size,
        "chunksReceived": chunks,
        "tier": tier,
        "firstByteMs": round(((first_byte or ended) - started) * 1000, 1),
        "ms": round((ended - started) * 1000, 1),
    }


async def export_memory(bench: Bench, days: DateRange) -> dict[str, Any]:
    """Exports of a long range by a fresh `litemaas-cache api` child (its own Redis prefix: the first one computes
    the rows from the day tiers), CSV then JSON, each streamed and read in chunks; the child's peak RSS (VmHWM)
    before the first and after each."""
    bench.say(days, "exports streamed by the HTTP API, its peak RSS")
    token = secrets.token_hex(16)
    async with (
        api_server(bench, token) as api,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT) as session,
    ):
        await _wait_healthy(session, api.url)
        before = _process_memory_mib(api.pid)
        exports = []
        for file_format in ("csv", "json"):
            exports.append(
                {**await _stream_export(session, api.url, days, file_format), **_process_memory_mib(api.pid)}
            )
    return {"dataset": bench.dataset.name, "range": str(days), "days": days.days, "before": before, "exports": exports}
