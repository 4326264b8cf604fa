"""The operator end to end: kopf (KopfRunner, and the real `litemaas-cache operator` process) against the local
kube-apiserver, with real PostgreSQL and a private redis-server that tests stop and restart."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
import redis
import yaml
from kopf.testing import KopfRunner

from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.settings import load_settings
from tests.conftest import REPO_ROOT, create_database, drop_database
from tests.k8s.conftest import SESSION_NAMESPACES, KubeCluster
from tests.k8s.operator_support import (
    apply,
    condition,
    get,
    http_json,
    invalidation,
    start_operator,
    stop_operator,
    wait_for,
    warm_policy,
)
from tests.support.redis_server import RedisServer, free_port
from tests.test_freshness import LATE_REQUESTS, write_late_row

pytestmark = pytest.mark.k8s


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def liveness_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def kopf_runner(crds: None, operator_env: dict[str, str], liveness_port: int) -> Iterator[KopfRunner]:
    """One operator (kopf in a thread) for the module, watching this session's test namespaces."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in operator_env.items():
            mp.setenv(key, value)
        args = [
            "run",
            "-m",
            "litemaas_cache.controller.handlers",
            "--standalone",
            f"--namespace={SESSION_NAMESPACES}",
            f"--liveness=http://127.0.0.1:{liveness_port}/healthz",
        ]
        with KopfRunner(args, reraise=True, timeout=60) as runner:
            yield runner
    assert runner.exception is None, runner.output


@pytest_asyncio.fixture
async def manager(operator_env: dict[str, str]) -> AsyncIterator[CacheManager]:
    """A manager on the operator's database and Redis prefix (like an application instance)."""
    settings = load_settings(
        database_url=operator_env["DATABASE_URL"],
        redis_url=operator_env["REDIS_URL"],
        redis_key_prefix=operator_env["REDIS_KEY_PREFIX"],
        redis_breaker_reset_seconds=0.5,
    )
    async with CacheManager.open(settings) as m:
        yield m


# -- tests ----------------------------------------------------------------------------------------------------


async def test_sample_policy_becomes_ready_with_status_equal_to_cache_stats(
    kube_cluster: KubeCluster, kopf_runner: KopfRunner, k8s_namespace: str, manager: CacheManager, liveness_port: int
) -> None:
    sample = yaml.safe_load((REPO_ROOT / "manifests/samples/cachewarmpolicy.yaml").read_text())
    sample["metadata"]["namespace"] = k8s_namespace
    sample["spec"]["interval"] = "1m"  # the sample warms every 10m; two intervals must pass within the test
    apply(kube_cluster, sample)
    name = sample["metadata"]["name"]
    try:
        policy = wait_for(
            "the sample CacheWarmPolicy to be Ready with keysWarmed > 0",
            lambda: (
                (p := get(kube_cluster, "cwp", name, k8s_namespace))
                and condition(p, "Ready") == "True"
                and p["status"].get("keysWarmed", 0) > 0
                and p
            ),
            timeout=120,  # "within two warm intervals"
        )
        status = policy["status"]
        assert status["observedGeneration"] == policy["metadata"]["generation"]
        assert condition(policy, "RedisAvailable") == "True"
        assert condition(policy, "Degraded") == "False"
        assert status["daysWarmed"] == 60  # last-7-days and last-30-days with their previous periods
        for cond in status["conditions"]:
            assert {"type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"} <= cond.keys()

        stats = await manager.stats()
        assert status["keyCount"] == stats["redis"]["keyCount"]
        assert status["hitRate"] == f"{stats['hitRate']:.1f}%"

        table = kube_cluster.run("get", "cwp", "-n", k8s_namespace).stdout
        header = table.splitlines()[0].split()
        assert header == ["NAME", "INTERVAL", "LAST", "WARM", "KEYS", "HIT", "RATE", "READY", "AGE"], table
        assert "True" in table.splitlines()[1]

        assert http_json(f"http://127.0.0.1:{liveness_port}/healthz")["redis"] == "closed"

        # A repeated query from an application instance is now a Redis hit.
        today = utc_today()
        query = build_query((today - dt.timedelta(days=6)).isoformat(), today.isoformat(), max_days=90, max_ids=10)
        assert (await manager.analytics(query)).tier == "redis"

        # A spec change takes effect at once: a new range is warmed without waiting for the interval.
        patch = {"spec": {"ranges": [{"preset": "yesterday"}]}}
        kube_cluster.run("patch", "cwp", name, "-n", k8s_namespace, "--type=merge", "-p", json.dumps(patch))
        changed = wait_for(
            "the changed spec to be warmed",
            lambda: (
                (p := get(kube_cluster, "cwp", name, k8s_namespace))
                and p["status"].get("observedGeneration") == p["metadata"]["generation"]
                and p
            ),
            timeout=30,
        )
        assert changed["status"]["daysWarmed"] == 2

        # suspend stops warming, and says so.
        last_warm = changed["status"]["lastWarmTime"]
        kube_cluster.run("patch", "cwp", name, "-n", k8s_namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        suspended = wait_for(
            "the policy to report Suspended",
            lambda: (
                (p := get(kube_cluster, "cwp", name, k8s_namespace))
                and p["status"]["conditions"]
                and any(c["type"] == "Ready" and c["reason"] == "Suspended" for c in p["status"]["conditions"])
                and p
            ),
            timeout=30,
        )
        assert condition(suspended, "Ready") == "False"
        assert suspended["status"]["lastWarmTime"] == last_warm
    finally:
        kube_cluster.run("delete", "cwp", name, "-n", k8s_namespace, "--wait=false", check=False)


async def test_invalidation_purges_exactly_its_days(
    kube_cluster: KubeCluster,
    kopf_runner: KopfRunner,
    k8s_namespace: str,
    manager: CacheManager,
    operator_env: dict[str, str],
) -> None:
    today = utc_today()
    warmed = DateRange(today - dt.timedelta(days=20), today - dt.timedelta(days=14))
    purged = DateRange(today - dt.timedelta(days=18), today - dt.timedelta(days=17))
    await manager.warm([warmed])

    def versions() -> dict[dt.date, tuple[int, bool]]:
        with psycopg.connect(operator_env["DATABASE_URL"]) as conn:
            rows = conn.execute(
                "SELECT day, version, aggregates IS NOT NULL FROM litemaas_cache.daily_usage"
                " WHERE day BETWEEN %s AND %s",
                (warmed.start, warmed.end),
            ).fetchall()
        return {day: (version, cached) for day, version, cached in rows}

    before = versions()
    assert len(before) == warmed.days
    assert all(cached for _, cached in before.values())
    client = redis.Redis.from_url(operator_env["REDIS_URL"])
    assert all(client.exists(manager.keys.day(d)) for d in warmed)

    apply(kube_cluster, invalidation("purge-two-days", k8s_namespace, purged.start, purged.end))
    done = wait_for(
        "the CacheInvalidation to succeed",
        lambda: (
            (o := get(kube_cluster, "cinv", "purge-two-days", k8s_namespace))
            and o.get("status", {}).get("phase") == "Succeeded"
            and o
        ),
    )
    assert done["status"]["daysPurged"] == 2
    assert done["status"]["keysDeleted"] >= 3  # two day entries and at least the warmed analytics result
    assert done["status"]["startTime"] <= done["status"]["completionTime"]

    after = versions()
    for day in warmed:
        if day in purged:
            assert after[day] == (before[day][0] + 1, False), day
            assert not client.exists(manager.keys.day(day))
        else:
            assert after[day] == before[day], day
            assert client.exists(manager.keys.day(day))

    query = build_query(warmed.start.isoformat(), warmed.end.isoformat(), max_days=90, max_ids=10)
    answer = await manager.analytics(query)
    assert answer.tier == "source"  # recomputed from LiteLLM's table
    assert all(cached for _, cached in versions().values())

    table = kube_cluster.run("get", "cinv", "-n", k8s_namespace).stdout
    assert table.splitlines()[0].split() == ["NAME", "START", "END", "PHASE", "KEYS", "DELETED", "AGE"], table
    assert "Succeeded" in table


async def test_rewarm_then_ttl_after_finished_deletes_the_invalidation(
    kube_cluster: KubeCluster,
    kopf_runner: KopfRunner,
    k8s_namespace: str,
    manager: CacheManager,
    operator_env: dict[str, str],
) -> None:
    today = utc_today()
    policy = warm_policy("dashboard", k8s_namespace, {"ranges": [{"preset": "last-7-days"}], "interval": "1m"})
    apply(kube_cluster, policy)
    wait_for(
        "the policy to be warmed",
        lambda: condition(get(kube_cluster, "cwp", "dashboard", k8s_namespace), "Ready") == "True",
    )
    day = today - dt.timedelta(days=3)
    client = redis.Redis.from_url(operator_env["REDIS_URL"])
    day_key = manager.keys.day(day)
    assert client.exists(day_key)

    apply(kube_cluster, invalidation("rewarm-me", k8s_namespace, day, day, rewarm=True, ttlSecondsAfterFinished=0))
    done = wait_for(
        "the rewarming invalidation to succeed",
        lambda: (
            (o := get(kube_cluster, "cinv", "rewarm-me", k8s_namespace))
            and o.get("status", {}).get("phase") == "Succeeded"
            and o
        ),
        timeout=30,
    )
    assert "re-warmed 2 range(s)" in done["status"]["message"]  # the day itself, and the policy's last-7-days
    assert client.exists(day_key)  # purged, then warmed again
    week = build_query((today - dt.timedelta(days=6)).isoformat(), today.isoformat(), max_days=90, max_ids=10)
    assert (await manager.analytics(week)).tier == "redis"

    wait_for(
        "ttlSecondsAfterFinished=0 to delete the finished invalidation",
        lambda: (
            not kube_cluster.run(
                "get", "cinv", "rewarm-me", "-n", k8s_namespace, "--ignore-not-found", "-o", "name"
            ).stdout.strip()
        ),
        timeout=45,
    )
    kube_cluster.run("delete", "cwp", "dashboard", "-n", k8s_namespace, "--wait=false", check=False)


def test_spec_that_cannot_run_is_a_permanent_failure(
    kube_cluster: KubeCluster, kopf_runner: KopfRunner, k8s_namespace: str
) -> None:
    # Valid for the schema, but longer than the analytics maximum (90 days): only the operator can tell.
    policy = warm_policy("too-wide", k8s_namespace, {"ranges": [{"start": "2025-01-01", "end": "2025-12-31"}]})
    apply(kube_cluster, policy)
    failed = wait_for(
        "Ready=False with reason InvalidSpec",
        lambda: (p := get(kube_cluster, "cwp", "too-wide", k8s_namespace)) and condition(p, "Ready") == "False" and p,
        timeout=30,
    )
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "365 days" in ready["message"]
    assert "the analytics maximum is 90" in failed["status"]["lastError"]
    events = kube_cluster.run(
        "get", "events", "-n", k8s_namespace, "--field-selector", "involvedObject.name=too-wide", "-o", "json"
    )
    assert any(e["reason"] == "InvalidSpec" for e in json.loads(events.stdout)["items"])
    kube_cluster.run("delete", "cwp", "too-wide", "-n", k8s_namespace, "--wait=false", check=False)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            invalidation("backwards", "{ns}", dt.date(2026, 3, 2), dt.date(2026, 3, 1)),
            "endDate must not be before startDate",
        ),
        (
            invalidation("too-long", "{ns}", dt.date(2025, 1, 1), dt.date(2026, 1, 2)),
            "at most 366 days",
        ),
        (
            invalidation("ancient", "{ns}", dt.date(1900, 1, 1), dt.date(1900, 1, 2)),
            "is outside 2000-01-01..2099-12-31",
        ),
        (
            invalidation(
                "kept-forever", "{ns}", dt.date(2026, 3, 1), dt.date(2026, 3, 1), ttlSecondsAfterFinished=10**15
            ),
            "spec.ttlSecondsAfterFinished: Invalid value: 1000000000000000: spec.ttlSecondsAfterFinished in body "
            "should be less than or equal to 31622400",
        ),
        (warm_policy("bad-preset", "{ns}", {"ranges": [{"preset": "last-week"}]}), 'Unsupported value: "last-week"'),
        (
            warm_policy("too-often", "{ns}", {"ranges": [{"preset": "today"}], "interval": "30s"}),
            "interval must be at least 1m",
        ),
        (
            warm_policy("backwards-range", "{ns}", {"ranges": [{"start": "2026-02-02", "end": "2026-02-01"}]}),
            "end",
        ),
    ],
    ids=[
        "end-before-start",
        "over-366-days",
        "outside-the-window",
        "ttl-over-366-days",
        "unknown-preset",
        "interval-under-1m",
        "range-end-before-start",
    ],
)
def test_api_server_rejects_invalid_resources(
    kube_cluster: KubeCluster, crds: None, k8s_namespace: str, doc: dict[str, Any], message: str
) -> None:
    doc = json.loads(json.dumps(doc).replace("{ns}", k8s_namespace))
    result = apply(kube_cluster, doc, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_invalidation_spec_is_immutable(kube_cluster: KubeCluster, crds: None) -> None:
    namespace = f"x-{uuid.uuid4().hex[:10]}"  # not watched by the operator
    kube_cluster.run("create", "namespace", namespace)
    apply(kube_cluster, invalidation("fixed", namespace, dt.date(2020, 1, 1), dt.date(2020, 1, 2)))
    edit = kube_cluster.run(
        "patch", "cinv", "fixed", "-n", namespace, "--type=merge", "-p", '{"spec":{"rewarm":true}}', check=False
    )
    assert edit.returncode != 0
    assert "spec is immutable" in edit.stderr, edit.stderr


async def test_redis_down_sets_condition_and_warming_fills_postgres(
    kube_cluster: KubeCluster,
    kopf_runner: KopfRunner,
    k8s_namespace: str,
    manager: CacheManager,
    operator_env: dict[str, str],
    operator_redis: RedisServer,
) -> None:
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=38), today - dt.timedelta(days=36))
    await manager.invalidate(DateRange(days.previous().start, days.end), ("postgres", "redis"))
    policy = warm_policy(
        "while-redis-is-down",
        k8s_namespace,
        {"ranges": [{"start": days.start.isoformat(), "end": days.end.isoformat()}], "interval": "1m"},
    )

    def cached_days() -> int:
        with psycopg.connect(operator_env["DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT count(*) FROM litemaas_cache.daily_usage"
                " WHERE day BETWEEN %s AND %s AND aggregates IS NOT NULL",
                (days.start, days.end),
            ).fetchone()
        return int(row[0]) if row else 0

    assert cached_days() == 0
    operator_redis.stop()
    try:
        apply(kube_cluster, policy)
        down = wait_for(
            "RedisAvailable=False after warming with redis stopped",
            lambda: (
                (p := get(kube_cluster, "cwp", policy["metadata"]["name"], k8s_namespace))
                and condition(p, "RedisAvailable") == "False"
                and p
            ),
        )
        assert condition(down, "Ready") == "True"
        assert condition(down, "Degraded") == "True"
        assert down["status"]["daysWarmed"] == 6
        assert cached_days() == days.days  # warming went on into PostgreSQL
    finally:
        operator_redis.start()

    intervals = iter(["2m", "1m"] * 30)

    def recovered() -> dict[str, Any] | None:
        p = get(kube_cluster, "cwp", policy["metadata"]["name"], k8s_namespace)
        if condition(p, "RedisAvailable") == "True":
            return p
        # A spec change makes the policy due at once; keep nudging until the breaker has closed.
        patch = {"spec": {"interval": next(intervals)}}
        kube_cluster.run(
            "patch", "cwp", policy["metadata"]["name"], "-n", k8s_namespace, "--type=merge", "-p", json.dumps(patch)
        )
        return None

    back = wait_for("RedisAvailable=True after redis came back", recovered, every=2.0)
    assert condition(back, "Degraded") == "False"
    assert back["status"]["keysWarmed"] > 0
    kube_cluster.run("delete", "cwp", policy["metadata"]["name"], "-n", k8s_namespace, "--wait=false", check=False)


def test_operator_killed_mid_invalidation_completes_once_after_restart(
    kube_cluster: KubeCluster, crds: None, operator_env: dict[str, str], tmp_path: Path
) -> None:
    namespace = f"k-{uuid.uuid4().hex[:10]}"
    kube_cluster.run("create", "namespace", namespace)
    redis_server = RedisServer(tmp_path / "redis")  # not started: the purge cannot finish yet
    env = {
        **os.environ,
        **operator_env,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": f"kill:{uuid.uuid4().hex[:8]}:",
    }

    def start() -> subprocess.Popen[bytes]:
        return start_operator(env, namespace, tmp_path / "operator.log")

    today = utc_today()
    name = "interrupted"
    first = start()
    try:
        apply(kube_cluster, invalidation(name, namespace, today - dt.timedelta(days=3), today - dt.timedelta(days=2)))
        running = wait_for(
            "the invalidation to be Running and retrying while redis is unreachable",
            lambda: (
                (o := get(kube_cluster, "cinv", name, namespace))
                and o.get("status", {}).get("phase") == "Running"
                and "retrying" in o["status"].get("message", "")
                and o
            ),
        )
        assert running["status"]["startTime"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)

    redis_server.start()
    second = start()
    try:
        done = wait_for(
            "the invalidation to complete after the operator restarted",
            lambda: (
                (o := get(kube_cluster, "cinv", name, namespace))
                and o.get("status", {}).get("phase") == "Succeeded"
                and o
            ),
        )
        assert done["status"]["daysPurged"] == 2
        assert done["status"]["startTime"] == running["status"]["startTime"]  # resumed, not restarted
        time.sleep(3)  # give a duplicate run the chance to show up

        events = json.loads(
            kube_cluster.run(
                "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
            ).stdout
        )["items"]
        purged = [e for e in events if e["reason"] == "Purged"]
        assert len(purged) == 1, purged
        assert purged[0].get("count", 1) == 1, purged
        assert get(kube_cluster, "cinv", name, namespace)["status"]["phase"] == "Succeeded"
    finally:
        stop_operator(second)
        redis_server.stop()
    log = (tmp_path / "operator.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert operator_env["DATABASE_URL"].split("@")[0] not in log  # no credentials in the log


def test_invalidation_that_keeps_failing_ends_failed_after_its_retries(
    kube_cluster: KubeCluster, crds: None, operator_env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 10 item 7: a purge that could never finish (Redis unreachable) was retried for ever, purging PostgreSQL
    again each time. After OPERATOR_MAX_RETRIES attempts it is Failed, with the reason in its condition."""
    namespace = f"k-{uuid.uuid4().hex[:10]}"
    kube_cluster.run("create", "namespace", namespace)
    env = {
        **os.environ,
        **operator_env,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "OPERATOR_MAX_RETRIES": "3",
    }
    operator = start_operator(env, namespace, tmp_path / "operator.log")
    today = utc_today()
    try:
        apply(kube_cluster, invalidation("doomed", namespace, today - dt.timedelta(days=3), today))
        failed = wait_for(
            "the invalidation to be Failed after its retries",
            lambda: (
                (o := get(kube_cluster, "cinv", "doomed", namespace))
                and o.get("status", {}).get("phase") == "Failed"
                and o
            ),
        )
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    assert failed["status"]["message"].startswith("gave up after 3 attempts: ")
    assert condition(failed, "Complete") == "False"
    reasons = [c["reason"] for c in failed["status"]["conditions"] if c["type"] == "Complete"]
    assert reasons == ["RetriesExhausted"]


async def test_a_late_source_row_is_picked_up_within_one_warm_interval(
    kube_cluster: KubeCluster, crds: None, operator_env: dict[str, str], seeded_dsn: str, tmp_path: Path
) -> None:
    """Issue 10 item 9: a row LiteLLM writes late for a day three days ago shows in analytics within one warm
    interval, with no manual invalidation, and only that day is recomputed (status.daysRefreshed, SourceChanged).
    An operator of its own, on a database of its own: the freshness check is per database, and another policy's
    warm must not be the one that finds the day."""
    namespace = f"k-{uuid.uuid4().hex[:10]}"
    kube_cluster.run("create", "namespace", namespace)
    dsn = create_database(seeded_dsn)
    env = {**os.environ, **operator_env, "DATABASE_URL": dsn, "REDIS_KEY_PREFIX": f"late:{uuid.uuid4().hex[:8]}:"}
    operator = start_operator(env, namespace, tmp_path / "operator.log")
    today = utc_today()
    late_day = today - dt.timedelta(days=3)
    days = DateRange(today - dt.timedelta(days=9), late_day)
    spec = {"interval": "1m", "ranges": [{"start": days.start.isoformat(), "end": days.end.isoformat()}]}
    settings = load_settings(
        database_url=dsn, redis_url=env["REDIS_URL"], redis_key_prefix=env["REDIS_KEY_PREFIX"], freshness_days=0
    )
    try:
        async with CacheManager.open(settings) as reader:  # an application instance (it checks nothing itself)
            apply(kube_cluster, warm_policy("late-rows", namespace, spec))
            first = wait_for(
                "the policy's first warm",
                lambda: (
                    (p := get(kube_cluster, "cwp", "late-rows", namespace)) and condition(p, "Ready") == "True" and p
                ),
            )
            assert first["status"]["daysRefreshed"] == []
            query = build_query(days.start, days.end, max_days=90, max_ids=10)
            before = (await reader.analytics(query)).value["totalRequests"]
            computed = (await reader.stats())["postgres"]["daysComputedFromSource"]

            write_late_row(dsn, late_day)
            refreshed = wait_for(
                "the next warm to refresh the late day",
                lambda: (
                    (p := get(kube_cluster, "cwp", "late-rows", namespace))
                    and p["status"]["lastWarmTime"] != first["status"]["lastWarmTime"]
                    and p
                ),
                timeout=90,  # one interval (1m) plus the timer's tick
            )
            assert refreshed["status"]["daysRefreshed"] == [late_day.isoformat()]
            after = await reader.analytics(query)
            assert (after.tier, after.value["totalRequests"]) == ("redis", before + LATE_REQUESTS)
            assert (await reader.stats())["postgres"]["daysComputedFromSource"] == computed + 1, "only that day"
        events = json.loads(
            kube_cluster.run(
                "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=late-rows", "-o", "json"
            ).stdout
        )["items"]
        changed = [e["message"] for e in events if e["reason"] == "SourceChanged"]
        assert changed == [f"LiteLLM's rows changed after caching; recomputed {late_day.isoformat()}"]
    finally:
        kube_cluster.run("delete", "cwp", "late-rows", "-n", namespace, "--wait=false", check=False)
        operator.terminate()
        operator.wait(timeout=30)
        drop_database(dsn)
