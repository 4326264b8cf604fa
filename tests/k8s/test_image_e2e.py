"""The container image end to end: built here with podman (scripts/image.sh, as `make image` does), its operator and
HTTP API run from it as the chart's Deployments specify (non-root, read-only root filesystem, no capabilities, host
networking), the operator authenticated as the chart's ServiceAccount with a TokenRequest token. The operator must
reconcile manifests/samples/ with exactly the chart's RBAC; the API must answer what the SQL oracle computes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from litemaas_cache.dates import utc_today
from tests.conftest import REPO_ROOT, managed
from tests.k8s.conftest import SESSION, KubeCluster
from tests.k8s.image_support import SELF_CHECK, ContainerRun, Podman, build_image, container_run
from tests.k8s.operator_support import apply, condition, get, http_json, wait_for
from tests.support.oracle import Filters, open_oracle
from tests.support.redis_server import free_port

pytestmark = pytest.mark.k8s
CHART = REPO_ROOT / "charts" / "litemaas-cache-operator"
SAMPLES = REPO_ROOT / "manifests" / "samples"
KUBECONFIG_IN_CONTAINER = "/var/run/litemaas/kubeconfig"
DENIED = re.compile(r"\b403\b|forbidden", re.IGNORECASE)


@pytest.fixture(scope="module")
def podman() -> Podman:
    return build_image()


@pytest.fixture(scope="module")
def key_prefix(module_dsn: str) -> Iterator[str]:
    """The release's Redis key prefix on the shared Redis; its keys are removed afterwards."""
    prefix = f"image:{uuid.uuid4().hex[:8]}:"
    yield prefix

    async def remove() -> None:
        async with managed(module_dsn, prefix):
            pass

    asyncio.run(remove())


@pytest.fixture(scope="module")
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"lmc-{SESSION}-image-{uuid.uuid4().hex[:6]}"
    kube_cluster.run("create", "namespace", name)
    yield name
    kube_cluster.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def release(kube_cluster: KubeCluster, crds: None, namespace: str, key_prefix: str) -> Iterator[dict[str, Any]]:
    """`helm install` of the chart watching `namespace`, with the API and an external Redis; yields its Deployments
    by component."""
    name = f"lco-{uuid.uuid4().hex[:6]}"
    values = {
        "watchNamespace": namespace,
        "crds.enabled": "false",
        "peering.enabled": "false",
        "api.enabled": "true",
        "config.redisKeyPrefix": key_prefix,
        # The containers run on the host's network against the test's Redis (REDIS_URL in the Secret), not the
        # chart's bundled one (no kubelet here runs its pod).
        "redis.enabled": "false",
    }
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    kube_cluster.helm_run("install", name, str(CHART), "--namespace", namespace, *sets, "--wait=false", timeout=120)
    try:
        listed = kube_cluster.run(
            "get", "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}", "-o", "json"
        )
        items = json.loads(listed.stdout)["items"]
        deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in items}
        assert sorted(deployments) == ["api", "operator"]
        yield deployments
    finally:
        kube_cluster.helm_run("uninstall", name, "--namespace", namespace, timeout=120)


@contextmanager
def started(podman: Podman, run: ContainerRun) -> Iterator[None]:
    """The container, running; removed on the way out."""
    podman.run(*run.argv, env=run.env)
    try:
        yield
    finally:
        podman.run("rm", "--force", "--time", "5", run.name, check=False)


def logs(podman: Podman, run: ContainerRun) -> str:
    out = podman.run("logs", run.name, check=False)
    return out.stdout + out.stderr


def running(podman: Podman, run: ContainerRun) -> bool:
    state = podman.run("inspect", "--format", "{{.State.Running}}", run.name, check=False).stdout.strip()
    if state != "true":
        raise AssertionError(f"the container {run.name} is not running ({state!r}); its log:\n{logs(podman, run)}")
    return True


def assert_confined(podman: Podman, run: ContainerRun) -> None:
    """Inside the container: the chart's user, no effective capability, no_new_privs, a read-only root."""
    seen = podman.run("exec", run.name, "python", "-c", SELF_CHECK).stdout.strip()
    uid, gid, caps, no_new_privs, root = seen.split("|")
    assert (int(uid), int(gid)) == run.user
    assert int(caps, 16) == 0
    assert no_new_privs == "1"
    assert root == "Read-only file system"


def test_operator_from_the_image_reconciles_the_samples_as_the_charts_service_account(
    kube_cluster: KubeCluster,
    podman: Podman,
    release: dict[str, Any],
    namespace: str,
    module_dsn: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deployment = release["operator"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == podman.image.removeprefix("localhost/")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    token = kube_cluster.run("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    kubeconfig = kube_cluster.token_kubeconfig(token, tmp_path / "kubeconfig")
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    metrics_port = free_port()
    run = container_run(
        podman,
        deployment,
        secrets={"DATABASE_URL": module_dsn, "REDIS_URL": os.environ["REDIS_URL"]},
        overrides={
            "KUBECONFIG": KUBECONFIG_IN_CONTAINER,
            "OPERATOR_LIVENESS": liveness,
            "METRICS_PORT": str(metrics_port),
        },
        mounts={kubeconfig: KUBECONFIG_IN_CONTAINER},
    )
    os.chown(kubeconfig, *run.user)  # readable by the container's user only (mode 0600)

    samples = {}
    for path in sorted(SAMPLES.glob("*.yaml")):
        sample = yaml.safe_load(path.read_text())
        sample["metadata"]["namespace"] = namespace
        samples[sample["kind"]] = sample["metadata"]["name"]
        apply(kube_cluster, sample)
    assert sorted(samples) == ["CacheInvalidation", "CacheWarmPolicy"]

    begin = time.monotonic()
    with started(podman, run):
        policy = wait_for(
            "the sample CacheWarmPolicy to be Ready",
            lambda: (
                running(podman, run)
                and (p := get(kube_cluster, "cwp", samples["CacheWarmPolicy"], namespace))
                and condition(p, "Ready") == "True"
                and p["status"].get("keysWarmed", 0) > 0
                and p
            ),
            timeout=180,
            every=0.25,
        )
        ready_after = time.monotonic() - begin
        purge = wait_for(
            "the sample CacheInvalidation to succeed",
            lambda: (
                running(podman, run)
                and (o := get(kube_cluster, "cinv", samples["CacheInvalidation"], namespace))
                and o.get("status", {}).get("phase") in ("Succeeded", "Failed")
                and o
            ),
            timeout=120,
            every=0.25,
        )
        succeeded_after = time.monotonic() - begin
        assert purge["status"]["phase"] == "Succeeded", purge["status"]
        assert condition(policy, "RedisAvailable") == "True"
        assert policy["status"]["daysWarmed"] == 60
        assert http_json(liveness) is not None  # kopf's liveness endpoint answers from inside the image
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            assert 'litemaas_cache_warms_total{outcome="success"}' in response.read().decode()
        assert_confined(podman, run)
        log = logs(podman, run)

    denied = [line for line in log.splitlines() if DENIED.search(line)]
    assert token not in log
    assert not denied, "the operator was denied with the chart's RBAC:\n" + "\n".join(denied)
    with capsys.disabled():
        print(
            f"\n[image e2e] podman run -> CacheWarmPolicy Ready in {ready_after:.1f}s, "
            f"CacheInvalidation Succeeded in {succeeded_after:.1f}s; RBAC denials in the operator's log: {len(denied)}"
        )


def test_api_from_the_image_answers_health_and_an_authenticated_analytics_call(
    podman: Podman, release: dict[str, Any], module_dsn: str
) -> None:
    token = secrets.token_urlsafe(32)
    port = free_port()
    run = container_run(
        podman,
        release["api"],
        secrets={"DATABASE_URL": module_dsn, "REDIS_URL": os.environ["REDIS_URL"], "API_TOKEN": token},
        overrides={"API_HOST": "127.0.0.1", "API_PORT": str(port)},
        mounts={},
    )
    assert all(token not in arg for arg in run.argv)  # the secret reaches podman through its environment only
    base = f"http://127.0.0.1:{port}"
    today = utc_today()
    week = {"startDate": (today - dt.timedelta(days=6)).isoformat(), "endDate": today.isoformat()}

    def post(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{base}/api/v1/admin/usage/analytics", data=json.dumps(week).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def healthy() -> Any:
        running(podman, run)
        try:
            return http_json(f"{base}/healthz")
        except OSError:
            return None

    with started(podman, run):
        assert wait_for("the API's /healthz", healthy, timeout=120) == {"status": "ok"}
        status, refused = post({"Content-Type": "application/json"})
        assert (status, refused["code"]) == (401, "UNAUTHORIZED")
        status, document = post({"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        assert status == 200, document
        assert_confined(podman, run)
        log = logs(podman, run)

    async def expected() -> int:
        async with open_oracle(module_dsn) as oracle:
            sums = await oracle.group(today - dt.timedelta(days=6), today, Filters([], [], [], []))
        return sums[()].requests

    assert document["period"] == week
    assert document["totalRequests"] == asyncio.run(expected()) > 0
    assert token not in log
