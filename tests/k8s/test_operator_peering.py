"""Two operator replicas meet in a ClusterKopfPeering: the higher priority warms, the other pauses, so two never warm
the same policy at once. Real `litemaas-cache operator` processes against the local kube-apiserver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.k8s.conftest import KubeCluster
from tests.k8s.operator_support import LITEMAAS_CLI, apply, condition, get, wait_for, warm_policy
from tests.support.redis_server import free_port

pytestmark = pytest.mark.k8s


@pytest.fixture
def peering(kube_cluster: KubeCluster, crds: None) -> Iterator[str]:
    kube_cluster.run("apply", "-f", str(REPO_ROOT / "manifests" / "crds" / "kopf-peerings.yaml"))
    kube_cluster.run("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    name = f"lco-e2e-{uuid.uuid4().hex[:8]}"
    doc = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    kube_cluster.run("apply", "-f", "-", input=yaml.safe_dump(doc))
    yield name
    kube_cluster.run("delete", "clusterkopfpeering", name, "--wait=false", check=False)


def peers(cluster: KubeCluster, name: str) -> dict[str, Any]:
    body = json.loads(cluster.run("get", "clusterkopfpeering", name, "-o", "json").stdout)
    return dict(body.get("status") or {})


def test_two_replicas_one_warms_the_other_pauses(
    kube_cluster: KubeCluster, peering: str, operator_env: dict[str, str], tmp_path: Path
) -> None:
    namespace = f"p-{uuid.uuid4().hex[:10]}"
    kube_cluster.run("create", "namespace", namespace)
    processes: dict[int, subprocess.Popen[bytes]] = {}
    logs = {priority: tmp_path / f"operator-{priority}.log" for priority in (100, 200)}

    def start(priority: int) -> None:
        processes[priority] = subprocess.Popen(
            [
                str(LITEMAAS_CLI),
                "-v",
                "operator",
                "--peering",
                peering,
                "--namespace",
                namespace,
                "--liveness",
                f"http://127.0.0.1:{free_port()}/healthz",
            ],
            env={**os.environ, **operator_env, "OPERATOR_PRIORITY": str(priority), "OPERATOR_STANDALONE": "false"},
            stdout=logs[priority].open("ab"),
            stderr=subprocess.STDOUT,
        )

    try:
        start(200)
        wait_for("the priority-200 replica to register in the peering", lambda: len(peers(kube_cluster, peering)) == 1)
        start(100)
        wait_for("both replicas to register in the peering", lambda: len(peers(kube_cluster, peering)) == 2)
        wait_for(
            "the priority-100 replica to pause in favour of the other",
            lambda: "Pausing operations in favour of" in logs[100].read_text(),
        )
        assert {info["priority"] for info in peers(kube_cluster, peering).values()} == {100, 200}

        policy = warm_policy("peered", namespace, {"ranges": [{"preset": "last-7-days"}], "interval": "1m"})
        apply(kube_cluster, policy)
        ready = wait_for(
            "the policy to be warmed by the active replica",
            lambda: (p := get(kube_cluster, "cwp", "peered", namespace)) and condition(p, "Ready") == "True" and p,
        )
        assert ready["status"]["keysWarmed"] >= 0
        assert "Timer 'warm' succeeded" in logs[200].read_text()
        assert "Timer 'warm'" not in logs[100].read_text()  # the paused replica never ran the handler
        events = json.loads(
            kube_cluster.run(
                "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=peered", "-o", "json"
            ).stdout
        )["items"]
        warmed = [e for e in events if e["reason"] == "Warmed"]
        assert len(warmed) == 1, warmed
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
