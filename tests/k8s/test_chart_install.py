"""`helm install` of the real chart into the local kube-apiserver: what lands, and that RBAC is what it claims."""

from __future__ import annotations

import json
import uuid

import pytest

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
