"""CustomResourceDefinitions generated from the pydantic models (resources.py, specs.py), as controller-gen does for
Go types: `make generate` writes the YAML, a test fails when a file drifts from what the models generate.

pydantic's JSON Schema is turned into a Kubernetes structural schema: $ref inlined, `X | None` becomes X (an
optional field is one that may be absent; a null in a merge patch removes it), `const` an enum, titles and the
`additionalProperties: false` of extra="forbid" dropped (the API server prunes unknown fields), integers int64.
Descriptions come from the docstrings; CEL rules and list types from json_schema_extra. Any keyword it does not
know stops the generation, so nothing is silently lost or let through.
"""

from __future__ import annotations

from typing import Any

import yaml

from .resources import CATEGORY, GROUP, RESOURCES, VERSION, CustomResource

Schema = dict[str, Any]

# The keywords a structural schema of ours may carry, in the order they are written.
STRUCTURAL_KEYWORDS = (
    "type",
    "format",
    "description",
    "required",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
    "items",
    "properties",
)
# What every object of the API has (controller-gen's TypeMeta and ObjectMeta).
_ENVELOPE: Schema = {
    "apiVersion": {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    },
    "kind": {
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object represents.",
    },
    "metadata": {"type": "object"},
}
_RULE_ORDER = ("rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf")
LABELS = {"app.kubernetes.io/name": "litemaas-cache-operator", "app.kubernetes.io/component": "crd"}


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, as people write Kubernetes YAML."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


class NotStructural(ValueError):
    """The model's JSON Schema has something a Kubernetes structural schema cannot say."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _resolve(node: Schema, defs: Schema, path: str) -> Schema:
    """Inline $ref (and a one-item allOf) and unwrap `X | None`; the node's own keywords win over the target's."""
    node = dict(node)
    if "allOf" in node:
        (only,) = node.pop("allOf")
        node = {**only, **node}
    if "$ref" in node:
        node = {**defs[node.pop("$ref").rsplit("/", 1)[-1]], **node}
    if "anyOf" in node:
        options = [option for option in node.pop("anyOf") if option != {"type": "null"}]
        if len(options) != 1:
            raise NotStructural(f"{path}: a union of {options} has no structural schema")
        node = {**_resolve(options[0], defs, path), **node}
    return node


def structural(node: Schema, defs: Schema, path: str = "") -> Schema:
    """The structural schema of one pydantic JSON Schema node (see the module docstring)."""
    node = _resolve(node, defs, path)
    node.pop("title", None)
    if node.get("default", 0) is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is False and "properties" in node:
        del node["additionalProperties"]
    if node.get("type") == "integer":
        node.setdefault("format", "int64")
    if "description" in node:
        node["description"] = _one_line(node["description"])
    if "x-kubernetes-validations" in node:
        node["x-kubernetes-validations"] = [
            {key: rule[key] for key in _RULE_ORDER if key in rule} for rule in node["x-kubernetes-validations"]
        ]
    if "properties" in node:
        node["properties"] = {
            name: structural(child, defs, f"{path}.{name}") for name, child in node["properties"].items()
        }
    if "items" in node:
        node["items"] = structural(node["items"], defs, f"{path}[]")
    unknown = set(node) - set(STRUCTURAL_KEYWORDS)
    if unknown:
        raise NotStructural(f"{path or '<root>'}: {sorted(unknown)} cannot be written into a CRD")
    return {key: node[key] for key in STRUCTURAL_KEYWORDS if key in node}


def open_api_schema(resource: CustomResource) -> Schema:
    """The openAPIV3Schema of one kind: the envelope, then spec and status from the model."""
    model_schema = resource.model.model_json_schema(by_alias=True)
    root = structural(model_schema, model_schema.pop("$defs", {}))
    return {**root, "properties": {**_ENVELOPE, **root["properties"]}}


def crd(resource: CustomResource) -> Schema:
    """The CustomResourceDefinition of one kind."""
    kind = resource.kind
    version: Schema = {"name": VERSION, "served": True, "storage": True}
    schema = open_api_schema(resource)
    if "status" in schema["properties"]:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [
        {"name": column.name, "type": column.type, "jsonPath": column.json_path}
        | ({"description": column.description} if column.description else {})
        for column in resource.columns
    ]
    version["schema"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}", "labels": dict(LABELS)},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": [resource.short_name],
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }


def crd_yaml(resource: CustomResource) -> str:
    """The CRD as the YAML file `make generate` writes, with a header that says where it comes from."""
    header = (
        f"# {resource.kind}: generated by `make generate` from litemaas_cache.controller.resources.{resource.kind}\n"
        "# (its spec in controller/specs.py). Edit the models, not this file; tests/test_generated.py fails on drift.\n"
    )
    return header + yaml.dump(crd(resource), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def crd_files() -> dict[str, str]:
    """File name (`<plural>.yaml`) -> YAML of every CRD of the operator."""
    return {f"{resource.plural}.yaml": crd_yaml(resource) for resource in RESOURCES}
