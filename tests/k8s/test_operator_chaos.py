"""The operator process while its PostgreSQL restarts in the middle of a warm: the CacheWarmPolicy goes Ready=False,
then Ready=True by itself, the process never exits, and no cached day is half-written. A PostgreSQL, a Redis and a
namespace of the test's own."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from litemaas_cache.dates import utc_today
from tests.conftest import prepare_database
from tests.k8s.conftest import KubeCluster
from tests.k8s.operator_support import apply, condition, get, start_operator, wait_for, warm_policy
from tests.support.day_audit import audit_cached_days
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.k8s, pytest.mark.slow]


def _weeks(count: int) -> list[tuple[str, str]]:
    """`count` consecutive weeks before the last seven days."""
    today = utc_today()
    return [
        ((today - dt.timedelta(days=7 * w + 13)).isoformat(), (today - dt.timedelta(days=7 * w + 7)).isoformat())
        for w in range(count)
    ]


def _cached_days(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM litemaas_cache.daily_usage WHERE aggregates IS NOT NULL"
            ).fetchone()
    except psycopg.OperationalError:
        return 0
    return int(row[0]) if row else 0


DOWN_SECONDS = 3.0


async def test_postgresql_restarted_during_a_warm_the_policy_recovers_by_itself(
    kube_cluster: KubeCluster, crds: None, tmp_path: Path
) -> None:
    namespace = f"k-{uuid.uuid4().hex[:10]}"
    kube_cluster.run("create", "namespace", namespace)
    with PostgresServer() as postgres, RedisServer(tmp_path / "redis") as redis:
        dsn = postgres.create_database("litemaas")
        await prepare_database(dsn)
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REDIS_URL": redis.url,
            "REDIS_KEY_PREFIX": f"pg-chaos:{uuid.uuid4().hex[:8]}:",
            "OPERATOR_RETRY_SECONDS": "2",
            # A pooled connection is waited for this long (PostgreSQL may come back meanwhile: an outage shorter
            # than this passes unnoticed, which is not what this test is about).
            "DB_POOL_TIMEOUT_SECONDS": "1",
            "KUBECONFIG": str(kube_cluster.kubeconfig),
        }
        operator = start_operator(env, namespace, tmp_path / "operator.log")
        # A long warm (40 days in 8 ranges, 3 filter sets, 3 breakdowns: 96 results), so the restart lands inside it.
        spec = {
            "interval": "10m",
            "ranges": [{"preset": "last-7-days"}, *({"start": s, "end": e} for s, e in _weeks(7))],
            "filters": [{}, {"modelIds": ["gpt-4o"]}, {"providerIds": ["openai"]}],
            "breakdowns": ["user", "model", "provider"],
        }
        seen: list[tuple[float, str | None, str | None]] = []  # (when, Ready, its reason) as the test saw them
        stop_watching = threading.Event()

        def watch() -> None:
            while not stop_watching.is_set():
                policy = get(kube_cluster, "cwp", "restart", namespace)
                ready = [c for c in policy.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
                seen.append((time.monotonic(), *((ready[0]["status"], ready[0]["reason"]) if ready else (None, None))))
                time.sleep(0.2)

        try:
            apply(kube_cluster, warm_policy("restart", namespace, spec))
            wait_for("the warm to write its first days", lambda: _cached_days(dsn) > 0, every=0.05)
            assert condition(get(kube_cluster, "cwp", "restart", namespace), "Ready") is None, "the warm runs"
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            stopped = time.monotonic()
            # Down long enough that the warm cannot ride over it (connections are checked before they are reused,
            # and a pooled one is waited for): pg_ctl stop -m fast, DOWN_SECONDS, then start.
            postgres.stop()
            await asyncio.sleep(DOWN_SECONDS)
            postgres.start()
            restarted = time.monotonic()
            assert operator.poll() is None

            def recovered() -> bool:
                assert operator.poll() is None, "the operator exited"
                states = [ready for _, ready, _ in seen]
                return "False" in states and states[-1] == "True" and states.index("False") < len(states) - 1

            wait_for("Ready=False and then Ready=True", recovered, every=0.5)
            stop_watching.set()
            watcher.join(timeout=10)
            policy = get(kube_cluster, "cwp", "restart", namespace)
            assert condition(policy, "Ready") == "True"
            assert policy["status"].get("lastError") is None
            assert operator.poll() is None, "the operator never exited"
            checked = audit_cached_days(dsn)
            assert checked == policy["status"]["daysWarmed"]
        finally:
            stop_watching.set()
            kube_cluster.run("delete", "cwp", "restart", "-n", namespace, "--wait=false", check=False)
            operator.terminate()
            operator.wait(timeout=30)
    first_false, _, false_reason = min(s for s in seen if s[1] == "False")
    back = min(t for t, ready, _ in seen if ready == "True" and t > first_false)
    log = (tmp_path / "operator.log").read_text()
    print(
        "operator postgresql restart figures:",
        json.dumps(
            {
                "downSeconds": round(restarted - stopped, 2),
                "readyFalseSeenAfterStopSeconds": round(first_false - stopped, 1),
                "readyFalseReason": false_reason,
                "readyTrueAgainAfterStopSeconds": round(back - stopped, 1),
                "readyFalseToTrueSeconds": round(back - first_false, 1),
                "daysChecked": checked,
                "operatorTracebacks": log.count("Traceback"),
            }
        ),
    )
