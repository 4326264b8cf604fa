"""Reconciling a CacheWarmPolicy: decide whether it is due, warm, and describe the outcome as status.

Plain functions over the cache manager; kopf only calls them (controller/handlers.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..dates import DateRange, utc_now
from ..errors import CacheError, SourceMissing
from ..filters import UsageFilters
from ..manager import CacheManager
from .conditions import condition_reason, condition_status, set_condition, timestamp
from .specs import CacheWarmPolicySpec


class SpecCannotRun(Exception):
    """The spec passed the schema but cannot be executed (e.g. a range longer than the analytics maximum)."""


class WarmFailed(Exception):
    """Warming failed; `status` is what to write, `permanent` says whether retrying can help."""

    def __init__(self, message: str, status: dict[str, Any], *, permanent: bool) -> None:
        super().__init__(message)
        self.status = status
        self.permanent = permanent


@dataclass
class WarmOutcome:
    """The status patch to write, and the events worth posting."""

    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def parse_policy(spec: dict[str, Any]) -> CacheWarmPolicySpec:
    try:
        return CacheWarmPolicySpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise SpecCannotRun(f"spec.{where}: {first['msg']}") from None


def resolve_ranges(policy: CacheWarmPolicySpec, max_days: int, today: dt.date) -> list[DateRange]:
    ranges = [r.resolve(today) for r in policy.ranges]
    for days in ranges:
        if days.days > max_days:
            raise SpecCannotRun(f"range {days} spans {days.days} days; the analytics maximum is {max_days}")
    return ranges


def is_due(status: dict[str, Any], generation: int | None, now: dt.datetime) -> bool:
    """Due when never warmed, when the spec changed since the last warm, or when the interval has passed."""
    if status.get("observedGeneration") != generation or not status.get("lastWarmTime"):
        return True
    next_warm = status.get("nextWarmTime")
    if not next_warm:
        return True
    return now >= dt.datetime.fromisoformat(str(next_warm).replace("Z", "+00:00"))


def human_bytes(size: int | None) -> str | None:
    """Kubernetes-style binary quantity: 1.2Mi."""
    if size is None:
        return None
    value = float(size)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            return f"{value:.0f}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    return None  # pragma: no cover - the loop always returns


async def cache_status(manager: CacheManager) -> dict[str, Any]:
    """hitRate / keyCount / memoryUsed exactly as the cache's own stats() reports them."""
    stats = await manager.stats()
    rate = stats["hitRate"]
    return {
        "hitRate": None if rate is None else f"{rate:.1f}%",
        "keyCount": stats["redis"]["keyCount"],
        "memoryUsed": human_bytes(stats["redis"]["memoryUsedBytes"]),
    }


async def reconcile_policy(
    manager: CacheManager, spec: dict[str, Any], status: dict[str, Any], generation: int | None
) -> WarmOutcome | None:
    """What one timer tick does: nothing (None) unless the policy is due, suspended anew, or newly invalid."""
    now = utc_now()
    seen = status.get("observedGeneration") == generation
    try:
        policy = parse_policy(spec)
    except SpecCannotRun:
        return None if seen else await warm_policy(manager, spec, status, generation, now)  # raises WarmFailed
    if policy.suspend:
        if seen and condition_reason(status.get("conditions"), "Ready") == "Suspended":
            return None
        message = "suspended: not warming until spec.suspend is false"
        conditions = set_condition(status.get("conditions"), "Ready", "False", "Suspended", message, generation, now)
        return WarmOutcome(
            {"conditions": conditions, "observedGeneration": generation, "nextWarmTime": None},
            [("Normal", "Suspended", message)],
        )
    if not is_due(status, generation, now):
        return None
    return await warm_policy(manager, spec, status, generation, now)


async def warm_policy(
    manager: CacheManager,
    spec: dict[str, Any],
    status: dict[str, Any],
    generation: int | None,
    now: dt.datetime | None = None,
) -> WarmOutcome:
    """Warm one policy now and return its new status; raises WarmFailed (permanent or not)."""
    now = now or utc_now()
    conditions = status.get("conditions")
    try:
        policy = parse_policy(spec)
        ranges = resolve_ranges(policy, manager.settings.max_range_days, now.date())
    except SpecCannotRun as exc:
        conditions = set_condition(conditions, "Ready", "False", "InvalidSpec", str(exc), generation, now)
        conditions = set_condition(conditions, "Degraded", "True", "InvalidSpec", str(exc), generation, now)
        status_patch = {"conditions": conditions, "observedGeneration": generation, "lastError": str(exc)}
        raise WarmFailed(str(exc), status_patch, permanent=True) from None
    filter_sets = [UsageFilters.model_validate(f.model_dump(by_alias=True)) for f in policy.filters]
    try:
        report = await manager.warm(ranges, filter_sets, policy.breakdowns)
    except CacheError as exc:
        message = str(exc)
        reason = "SourceMissing" if isinstance(exc, SourceMissing) else "BackendUnavailable"
        conditions = set_condition(conditions, "Ready", "False", reason, message, generation, now)
        conditions = set_condition(conditions, "Degraded", "True", reason, message, generation, now)
        raise WarmFailed(message, {"conditions": conditions, "lastError": message}, permanent=False) from None

    finished = utc_now()
    redis_up = report.redis_available
    message = f"warmed {len(ranges)} range(s): {report.keys_written} keys, {report.days_warmed} days"
    conditions = set_condition(conditions, "Ready", "True", "Warmed", message, generation, finished)
    if not manager.redis.enabled:
        conditions = set_condition(
            conditions, "RedisAvailable", "False", "Disabled", "REDIS_ENABLED is false", generation, finished
        )
    elif redis_up:
        conditions = set_condition(
            conditions, "RedisAvailable", "True", "Connected", "redis answers", generation, finished
        )
    else:
        failure = manager.redis.failure
        conditions = set_condition(
            conditions,
            "RedisAvailable",
            "False",
            failure.reason if failure else "Unreachable",
            redis_down_message(manager),
            generation,
            finished,
        )
    degraded = manager.redis.enabled and not redis_up
    conditions = set_condition(
        conditions,
        "Degraded",
        "True" if degraded else "False",
        "RedisUnavailable" if degraded else "AllTiersHealthy",
        "serving from PostgreSQL while redis is down" if degraded else "all tiers healthy",
        generation,
        finished,
    )
    new_status = {
        "conditions": conditions,
        "observedGeneration": generation,
        "lastWarmTime": timestamp(finished),
        "nextWarmTime": timestamp(finished + policy.interval_delta),
        "lastWarmDurationSeconds": round(report.duration_seconds, 3),
        "keysWarmed": report.keys_written,
        "daysWarmed": report.days_warmed,
        "daysRefreshed": [d.isoformat() for d in report.days_refreshed],
        "lastError": None,
        **await cache_status(manager),
    }
    events = []
    if status.get("conditions") is None or _ready(status) != "True":
        events.append(("Normal", "Warmed", message))
    if report.days_refreshed:
        days = ", ".join(d.isoformat() for d in report.days_refreshed)
        events.append(("Normal", "SourceChanged", f"LiteLLM's rows changed after caching; recomputed {days}"))
    if degraded and _redis(status) != "False":
        events.append(("Warning", "RedisUnavailable", redis_down_message(manager)))
    if not degraded and _redis(status) == "False" and manager.redis.enabled:
        events.append(("Normal", "RedisRecovered", "redis is reachable again"))
    return WarmOutcome(new_status, events)


def redis_down_message(manager: CacheManager) -> str:
    """Why Redis is not in use (out of memory, read-only, unreachable...), as the status and the event say it."""
    return f"redis unavailable: {manager.redis.failure or 'unreachable'}; warming PostgreSQL only"


def _ready(status: dict[str, Any]) -> str | None:
    return condition_status(status.get("conditions"), "Ready")


def _redis(status: dict[str, Any]) -> str | None:
    return condition_status(status.get("conditions"), "RedisAvailable")
