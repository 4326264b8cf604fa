"""`make generate`: every generated file is what its one source generates today, and the generator is exact.

The CRDs (crds/, manifests/crds/, the chart's files/crds/) come from the pydantic models, manifests/ from the chart
(scripts/generate.py). A failure here means a model, the chart or a generated file was edited without
`make generate`. The API server's acceptance of the generated CRDs is tested in tests/k8s (fixture `crds`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scripts import generate
from scripts.generate import CRD_DIRS, ROOT

from litemaas_cache.controller.crdgen import NotStructural, crd, crd_files, structural
from litemaas_cache.controller.invalidation import failed_status, running_status
from litemaas_cache.controller.resources import RESOURCES, CacheInvalidation
from litemaas_cache.controller.specs import CrdModel, cel_rules


def _drift(expected: dict[Path, str]) -> str:
    stale = generate.stale_files(expected)
    return "run `make generate`; these differ from what it writes: " + ", ".join(
        str(path.relative_to(ROOT)) for path in stale
    )


def test_crds_are_generated_from_the_models() -> None:
    """Needs no helm: every copy of every CRD is what the models generate."""
    expected = generate.generated_crds()
    assert set(expected) == {directory / name for directory in CRD_DIRS for name in crd_files()} | {
        generate.PEERING_CRDS
    }
    stale = [path for path in generate.stale_files(expected) if path.parent in CRD_DIRS]
    assert not stale, _drift(expected)


def test_every_generated_file_is_up_to_date(helm: str) -> None:
    expected = generate.generated_files(helm)
    assert not generate.stale_files(expected), _drift(expected)


def test_drift_is_reported_per_file(helm: str, tmp_path: Path) -> None:
    """The comparison itself must notice an edit, a missing file and a leftover, or the tests above prove nothing."""
    path = CRD_DIRS[0] / "cachewarmpolicies.yaml"
    expected = generate.generated_files(helm)
    edited = {**expected, path: expected[path].replace("maxItems: 20", "maxItems: 21", 1)}
    assert generate.stale_files(edited) == [path]
    missing = {**expected, tmp_path / "gone.yaml": "x"}
    assert generate.stale_files(missing) == [tmp_path / "gone.yaml"]
    without = {name: text for name, text in expected.items() if name != path}
    assert generate.stale_files(without) == [path], "a CRD file nothing generates any more must be reported"
    manifest = generate.MANIFESTS / "deployment.yaml"
    without = {name: text for name, text in expected.items() if name != manifest}
    assert generate.stale_files(without) == [manifest], "a rendered manifest the chart no longer renders, too"


def test_generated_crds_round_trip_through_yaml() -> None:
    """What is written parses back to exactly what the models generate (no quoting or folding accident)."""
    for resource in RESOURCES:
        assert yaml.safe_load(crd_files()[f"{resource.plural}.yaml"]) == crd(resource)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.pop("$defs", {}))


def test_structural_schema_rules() -> None:
    class Item(CrdModel):
        """An item."""

        model_config = ConfigDict(json_schema_extra=cel_rules(("self.size > 0", "size must be positive")))

        size: int
        """How big."""

    class Sample(CrdModel):
        """A sample."""

        items_list: list[Item] = Field(default_factory=list, max_length=3)
        """The items, documented on the field."""
        maybe: Item | None = None
        when: dt.datetime | None = None
        ratio: Annotated[float, Field(ge=0)] = 0.5
        """A ratio
        over two lines."""

    schema = _schema(Sample)
    assert schema["description"] == "A sample."
    assert "title" not in schema
    assert "additionalProperties" not in schema
    items = schema["properties"]["itemsList"]
    assert items["description"] == "The items, documented on the field."
    assert items["maxItems"] == 3
    assert items["items"] == {
        "type": "object",
        "description": "An item.",
        "required": ["size"],
        "x-kubernetes-validations": [{"rule": "self.size > 0", "message": "size must be positive"}],
        "properties": {"size": {"type": "integer", "format": "int64", "description": "How big."}},
    }
    assert schema["properties"]["maybe"]["type"] == "object", "X | None is X, with no anyOf"
    assert "default" not in schema["properties"]["maybe"], "a None default is no default"
    assert schema["properties"]["when"] == {"type": "string", "format": "date-time"}
    assert schema["properties"]["ratio"] == {
        "type": "number",
        "description": "A ratio over two lines.",
        "default": 0.5,
        "minimum": 0,
    }


@pytest.mark.parametrize(
    ("annotation", "problem"),
    [(int | str, "union"), (set[str], "uniqueItems"), (dict[str, int], "additionalProperties")],
    ids=["union", "set", "map"],
)
def test_what_a_crd_cannot_say_stops_the_generation(annotation: Any, problem: str) -> None:
    class Unsupported(CrdModel):
        field: annotation  # type: ignore[valid-type]

    with pytest.raises(NotStructural, match=problem) as error:
        _schema(Unsupported)
    assert ".field" in str(error.value), "the error names the field"


def test_status_models_accept_what_the_operator_writes() -> None:
    """A status key the CRD does not declare would be pruned by the API server: the models reject it."""
    spec = {"startDate": "2026-03-01", "endDate": "2026-03-02"}
    for status in (running_status(3), failed_status("InvalidSpec", "spec.startDate: bad", 3, None)):
        CacheInvalidation.model_validate({"spec": spec, "status": status})
    with pytest.raises(ValidationError, match="keysDeletd"):
        CacheInvalidation.model_validate({"spec": spec, "status": {**running_status(3), "keysDeletd": 1}})
    with pytest.raises(ValidationError, match=r"status\.conditions\.0\.reason"):
        CacheInvalidation.model_validate({"spec": spec, "status": failed_status("not camel", "m", 3, None)})
