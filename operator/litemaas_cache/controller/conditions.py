"""status.conditions as the Kubernetes API conventions define them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]


def timestamp(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second, as Kubernetes writes times."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[dict[str, Any]] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Return the conditions with `type_` set; lastTransitionTime only moves when the status changes."""
    existing = {c.get("type"): dict(c) for c in conditions or []}
    previous = existing.get(type_)
    changed = previous is None or previous.get("status") != status
    existing[type_] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "observedGeneration": generation,
        "lastTransitionTime": timestamp(now) if changed else previous.get("lastTransitionTime", timestamp(now)),  # type: ignore[union-attr]
    }
    return sorted(existing.values(), key=lambda c: str(c["type"]))


def _field(conditions: Sequence[dict[str, Any]] | None, type_: str, name: str) -> str | None:
    for condition in conditions or []:
        if condition.get("type") == type_:
            return str(condition.get(name))
    return None


def condition_status(conditions: Sequence[dict[str, Any]] | None, type_: str) -> str | None:
    return _field(conditions, type_, "status")


def condition_reason(conditions: Sequence[dict[str, Any]] | None, type_: str) -> str | None:
    return _field(conditions, type_, "reason")
