"""Issue 10: the malformed-input corpus for custom resources (tests/test_malformed_inputs.py has the other surfaces).

RESOURCE_CASES go to the real local API server: each must be refused with the expected HTTP status, by a message that
names the field (its path), and must not be stored. OPERATOR_CASES pass the schema but cannot run (a range longer than
the analytics maximum): the real operator must refuse them in status and in an event, naming the field, without a
traceback in its log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.conftest import KubeCluster
from tests.k8s.operator_support import condition, get, start_operator, wait_for

pytestmark = pytest.mark.k8s

API_VERSION = "cache.litemaas.io/v1alpha1"
TODAY_PRESET = {"preset": "today"}
WEEK = {"startDate": "2025-01-01", "endDate": "2025-01-07"}
INVALID, BAD_REQUEST = 422, 400  # the schema or a CEL rule refuses; the body cannot even be decoded (unknown field)
# kubectl -v=6 logs each response: "Response" verb="POST" url="..." status="422 Unprocessable Entity".
RESPONSE_STATUS = re.compile(r'"Response" verb="(?:POST|PUT)" url="[^"]*" status="(\d{3})')


@dataclass(frozen=True)
class ResourceCase:
    """A CacheWarmPolicy ("cwp") or CacheInvalidation ("cinv") with `spec`; refused with `status`, naming `field`.

    With `existing`, an object with that spec is created first and `spec` replaces it (an update, not a create)."""

    name: str
    kind: str
    spec: Any
    status: int
    field: str
    existing: dict[str, Any] | None = None


def cwp(name: str, status: int, fld: str, **spec: Any) -> ResourceCase:
    return ResourceCase(f"cwp-{name}", "cwp", {"ranges": [TODAY_PRESET], **spec}, status, fld)


def cinv(name: str, status: int, fld: str, **spec: Any) -> ResourceCase:
    return ResourceCase(f"cinv-{name}", "cinv", {**WEEK, **spec}, status, fld)


def one_range(**item: Any) -> list[dict[str, Any]]:
    return [item]


RESOURCE_CASES: list[ResourceCase] = [
    # CacheWarmPolicy: ranges
    ResourceCase("cwp-ranges-missing", "cwp", {"interval": "10m"}, INVALID, "spec.ranges"),
    cwp("ranges-empty", INVALID, "spec.ranges", ranges=[]),
    cwp("ranges-too-many", INVALID, "spec.ranges", ranges=[TODAY_PRESET] * 21),
    cwp("ranges-string", INVALID, "spec.ranges", ranges="last-7-days"),
    cwp("ranges-null-item", INVALID, "spec.ranges[0]", ranges=[None]),
    cwp("range-unknown-preset", INVALID, "spec.ranges[0].preset", ranges=one_range(preset="last-8-days")),
    cwp(
        "range-preset-and-dates",
        INVALID,
        "spec.ranges[0]",
        ranges=one_range(preset="today", start="2025-01-01", end="2025-01-02"),
    ),
    cwp("range-start-only", INVALID, "spec.ranges[0]", ranges=one_range(start="2025-01-01")),
    cwp("range-empty-object", INVALID, "spec.ranges[0]", ranges=[{}]),
    cwp("range-feb-30", INVALID, "spec.ranges[0].start", ranges=one_range(start="2024-02-30", end="2024-03-02")),
    cwp("range-word-date", INVALID, "spec.ranges[0].end", ranges=one_range(start="2025-01-01", end="yesterday")),
    cwp("range-number-date", INVALID, "spec.ranges[0].start", ranges=one_range(start=20250101, end="2025-01-02")),
    cwp(
        "range-datetime",
        INVALID,
        "spec.ranges[0].start",
        ranges=one_range(start="2025-01-01T00:00:00Z", end="2025-01-02"),
    ),
    cwp("range-reversed", INVALID, "spec.ranges[0]", ranges=one_range(start="2025-01-07", end="2025-01-01")),
    cwp("range-year-1", INVALID, "spec.ranges[0].start", ranges=one_range(start="0001-01-01", end="0001-01-03")),
    cwp("range-year-2100", INVALID, "spec.ranges[0].end", ranges=one_range(start="2099-12-30", end="2100-01-01")),
    cwp("range-unknown-field", BAD_REQUEST, "spec.ranges[0].days", ranges=one_range(preset="today", days=3)),
    # CacheWarmPolicy: interval
    cwp("interval-zero", INVALID, "spec.interval", interval="0m"),
    cwp("interval-years", INVALID, "spec.interval", interval="1y"),
    cwp("interval-negative", INVALID, "spec.interval", interval="-5m"),
    cwp("interval-empty", INVALID, "spec.interval", interval=""),
    cwp("interval-seconds", INVALID, "spec.interval", interval="30s"),
    cwp("interval-number", INVALID, "spec.interval", interval=600),
    cwp("interval-padded", INVALID, "spec.interval", interval="10m "),
    cwp("interval-fraction", INVALID, "spec.interval", interval="1.5h"),
    # CacheWarmPolicy: breakdowns, filters, suspend, unknown fields
    cwp("breakdowns-unknown", INVALID, "spec.breakdowns[0]", breakdowns=["team"]),
    cwp("breakdowns-repeated", INVALID, "spec.breakdowns[1]", breakdowns=["user", "user"]),
    cwp("breakdowns-string", INVALID, "spec.breakdowns", breakdowns="user"),
    cwp("filters-string", INVALID, "spec.filters", filters="userIds"),
    cwp("filters-too-many", INVALID, "spec.filters", filters=[{}] * 21),
    cwp("filters-bad-id", INVALID, "spec.filters[0].userIds[0]", filters=[{"userIds": ["bad id"]}]),
    cwp("filters-control-char", INVALID, "spec.filters[0].modelIds[0]", filters=[{"modelIds": ["gpt\u0007"]}]),
    cwp("filters-long-id", INVALID, "spec.filters[0].providerIds[0]", filters=[{"providerIds": ["p" * 257]}]),
    cwp("filters-empty-id", INVALID, "spec.filters[0].apiKeyIds[0]", filters=[{"apiKeyIds": [""]}]),
    cwp(
        "filters-too-many-ids",
        INVALID,
        "spec.filters[0].apiKeyIds",
        filters=[{"apiKeyIds": [f"k{i}" for i in range(1001)]}],
    ),
    cwp("filters-nested-list", INVALID, "spec.filters[0].userIds[0]", filters=[{"userIds": [["a"]]}]),
    cwp("filters-unknown-dimension", BAD_REQUEST, "spec.filters[0].teamIds", filters=[{"teamIds": ["t"]}]),
    cwp("suspend-string", INVALID, "spec.suspend", suspend="yes"),
    cwp("unknown-field", BAD_REQUEST, "spec.warmNow", warmNow=True),
    # CacheInvalidation
    ResourceCase("cinv-spec-null", "cinv", None, INVALID, "spec"),
    ResourceCase("cinv-end-missing", "cinv", {"startDate": "2025-01-01"}, INVALID, "spec.endDate"),
    cinv("feb-30", INVALID, "spec.startDate", startDate="2024-02-30"),
    cinv("word-date", INVALID, "spec.endDate", endDate="today"),
    cinv("number-date", INVALID, "spec.startDate", startDate=20250101),
    cinv("datetime", INVALID, "spec.endDate", endDate="2025-01-07T00:00:00Z"),
    cinv("empty-date", INVALID, "spec.startDate", startDate=""),
    cinv("reversed", INVALID, "endDate must not be before startDate", startDate="2025-01-08"),
    cinv("367-days", INVALID, "spec.endDate", startDate="2024-01-01", endDate="2025-01-01"),
    cinv("year-1900", INVALID, "spec.startDate", startDate="1900-01-01", endDate="1900-12-31"),
    cinv("year-2100", INVALID, "spec.endDate", startDate="2099-12-30", endDate="2100-01-01"),
    cinv("tiers-empty", INVALID, "spec.tiers", tiers=[]),
    cinv("tiers-unknown", INVALID, "spec.tiers[0]", tiers=["memcached"]),
    cinv("tiers-repeated", INVALID, "spec.tiers[1]", tiers=["redis", "redis"]),
    cinv("tiers-string", INVALID, "spec.tiers", tiers="redis"),
    cinv("ttl-negative", INVALID, "spec.ttlSecondsAfterFinished", ttlSecondsAfterFinished=-1),
    cinv("ttl-huge", INVALID, "spec.ttlSecondsAfterFinished", ttlSecondsAfterFinished=10**12),
    cinv("ttl-string", INVALID, "spec.ttlSecondsAfterFinished", ttlSecondsAfterFinished="1h"),
    cinv("ttl-fraction", INVALID, "spec.ttlSecondsAfterFinished", ttlSecondsAfterFinished=1.5),
    cinv("rewarm-string", INVALID, "spec.rewarm", rewarm="yes"),
    cinv("unknown-field", BAD_REQUEST, "spec.purgeAll", purgeAll=True),
    ResourceCase("cinv-changed", "cinv", {**WEEK, "tiers": ["redis"]}, INVALID, "spec is immutable", existing=WEEK),
]

KINDS = {"cwp": "CacheWarmPolicy", "cinv": "CacheInvalidation"}


def document(case: ResourceCase, namespace: str, spec: Any) -> str:
    metadata = {"name": case.name, "namespace": namespace}
    return json.dumps({"apiVersion": API_VERSION, "kind": KINDS[case.kind], "metadata": metadata, "spec": spec})


def submit(cluster: KubeCluster, namespace: str, case: ResourceCase) -> subprocess.CompletedProcess[str]:
    """Create the object (or create `existing` and replace it), as kubectl would, logging the API's responses."""
    if case.existing is not None:
        cluster.run("create", "-f", "-", input=document(case, namespace, case.existing))
    verb = "replace" if case.existing is not None else "create"
    return cluster.run("-v=6", verb, "-f", "-", input=document(case, namespace, case.spec), check=False)


@pytest.fixture(scope="module")
def refusals(
    kube_cluster: KubeCluster, crds: None
) -> Iterator[tuple[str, dict[str, subprocess.CompletedProcess[str]]]]:
    """Every RESOURCE_CASE submitted at once, in a namespace no operator watches."""
    namespace = f"malformed-{uuid.uuid4().hex[:8]}"
    kube_cluster.run("create", "namespace", namespace)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            runs = pool.map(lambda case: submit(kube_cluster, namespace, case), RESOURCE_CASES)
            yield namespace, dict(zip([c.name for c in RESOURCE_CASES], runs, strict=True))
    finally:
        kube_cluster.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize("case", RESOURCE_CASES, ids=[c.name for c in RESOURCE_CASES])
def test_api_server_refuses_naming_the_field(
    kube_cluster: KubeCluster, refusals: tuple[str, dict[str, subprocess.CompletedProcess[str]]], case: ResourceCase
) -> None:
    namespace, results = refusals
    result = results[case.name]
    assert result.returncode != 0, result.stdout
    statuses = RESPONSE_STATUS.findall(result.stderr)
    assert statuses, result.stderr[-2000:]
    assert int(statuses[-1]) == case.status, result.stderr[-2000:]
    message = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("I"))
    assert case.field in message, message
    stored = kube_cluster.run("get", case.kind, case.name, "-n", namespace, "-o", "json", check=False)
    if case.existing is None:
        assert stored.returncode != 0, "a refused object was stored"
    else:
        assert json.loads(stored.stdout)["spec"] == {**case.existing, "tiers": ["redis", "postgres"], "rewarm": False}


# --- specs the API server accepts but the operator must refuse -------------------------------------------------

MAX_RANGE_DAYS = 30  # the operator under test runs with ANALYTICS_MAX_RANGE_DAYS=30
OPERATOR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("explicit-too-long", {"ranges": [{"start": "2024-01-01", "end": "2024-12-31"}]}, "spec.ranges[0]"),
    (
        "second-range-too-long",
        {"ranges": [TODAY_PRESET, {"start": "2025-01-01", "end": "2025-01-31"}]},
        "spec.ranges[1]",
    ),
    ("preset-too-long", {"ranges": [TODAY_PRESET, TODAY_PRESET, {"preset": "last-90-days"}]}, "spec.ranges[2]"),
]


@pytest.fixture(scope="module")
def refusing_operator(
    kube_cluster: KubeCluster, crds: None, operator_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The real operator, with ANALYTICS_MAX_RANGE_DAYS=30, watching a namespace of its own; its log file."""
    namespace = f"malformed-op-{uuid.uuid4().hex[:8]}"
    kube_cluster.run("create", "namespace", namespace)
    log = tmp_path_factory.mktemp("malformed-operator") / "operator.log"
    env = {**os.environ, **operator_env, "ANALYTICS_MAX_RANGE_DAYS": str(MAX_RANGE_DAYS)}
    operator = start_operator(env, namespace, log)
    try:
        yield namespace, log
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        kube_cluster.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize(("name", "spec", "field"), OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES])
def test_operator_refuses_naming_the_field(
    kube_cluster: KubeCluster, refusing_operator: tuple[str, Path], name: str, spec: dict[str, Any], field: str
) -> None:
    namespace, log = refusing_operator
    body = {"apiVersion": API_VERSION, "kind": "CacheWarmPolicy", "metadata": {"name": name, "namespace": namespace}}
    kube_cluster.run("create", "-f", "-", input=json.dumps({**body, "spec": spec}))
    policy = wait_for(
        f"{name} to be refused by the operator",
        lambda: (p := get(kube_cluster, "cwp", name, namespace)) and condition(p, "Ready") == "False" and p,
    )
    ready = next(c for c in policy["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith(f"{field}: "), ready
    assert f"the analytics maximum is {MAX_RANGE_DAYS}" in ready["message"]
    assert policy["status"]["lastError"] == ready["message"]
    assert "keysWarmed" not in policy["status"]
    events = wait_for(
        f"the InvalidSpec event of {name}",
        lambda: [
            e
            for e in json.loads(kube_cluster.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
            if e["involvedObject"]["name"] == name and e["reason"] == "InvalidSpec"
        ],
    )
    assert events[0]["message"].startswith(f"{field}: "), events[0]
    assert "Traceback" not in log.read_text()


def test_corpus_size() -> None:
    sizes = {"api server": len(RESOURCE_CASES), "operator": len(OPERATOR_CASES)}
    print(f"malformed resources per surface: {sizes}")
    assert len({c.name for c in RESOURCE_CASES}) == len(RESOURCE_CASES)
    assert sum(sizes.values()) >= 50
