"""`helm install` of the real chart into the local kube-apiserver: what lands, and that RBAC is what it claims."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.k8s.conftest import FIXTURES, KubeCluster

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


def test_helm_install_with_the_bundled_redis(kube_cluster: KubeCluster, crds: None, k8s_namespace: str) -> None:
    """The bundled Redis (on by default; here with persistence and the API) is accepted by the API server as
    rendered, the generated password survives `helm upgrade`, and uninstall removes it."""
    release = f"lco-{uuid.uuid4().hex[:6]}"
    redis = f"{release}-litemaas-cache-operator-redis"
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=redis"
    flags = ["--namespace", k8s_namespace, "--wait=false"]
    flags += [f"--set={value}" for value in ("crds.enabled=false", "peering.enabled=false", "api.enabled=true")]
    flags += ["--set=redis.persistence.enabled=true", "--set=redis.persistence.size=2Gi"]

    def get(kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            kube_cluster.run("get", kind, name, "-n", k8s_namespace, "-o", "json").stdout
        )
        return found

    install = kube_cluster.helm_run("install", release, str(CHART), *flags, timeout=120)
    assert "STATUS: deployed" in install.stdout
    try:
        kinds = kube_cluster.run(
            "get", "statefulset,service,secret,networkpolicy", "-n", k8s_namespace, "-l", selector, "-o", "name"
        ).stdout.split()
        assert sorted(kinds) == sorted(
            f"{kind}/{redis}" for kind in ("statefulset.apps", "service", "secret", "networkpolicy.networking.k8s.io")
        )
        statefulset = get("statefulset", redis)
        pod = statefulset["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsUser"] == 999
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        args = container["args"]
        assert args[args.index("--maxmemory-policy") + 1] == "volatile-lru"
        assert args[args.index("--appendonly") + 1] == "yes"
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
        assert container["readinessProbe"]["exec"]["command"][0] == "sh"
        assert get("service", redis)["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
        for component in ("operator", "api"):
            (deployment,) = json.loads(
                kube_cluster.run(
                    "get",
                    "deployment",
                    "-n",
                    k8s_namespace,
                    "-o",
                    "json",
                    "-l",
                    f"app.kubernetes.io/instance={release},app.kubernetes.io/component={component}",
                ).stdout
            )["items"]
            env = {item["name"]: item for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["REDIS_HOST"]["value"] == redis, component
            assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": redis, "key": "REDIS_PASSWORD"}

        password = get("secret", redis)["data"]["REDIS_PASSWORD"]
        assert len(base64.b64decode(password)) == 40
        upgrade = kube_cluster.helm_run("upgrade", release, str(CHART), *flags, timeout=120)
        assert "STATUS: deployed" in upgrade.stdout
        assert get("secret", redis)["data"]["REDIS_PASSWORD"] == password, "helm upgrade must keep the password"
    finally:
        kube_cluster.helm_run("uninstall", release, "--namespace", k8s_namespace, timeout=120)
    left = kube_cluster.run(
        "get", "statefulset,service,secret,networkpolicy", "-n", k8s_namespace, "-l", selector, "-o", "name"
    )
    assert left.stdout.strip() == ""


def render_into(cluster: KubeCluster, namespace: str, ci_values: str, *sets: str) -> str:
    """`helm template` of the chart for `namespace` with a ci/ values file (the CRDs left out: they are installed)."""
    flags = [flag for value in ("crds.enabled=false", *sets) for flag in ("--set", value)]
    return cluster.helm_run(
        "template", "lco", str(CHART), "--namespace", namespace, "--values", str(CHART / "ci" / ci_values), *flags
    ).stdout


def test_network_policy_and_disruption_budgets_are_accepted_by_the_api_server(
    kube_cluster: KubeCluster, k8s_namespace: str
) -> None:
    rendered = render_into(kube_cluster, k8s_namespace, "network-restricted-values.yaml")
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


PROMETHEUS_OPERATOR_CRDS = FIXTURES / "prometheus-operator"  # see its README.md for the source


@pytest.fixture(scope="session")
def prometheus_operator_crds(kube_cluster: KubeCluster) -> None:
    """The Prometheus operator's ServiceMonitor and PrometheusRule CRDs, applied and Established."""
    kube_cluster.run("apply", "--server-side", "--force-conflicts", "-f", str(PROMETHEUS_OPERATOR_CRDS))
    for crd in ("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"):
        kube_cluster.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


def test_monitoring_objects_are_accepted_by_the_api_server(
    kube_cluster: KubeCluster, prometheus_operator_crds: None, k8s_namespace: str
) -> None:
    """The ServiceMonitor, PrometheusRule, metrics Service and dashboard ConfigMap of ci/monitoring-values.yaml pass
    the API server's schema checks (unknown fields refused), and are stored as rendered."""
    rendered = render_into(
        kube_cluster,
        k8s_namespace,
        "monitoring-values.yaml",
        f"metrics.grafanaDashboard.namespace={k8s_namespace}",
        "redis.enabled=false",  # its Service is not a monitoring object (test_helm_install_with_the_bundled_redis)
    )
    kinds = ("ServiceMonitor", "PrometheusRule", "ConfigMap", "Service")
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in kinds]
    expected = ["ConfigMap", "PrometheusRule", "Service", "Service", "ServiceMonitor"]
    assert sorted(doc["kind"] for doc in docs) == expected

    def apply(*extra: str, objects: list[dict[str, object]], check: bool = True) -> subprocess.CompletedProcess[str]:
        return kube_cluster.run(
            "apply",
            *extra,
            "--validate=strict",
            "-n",
            k8s_namespace,
            "-o",
            "json",
            "-f",
            "-",
            input=yaml.safe_dump_all(objects),
            check=check,
        )

    dry = json.loads(apply("--dry-run=server", objects=docs).stdout)["items"]
    assert sorted(item["kind"] for item in dry) == expected

    # The schemas do check: a duration Prometheus could not parse, and a field the CRD does not know, are refused.
    monitor = next(doc for doc in docs if doc["kind"] == "ServiceMonitor")
    bad_interval = json.loads(json.dumps(monitor))
    bad_interval["spec"]["endpoints"][0]["interval"] = "5 minutes"
    refused = apply("--dry-run=server", objects=[bad_interval], check=False)
    assert refused.returncode != 0
    assert "spec.endpoints[0].interval" in refused.stderr, refused.stderr
    unknown_field = json.loads(json.dumps(monitor))
    unknown_field["spec"]["endpoints"][0]["scrapeEvery"] = "30s"
    refused = apply("--dry-run=server", objects=[unknown_field], check=False)
    assert refused.returncode != 0
    assert "scrapeEvery" in refused.stderr, refused.stderr

    apply(objects=docs)
    for doc in docs:
        if doc["kind"] in ("ServiceMonitor", "PrometheusRule"):
            stored = json.loads(
                kube_cluster.run("get", doc["kind"], doc["metadata"]["name"], "-n", k8s_namespace, "-o", "json").stdout
            )
            assert stored["spec"] == doc["spec"], f"{doc['kind']} was not stored as rendered"
