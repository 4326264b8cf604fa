"""Fixtures for tests against a real local Kubernetes control plane.

``kube_cluster`` (session) runs ``scripts/cluster.sh up`` once: it builds the
pinned kube-apiserver (embedded etcd), kubectl and helm from ``tests/cluster``
if needed and starts the control plane, or reuses one that already runs. The
cluster is left running afterwards so the next session starts fast; ``make
cluster-down`` (``scripts/cluster.sh down``) stops it and removes its state.

If the cluster cannot start, tests that need it FAIL with the script's output.
They are skipped only when ``LITEMAAS_SKIP_K8S=1`` is set.

There is no controller-manager, scheduler or kubelet: nothing reconciles, no
pods run, deleted namespaces stay ``Terminating`` (so ``k8s_namespace`` always
uses fresh names) and ServiceAccounts must be created explicitly.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import create_database, drop_database
from tests.support.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO_ROOT / "scripts" / "cluster.sh"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# `up` may include a cold Go build of kube-apiserver/kubectl/helm (~10-20 min on 2 cores).
UP_TIMEOUT_S = float(os.environ.get("LITEMAAS_CLUSTER_UP_TIMEOUT", "2400"))
COMMAND_TIMEOUT_S = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs the local Kubernetes control plane (scripts/cluster.sh)")


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the command's output."""

    def __str__(self) -> str:
        return (
            f"{shlex.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def _run(
    cmd: list[str],
    *,
    env: dict[str, str],
    check: bool,
    input: str | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"gave up after {timeout:.0f}s waiting for: {shlex.join(cmd)}") from exc
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


@dataclasses.dataclass(frozen=True)
class KubeCluster:
    kubeconfig: Path
    bin_dir: Path
    kubectl: Path
    helm: Path
    home: Path  # per-session folder for kubectl/helm caches and test kubeconfigs

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            KUBECACHEDIR=str(self.home / "kube-cache"),
            HELM_CACHE_HOME=str(self.home / "helm" / "cache"),
            HELM_CONFIG_HOME=str(self.home / "helm" / "config"),
            HELM_DATA_HOME=str(self.home / "helm" / "data"),
        )
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl with the admin kubeconfig (or ``kubeconfig``)."""
        cmd = [str(self.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *map(str, args)]
        return _run(cmd, env=self.env, check=check, input=input, timeout=timeout)

    def helm_run(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run helm with the admin kubeconfig and throw-away helm homes."""
        cmd = [str(self.helm), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        return _run(cmd, env=self.env, check=check, input=None, timeout=timeout)

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """Write a kubeconfig that authenticates with a bearer ``token`` only."""
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    @property
    def ca_cert_pem(self) -> bytes:
        admin = yaml.safe_load(self.kubeconfig.read_text())
        return base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> KubeCluster:
    if os.environ.get("LITEMAAS_SKIP_K8S") == "1":
        pytest.skip("LITEMAAS_SKIP_K8S=1 is set: skipping tests that need the local Kubernetes control plane")
    cmd = ["bash", str(CLUSTER_SH), "up"]
    try:
        up = subprocess.run(cmd, capture_output=True, text=True, timeout=UP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(
            f"gave up after {UP_TIMEOUT_S:.0f}s waiting for `{shlex.join(cmd)}` "
            f"(building and starting the Kubernetes control plane); stderr tail:\n{_tail(stderr)}",
            pytrace=False,
        )
    if up.returncode != 0 or not up.stdout.strip():
        pytest.fail(
            f"`{shlex.join(cmd)}` failed (exit {up.returncode}); the local Kubernetes control plane "
            f"did not start. Set LITEMAAS_SKIP_K8S=1 to skip these tests. stderr tail:\n{_tail(up.stderr)}",
            pytrace=False,
        )
    kubeconfig = Path(up.stdout.strip().splitlines()[-1])

    env_out = subprocess.run(
        ["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    bin_dir: Path | None = None
    for line in env_out.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and words[1].startswith("PATH="):
            bin_dir = Path(words[1].removeprefix("PATH=").split(os.pathsep)[0])
    if bin_dir is None:
        pytest.fail(f"`scripts/cluster.sh env` printed no PATH line:\n{env_out}", pytrace=False)

    cluster = KubeCluster(
        kubeconfig=kubeconfig,
        bin_dir=bin_dir,
        kubectl=bin_dir / "kubectl",
        helm=bin_dir / "helm",
        home=tmp_path_factory.mktemp("kube-home"),
    )
    missing = [str(p) for p in (kubeconfig, cluster.kubectl, cluster.helm) if not p.exists()]
    if missing:
        pytest.fail(f"scripts/cluster.sh up succeeded but these are missing: {', '.join(missing)}", pytrace=False)
    ready = cluster.run("get", "--raw", "/readyz", check=False)
    if ready.stdout.strip() != "ok":
        pytest.fail(f"the control plane at {kubeconfig} is not ready: {ready.stdout}{ready.stderr}", pytrace=False)
    return cluster


# Test namespaces of this pytest session are named lmc-<SESSION>-...: the operator under test watches only those, so
# two sessions sharing the local control plane (a developer's and CI's, say) never reconcile each other's objects.
SESSION = uuid.uuid4().hex[:6]
SESSION_NAMESPACES = f"lmc-{SESSION}-*"


@pytest.fixture
def k8s_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards; it stays Terminating)."""
    name = f"lmc-{SESSION}-{uuid.uuid4().hex[:8]}"
    kube_cluster.run("create", "namespace", name)
    kube_cluster.run("label", "namespace", name, "litemaas.test/ephemeral=true")
    try:
        yield name
    finally:
        kube_cluster.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def crds(kube_cluster: KubeCluster) -> None:
    """The project's CRDs (crds/), applied and Established."""
    kube_cluster.run("apply", "-f", str(REPO_ROOT / "crds"))
    for crd in ("cachewarmpolicies.cache.litemaas.io", "cacheinvalidations.cache.litemaas.io"):
        kube_cluster.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


# -- what the operator under test runs with: its own database copy, its own redis-server ----------------------


@pytest.fixture(scope="session")
def operator_db(seeded_dsn: str) -> Iterator[str]:
    dsn = create_database(seeded_dsn)
    yield dsn
    drop_database(dsn)


@pytest.fixture(scope="session")
def operator_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("operator-redis")) as server:
        yield server


@pytest.fixture(scope="session")
def operator_env(kube_cluster: KubeCluster, operator_db: str, operator_redis: RedisServer) -> dict[str, str]:
    """The environment the operator runs with (and tests use to open their own manager on the same data)."""
    return {
        "DATABASE_URL": operator_db,
        "REDIS_URL": operator_redis.url,
        "REDIS_KEY_PREFIX": f"e2e:{uuid.uuid4().hex[:8]}:",
        "REDIS_BREAKER_RESET_SECONDS": "0.5",
        "OPERATOR_RETRY_SECONDS": "1",
        "METRICS_PORT": "0",  # off: replicas of a test would fight over one port; the metrics test picks a free one
        "KUBECONFIG": str(kube_cluster.kubeconfig),
    }
