"""Smoke tests of the local control plane (scripts/cluster.sh): the features the
operator relies on behave as on a real cluster."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from tests.k8s.conftest import KubeCluster

pytestmark = pytest.mark.k8s

CRD_NAME = "widgets.smoke.litemaas.test"
WIDGETS = CRD_NAME  # fully qualified resource name for kubectl
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHART = FIXTURES / "tiny-chart"


def _widget(name: str, **spec: Any) -> str:
    return yaml.safe_dump(
        {"apiVersion": "smoke.litemaas.test/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
    )


def _get_json(cluster: KubeCluster, *args: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(cluster.run("get", *args, "-o", "json").stdout)
    return obj


@pytest.fixture(scope="session")
def widgets_crd(kube_cluster: KubeCluster) -> str:
    kube_cluster.run("apply", "--server-side", "--force-conflicts", "-f", str(FIXTURES / "widgets-crd.yaml"))
    kube_cluster.run("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s", timeout=90)
    # Established is set before discovery serves the new resource: wait for that too.
    deadline = time.monotonic() + 60
    while True:
        listed = kube_cluster.run("get", WIDGETS, "--all-namespaces", check=False)
        if listed.returncode == 0:
            return CRD_NAME
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after 60s waiting for {WIDGETS} to be served: {listed.stderr}", pytrace=False)
        time.sleep(0.2)


def test_readyz_and_version(kube_cluster: KubeCluster) -> None:
    assert kube_cluster.run("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(kube_cluster.run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]
    assert version["serverVersion"]["gitVersion"].startswith("v1.")


def test_crd_default_and_cel_rule(kube_cluster: KubeCluster, widgets_crd: str, k8s_namespace: str) -> None:
    ns = k8s_namespace
    # Breaks the CEL rule explicitly.
    bad = kube_cluster.run("apply", "-n", ns, "-f", "-", input=_widget("too-big", size=7, maxSize=5), check=False)
    assert bad.returncode != 0
    assert "size must not exceed maxSize" in bad.stderr
    # Breaks it through the default (maxSize defaults to 10): defaults apply before validation.
    bad = kube_cluster.run("apply", "-n", ns, "-f", "-", input=_widget("too-big", size=11), check=False)
    assert bad.returncode != 0
    assert "size must not exceed maxSize" in bad.stderr
    # The schema's enum is enforced too.
    bad = kube_cluster.run("apply", "-n", ns, "-f", "-", input=_widget("pink", size=1, color="pink"), check=False)
    assert bad.returncode != 0
    assert "Unsupported value" in bad.stderr
    assert kube_cluster.run("get", WIDGETS, "-n", ns, "-o", "name").stdout.strip() == ""

    kube_cluster.run("apply", "-n", ns, "-f", "-", input=_widget("ok", size=3))
    spec = _get_json(kube_cluster, WIDGETS, "ok", "-n", ns)["spec"]
    assert spec == {"size": 3, "maxSize": 10, "color": "blue"}


def test_status_subresource_and_generation(kube_cluster: KubeCluster, widgets_crd: str, k8s_namespace: str) -> None:
    ns = k8s_namespace
    kube_cluster.run("apply", "-n", ns, "-f", "-", input=_widget("w", size=3))
    obj = _get_json(kube_cluster, WIDGETS, "w", "-n", ns)
    assert obj["metadata"]["generation"] == 1

    # Through /status: status changes, spec does not, generation stays.
    kube_cluster.run(
        "patch", WIDGETS, "w", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Ready", "observedGeneration": 1}, "spec": {"size": 9}}),
    )  # fmt: skip
    obj = _get_json(kube_cluster, WIDGETS, "w", "-n", ns)
    assert obj["status"] == {"phase": "Ready", "observedGeneration": 1}
    assert obj["spec"]["size"] == 3
    assert obj["metadata"]["generation"] == 1

    # Through the main resource: spec changes and bumps generation, status is ignored.
    kube_cluster.run(
        "patch", WIDGETS, "w", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"size": 4}, "status": {"phase": "Hacked"}}),
    )  # fmt: skip
    obj = _get_json(kube_cluster, WIDGETS, "w", "-n", ns)
    assert obj["spec"]["size"] == 4
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["phase"] == "Ready"

    # A metadata-only change does not bump generation.
    kube_cluster.run("label", WIDGETS, "w", "-n", ns, "smoke=yes")
    assert _get_json(kube_cluster, WIDGETS, "w", "-n", ns)["metadata"]["generation"] == 2


def test_printer_columns(kube_cluster: KubeCluster, widgets_crd: str, k8s_namespace: str) -> None:
    ns = k8s_namespace
    kube_cluster.run("apply", "-n", ns, "-f", "-", input=_widget("shown", size=2, maxSize=4))
    kube_cluster.run(
        "patch", WIDGETS, "shown", "-n", ns, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Ready"}}',
    )  # fmt: skip
    lines = kube_cluster.run("get", WIDGETS, "-n", ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MAX-SIZE", "PHASE", "AGE"]
    assert lines[1].split()[:4] == ["shown", "2", "4", "Ready"]


def test_service_account_rbac_with_token_request(
    kube_cluster: KubeCluster, widgets_crd: str, k8s_namespace: str, tmp_path: Path
) -> None:
    ns = k8s_namespace
    other = "default"
    kube_cluster.run("apply", "-n", ns, "-f", "-", input=_widget("visible", size=1))
    kube_cluster.run("create", "serviceaccount", "reader", "-n", ns)
    kube_cluster.run(
        "create", "role", "widget-reader", "-n", ns,
        "--verb=get,list,watch", "--resource=widgets.smoke.litemaas.test",
    )  # fmt: skip
    kube_cluster.run(
        "create", "rolebinding", "reader-binding", "-n", ns,
        "--role=widget-reader", f"--serviceaccount={ns}:reader",
    )  # fmt: skip
    user = f"system:serviceaccount:{ns}:reader"

    def can_i(*args: str) -> str:
        return kube_cluster.run("auth", "can-i", *args, f"--as={user}", check=False).stdout.strip()

    # The RBAC authorizer reads bindings from an informer cache: wait until it has ours.
    deadline = time.monotonic() + 30
    while can_i("list", WIDGETS, "-n", ns) != "yes":
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after 30s waiting for RBAC to let {user} list {WIDGETS}", pytrace=False)
        time.sleep(0.2)
    assert can_i("get", WIDGETS, "-n", ns) == "yes"
    assert can_i("delete", WIDGETS, "-n", ns) == "no"
    assert can_i("create", WIDGETS, "-n", ns) == "no"
    assert can_i("list", "secrets", "-n", ns) == "no"
    assert can_i("list", WIDGETS, "-n", other) == "no"

    # A real token from the TokenRequest API, used on its own (no client certificate).
    token = kube_cluster.run("create", "token", "reader", "-n", ns, "--duration=10m").stdout.strip()
    assert token.count(".") == 2  # a JWT
    sa_kubeconfig = kube_cluster.token_kubeconfig(token, tmp_path / "reader.kubeconfig")

    def as_reader(*args: str) -> Any:
        return kube_cluster.run(*args, kubeconfig=sa_kubeconfig, check=False)

    whoami = as_reader("auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == user

    listed = as_reader("get", WIDGETS, "-n", ns, "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["widget.smoke.litemaas.test/visible"]

    for args in (
        ("delete", WIDGETS, "visible", "-n", ns),
        ("get", "secrets", "-n", ns),
        ("get", WIDGETS, "-n", other),
        ("get", "namespaces"),
    ):
        refused = as_reader(*args)
        assert refused.returncode != 0, f"{args} should be refused"
        assert "Forbidden" in refused.stderr or "forbidden" in refused.stderr, refused.stderr
        assert user in refused.stderr
    assert kube_cluster.run("get", WIDGETS, "visible", "-n", ns, "-o", "name").returncode == 0

    # A made-up token is not accepted at all.
    bogus = kube_cluster.run(
        "get", WIDGETS, "-n", ns, kubeconfig=kube_cluster.token_kubeconfig("not-a-token", tmp_path / "bogus"),
        check=False,
    )  # fmt: skip
    assert bogus.returncode != 0
    assert "Unauthorized" in bogus.stderr or "provide credentials" in bogus.stderr, bogus.stderr


def test_helm_lint_template_install_uninstall(kube_cluster: KubeCluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    lint = kube_cluster.helm_run("lint", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout

    rendered = kube_cluster.helm_run("template", "smoke", str(CHART), "--set", "greeting=hi").stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("ConfigMap", "smoke-tiny")]
    assert docs[0]["data"] == {"greeting": "hi"}

    kube_cluster.helm_run("install", "smoke", str(CHART), "-n", ns, "--set", "greeting=hello-cluster")
    cm = _get_json(kube_cluster, "configmap", "smoke-tiny", "-n", ns)
    assert cm["data"] == {"greeting": "hello-cluster"}
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    releases = json.loads(kube_cluster.helm_run("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("smoke", "deployed")]

    kube_cluster.helm_run("uninstall", "smoke", "-n", ns, "--wait", "--timeout=60s", timeout=90)
    gone = kube_cluster.run("get", "configmap", "smoke-tiny", "-n", ns, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
    assert json.loads(kube_cluster.helm_run("list", "-n", ns, "-o", "json").stdout) == []
