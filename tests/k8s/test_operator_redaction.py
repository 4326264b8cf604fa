"""Issue 10, item 4, for the operator: the real `litemaas-cache operator` runs with the marker password in every secret
setting it can start with (LiteLLM's database and Redis both refuse it); a warm and an invalidation fail on them, and
their status, the namespace's events and the operator's log hold no trace of the marker."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.conftest import KubeCluster
from tests.k8s.operator_support import apply, condition, get, invalidation, start_operator, wait_for, warm_policy
from tests.support.markers import MARKER, keyword_dsn, leaks
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.k8s


def test_failing_warm_and_invalidation_write_no_secret(
    kube_cluster: KubeCluster, crds: None, operator_env: dict[str, str], tmp_path: Path
) -> None:
    namespace = f"r-{uuid.uuid4().hex[:10]}"
    kube_cluster.run("create", "namespace", namespace)
    redis = RedisServer(tmp_path / "redis", extra_args=["--requirepass", "the-real-password"])
    redis.start()
    env = {
        **os.environ,
        **operator_env,
        "LITELLM_DATABASE_URL": keyword_dsn(operator_env["DATABASE_URL"], f"my {MARKER}"),
        "REDIS_URL": f"redis://:{MARKER}@127.0.0.1:{redis.port}/0",
        "REDIS_PASSWORD": MARKER,
        "API_TOKEN": f"token-{MARKER}",
        "REDIS_KEY_PREFIX": f"redact:{uuid.uuid4().hex[:8]}:",
    }
    log = tmp_path / "operator.log"
    operator = start_operator(env, namespace, log, "--verbose")
    try:
        # Days never cached, so the warm must read LiteLLM's table, whose database refuses the marker password.
        apply(kube_cluster, warm_policy("cold", namespace, {"ranges": [{"start": "2001-05-01", "end": "2001-05-02"}]}))
        apply(kube_cluster, invalidation("purge", namespace, dt.date(2001, 6, 1), dt.date(2001, 6, 2), tiers=["redis"]))
        # A spec the operator refuses, so that it posts an event of its own (kopf's events for the failures above
        # are of type Error, which the API server refuses).
        too_long = {"ranges": [{"start": "2001-01-01", "end": "2001-12-31"}]}
        apply(kube_cluster, warm_policy("too-long", namespace, too_long))
        policy = wait_for(
            "the warm to fail on LiteLLM's database",
            lambda: (p := get(kube_cluster, "cwp", "cold", namespace)) and condition(p, "Ready") == "False" and p,
        )
        purge = wait_for(
            "the invalidation to retry while redis refuses the password",
            lambda: (
                (o := get(kube_cluster, "cinv", "purge", namespace))
                and "retrying" in o.get("status", {}).get("message", "")
                and o
            ),
        )
        events = wait_for(
            "the InvalidSpec event of the policy with too long a range",
            lambda: (
                (items := _events(kube_cluster, namespace))
                and any(e["reason"] == "InvalidSpec" for e in items)
                and items
            ),
        )
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        redis.stop()
        kube_cluster.run("delete", "namespace", namespace, "--wait=false", check=False)

    assert "postgresql unavailable" in policy["status"]["lastError"], policy["status"]
    assert purge["status"]["phase"] == "Running", purge["status"]
    everything = {
        "policy": json.dumps(policy),
        "invalidation": json.dumps(purge),
        "events": json.dumps(events),
        "operator log": log.read_text(),
    }
    assert "falling back" in everything["operator log"]  # redis was met, and refused the marker password
    # kopf logged both failures, with their messages.
    assert "Timer 'warm' failed temporarily: postgresql unavailable" in everything["operator log"]
    assert "Handler 'purge' failed temporarily: redis" in everything["operator log"]
    for where, text in everything.items():
        assert not leaks(text), f"{where}: {leaks(text)}"


def _events(cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(cluster.run("get", "events", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    return items
