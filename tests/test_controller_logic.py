"""The operator's domain functions without kopf or a cluster (pure Python)."""

from __future__ import annotations

import datetime as dt

import pytest

from litemaas_cache.controller.conditions import condition_reason, condition_status, set_condition
from litemaas_cache.controller.invalidation import parse_invalidation, rewarm_ranges, ttl_expiry
from litemaas_cache.controller.specs import MAX_TTL_SECONDS_AFTER_FINISHED
from litemaas_cache.controller.warming import WarmFailed, human_bytes, is_due
from litemaas_cache.dates import DateRange

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def test_conditions_keep_their_transition_time_until_the_status_changes() -> None:
    first = set_condition(None, "Ready", "True", "Warmed", "ok", 1, NOW)
    later = NOW + dt.timedelta(minutes=5)
    same = set_condition(first, "Ready", "True", "Warmed", "still ok", 2, later)
    assert same[0]["lastTransitionTime"] == "2026-11-29T12:00:00Z"
    assert same[0]["observedGeneration"] == 2
    assert same[0]["message"] == "still ok"
    flipped = set_condition(same, "Ready", "False", "BackendUnavailable", "down", 2, later)
    assert flipped[0]["lastTransitionTime"] == "2026-11-29T12:05:00Z"
    both = set_condition(flipped, "Degraded", "True", "RedisUnavailable", "x", 2, later)
    assert [c["type"] for c in both] == ["Degraded", "Ready"]
    assert condition_status(both, "Ready") == "False"
    assert condition_reason(both, "Degraded") == "RedisUnavailable"
    assert condition_status(both, "RedisAvailable") is None


@pytest.mark.parametrize(
    ("status", "due"),
    [
        ({}, True),  # never warmed
        ({"observedGeneration": 1, "lastWarmTime": "2026-11-29T11:59:00Z"}, True),  # no nextWarmTime
        ({"observedGeneration": 1, "lastWarmTime": "x", "nextWarmTime": "2026-11-29T12:05:00Z"}, False),
        ({"observedGeneration": 1, "lastWarmTime": "x", "nextWarmTime": "2026-11-29T11:59:59Z"}, True),
        ({"observedGeneration": 0, "lastWarmTime": "x", "nextWarmTime": "2026-11-29T12:05:00Z"}, True),  # new spec
    ],
)
def test_is_due(status: dict[str, object], due: bool) -> None:
    assert is_due(status, 1, NOW) is due


def test_an_invalidation_spec_that_cannot_run_fails_permanently_with_its_reason() -> None:
    with pytest.raises(WarmFailed) as failure:
        parse_invalidation({"startDate": "2026-03-02", "endDate": "2026-03-01"}, 3)
    assert failure.value.permanent
    status = failure.value.status
    assert status["phase"] == "Failed"
    assert "endDate must not be before startDate" in status["message"]
    assert status["observedGeneration"] == 3
    assert condition_reason(status["conditions"], "Complete") == "InvalidSpec"


def test_rewarm_takes_the_purged_days_and_the_policy_ranges_that_overlap_them() -> None:
    today = dt.date(2026, 11, 29)
    purged = DateRange(dt.date(2026, 11, 25), dt.date(2026, 11, 25))
    policies = [
        {"ranges": [{"preset": "last-7-days"}, {"preset": "previous-month"}]},  # overlaps / does not
        {"ranges": [{"start": "2026-11-20", "end": "2026-11-26"}]},  # overlaps
        {"ranges": [{"preset": "nonsense"}]},  # an unreadable policy is skipped, not fatal
    ]
    ranges = rewarm_ranges(purged, policies, 90, today)
    assert ranges == [
        purged,
        DateRange(dt.date(2026, 11, 23), today),
        DateRange(dt.date(2026, 11, 20), dt.date(2026, 11, 26)),
    ]


@pytest.mark.parametrize(
    ("size", "text"), [(None, None), (512, "512"), (2048, "2.0Ki"), (1_468_006, "1.4Mi"), (3 * 1024**3, "3.0Gi")]
)
def test_memory_is_shown_as_a_kubernetes_quantity(size: int | None, text: str | None) -> None:
    assert human_bytes(size) == text


def test_ttl_after_finished_has_a_maximum_and_its_expiry_never_overflows() -> None:
    spec = {"startDate": "2026-01-01", "endDate": "2026-01-01"}
    with pytest.raises(WarmFailed, match=r"spec\.ttlSecondsAfterFinished: Input should be less than or equal to"):
        parse_invalidation({**spec, "ttlSecondsAfterFinished": MAX_TTL_SECONDS_AFTER_FINISHED + 1}, 1)
    parsed = parse_invalidation({**spec, "ttlSecondsAfterFinished": MAX_TTL_SECONDS_AFTER_FINISHED}, 1)
    assert parsed.ttl_seconds_after_finished == 366 * 86400
    finished = "2026-01-01T00:00:00Z"
    assert ttl_expiry(finished, MAX_TTL_SECONDS_AFTER_FINISHED) == dt.datetime(2027, 1, 2, tzinfo=dt.UTC)
    # What an object stored under the old CRD (no maximum) may hold: clamped, never an OverflowError.
    assert ttl_expiry(finished, 10**30) == ttl_expiry(finished, MAX_TTL_SECONDS_AFTER_FINISHED)
    assert ttl_expiry(finished, -5) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert ttl_expiry("9999-12-31T00:00:00Z", MAX_TTL_SECONDS_AFTER_FINISHED) == dt.datetime.max.replace(tzinfo=dt.UTC)
