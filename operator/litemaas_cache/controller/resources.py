"""The custom resources: their status models, root models and what their CRDs say beyond the schema.

With specs.py this is the one source of crds/*.yaml (`make generate`, controller/crdgen.py), the way kubebuilder's
types and markers are for a Go operator. Docstrings are the API's descriptions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from .conditions import ConditionStatus
from .specs import CacheInvalidationSpec, CacheWarmPolicySpec, CrdModel

GROUP, VERSION = "cache.litemaas.io", "v1alpha1"
WARM_POLICIES, INVALIDATIONS = "cachewarmpolicies", "cacheinvalidations"
CATEGORY = "litemaas"

InvalidationPhase = Literal["Pending", "Running", "Succeeded", "Failed"]

# metav1.Condition's validation (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
ConditionType = Annotated[
    str,
    StringConstraints(
        max_length=316,
        pattern=(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
    ),
]
ConditionReason = Annotated[
    str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
]
Count = Annotated[int, Field(ge=0)]


class Condition(CrdModel):
    """A condition as in the Kubernetes API conventions (metav1.Condition)."""

    type: ConditionType
    """Condition type."""
    status: ConditionStatus
    """True, False or Unknown."""
    observed_generation: Count | None = None
    """The .metadata.generation the condition was set for."""
    last_transition_time: dt.datetime
    """When the condition last changed status."""
    reason: ConditionReason
    """A CamelCase machine-readable reason for the last transition."""
    message: str = Field(max_length=32768)
    """A human-readable message about the last transition (may be empty)."""


Conditions = Annotated[
    list[Condition] | None,
    Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
]


class CacheWarmPolicyStatus(CrdModel):
    """What the operator observed; written only by the operator."""

    observed_generation: Count | None = None
    """The .metadata.generation the status describes."""
    conditions: Conditions = None
    """Standard conditions; types are Ready, RedisAvailable and Degraded."""
    last_warm_time: dt.datetime | None = None
    """When the last warm run finished."""
    next_warm_time: dt.datetime | None = None
    """When the next warm run is due."""
    last_warm_duration_seconds: float | None = Field(default=None, ge=0)
    """How long the last warm run took, in seconds."""
    keys_warmed: Count | None = None
    """Redis keys written by the last warm run."""
    days_warmed: Count | None = None
    """Distinct days (re)computed or confirmed by the last warm run."""
    days_refreshed: list[dt.date] | None = Field(default=None, max_length=366)
    """Past days the last warm found changed in LiteLLM's table since they were cached (rows written late), and so
    invalidated and recomputed."""
    hit_rate: str | None = None
    """Redis hit rate of the analytics cache since the operator started (for example 93.4%)."""
    key_count: Count | None = None
    """Keys under the cache's Redis key prefix."""
    memory_used: str | None = None
    """Redis memory in use, human readable (for example 1.2Mi)."""
    last_error: str | None = None
    """The error of the last failed warm run; empty after a success."""


class CacheInvalidationStatus(CrdModel):
    """What the operator did; written only by the operator."""

    observed_generation: Count | None = None
    """The .metadata.generation the status describes."""
    phase: InvalidationPhase | None = None
    """Where the invalidation is."""
    keys_deleted: Count | None = None
    """Redis keys deleted."""
    days_purged: Count | None = None
    """Days deleted from the daily PostgreSQL cache."""
    start_time: dt.datetime | None = None
    """When the operator started the invalidation."""
    completion_time: dt.datetime | None = None
    """When the invalidation succeeded or failed."""
    message: str | None = None
    """A human-readable summary, or the error when phase is Failed."""
    conditions: Conditions = None
    """Standard conditions (the operator sets Complete)."""


class CacheWarmPolicy(CrdModel):
    """CacheWarmPolicy keeps the admin usage analytics of some date ranges (and optional filters and breakdowns) warm
    in the Redis tier, re-computing them every interval."""

    spec: CacheWarmPolicySpec
    status: CacheWarmPolicyStatus | None = None


class CacheInvalidation(CrdModel):
    """CacheInvalidation drops the cached analytics of a date range from the Redis tier and/or the daily PostgreSQL
    cache, once. Its spec cannot change; create a new object to invalidate again."""

    spec: CacheInvalidationSpec
    status: CacheInvalidationStatus | None = None


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get` (additionalPrinterColumns)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str | None = None


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class CustomResource:
    """A kind served by this operator: its model (spec and status), names and `kubectl get` columns."""

    model: type[BaseModel]
    plural: str
    short_name: str
    columns: tuple[PrinterColumn, ...]

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def singular(self) -> str:
        return self.kind.lower()


RESOURCES = (
    CustomResource(
        CacheWarmPolicy,
        WARM_POLICIES,
        "cwp",
        columns=(
            PrinterColumn("Interval", "string", ".spec.interval", "How often the ranges are warmed."),
            PrinterColumn("Last Warm", "date", ".status.lastWarmTime", "When the last warm run finished."),
            PrinterColumn("Keys", "integer", ".status.keysWarmed", "Redis keys written by the last warm run."),
            PrinterColumn("Hit Rate", "string", ".status.hitRate", "Redis hit rate of the analytics cache."),
            PrinterColumn(
                "Ready",
                "string",
                '.status.conditions[?(@.type=="Ready")].status',
                "Whether the last warm run succeeded.",
            ),
            AGE,
        ),
    ),
    CustomResource(
        CacheInvalidation,
        INVALIDATIONS,
        "cinv",
        columns=(
            PrinterColumn("Start", "string", ".spec.startDate", "First day invalidated."),
            PrinterColumn("End", "string", ".spec.endDate", "Last day invalidated."),
            PrinterColumn("Phase", "string", ".status.phase", "Pending, Running, Succeeded or Failed."),
            PrinterColumn("Keys Deleted", "integer", ".status.keysDeleted", "Redis keys deleted."),
            AGE,
        ),
    ),
)
