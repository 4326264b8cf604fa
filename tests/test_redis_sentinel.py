"""Redis through Sentinel (one master, one replica, three sentinels of tests/support/sentinel.py, with AUTH on the
data nodes and on the sentinels): reads go on through a failover with no error and no wrong answer (checked against
the SQL oracle), Redis hits resume on the new master, and a version raise the failover lost is repaired."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.errors import ConfigurationError
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.redis_tier import RedisStore
from litemaas_cache.redis_tier.connection import parse_sentinel_url
from litemaas_cache.settings import load_settings
from tests.support.oracle import Filters, Oracle, open_oracle, sql_requests
from tests.support.sentinel import SentinelSetup

OpenManager = Callable[..., Awaitable[CacheManager]]
# The Redis tier on its own: no result bodies held in memory in front of it (tests/test_local_results.py).
FAST = {"redis_socket_timeout": 0.25, "redis_breaker_reset_seconds": 0.2, "local_results_mib": 0}
READERS = 4


def _query(start: dt.date, end: dt.date, **filters: list[str]) -> AnalyticsQuery:
    return build_query(start, end, max_days=90, max_ids=1000, **filters)


@pytest_asyncio.fixture
async def fresh_oracle(fresh_dsn: str) -> AsyncIterator[Oracle]:
    async with open_oracle(fresh_dsn) as opened:
        yield opened


Totals = tuple[int, int, int, int]


def _totals(document: dict[str, Any]) -> Totals:
    tokens = document["totalTokens"]
    return document["totalRequests"], tokens["total"], tokens["prompt"], tokens["completion"]


async def _expected(oracle: Oracle, query: AnalyticsQuery) -> Totals:
    """(requests, tokens, prompt tokens, completion tokens) of a query, summed by the SQL oracle."""
    f = Filters([], list(query.filters.model_ids), [], [])
    total = (await oracle.group(query.range.start, query.range.end, f)).get(())
    assert total is not None
    return total.requests, total.tokens, total.prompt, total.completion


@dataclass
class Figures:
    """What the readers saw during a failover."""

    reads: int = 0
    errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)
    moved_at: float | None = None  # when the store noticed the new master
    resumed_at: float | None = None  # the first Redis hit after that
    resumed: asyncio.Event = field(default_factory=asyncio.Event)


async def _read_through(
    manager: CacheManager,
    queries: list[AnalyticsQuery],
    expected: list[Totals],
    figures: Figures,
    stop: asyncio.Event,
    reader: int,
) -> None:
    store = manager.redis
    assert isinstance(store, RedisStore)
    turn = reader
    while not stop.is_set():
        index = turn % len(queries)
        turn += 1
        try:
            answer = await manager.analytics(queries[index])
        except Exception as exc:  # counted, never raised: the figure the test is about
            figures.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        finally:
            figures.reads += 1
        figures.tiers[answer.tier] = figures.tiers.get(answer.tier, 0) + 1
        got = _totals(answer.value)
        if got != expected[index]:
            figures.wrong.append(f"query {index} from {answer.tier}: {got} != {expected[index]}")
        if store.failovers_seen and figures.moved_at is None:
            figures.moved_at = time.monotonic()
        if figures.moved_at is not None and figures.resumed_at is None and answer.tier == "redis":
            figures.resumed_at = time.monotonic()
            figures.resumed.set()
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("how", ["sentinel-failover", "kill-master"])
async def test_reads_through_a_failover_give_no_error_and_no_wrong_answer(
    how: str, tmp_path: Path, fresh_dsn: str, fresh_oracle: Oracle, open_manager: OpenManager
) -> None:
    today = utc_today()
    queries = [
        _query(today - dt.timedelta(days=29), today),
        _query(today - dt.timedelta(days=20), today - dt.timedelta(days=7)),
        _query(today - dt.timedelta(days=13), today - dt.timedelta(days=7), model_ids=["gpt-4o"]),
    ]
    expected = [await _expected(fresh_oracle, q) for q in queries]
    assert all(totals[0] > 0 for totals in expected)
    with SentinelSetup(tmp_path, password="data-node-pass", sentinel_password="sentinel-pass") as setup:
        manager = await open_manager(fresh_dsn, redis_url=setup.url, **FAST)
        store = manager.redis
        assert isinstance(store, RedisStore)
        for query in queries:
            await manager.analytics(query)
        assert [(await manager.analytics(q)).tier for q in queries] == ["redis"] * 3
        old_master = setup.current_master()

        figures, stop = Figures(), asyncio.Event()
        readers = [
            asyncio.create_task(_read_through(manager, queries, expected, figures, stop, n)) for n in range(READERS)
        ]
        started = time.monotonic()
        try:
            trigger = setup.failover if how == "sentinel-failover" else setup.kill_master
            new_master = await asyncio.to_thread(trigger)
            named = time.monotonic()
            with contextlib.suppress(TimeoutError):  # a failure to resume is asserted below, with the figures
                await asyncio.wait_for(figures.resumed.wait(), 30)
            await asyncio.sleep(0.5)  # and some more reads on the new master
        finally:
            stop.set()
            await asyncio.gather(*readers)

        print(
            f"\n[{how}] reads={figures.reads} errors={len(figures.errors)} wrong={len(figures.wrong)} "
            f"tiers={figures.tiers} sentinels named the new master after {named - started:.2f}s; "
            f"store noticed after {(figures.moved_at or float('nan')) - started:.2f}s; "
            f"redis hits resumed after {(figures.resumed_at or float('nan')) - started:.2f}s"
        )
        assert figures.errors == []
        assert figures.wrong == []
        assert new_master is not old_master
        assert store.failovers_seen >= 1, "the store noticed the new master"
        assert figures.resumed_at is not None, "redis hits resumed after the failover"
        # The hits come from the new master: it holds this manager's result entries and a complete mirror.
        with setup.node(new_master) as client:
            assert client.exists(manager.keys.versions)
            key = manager.keys.result("analytics", queries[0].range, queries[0].filters.fingerprint())
            assert client.exists(manager.keys.result_entry(key, "zstd"))
        assert (await manager.analytics(queries[0])).tier == "redis"


async def test_a_version_raise_the_failover_lost_is_repaired(
    tmp_path: Path, fresh_dsn: str, open_manager: OpenManager
) -> None:
    """The replica's link to the master is cut while a day is invalidated, so the master acknowledges the version
    raise (and the purge) without passing them on; then the master dies and the replica is promoted with the old
    mirror and the old result. A reader whose Redis calls never failed must not serve that result: the store
    re-syncs the mirror from PostgreSQL as soon as it sees the new master."""
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=12), today - dt.timedelta(days=6))
    changed = days.start + dt.timedelta(days=2)
    query = _query(days.start, days.end)
    with SentinelSetup(tmp_path, password="data-node-pass") as setup:
        reader = await open_manager(fresh_dsn, redis_url=setup.url, **FAST)
        invalidator = await open_manager(fresh_dsn, redis_url=setup.url, **FAST)
        old = await reader.analytics(query)
        assert (await reader.analytics(query)).tier == "redis"
        key = reader.keys.result_entry(
            reader.keys.result("analytics", query.range, query.filters.fingerprint()), "zstd"
        )
        setup.wait("the replica to hold the result", lambda: _holds(setup, key))

        with setup.node(setup.replica) as replica:
            replica.config_set("masterauth", "not-the-password")  # it cannot link up again
            replica.client_kill_filter(_type="master")
        setup.wait("the replica's link to the master to be down", lambda: not setup.in_sync(setup.replica))
        try:
            with psycopg.connect(fresh_dsn, autocommit=True) as conn:
                conn.execute(
                    'UPDATE "LiteLLM_DailyUserSpend" SET api_requests = api_requests + 1000 WHERE id = '
                    '(SELECT id FROM "LiteLLM_DailyUserSpend" WHERE date = %s ORDER BY id LIMIT 1)',
                    (changed.isoformat(),),
                )
            report = await invalidator.invalidate(DateRange(changed, changed))
            assert report.complete, "the old master acknowledged the raise and the purge"
            setup.master.stop()
        finally:
            with setup.node(setup.replica) as replica:
                replica.config_set("masterauth", setup.password or "")
        new_master = await asyncio.to_thread(setup.wait_for_new_master, setup.master)
        with setup.node(new_master) as client:
            assert client.exists(key), "the promoted replica still holds the old result"
            stale = client.hget(reader.keys.versions, changed.isoformat())
        versions = await reader.postgres.all_versions()
        assert stale is not None
        assert int(stale) < versions[changed], "and the old version: the raise was lost"

        expected = sql_requests(fresh_dsn, days)
        assert expected == old.value["totalRequests"] + 1000
        answers = [await reader.analytics(query) for _ in range(3)]
        assert [a.value["totalRequests"] for a in answers] == [expected] * 3
        assert answers[-1].tier == "redis", "and the cache refills on the new master"
        assert isinstance(reader.redis, RedisStore)
        assert reader.redis.failovers_seen == 1


def _holds(setup: SentinelSetup, key: str) -> bool:
    with setup.node(setup.replica) as client:
        return bool(client.exists(key))


def test_a_sentinel_url_names_sentinels_master_auth_and_tls() -> None:
    target = parse_sentinel_url(
        "rediss+sentinel://app:m%40ster-pass@s0:26380,s1,[::1]:26381/cachemaster/2"
        "?sentinel_password=s-pass&ssl_ca_certs=/etc/ca.crt&ssl_cert_reqs=required"
    )
    assert target.sentinels == (("s0", 26380), ("s1", 26379), ("::1", 26381))
    assert (target.master, target.tls) == ("cachemaster", True)
    assert target.master_options == {
        "username": "app",
        "password": "m@ster-pass",
        "db": 2,
        "ssl": True,
        "ssl_ca_certs": "/etc/ca.crt",
        "ssl_cert_reqs": "required",
    }
    assert target.sentinel_options == {
        "password": "s-pass",
        "ssl": True,
        "ssl_ca_certs": "/etc/ca.crt",
        "ssl_cert_reqs": "required",
    }
    plain = parse_sentinel_url("redis+sentinel://s0/cachemaster")
    assert (plain.tls, plain.master_options, plain.sentinel_options) == (False, {"db": 0}, {})


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://:pw-1234@s0:26379", "names no master"),
        ("redis+sentinel://:pw-1234@s0:26379/m/x", "/master-name/db"),
        ("redis+sentinel://:pw-1234@s0:99999/m", "sentinel port"),
        ("redis+sentinel://:pw-1234@s0,,s1/m", "empty sentinel address"),
    ],
)
def test_a_bad_sentinel_url_is_refused_naming_the_variable_not_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(database_url="postgresql://u@127.0.0.1/db", redis_url=url)
    assert str(refused.value).startswith("invalid configuration: REDIS_URL: is not a valid Redis Sentinel URL")
    assert problem in str(refused.value)
    assert "pw-1234" not in str(refused.value)


def test_sentinel_and_cluster_do_not_mix() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_CLUSTER: cannot be combined"):
        load_settings(database_url="postgresql://u@127.0.0.1/db", redis_url="redis+sentinel://s0/m", redis_cluster=True)
