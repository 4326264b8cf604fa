"""Helpers of the operator tests: waits with deadlines, kubectl reads, and custom resource documents."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.conftest import KubeCluster
from tests.support.redis_server import free_port

LITEMAAS_CLI = Path(sys.executable).with_name("litemaas-cache")  # the console script beside this interpreter
WAIT_SECONDS = 90.0


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT_SECONDS, every: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` (and the last value) on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def start_operator(env: dict[str, str], namespace: str, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """The real `litemaas-cache operator` process, standalone, watching `namespace`; its output appended to `log`.
    Its /metrics endpoint is where env's METRICS_PORT says (operator_env turns it off)."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [
                str(LITEMAAS_CLI),
                *options,
                "operator",
                "--standalone",
                "--namespace",
                namespace,
                "--liveness",
                f"http://127.0.0.1:{free_port()}/healthz",
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def stop_operator(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (kopf's graceful stop), and SIGKILL if it has not exited within 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def get(cluster: KubeCluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(cluster.run("get", kind, name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]


def condition(obj: dict[str, Any], type_: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return str(cond["status"])
    return None


def apply(cluster: KubeCluster, doc: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.run("apply", "-f", "-", input=yaml.safe_dump(doc), check=check)


def warm_policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cache.litemaas.io/v1alpha1",
        "kind": "CacheWarmPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def invalidation(name: str, namespace: str, start: dt.date, end: dt.date, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cache.litemaas.io/v1alpha1",
        "kind": "CacheInvalidation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"startDate": start.isoformat(), "endDate": end.isoformat(), **spec},
    }
