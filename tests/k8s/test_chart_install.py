"""`helm install` of the real chart into the local kube-apiserver: what lands, and that RBAC is what it claims."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.k8s.conftest import KubeCluster

pytestmark = pytest.mark.k8s
CHART = REPO_ROOT / "charts" / "litemaas-cache-operator"


def test_helm_install_namespaced_then_uninstall(kube_cluster: KubeCluster, crds: None, k8s_namespace: str) -> None:
    release = f"lco-{uuid.uuid4().hex[:6]}"
    install = kube_cluster.helm_run(
        "install",
        release,
        str(CHART),
        "--namespace",
        k8s_namespace,
        "--set",
        f"watchNamespace={k8s_namespace}",
        "--set",
        "crds.enabled=false",
        "--set",
        "peering.enabled=false",
        "--wait=false",
        timeout=120,
    )
    assert "STATUS: deployed" in install.stdout
    assert "CacheWarmPolicy" in install.stdout  # NOTES.txt tells what to do next, with an example
    try:
        deployment = json.loads(
            kube_cluster.run(
                "get", "deployment", "-n", k8s_namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "json"
            ).stdout
        )["items"]
        assert len(deployment) == 1
        pod = deployment[0]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert "readinessProbe" not in container
        account = pod["serviceAccountName"]

        def can(verb: str, resource: str, namespace: str) -> bool:
            result = kube_cluster.run(
                "auth",
                "can-i",
                verb,
                resource,
                "-n",
                namespace,
                f"--as=system:serviceaccount:{k8s_namespace}:{account}",
                check=False,
            )
            return result.stdout.strip() == "yes"

        assert can("patch", "cachewarmpolicies.cache.litemaas.io/status", k8s_namespace)
        assert can("watch", "cacheinvalidations.cache.litemaas.io", k8s_namespace)
        assert can("create", "events", k8s_namespace)
        assert not can("delete", "cachewarmpolicies.cache.litemaas.io", k8s_namespace)
        assert not can("get", "secrets", k8s_namespace)
        assert not can("watch", "cachewarmpolicies.cache.litemaas.io", "default")  # namespaced install
    finally:
        kube_cluster.helm_run("uninstall", release, "--namespace", k8s_namespace, timeout=120)
    left = kube_cluster.run(
        "get",
        "deployment,serviceaccount,role,rolebinding",
        "-n",
        k8s_namespace,
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    )
    assert left.stdout.strip() == ""


def test_network_policy_and_disruption_budgets_are_accepted_by_the_api_server(
    kube_cluster: KubeCluster, k8s_namespace: str
) -> None:
    values = CHART / "ci" / "network-restricted-values.yaml"
    rendered = kube_cluster.helm_run(
        "template",
        "lco",
        str(CHART),
        "--namespace",
        k8s_namespace,
        "--values",
        str(values),
        "--set",
        "crds.enabled=false",
    ).stdout
    docs = [
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in ("NetworkPolicy", "PodDisruptionBudget")
    ]
    assert sorted(doc["kind"] for doc in docs) == ["NetworkPolicy", "PodDisruptionBudget", "PodDisruptionBudget"]
    applied = kube_cluster.run(
        "apply", "--dry-run=server", "-n", k8s_namespace, "-o", "json", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    accepted = json.loads(applied.stdout)["items"]
    assert sorted(item["kind"] for item in accepted) == ["NetworkPolicy", "PodDisruptionBudget", "PodDisruptionBudget"]
    policy = next(item for item in accepted if item["kind"] == "NetworkPolicy")
    assert policy["spec"]["egress"][1]["ports"][0]["port"] == 5432
    budget = next(item for item in accepted if item["kind"] == "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == "50%"
