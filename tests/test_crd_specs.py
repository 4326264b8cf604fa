"""The CRDs (crds/*.yaml, generated from litemaas_cache.controller.specs and .resources by `make generate`) and the
models: an independent walk over both checks that every constraint of a model reached its CRD, and the models
re-check the CEL rules with the CRDs' messages.

Pure Python: no cluster. The API server's own acceptance of the CRDs and their CEL rules is an e2e concern.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from litemaas_cache.controller.crdgen import STRUCTURAL_KEYWORDS
from litemaas_cache.controller.specs import (
    CacheInvalidationSpec,
    CacheWarmPolicySpec,
    Preset,
    WarmRange,
    parse_interval,
)
from litemaas_cache.dates import PRESETS

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "crds"
SAMPLES_DIR = ROOT / "manifests" / "samples"
GROUP = "cache.litemaas.io"

SPEC_MODELS: dict[str, type[BaseModel]] = {
    "CacheWarmPolicy": CacheWarmPolicySpec,
    "CacheInvalidation": CacheInvalidationSpec,
}
CRD_FILES = {"CacheWarmPolicy": "cachewarmpolicies.yaml", "CacheInvalidation": "cacheinvalidations.yaml"}

# Every keyword the generator writes must agree between a CRD and its model (CEL rules and list types included), but
# those the walk below compares its own way (or, for descriptions, not at all: the CRD's are joined into one line).
COMPARED_KEYWORDS = tuple(
    k for k in STRUCTURAL_KEYWORDS if k not in ("format", "description", "required", "items", "properties")
)

Schema = dict[str, Any]


def load_crd(kind: str) -> Schema:
    doc: Schema = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text())
    return doc


def crd_version(kind: str) -> Schema:
    versions = load_crd(kind)["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"], f"{kind}: expected exactly one version, v1alpha1"
    version: Schema = versions[0]
    return version


def crd_spec_schema(kind: str) -> Schema:
    schema: Schema = crd_version(kind)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def _normalise_model_node(node: Schema, defs: Schema) -> Schema:
    """Resolve $ref and unwrap `X | None` (anyOf with null) into X; a `None` default means "no default"."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        options = [option for option in node.pop("anyOf") if option.get("type") != "null"]
        assert len(options) == 1, f"unsupported union in model schema: {options}"
        node = {**_normalise_model_node(options[0], defs), **node}
    if "default" in node and node["default"] is None:
        del node["default"]
    return node


def schema_drift(crd: Schema, model: Schema, defs: Schema, path: str = "spec") -> list[str]:
    """Every difference between a CRD (sub)schema and a pydantic JSON (sub)schema, each naming its field path."""
    model = _normalise_model_node(model, defs)
    problems: list[str] = []
    for keyword in COMPARED_KEYWORDS:
        if crd.get(keyword) != model.get(keyword):
            problems.append(
                f"{path}: {keyword} is {crd.get(keyword)!r} in the CRD but {model.get(keyword)!r} in the model"
            )
    if crd.get("type") == "string" and crd.get("format") != model.get("format"):
        problems.append(f"{path}: format is {crd.get('format')!r} in the CRD but {model.get('format')!r} in the model")
    if sorted(crd.get("required", [])) != sorted(model.get("required", [])):
        problems.append(
            f"{path}: required is {sorted(crd.get('required', []))} in the CRD "
            f"but {sorted(model.get('required', []))} in the model"
        )
    crd_props: Schema = crd.get("properties", {})
    model_props: Schema = model.get("properties", {})
    for name in sorted(crd_props.keys() - model_props.keys()):
        problems.append(f"{path}.{name}: in the CRD but not in the model")
    for name in sorted(model_props.keys() - crd_props.keys()):
        problems.append(f"{path}.{name}: in the model but not in the CRD")
    for name in sorted(crd_props.keys() & model_props.keys()):
        problems += schema_drift(crd_props[name], model_props[name], defs, f"{path}.{name}")
    if "items" in crd or "items" in model:
        if "items" not in crd or "items" not in model:
            problems.append(f"{path}[]: items declared on one side only")
        else:
            problems += schema_drift(crd["items"], model["items"], defs, f"{path}[]")
    return problems


@pytest.mark.parametrize("kind", sorted(SPEC_MODELS))
def test_spec_model_matches_crd(kind: str) -> None:
    model_schema = SPEC_MODELS[kind].model_json_schema(by_alias=True)
    problems = schema_drift(crd_spec_schema(kind), model_schema, model_schema.get("$defs", {}))
    assert not problems, f"{kind} CRD and {SPEC_MODELS[kind].__name__} drifted:\n" + "\n".join(problems)


def test_drift_check_names_the_drifting_field() -> None:
    """The walker itself must catch a change, or the test above proves nothing."""
    crd = crd_spec_schema("CacheWarmPolicy")
    crd["properties"]["filters"]["items"]["properties"]["userIds"]["items"]["maxLength"] = 255
    crd["properties"]["ranges"]["items"]["properties"]["preset"]["enum"].append("last-year")
    crd["properties"]["suspend"]["default"] = True
    del crd["properties"]["breakdowns"]
    crd["required"].append("interval")
    model_schema = CacheWarmPolicySpec.model_json_schema(by_alias=True)
    problems = "\n".join(schema_drift(crd, model_schema, model_schema["$defs"]))
    assert "spec.filters[].userIds[]: maxLength is 255" in problems
    assert "spec.ranges[].preset: enum" in problems
    assert "spec.suspend: default is True" in problems
    assert "spec.breakdowns: in the model but not in the CRD" in problems
    assert "spec: required is ['interval', 'ranges'] in the CRD" in problems


@pytest.mark.parametrize("kind", sorted(SPEC_MODELS))
def test_crd_identity(kind: str) -> None:
    crd = load_crd(kind)
    names = crd["spec"]["names"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{names['plural']}.{GROUP}"
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert names["kind"] == kind
    assert names["shortNames"] == [{"CacheWarmPolicy": "cwp", "CacheInvalidation": "cinv"}[kind]]
    assert names["categories"] == ["litemaas"]
    version = crd_version(kind)
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}
    root = version["schema"]["openAPIV3Schema"]
    assert root["required"] == ["spec"]
    for part in ("spec", "status"):
        assert "x-kubernetes-preserve-unknown-fields" not in root["properties"][part], f"{kind}.{part} must be pruned"


def _walk_json_path(schema: Schema, json_path: str) -> Schema | None:
    node: Schema | None = schema
    for step in json_path.lstrip(".").split("."):
        if node is None:
            return None
        filtered = step.endswith("]") and "[" in step
        name = step.split("[", 1)[0] if filtered else step
        node = node.get("properties", {}).get(name)
        if node is not None and filtered:
            node = node.get("items")
    return node


@pytest.mark.parametrize("kind", sorted(SPEC_MODELS))
def test_printer_columns_point_at_declared_fields(kind: str) -> None:
    version = crd_version(kind)
    root = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            continue
        # `.status.conditions[?(@.type=="Ready")].status` -> status.conditions[].status
        simplified = path.split("[?", 1)[0] + "[]" + path.split(")]", 1)[1] if "[?" in path else path
        assert _walk_json_path(root, simplified) is not None, f"{kind} column {column['name']}: {path} is not declared"


@pytest.mark.parametrize("kind", sorted(SPEC_MODELS))
def test_conditions_are_a_map_keyed_by_type(kind: str) -> None:
    conditions = crd_version(kind)["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "observedGeneration",
        "lastTransitionTime",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_status_declares_what_the_operator_writes() -> None:
    warm = crd_version("CacheWarmPolicy")["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(warm) == {
        "observedGeneration",
        "conditions",
        "lastWarmTime",
        "nextWarmTime",
        "lastWarmDurationSeconds",
        "keysWarmed",
        "daysWarmed",
        "daysRefreshed",
        "hitRate",
        "keyCount",
        "memoryUsed",
        "lastError",
    }
    inv = crd_version("CacheInvalidation")["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(inv) == {
        "observedGeneration",
        "phase",
        "keysDeleted",
        "daysPurged",
        "startTime",
        "completionTime",
        "message",
        "conditions",
    }
    assert inv["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed"]


def test_presets_match_the_date_helpers() -> None:
    assert set(get_args(Preset)) == set(PRESETS)


def _cel_messages(kind: str) -> set[str]:
    messages: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            messages.update(rule["message"] for rule in node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(crd_spec_schema(kind))
    return messages


# Specs the CRD's CEL rules reject, with the rule's message; the model must reject them with the same message.
CEL_CASES = [
    ("CacheWarmPolicy", {"ranges": [{"preset": "today", "start": "2026-01-01", "end": "2026-01-02"}]}, "either preset"),
    ("CacheWarmPolicy", {"ranges": [{"start": "2026-01-01"}]}, "either preset"),
    ("CacheWarmPolicy", {"ranges": [{}]}, "either preset"),
    ("CacheWarmPolicy", {"ranges": [{"start": "2026-01-02", "end": "2026-01-01"}]}, "end must not be before start"),
    ("CacheWarmPolicy", {"ranges": [{"preset": "today"}], "interval": "59s"}, "interval must be at least 1m"),
    ("CacheInvalidation", {"startDate": "2026-11-03", "endDate": "2026-11-02"}, "endDate must not be before"),
    ("CacheInvalidation", {"startDate": "2024-01-01", "endDate": "2025-01-01"}, "covers at most 366 days"),
    ("CacheInvalidation", {"startDate": "1999-12-31", "endDate": "2000-01-02"}, "is outside 2000-01-01..2099-12-31"),
    ("CacheInvalidation", {"startDate": "2099-12-30", "endDate": "2100-01-01"}, "is outside 2000-01-01..2099-12-31"),
]


@pytest.mark.parametrize(("kind", "spec", "message"), CEL_CASES)
def test_model_mirrors_cel_rules(kind: str, spec: Schema, message: str) -> None:
    crd_message = next((m for m in _cel_messages(kind) if message in m), None)
    assert crd_message is not None, f"no CEL rule of {kind} says {message!r}"
    with pytest.raises(ValidationError, match=crd_message.replace("(", r"\(").replace(")", r"\)")):
        SPEC_MODELS[kind].model_validate(spec)


def test_invalidation_span_boundary() -> None:
    """366 days inclusive (a leap year) is allowed, 367 is not, as the CRD's `<= duration('8760h')` rule."""
    spec = CacheInvalidationSpec.model_validate({"startDate": "2024-01-01", "endDate": "2024-12-31"})
    assert spec.range.days == 366
    assert spec.tiers == ["redis", "postgres"]
    assert spec.rewarm is False
    assert spec.ttl_seconds_after_finished is None


@pytest.mark.parametrize(
    "spec",
    [
        {"ranges": []},
        {"ranges": [{"preset": "last-year"}]},
        {"ranges": [{"preset": "today"}], "breakdowns": ["user", "user"]},
        {"ranges": [{"preset": "today"}], "filters": [{"userIds": ["has space"]}]},
        {"ranges": [{"preset": "today"}], "filters": [{"teamIds": ["t"]}]},
        {"ranges": [{"preset": "today"}], "interval": "10"},
        {"ranges": [{"preset": "today"}], "interval": ""},
        {"ranges": [{"preset": "today"}], "unknown": True},
    ],
)
def test_warm_policy_rejects(spec: Schema) -> None:
    with pytest.raises(ValidationError):
        CacheWarmPolicySpec.model_validate(spec)


def test_warm_policy_defaults_and_resolution() -> None:
    spec = CacheWarmPolicySpec.model_validate(
        {"ranges": [{"preset": "last-7-days"}, {"start": "2026-01-01", "end": "2026-01-31"}]}
    )
    assert spec.interval == "10m"
    assert spec.interval_delta == dt.timedelta(minutes=10)
    assert spec.suspend is False
    assert spec.breakdowns == []
    assert spec.filters == []
    today = dt.date(2026, 3, 10)
    assert [str(r.resolve(today)) for r in spec.ranges] == ["2026-03-04..2026-03-10", "2026-01-01..2026-01-31"]
    assert WarmRange(preset="previous-month").resolve(today).start == dt.date(2026, 2, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", dt.timedelta(minutes=10)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("90s", dt.timedelta(seconds=90)),
    ],
)
def test_parse_interval(text: str, expected: dt.timedelta) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize("text", ["", "10", "1.5h", "1d", "m", "-1m", "1m1h"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_interval(text)


def _sample_docs() -> list[Schema]:
    docs: list[Schema] = []
    for path in sorted(SAMPLES_DIR.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_samples_exist_for_every_kind() -> None:
    assert {doc["kind"] for doc in _sample_docs()} >= set(SPEC_MODELS)


@pytest.mark.parametrize("doc", _sample_docs(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_sample_validates(doc: Schema) -> None:
    assert doc["apiVersion"] == f"{GROUP}/v1alpha1"
    SPEC_MODELS[doc["kind"]].model_validate(doc["spec"])
