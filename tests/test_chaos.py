"""Load and chaos: Redis killed and hung under reads from four processes, PostgreSQL restarted during a warm, and
Redis full under noeviction. Every answer is compared with what SQL over LiteLLM's table gives; the figures are
printed (run with -s to see them; docs/reliability.md quotes a run). Nothing here asserts a timing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client

from litemaas_cache.controller.warming import warm_policy
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.errors import BackendUnavailable
from litemaas_cache.manager import CacheManager
from litemaas_cache.settings import load_settings
from litemaas_cache.source import SourceReader
from tests.conftest import prepare_database
from tests.support.day_audit import audit_cached_days
from tests.support.metrics import close
from tests.support.oracle import Filters, assert_row, expected_rows, open_oracle, pick_ids
from tests.support.postgres_server import PostgresServer
from tests.support.read_load import LoadPlan, Read, ReadRecord, spawn_workers
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

PROCESSES = 4
READS_PER_PROCESS = 2_500  # 10,000 in all
READS_PER_SECOND = 125.0  # per process: the run lasts 20 s, long enough for both faults and both recoveries
# When each fault starts and ends, in seconds after the first read.
KILLED_AT, RESTARTED_AT = 2.0, 3.0
PAUSED_AT, RESUMED_AT = 8.0, 10.0


def _day(days_ago: int) -> str:
    return (utc_today() - dt.timedelta(days=days_ago)).isoformat()


async def _mix(dsn: str) -> list[Read]:
    """Past ranges only (their days are complete), with and without filters, documents and breakdowns."""
    async with open_oracle(dsn) as oracle:
        picks = await pick_ids(oracle)
    return [
        Read("analytics", _day(31), _day(2), {}),
        Read("analytics", _day(15), _day(2), {"user_ids": [picks.heavy_user]}),
        Read("model", _day(31), _day(2), {}),
        Read("analytics", _day(9), _day(3), {"model_ids": ["gpt-4o"]}),
    ]


async def _expected(dsn: str, mix: list[Read]) -> list[Any]:
    """Each read's answer, computed with Redis off and checked against the SQL oracle."""
    expected = []
    async with CacheManager.open(load_settings(database_url=dsn, redis_enabled=False)) as manager:
        expected = [(await read.run(manager)).value for read in mix]
    async with open_oracle(dsn) as oracle:
        for read, value in zip(mix, expected, strict=True):
            query = read.query()
            filters = Filters(
                query.filters.user_ids, query.filters.model_ids, query.filters.provider_ids, query.filters.api_key_ids
            )
            if read.kind == "analytics":
                (sums,) = (await oracle.group(query.range.start, query.range.end, filters)).values()
                assert value["totalRequests"] == sums.requests > 0, read
                assert value["totalTokens"]["total"] == sums.tokens, read
                assert close(value["totalCost"]["total"], sums.spend), read
            else:
                rows = await expected_rows(oracle, read.kind, query.range.start, query.range.end, filters)
                assert value["data"], read
                for row in value["data"]:
                    assert_row(read.kind, row, *rows[row["modelId"]])
    return expected


def _first_hit_after(records: list[ReadRecord], moment: float) -> float | None:
    """Seconds from `moment` to this process's first read answered by a Redis result entry after it."""
    hits = [r.finished for r in records if r.result_hit and r.finished > moment]
    return round(min(hits) - moment, 2) if hits else None


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def test_redis_killed_and_hung_during_ten_thousand_reads_from_four_processes(
    fresh_dsn: str, tmp_path: Path, key_prefix: str
) -> None:
    mix = await _mix(fresh_dsn)
    expected = await _expected(fresh_dsn, mix)
    with RedisServer(tmp_path) as redis:
        settings = {"database_url": fresh_dsn, "redis_url": redis.url, "redis_key_prefix": key_prefix}
        async with CacheManager.open(load_settings(**settings)) as warmer:  # the workers begin on Redis hits
            for read in mix:
                await read.run(warmer)
        workers = spawn_workers(LoadPlan(settings, mix, expected, READS_PER_PROCESS, READS_PER_SECOND), PROCESSES)
        try:
            start = await asyncio.to_thread(workers.start)
            await _sleep_until(start + KILLED_AT)
            redis.stop()  # SIGKILL: every connection drops, nothing is saved
            killed = time.monotonic()
            await _sleep_until(start + RESTARTED_AT)
            redis.start()  # empty
            restarted = time.monotonic()
            await _sleep_until(start + PAUSED_AT)
            redis.pause()  # SIGSTOP: connections stay open, nothing answers
            paused = time.monotonic()
            await _sleep_until(start + RESUMED_AT)
            redis.resume()
            resumed = time.monotonic()
            collected = await asyncio.to_thread(workers.collect)
        finally:
            workers.stop()

    records = [r for process_records, _ in collected for r in process_records]
    verdicts = Counter(r.verdict if r.verdict in ("ok", "wrong") else "error" for r in records)
    figures = {
        "reads": len(records),
        "errors": verdicts["error"],
        "wrongAnswers": verdicts["wrong"],
        "tiers": dict(Counter(r.tier for r in records)),
        "resultHits": sum(r.result_hit for r in records),
        "computations": sum(counters.get("computations", 0) for _, counters in collected),
        "readsWhileKilled": sum(killed <= r.finished < restarted for r in records),
        "readsWhilePaused": sum(paused <= r.finished < resumed for r in records),
        "firstRedisHitAfterRestartSeconds": [_first_hit_after(rs, restarted) for rs, _ in collected],
        "firstRedisHitAfterResumeSeconds": [_first_hit_after(rs, resumed) for rs, _ in collected],
        "wallSeconds": round(max(r.finished for r in records) - start, 1),
    }
    print("redis chaos figures:", json.dumps(figures))
    problems = [r.verdict for r in records if r.verdict != "ok"]
    assert (figures["errors"], figures["wrongAnswers"]) == (0, 0), problems[:5]
    assert figures["reads"] == PROCESSES * READS_PER_PROCESS
    assert figures["readsWhileKilled"] > 0, "Redis was killed under load"
    assert figures["readsWhilePaused"] > 0, "and hung under load"
    assert all(figures["tiers"].get(tier, 0) > 0 for tier in ("redis", "postgres")), figures["tiers"]
    assert None not in figures["firstRedisHitAfterRestartSeconds"], "every process used Redis again after it restarted"
    assert None not in figures["firstRedisHitAfterResumeSeconds"], "and after it was resumed"


MAXMEMORY = 2 * 1024 * 1024


def _fill(url: str) -> int:
    """Fill a Redis under noeviction with another application's keys, to well past its maxmemory (right at the limit
    a write passes or not by the size of the clients' buffers): the limit is lifted for the filling and set again
    after it, as when an operator lowers maxmemory under what is stored. Returns how many keys were written."""
    with redis_client.Redis.from_url(url) as client:
        client.config_set("maxmemory", 0)
        written = 0
        while int(client.info("memory")["used_memory"]) < MAXMEMORY + 256 * 1024:
            client.mset({f"other-app:{written + n}": b"x" * 10_000 for n in range(10)})
            written += 10
        client.config_set("maxmemory", MAXMEMORY)
        with pytest.raises(redis_client.exceptions.OutOfMemoryError):
            client.set("other-app:one-more", b"x")
    return written


async def test_redis_full_under_noeviction_says_so_and_answers_stay_right(
    fresh_dsn: str, tmp_path: Path, key_prefix: str
) -> None:
    mix = await _mix(fresh_dsn)
    expected = await _expected(fresh_dsn, mix)
    stored, new = mix[:2], mix[2:]  # results written before Redis fills up, and results it has no room for
    full = ["--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction"]
    with RedisServer(tmp_path, extra_args=full) as server:
        settings = load_settings(
            database_url=fresh_dsn, redis_url=server.url, redis_key_prefix=key_prefix, local_results_mib=0
        )
        async with CacheManager.open(settings) as manager:
            for read in stored:
                await read.run(manager)
            filler_keys = _fill(server.url)

            answers = [await read.run(manager) for read in mix]
            assert [a.value for a in answers] == expected
            # Reads go on until the first write is refused: that opens the breaker, and PostgreSQL answers the rest.
            assert [a.tier for a in answers[: len(stored)]] == ["redis"] * len(stored), "stored entries still serve"
            assert all(a.tier != "redis" for a in answers[len(stored) :]), "the others are computed"
            assert manager.redis.state == "open"
            stats = await manager.stats()
            assert stats["redis"]["available"] is False
            assert stats["redis"]["failure"].startswith("out of memory"), stats["redis"]

            policy = {"ranges": [{"start": r.start, "end": r.end} for r in new], "interval": "5m"}
            outcome = await warm_policy(manager, policy, {}, 1)
            conditions = {c["type"]: c for c in outcome.status["conditions"]}
            assert conditions["Ready"]["status"] == "True"
            assert (conditions["RedisAvailable"]["status"], conditions["RedisAvailable"]["reason"]) == (
                "False",
                "OutOfMemory",
            )
            assert "maxmemory is reached" in conditions["RedisAvailable"]["message"]
            assert conditions["Degraded"]["status"] == "True"
            assert ("Warning", "RedisUnavailable", conditions["RedisAvailable"]["message"]) in outcome.events
            again = [await read.run(manager) for read in mix]
            assert [a.value for a in again] == expected

            with redis_client.Redis.from_url(server.url) as client:  # the other application frees its memory
                client.delete(*(f"other-app:{n}" for n in range(filler_keys)))
            freed = time.monotonic()
            while not manager.redis.available:  # the breaker's next probe writes, and succeeds
                assert time.monotonic() - freed < 60, "the breaker never closed after memory was freed"
                await asyncio.sleep(0.05)
            recovered = time.monotonic() - freed
            after = [[await read.run(manager) for read in mix] for _ in range(2)]
            assert [a.value for a in after[0]] == [a.value for a in after[1]] == expected
            assert [a.tier for a in after[1]] == ["redis"] * len(mix)
    print(
        "noeviction figures:",
        json.dumps(
            {
                "fillerKeys": filler_keys,
                "tiers": [a.tier for a in answers],
                "stats": {k: stats["redis"][k] for k in ("available", "breaker", "failure")},
                "RedisAvailable": conditions["RedisAvailable"],
                "breakerClosedAfterMemoryFreedSeconds": round(recovered, 2),
            }
        ),
    )


async def test_postgresql_restarted_during_a_warm_leaves_no_half_written_day() -> None:
    """The warm in flight rides over the restart (connections are checked before they are reused) or fails with
    BackendUnavailable (never another error), a failed one succeeds when retried on the same manager, and every
    cached day equals the source throughout."""
    with PostgresServer() as server:
        dsn = server.create_database("litemaas")
        await prepare_database(dsn)
        today = utc_today()
        ranges = [DateRange(today - dt.timedelta(days=d + 4), today - dt.timedelta(days=d)) for d in range(2, 40, 5)]
        restarted: list[float] = []

        def restart_after_the_first_range(_: str) -> None:
            if not restarted:  # blocks the warm in the middle, exactly as long as the restart takes
                server.restart()
                restarted.append(time.monotonic())

        settings = load_settings(database_url=dsn, redis_enabled=False)
        async with CacheManager.open(settings) as manager:
            attempts = 0
            progress: Any = restart_after_the_first_range
            while True:  # as the operator does: retry after OPERATOR_RETRY_SECONDS (here at once)
                attempts += 1
                try:
                    report = await manager.warm(ranges, (), ("user", "model"), progress)
                    break
                except BackendUnavailable:
                    assert attempts < 20, "the warm never succeeded again after the restart"
                    progress = None
                    audit_cached_days(dsn)  # asserts that every day cached so far equals the source
            recovered = time.monotonic() - restarted[0]
        checked = audit_cached_days(dsn)
    assert restarted, "the restart happened during the warm"
    assert checked == report.days_warmed > 0
    print(
        "postgresql restart figures:",
        json.dumps(
            {
                "warmAttempts": attempts,
                "daysCached": checked,
                "secondsFromRestartToWarmed": round(recovered, 2),
            }
        ),
    )


async def test_after_a_postgresql_restart_the_next_source_read_answers() -> None:
    """The source reader keeps its ADBC connection for the next fetch; a restart ends it unnoticed. The next fetch
    must answer, not fail for it (before: BackendUnavailable once per connection left idle)."""
    with PostgresServer() as server:
        dsn = server.create_database("litemaas")
        await prepare_database(dsn)
        reader = SourceReader(dsn)
        try:
            days = [utc_today() - dt.timedelta(days=d) for d in (3, 4)]
            before = await reader.fetch(days)
            assert before.height > 0
            server.restart()
            after = await reader.fetch(days)
            assert after.equals(before)
        finally:
            reader.close()
