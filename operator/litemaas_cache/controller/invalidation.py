"""Running a CacheInvalidation: purge the tiers, optionally re-warm, and describe the outcome as status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..dates import DateRange, utc_now
from ..manager import CacheManager, InvalidationReport
from .conditions import set_condition, timestamp
from .specs import MAX_TTL_SECONDS_AFTER_FINISHED, CacheInvalidationSpec, CacheWarmPolicySpec
from .warming import WarmFailed

TERMINAL_PHASES = ("Succeeded", "Failed")


class InvalidationIncomplete(Exception):
    """A tier could not be purged (Redis unreachable): retry later; the object stays Running."""


@dataclass
class InvalidationOutcome:
    status: dict[str, Any]
    report: InvalidationReport


def parse_invalidation(spec: dict[str, Any], generation: int | None) -> CacheInvalidationSpec:
    try:
        return CacheInvalidationSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        message = f"spec.{where}: {first['msg']}"
        raise WarmFailed(message, failed_status("InvalidSpec", message, generation, None), permanent=True) from None


def failed_status(
    reason: str, message: str, generation: int | None, conditions: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The terminal status of an invalidation that cannot succeed (a bad spec, or retries exhausted)."""
    now = utc_now()
    return {
        "phase": "Failed",
        "message": message,
        "completionTime": timestamp(now),
        "observedGeneration": generation,
        "conditions": set_condition(conditions, "Complete", "False", reason, message, generation, now),
    }


def running_status(generation: int | None, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or utc_now()
    return {
        "phase": "Running",
        "startTime": timestamp(now),
        "observedGeneration": generation,
        "message": "purging",
        "conditions": set_condition(None, "Complete", "False", "Running", "purging", generation, now),
    }


def ttl_expiry(completion_time: str, ttl_seconds: int) -> dt.datetime:
    """When a finished invalidation is due for deletion; never raises for any ttl.

    The ttl is clamped to the schema's bounds, since an object stored under an older CRD (no maximum) may hold
    any integer, and a moment past the calendar's end is "never"."""
    finished = dt.datetime.fromisoformat(completion_time.replace("Z", "+00:00"))
    ttl = dt.timedelta(seconds=min(max(ttl_seconds, 0), MAX_TTL_SECONDS_AFTER_FINISHED))
    try:
        return finished + ttl
    except OverflowError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)


def rewarm_ranges(
    purged: DateRange, policies: Iterable[dict[str, Any]], max_days: int, today: dt.date
) -> list[DateRange]:
    """The purged range itself plus every warm policy range (resolved today) that overlaps it."""
    ranges = [purged] if purged.days <= max_days else []
    for spec in policies:
        try:
            policy = CacheWarmPolicySpec.model_validate(spec)
        except ValidationError:
            continue
        for item in policy.ranges:
            days = item.resolve(today)
            if days.overlaps(purged) and days.days <= max_days and days not in ranges:
                ranges.append(days)
    return ranges


async def run_invalidation(
    manager: CacheManager,
    spec: CacheInvalidationSpec,
    generation: int | None,
    conditions: list[dict[str, Any]] | None,
    policies: Iterable[dict[str, Any]] = (),
) -> InvalidationOutcome:
    """Purge spec.range from spec.tiers (and re-warm if asked); raises InvalidationIncomplete to retry."""
    report = await manager.invalidate(spec.range, spec.tiers)
    if not report.complete:
        raise InvalidationIncomplete(f"redis {report.redis_status}; will retry")
    message = (
        f"purged {spec.range}: {report.days_purged} cached days, {report.keys_deleted} redis keys"
        f" (tiers: {', '.join(report.tiers)})"
    )
    if spec.rewarm:
        ranges = rewarm_ranges(spec.range, policies, manager.settings.max_range_days, utc_now().date())
        warm = await manager.warm(ranges)
        message += f"; re-warmed {len(ranges)} range(s), {warm.keys_written} keys"
    now = utc_now()
    return InvalidationOutcome(
        {
            "phase": "Succeeded",
            "keysDeleted": report.keys_deleted,
            # Days invalidated (their versions bumped), not only those that held data: a retried purge
            # (say, after a restart) reports the same number as a first-time one.
            "daysPurged": report.versions_bumped if "postgres" in report.tiers else spec.range.days,
            "completionTime": timestamp(now),
            "message": message,
            "observedGeneration": generation,
            "conditions": set_condition(conditions, "Complete", "True", "Purged", message, generation, now),
        },
        report,
    )
