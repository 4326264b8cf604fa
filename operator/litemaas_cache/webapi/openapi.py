"""The OpenAPI 3.1 document, generated from the route table (routes.py) and the models (models.py): nothing here is
written by hand but the titles. Request models are rendered in pydantic's validation mode, responses in its
serialization mode, all under components/schemas."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .models import ErrorResponse
from .routes import Route

REF = "#/components/schemas/{model}"
_STATUS_TEXT = {
    400: "Bad request (the field is named in details)",
    401: "Missing or invalid credentials",
    403: "The caller lacks the permission",
    413: "Request body too large",
    429: "Rate limited",
    500: "Internal error (the route's code)",
    503: "A backend is unavailable",
}


def _version() -> str:
    try:
        return version("litemaas-cache-operator")
    except PackageNotFoundError:  # run from a source tree without installing
        return "0.0.0"


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`."""
    entries: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    for route in routes:
        entries.append((route.response, "serialization"))
        if route.body is not None:
            entries.append((route.body, "validation"))
    unique = list(dict.fromkeys(entries))
    refs, top = models_json_schema(unique, ref_template=REF)
    by_model: dict[object, dict[str, Any]] = {model: ref for (model, _), ref in refs.items()}  # one mode each
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, by_model)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "litemaas-cache admin usage API",
            "version": _version(),
            "description": "LiteMaaS's admin usage API (see docs/litemaas-compatibility.md) and the cache's own.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(top.get("$defs", {}).items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route: Route, refs: dict[object, dict[str, Any]]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": refs[ErrorResponse]}}}
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "responses": {
            "200": {
                "description": "OK",
                "content": {route.media_type: {"schema": refs[route.response]}},
            },
            **{str(status): {"description": _STATUS_TEXT[status], **error} for status in route.errors},
        },
    }
    if route.access != "public":
        operation["security"] = [{"bearerAuth": []}]
        operation["x-required-permission"] = route.access
    if route.body is not None:
        operation["requestBody"] = {
            "required": bool(route.body.model_json_schema().get("required")),  # rebuild-cache's may be empty
            "content": {"application/json": {"schema": refs[route.body]}},
        }
        operation["responses"]["413"] = {"description": _STATUS_TEXT[413], **error}
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", ()))
        operation["parameters"] = [
            {"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema["properties"].items()
        ]
    return operation
