"""The Helm chart (charts/litemaas-cache-operator): lint, rendered objects, values documentation, and the plain
manifests/ (rendered from it by `make generate`) that mirror its default render.

Needs the helm binary (env HELM, else the one tests/cluster/build.sh builds, else PATH) but no cluster. Without helm
these tests fail; LITEMAAS_SKIP_K8S=1 skips them.
Regenerate the default-render snapshot with UPDATE_CHART_SNAPSHOTS=1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scripts import generate
from scripts.generate import CHART, MANIFESTS, NAMESPACE, RELEASE

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SNAPSHOT = Path(__file__).parent / "chart_snapshots" / "default.yaml"

API_CREDENTIALS = ("API_TOKEN", "JWT_SECRET", "ADMIN_API_KEYS")
SECRET_ENV = {"DATABASE_URL", "LITELLM_DATABASE_URL", "REDIS_URL", "REDIS_PASSWORD", *API_CREDENTIALS}
RATE_LIMIT_ENV = ("ADMIN_ANALYTICS_RATE_LIMIT", "ADMIN_EXPORT_RATE_LIMIT", "ADMIN_CACHE_REBUILD_LIMIT")
# Resources of the rules this chart writes that are cluster-scoped (they must never sit in a namespaced Role).
CLUSTER_SCOPED = {"customresourcedefinitions", "clusterkopfpeerings", "namespaces"}
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
REDIS = f"{RELEASE}-redis"  # the bundled Redis's StatefulSet, Service, NetworkPolicy and generated Secret
# The generated Redis password in a render: random per `helm template`, so the snapshot masks it.
GENERATED_PASSWORD = re.compile(r"^(  REDIS_PASSWORD: )\S+$", re.M)

Doc = dict[str, Any]


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = generate.run_helm(helm, *args)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def template_text(helm: str, *extra: str) -> str:
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra).stdout


def render(helm: str, *extra: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(template_text(helm, *extra)) if doc]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [doc for doc in of_kind(docs, kind) if name is None or doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_deployment(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", RELEASE)


def env_of(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


def values_args(path: Path | None) -> list[str]:
    return [] if path is None else ["--values", str(path)]


VARIANTS = [None, *CI_VALUES]
VARIANT_IDS = ["default", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]


# --- lint and render ---------------------------------------------------------------------------------------------


def test_ci_variants_exist() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"namespaced-values.yaml", "api-enabled-values.yaml", "peering-disabled-values.yaml"} <= names


@pytest.mark.parametrize("values", VARIANTS, ids=VARIANT_IDS)
def test_lint(helm: str, values: Path | None) -> None:
    run_helm(helm, "lint", "--strict", str(CHART), *values_args(values))


@pytest.mark.parametrize("values", VARIANTS, ids=VARIANT_IDS)
def test_pods_are_locked_down(helm: str, values: Path | None) -> None:
    deployments = of_kind(render(helm, *values_args(values)), "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["enableServiceLinks"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"], name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert context["readOnlyRootFilesystem"] is True, name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
            assert container["resources"]["limits"]["memory"], name


@pytest.mark.parametrize("values", VARIANTS, ids=VARIANT_IDS)
def test_secrets_are_referenced_never_inlined(helm: str, values: Path | None) -> None:
    docs = render(helm, *values_args(values))
    # existingSecret only, but for the bundled Redis's generated password, which no value carries.
    for secret in of_kind(docs, "Secret"):
        assert secret["metadata"]["name"] == REDIS, "the chart must not create Secrets (existingSecret only)"
        assert set(secret["data"]) == {"REDIS_PASSWORD"}
    for deployment in of_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "envFrom" not in container
            for name, item in env_of(container).items():
                if name in SECRET_ENV:
                    assert "value" not in item, f"{name} is inlined in {deployment['metadata']['name']}"
                    assert item["valueFrom"]["secretKeyRef"]["key"] == name
    schema_text = (CHART / "values.schema.json").read_text()
    assert not re.search(r'"[A-Za-z]*(password|token|Url|dsn)[A-Za-z]*"\s*:', schema_text, re.I), (
        "values must not carry secrets; they come from existingSecret"
    )


def test_default_render(helm: str) -> None:
    docs = render(helm)
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == sorted(
        {"ServiceAccount", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Deployment"}
        | {"ClusterKopfPeering"}
        | {"StatefulSet", "Service", "Secret", "NetworkPolicy"}  # the bundled Redis
    )
    assert not of_kind(docs, "Role")
    assert [doc["metadata"]["name"] for doc in of_kind(docs, "Service")] == [REDIS]
    crds = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "CustomResourceDefinition")}
    assert set(crds) == {
        "cachewarmpolicies.cache.litemaas.io",
        "cacheinvalidations.cache.litemaas.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for crd in crds.values():
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}

    deployment = operator_deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["args"] == ["operator"]
    assert container["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8081, "protocol": "TCP"},  # METRICS_PORT's default
    ]
    assert "METRICS_PORT" not in env_of(container)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "readinessProbe" not in container, "an operator has nothing to be ready for"
    env = env_of(container)
    assert env["OPERATOR_PEERING"]["value"] == "litemaas-cache-operator"
    assert env["OPERATOR_STANDALONE"]["value"] == "false"
    assert env["CACHE_TTL_HISTORICAL_DAY"]["value"] == "2592000", "large integers must not render as floats"
    assert env["REDIS_KEY_PREFIX"]["value"] == "litemaas:"
    assert not set(API_CREDENTIALS) & set(env), "the operator does not need the API's credentials"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "litemaas-cache", "key": "DATABASE_URL"}
    assert env["REDIS_HOST"]["value"] == REDIS, "the bundled Redis is the default"
    assert "REDIS_URL" not in env, "existingSecret's REDIS_URL would override the bundled Redis"

    peering = one(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == env["OPERATOR_PEERING"]["value"]
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_default_render_matches_snapshot(helm: str) -> None:
    text, masked = GENERATED_PASSWORD.subn(r"\1<generated>", template_text(helm))
    assert masked == 1, "the generated Redis password was not found in the render"
    if os.environ.get("UPDATE_CHART_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing; create it with UPDATE_CHART_SNAPSHOTS=1"
    assert text == SNAPSHOT.read_text(), (
        "the default render changed; review `helm template` and refresh with UPDATE_CHART_SNAPSHOTS=1 "
        "(and run `make generate`)"
    )


# --- availability and network exposure ---------------------------------------------------------------------------

RESTRICTED = CHART / "ci" / "network-restricted-values.yaml"


def test_pod_disruption_budgets_only_for_deployments_of_several_replicas(helm: str) -> None:
    assert not of_kind(render(helm, "--set", "api.enabled=true"), "PodDisruptionBudget")  # one replica each
    assert not of_kind(render(helm, "--set", "api.replicaCount=3"), "PodDisruptionBudget")  # no API deployed
    only_api = render(helm, "--set", "api.enabled=true", "--set", "api.replicaCount=2")
    assert [doc["metadata"]["name"] for doc in of_kind(only_api, "PodDisruptionBudget")] == [f"{RELEASE}-api"]

    docs = render(helm, "--set", "replicaCount=2", "--set", "api.enabled=true", "--set", "api.replicaCount=2")
    budgets = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "PodDisruptionBudget")}
    assert set(budgets) == {RELEASE, f"{RELEASE}-api"}
    for deployment in of_kind(docs, "Deployment"):
        budget = budgets[deployment["metadata"]["name"]]
        assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}


def test_api_network_policy_opens_the_api_port_to_the_namespace_by_default(helm: str) -> None:
    api_policy = f"{RELEASE}-api"
    no_api = render(helm)  # no API pods, nothing to protect
    assert api_policy not in [doc["metadata"]["name"] for doc in of_kind(no_api, "NetworkPolicy")]
    assert not of_kind(
        render(
            helm,
            *("--set", "api.enabled=true", "--set", "networkPolicy.api.enabled=false"),
            *("--set", "redis.networkPolicy.enabled=false"),
        ),
        "NetworkPolicy",
    )

    docs = render(helm, "--set", "api.enabled=true")
    policy = one(docs, "NetworkPolicy", api_policy)["spec"]
    api = one(docs, "Deployment", f"{RELEASE}-api")
    assert policy["podSelector"] == api["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]  # egress left open by default
    (rule,) = policy["ingress"]
    assert rule == {"ports": [{"port": "http", "protocol": "TCP"}], "from": [{"podSelector": {}}]}
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]

    closed = one(
        render(helm, "--set", "api.enabled=true", "--set", "networkPolicy.api.allowSameNamespace=false"),
        "NetworkPolicy",
        api_policy,
    )
    assert closed["spec"]["ingress"] == []


def test_api_network_policy_restricted_by_values(helm: str) -> None:
    values = yaml.safe_load(RESTRICTED.read_text())["networkPolicy"]["api"]
    policy = one(render(helm, "--values", str(RESTRICTED)), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["from"] == values["allowedFrom"]
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert policy["egress"] == [dns, *values["extraEgress"]]


# --- the bundled Redis --------------------------------------------------------------------------------------------


def redis_container(docs: list[Doc]) -> Doc:
    (container,) = one(docs, "StatefulSet", REDIS)["spec"]["template"]["spec"]["containers"]
    return container


def redis_args(container: Doc) -> dict[str, str]:
    """redis-server's `--option value` pairs."""
    args = container["args"]
    assert all(flag.startswith("--") for flag in args[::2]), args
    return dict(zip(args[::2], args[1::2], strict=True))


def test_bundled_redis_is_rendered_by_default_locked_down_and_a_cache(helm: str) -> None:
    docs = render(helm, "--set", "api.enabled=true")
    statefulset = one(docs, "StatefulSet", REDIS)
    assert statefulset["spec"]["replicas"] == 1
    assert "volumeClaimTemplates" not in statefulset["spec"]
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 999,
        "runAsGroup": 999,
        "fsGroup": 999,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = redis_container(docs)
    assert container["image"] == "redis:7.4-alpine"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["limits"]["memory"] == "384Mi"
    assert redis_args(container) == {
        "--port": "6379",
        "--dir": "/data",
        "--requirepass": "$(REDIS_PASSWORD)",  # expanded by the kubelet from the Secret, never in the spec
        "--maxmemory": "256mb",
        "--maxmemory-policy": "volatile-lru",  # keys without a TTL (the version mirror) are never evicted
        "--save": "",
        "--appendonly": "no",
    }
    # The read-only root filesystem: Redis's working directory is an emptyDir.
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert pod["volumes"] == [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert "redis-cli" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert container["livenessProbe"]["tcpSocket"] == {"port": "redis"}
    assert {"name": "redis", "containerPort": 6379, "protocol": "TCP"} in container["ports"]

    service = one(docs, "Service", REDIS)
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}]
    for deployment in of_kind(docs, "Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        name = deployment["metadata"]["name"]
        assert env["REDIS_HOST"]["value"] == service["metadata"]["name"], name
        assert env["REDIS_PORT"]["value"] == "6379", name
        assert "REDIS_URL" not in env, name
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": REDIS, "key": "REDIS_PASSWORD"}, name
    assert len(of_kind(docs, "Deployment")) == 2


def test_bundled_redis_password_comes_from_a_secret(helm: str) -> None:
    """Generated into the release's Secret by default (random, in no value), or an existing Secret's key."""
    generated = []
    for _ in range(2):
        docs = render(helm)
        secret = one(docs, "Secret", REDIS)
        password = base64.b64decode(secret["data"]["REDIS_PASSWORD"]).decode()
        assert re.fullmatch(r"[A-Za-z0-9]{40}", password)
        others = yaml.safe_dump_all([doc for doc in docs if doc is not secret])
        assert password not in others
        assert secret["data"]["REDIS_PASSWORD"] not in others
        generated.append(password)
    assert generated[0] != generated[1], "the password must be generated, not fixed"
    env = env_of(redis_container(docs))
    for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):  # requirepass, and the probe's redis-cli
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": REDIS, "key": "REDIS_PASSWORD"}

    docs = render(helm, "--set", "redis.auth.existingSecret=shared-redis", "--set", "redis.auth.existingSecretKey=pw")
    assert not of_kind(docs, "Secret")
    reference = {"name": "shared-redis", "key": "pw"}
    assert env_of(redis_container(docs))["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == reference
    operator_env = env_of(operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0])
    assert operator_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == reference

    refused = run_helm(helm, "template", RELEASE, str(CHART), "--set", "plainManifests=true", check=False)
    assert refused.returncode != 0
    assert "redis.auth.existingSecret is required with plainManifests" in refused.stderr


def test_bundled_redis_persistence_renders_a_claim_template(helm: str) -> None:
    docs = render(
        helm,
        *("--set", "redis.persistence.enabled=true", "--set", "redis.persistence.size=8Gi"),
        *("--set", "redis.persistence.storageClass=fast-ssd"),
    )
    statefulset = one(docs, "StatefulSet", REDIS)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "8Gi"}},
    }
    assert "volumes" not in statefulset["spec"]["template"]["spec"], "/data is the claim, not an emptyDir"
    container = redis_container(docs)
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert redis_args(container)["--appendonly"] == "yes"


def test_bundled_redis_disabled_uses_the_external_settings(helm: str) -> None:
    docs = render(
        helm,
        *("--set", "redis.enabled=false", "--set", "api.enabled=true"),
        *("--set", "config.redisHost=redis.example.internal", "--set", "config.redisPort=6380"),
    )
    assert not [doc for doc in docs if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "redis"]
    assert not of_kind(docs, "StatefulSet")
    assert not of_kind(docs, "Secret")
    for deployment in of_kind(docs, "Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        for name in ("REDIS_URL", "REDIS_PASSWORD"):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "litemaas-cache", "key": name, "optional": True}
        assert env["REDIS_HOST"]["value"] == "redis.example.internal"
        assert env["REDIS_PORT"]["value"] == "6380"

    refused = run_helm(helm, "template", RELEASE, str(CHART), "--set", "config.redisCluster=true", check=False)
    assert refused.returncode != 0
    assert "the bundled Redis (redis.enabled) is a single server" in refused.stderr
    external_cluster = render(helm, "--set", "config.redisCluster=true", "--set", "redis.enabled=false")
    env = env_of(operator_deployment(external_cluster)["spec"]["template"]["spec"]["containers"][0])
    assert env["REDIS_CLUSTER"]["value"] == "true"


def test_bundled_redis_admits_only_the_release_operator_and_api(helm: str) -> None:
    docs = render(helm, "--set", "api.enabled=true", "--set", "networkPolicy.api.allowExternalEgress=false")
    redis_selector = one(docs, "StatefulSet", REDIS)["spec"]["selector"]
    policy = one(docs, "NetworkPolicy", REDIS)["spec"]
    assert policy["podSelector"] == redis_selector
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    clients = [{"podSelector": deployment["spec"]["selector"]} for deployment in of_kind(docs, "Deployment")]
    assert sorted(rule["from"], key=json.dumps) == sorted(clients, key=json.dumps)
    assert len(clients) == 2
    # The API's restricted egress still reaches the bundled Redis.
    api_egress = one(docs, "NetworkPolicy", f"{RELEASE}-api")["spec"]["egress"]
    assert {"to": [{"podSelector": redis_selector}], "ports": [{"port": 6379, "protocol": "TCP"}]} in api_egress

    assert REDIS not in [
        d["metadata"]["name"]
        for d in of_kind(render(helm, "--set", "redis.networkPolicy.enabled=false"), "NetworkPolicy")
    ]


# --- RBAC --------------------------------------------------------------------------------------------------------


def _rules(doc: Doc) -> Iterator[tuple[str, str, str]]:
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    yield group, resource, verb


@pytest.mark.parametrize("values", VARIANTS, ids=VARIANT_IDS)
def test_rbac_has_no_wildcards(helm: str, values: Path | None) -> None:
    docs = render(helm, *values_args(values))
    for doc in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
        for triple in _rules(doc):
            assert "*" not in triple, f"{doc['kind']} {doc['metadata']['name']} has a wildcard: {triple}"


def test_rbac_rules_are_commented() -> None:
    text = (CHART / "templates" / "rbac.yaml").read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            previous = lines[number - 1].strip()
            assert re.match(r"# (Framework|Application)\b", previous), f"rbac.yaml:{number + 1} has no comment"


def test_clusterwide_rbac(helm: str) -> None:
    docs = render(helm)
    role = one(docs, "ClusterRole")
    granted = set(_rules(role))
    app = {
        ("cache.litemaas.io", resource, verb)
        for resource in ("cachewarmpolicies", "cacheinvalidations")
        for verb in ("get", "list", "watch", "patch")
    }
    status = {
        ("cache.litemaas.io", f"{resource}/status", verb)
        for resource in ("cachewarmpolicies", "cacheinvalidations")
        for verb in ("get", "patch", "update")
    }
    framework = {
        ("", "events", "create"),
        ("", "events", "patch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")),
        *(("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")),
    }
    assert granted == app | status | framework | {("cache.litemaas.io", "cacheinvalidations", "delete")}
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_namespaced_rbac(helm: str) -> None:
    docs = render(helm, "--set", "watchNamespace=team-a")
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "team-a"
    resources = {resource for _, resource, _ in _rules(role)}
    assert not resources & CLUSTER_SCOPED, f"cluster-scoped rules in a namespaced Role: {resources & CLUSTER_SCOPED}"
    assert {"cachewarmpolicies", "cacheinvalidations/status", "events"} <= resources
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    # Only the cluster-scoped framework rules remain cluster-wide.
    cluster_role = one(docs, "ClusterRole")
    assert {resource for _, resource, _ in _rules(cluster_role)} == {"customresourcedefinitions", "clusterkopfpeerings"}
    (container,) = operator_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["operator", "--namespace", "team-a"]


def test_namespaced_rbac_without_cluster_rules(helm: str) -> None:
    docs = render(
        helm, "--set", "watchNamespace=team-a", "--set", "rbac.crdDiscovery=false", "--set", "peering.enabled=false"
    )
    assert not of_kind(docs, "ClusterRole")
    assert not of_kind(docs, "ClusterRoleBinding")
    assert of_kind(docs, "Role")


# --- peering, replicas, API, CRDs switches -----------------------------------------------------------------------


def test_peering_disabled(helm: str) -> None:
    docs = render(helm, "--set", "peering.enabled=false")
    assert not of_kind(docs, "ClusterKopfPeering")
    assert not [d for d in of_kind(docs, "CustomResourceDefinition") if d["spec"]["group"] == "kopf.dev"]
    assert "clusterkopfpeerings" not in {resource for _, resource, _ in _rules(one(docs, "ClusterRole"))}
    (container,) = operator_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["OPERATOR_STANDALONE"]["value"] == "true"


def test_replicas_need_peering(helm: str) -> None:
    docs = render(helm, "--set", "replicaCount=2")
    assert operator_deployment(docs)["spec"]["strategy"]["type"] == "RollingUpdate"
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "--set", "replicaCount=2", "--set", "peering.enabled=false", check=False
    )
    assert result.returncode != 0
    assert "replicaCount > 1 needs peering.enabled" in result.stderr


def test_api_enabled(helm: str) -> None:
    docs = render(helm, "--set", "api.enabled=true")
    api = one(docs, "Deployment", f"{RELEASE}-api")
    pod = api["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["args"] == ["api"]
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = env_of(container)
    for name in API_CREDENTIALS:  # any of them will do: each is optional in the Secret
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "litemaas-cache", "key": name, "optional": True}
    assert env["API_TOKEN_SCOPE"]["value"] == "read"
    limits = {name: env[name]["value"] for name in RATE_LIMIT_ENV}
    assert limits == {
        "ADMIN_ANALYTICS_RATE_LIMIT": "10",
        "ADMIN_EXPORT_RATE_LIMIT": "5",
        "ADMIN_CACHE_REBUILD_LIMIT": "1",
    }
    service = one(docs, "Service", f"{RELEASE}-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    operator_selector = operator_deployment(docs)["spec"]["selector"]["matchLabels"]
    assert operator_selector != api["spec"]["selector"]["matchLabels"], "the Service must not select the operator"


def test_api_scope_and_rate_limits(helm: str) -> None:
    (variant,) = [path for path in CI_VALUES if path.name == "api-enabled-values.yaml"]
    api = one(render(helm, *values_args(variant)), "Deployment", f"{RELEASE}-api")
    env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    assert env["API_TOKEN_SCOPE"]["value"] == "admin"
    assert [env[name]["value"] for name in RATE_LIMIT_ENV] == ["30", "2", "3"]
    for typo in ("api.serviceScope=write", "api.rateLimits.exportPerMinute=0"):
        result = run_helm(
            helm, "template", RELEASE, str(CHART), "--set", "api.enabled=true", "--set", typo, check=False
        )
        assert result.returncode != 0, f"--set {typo} was accepted"


def test_crds_disabled_and_not_kept(helm: str) -> None:
    docs = render(helm, "--set", "crds.enabled=false")
    assert {d["spec"]["group"] for d in of_kind(docs, "CustomResourceDefinition")} == {"kopf.dev"}
    docs = render(helm, "--set", "crds.keep=false")
    for crd in of_kind(docs, "CustomResourceDefinition"):
        assert "annotations" not in crd["metadata"]


@pytest.mark.parametrize(
    "typo",
    [
        "imag.tag=x",
        "config.redisPortt=1",
        "api.service.typ=NodePort",
        "watchNamespace=Bad_NS",
        "metrics.serviceMonitor.intervall=1m",
        "metrics.prometheusRule.breakerOpenFor=5 minutes",
        "metrics.prometheusRule.hitRateThreshold=2",
        "redis.maxmemoryPolicy=allkeys-lru",  # would evict the version mirror
        "redis.maxmemory=lots",
        "redis.persistance.enabled=true",
    ],
)
def test_schema_rejects_typos(helm: str, typo: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", typo, check=False)
    assert result.returncode != 0, f"--set {typo} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr


# --- monitoring: ServiceMonitor, PrometheusRule, Grafana dashboard ------------------------------------------------

MONITORING = CHART / "ci" / "monitoring-values.yaml"
MONITORING_KINDS = ("ServiceMonitor", "PrometheusRule", "ConfigMap")


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, and matchExpressions with In) against an object's labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _alerts(docs: list[Doc]) -> dict[str, Doc]:
    (group,) = one(docs, "PrometheusRule")["spec"]["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def test_monitoring_is_off_by_default(helm: str) -> None:
    docs = render(helm, "--set", "api.enabled=true")
    for kind in MONITORING_KINDS:
        assert not of_kind(docs, kind), kind
    assert sorted(doc["metadata"]["name"] for doc in of_kind(docs, "Service")) == [f"{RELEASE}-api", REDIS]


def test_service_monitor_scrapes_the_operator_and_the_api(helm: str) -> None:
    values = yaml.safe_load(MONITORING.read_text())["metrics"]["serviceMonitor"]
    docs = render(helm, "--values", str(MONITORING))
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    scraped = {
        doc["metadata"]["name"]: doc
        for doc in of_kind(docs, "Service")
        if _selects(spec["selector"], doc["metadata"]["labels"])
    }
    assert set(scraped) == {f"{RELEASE}-metrics", f"{RELEASE}-api"}
    endpoints = {endpoint["port"]: endpoint for endpoint in spec["endpoints"]}
    assert set(endpoints) == {"metrics", "http"}
    for endpoint in endpoints.values():
        assert endpoint["path"] == "/metrics"
        assert (endpoint["interval"], endpoint["scrapeTimeout"]) == (values["interval"], values["scrapeTimeout"])
    # Each endpoint's port is a port of one scraped Service, which reaches a container port of the pods it selects.
    deployments = of_kind(docs, "Deployment")
    for port in endpoints:
        (service,) = [s for s in scraped.values() if port in {p["name"] for p in s["spec"]["ports"]}]
        (service_port,) = [p for p in service["spec"]["ports"] if p["name"] == port]
        (deployment,) = [
            d
            for d in deployments
            if _selects({"matchLabels": service["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])
        ]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert service_port["targetPort"] in {p["name"] for p in container["ports"]}, (port, service_port)

    without_api = render(helm, "--set", "metrics.serviceMonitor.enabled=true")
    assert [e["port"] for e in one(without_api, "ServiceMonitor")["spec"]["endpoints"]] == ["metrics"]


def test_prometheus_rule_alerts_follow_the_values(helm: str) -> None:
    values = yaml.safe_load(MONITORING.read_text())["metrics"]["prometheusRule"]
    alerts = _alerts(render(helm, "--values", str(MONITORING)))
    assert set(alerts) == {"LitemaasCacheRedisBreakerOpen", "LitemaasCacheWarmingFailing", "LitemaasCacheHitRateLow"}
    for rule in alerts.values():
        assert rule["labels"] == {"severity": "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert f'namespace="{NAMESPACE}"' in rule["expr"]
    breaker = alerts["LitemaasCacheRedisBreakerOpen"]
    assert breaker["for"] == values["breakerOpenFor"]
    assert 'litemaas_cache_redis_breaker_state{state="open"' in breaker["expr"]
    assert "{{ $labels.pod }}" in breaker["annotations"]["description"]  # Prometheus's template, not Helm's
    warming = alerts["LitemaasCacheWarmingFailing"]
    assert warming["expr"].count(f"[{values['warmFailureWindow']}]") == 2
    assert f'job="{RELEASE}-metrics"' in warming["expr"]  # the operator's warms
    hit_rate = alerts["LitemaasCacheHitRateLow"]
    assert hit_rate["for"] == values["hitRateFor"]
    assert f"< {values['hitRateThreshold']}" in hit_rate["expr"]
    assert f"> {values['hitRateMinRequestsPerSecond']}" in hit_rate["expr"]
    assert hit_rate["expr"].count(f"[{values['hitRateWindow']}]") == 3
    assert f'job="{RELEASE}-api"' in hit_rate["expr"]

    defaults = _alerts(render(helm, "--set", "metrics.prometheusRule.enabled=true"))
    assert set(defaults) == {"LitemaasCacheRedisBreakerOpen", "LitemaasCacheWarmingFailing"}, "no API, no hit rate"
    assert defaults["LitemaasCacheRedisBreakerOpen"]["for"] == "5m"


def test_grafana_dashboard_config_map(helm: str) -> None:
    docs = render(helm, "--values", str(MONITORING))
    config_map = one(docs, "ConfigMap")
    meta = config_map["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["annotations"] == {"grafana_folder": "LiteMaaS"}
    assert meta["namespace"] == "monitoring"
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    assert text == (CHART / "files" / "dashboards" / "litemaas-cache.json").read_text().rstrip("\n")
    assert dashboard["uid"] == "litemaas-cache"
    assert all(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    default = one(render(helm, "--set", "metrics.grafanaDashboard.enabled=true"), "ConfigMap")["metadata"]
    assert default["namespace"] == NAMESPACE
    assert default["labels"]["grafana_dashboard"] == "1"


# --- values documentation and schema -----------------------------------------------------------------------------


def _value_keys(node: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            keys.add(path)
            if isinstance(value, dict) and value:
                keys |= _value_keys(value, path + ".")
    return keys


def _schema_keys(node: Doc, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        keys.add(path)
        keys |= _schema_keys(value, path + ".")
    return keys


def _schema_objects(node: Doc, path: str = "") -> Iterator[tuple[str, Doc]]:
    if node.get("type") == "object":
        yield path or "<root>", node
    for key, value in node.get("properties", {}).items():
        yield from _schema_objects(value, f"{path}.{key}".lstrip("."))
    if isinstance(node.get("items"), dict):
        yield from _schema_objects(node["items"], f"{path}[]")


def test_every_object_in_the_schema_is_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    # Helm's own `global`, and affinity terms, which are Kubernetes API types the API server validates.
    open_ok = {"global", "affinity.nodeAffinity", "affinity.podAffinity", "affinity.podAntiAffinity"}
    for path, node in _schema_objects(schema):
        if path in open_ok:
            continue
        closed = node.get("additionalProperties")
        assert closed is False or closed == {"type": "string"}, f"values.schema.json: {path} accepts unknown keys"


# Kubernetes types passed through as-is: the schema lists their allowed fields, values.yaml sets only some.
PASS_THROUGH = (
    *("podSecurityContext.", "securityContext.", "resources.", "api.resources.", "affinity."),
    *("redis.podSecurityContext.", "redis.securityContext.", "redis.resources."),
)


def test_schema_and_values_name_the_same_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    value_keys = _value_keys(values)
    schema_keys = _schema_keys(schema) - {"global"}
    assert value_keys - schema_keys == set(), "values.yaml keys missing from values.schema.json"
    undocumented = {key for key in schema_keys - value_keys if not key.startswith(PASS_THROUGH)}
    assert undocumented == set(), "values.schema.json keys with no default (and no documentation) in values.yaml"


def test_every_value_is_documented_with_an_example() -> None:
    """cert-manager style: every leaf key has a comment block above it with a sentence and a `For example:`.

    A key whose own block has an example may hold a default object (podSecurityContext: ...); its children are
    documented by that block.
    """
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z][\w-]*):(.*)$")
    stack: list[tuple[int, bool]] = []  # (indent, documented-with-example) of the enclosing keys
    problems = []
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        block = []
        cursor = number - 1
        while cursor >= 0 and lines[cursor].strip().startswith("#"):
            block.append(lines[cursor].strip())
            cursor -= 1
        has_example = any("For example" in comment for comment in block)
        inside_documented_default = any(documented for _, documented in stack)
        is_leaf = rest != ""
        if is_leaf and not inside_documented_default and not (len(block) >= 2 and has_example):
            problems.append(f"values.yaml:{number + 1}: {key} needs a sentence and a `For example:` above it")
        stack.append((indent, has_example))
    assert not problems, "\n".join(problems)


# --- plain manifests (tests/test_generated.py: they are what `make generate` renders) -----------------------------


def _normalise(doc: Doc) -> Doc:
    """Drop what only Helm adds (chart/managed-by labels, hook and keep annotations)."""
    doc = json.loads(json.dumps(doc))
    meta = doc["metadata"]
    for key in HELM_ONLY_LABELS:
        meta.get("labels", {}).pop(key, None)
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if not k.startswith("helm.sh/")}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return doc


def test_manifests_mirror_the_default_render(helm: str) -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert all((MANIFESTS / path).is_file() for path in listed), "kustomization.yaml lists a missing file"
    assert "secret.example.yaml" not in listed
    manifests: dict[tuple[str, str], Doc] = {}
    for path in listed:
        for doc in yaml.safe_load_all((MANIFESTS / path).read_text()):
            if doc:
                manifests[(doc["kind"], doc["metadata"]["name"])] = doc
    for (kind, name), doc in manifests.items():
        meta = doc["metadata"]
        helm_only = HELM_ONLY_LABELS & set(meta.get("labels", {})) | {
            a for a in meta.get("annotations", {}) if "helm.sh" in a
        }
        assert not helm_only, f"manifests: {kind} {name} carries Helm-only metadata {sorted(helm_only)}"
    # As the default render, but for the bundled Redis's password: plain manifests read it from the Secret.
    plain_redis = yaml.safe_load(generate.PLAIN_VALUES.read_text())["redis"]["auth"]["existingSecret"]
    docs = render(helm, "--set", f"redis.auth.existingSecret={plain_redis}")
    rendered = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    namespace = manifests.pop(("Namespace", NAMESPACE))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert set(manifests) == set(rendered)
    for key, doc in rendered.items():
        if key[0] == "CustomResourceDefinition":
            assert manifests[key]["spec"] == doc["spec"], f"manifests: {key} spec differs from the chart"
        else:
            assert _normalise(manifests[key]) == _normalise(doc), f"manifests: {key} differs from the chart's render"


def test_secret_example_has_only_placeholders() -> None:
    secret = yaml.safe_load((MANIFESTS / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "litemaas-cache"
    assert set(secret["stringData"]) <= SECRET_ENV
    assert "DATABASE_URL" in secret["stringData"]
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, f"secret.example.yaml: {key} is not a placeholder"
    assert "replace" in (MANIFESTS / "secret.example.yaml").read_text().splitlines()[0].lower()
