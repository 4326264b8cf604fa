"""The operator's /metrics (METRICS_PORT) after a known sequence: a cold warm, then a warm of the same results."""

from __future__ import annotations

import os
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.conftest import KubeCluster
from tests.k8s.operator_support import apply, condition, get, start_operator, stop_operator, wait_for, warm_policy
from tests.support.redis_server import free_port
from tests.support.scrape import Scrape

pytestmark = pytest.mark.k8s


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return Scrape(response.read().decode())


def answering(url: str) -> Scrape | None:
    try:
        return scrape(url)
    except OSError:
        return None


def warmed(cluster: KubeCluster, name: str, namespace: str, generation: int) -> dict[str, Any] | None:
    policy = get(cluster, "cwp", name, namespace)
    status = policy.get("status", {})
    done = status.get("observedGeneration") == generation and condition(policy, "Ready") == "True"
    return policy if done else None


def test_operator_metrics_count_a_cold_warm_then_redis_hits(
    kube_cluster: KubeCluster, crds: None, operator_env: dict[str, str], tmp_path: Path
) -> None:
    namespace = f"m-{uuid.uuid4().hex[:10]}"
    kube_cluster.run("create", "namespace", namespace)
    port = free_port()
    env = {
        **os.environ,
        **operator_env,
        "REDIS_KEY_PREFIX": f"metrics:{uuid.uuid4().hex[:8]}:",  # nothing of this prefix in Redis yet
        "METRICS_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}/metrics"
    operator = start_operator(env, namespace, tmp_path / "operator.log")
    try:
        idle = wait_for("the operator's /metrics to answer", lambda: answering(url))
        assert idle.value("litemaas_cache_warms_total", outcome="success") == 0
        assert idle.value("litemaas_cache_redis_breaker_state", state="closed") == 1

        # A cold warm: the analytics of the last 7 days and its by-model breakdown, both missing from Redis.
        policy = warm_policy("metered", namespace, {"ranges": [{"preset": "last-7-days"}], "breakdowns": ["model"]})
        apply(kube_cluster, policy)
        first = wait_for("the first warm", lambda: warmed(kube_cluster, "metered", namespace, 1))
        cold = scrape(url)
        assert cold.value("litemaas_cache_warms_total", outcome="success") == 1
        assert cold.value("litemaas_cache_warm_duration_seconds_count") == 1
        assert cold.value("litemaas_cache_warm_keys_written_total") == first["status"]["keysWarmed"] > 0
        assert cold.value("litemaas_cache_requests_total") == 2
        assert cold.value("litemaas_cache_misses_total", kind="result", tier="redis") == 2
        assert cold.value("litemaas_cache_hits_total", kind="result", tier="redis") == 0
        assert cold.value("litemaas_cache_computations_total") == 2
        day_misses = cold.value("litemaas_cache_misses_total", kind="day", tier="redis")
        assert day_misses > 0  # a fresh key prefix: every day read went past Redis, to PostgreSQL or the source
        postgres_reads = cold.sum("litemaas_cache_hits_total", kind="day", tier="postgres") + cold.value(
            "litemaas_cache_misses_total", kind="day", tier="postgres"
        )
        assert postgres_reads == day_misses
        assert cold.value("litemaas_cache_source_reads_total", kind="day") == cold.value(
            "litemaas_cache_misses_total", kind="day", tier="postgres"
        )

        # The spec changes (a new generation), so the same two results are warmed again: both are Redis hits now.
        policy["spec"]["interval"] = "30m"
        apply(kube_cluster, policy)
        wait_for("the second warm", lambda: warmed(kube_cluster, "metered", namespace, 2))
        hot = scrape(url)
        assert hot.value("litemaas_cache_warms_total", outcome="success") == 2
        assert hot.value("litemaas_cache_requests_total") == 4
        assert hot.value("litemaas_cache_hits_total", kind="result", tier="redis") == 2
        assert hot.value("litemaas_cache_misses_total", kind="result", tier="redis") == 2
        assert hot.value("litemaas_cache_computations_total") == 2  # nothing computed a second time
        assert hot.value("litemaas_cache_warms_total", outcome="failure") == 0
        assert hot.value("litemaas_cache_db_pool_connections", pool="litemaas") >= 1
    finally:
        stop_operator(operator)
    log = (tmp_path / "operator.log").read_text()
    assert "Traceback" not in log, log[-3000:]
