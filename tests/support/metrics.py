"""Comparing the metric fields of a document item with sums computed by an independent SQL oracle."""

from __future__ import annotations

import math
from typing import Any, Protocol


class MetricSums(Protocol):
    @property
    def requests(self) -> int: ...
    @property
    def ok(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def prompt(self) -> int: ...
    @property
    def completion(self) -> int: ...
    @property
    def spend(self) -> float: ...


def close(actual: float, expected: float) -> bool:
    """Equal up to float summation order."""
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-6)


def success_rate(s: MetricSums) -> float:
    return 100.0 * s.ok / s.requests if s.requests else 0.0


def tokens(s: MetricSums) -> dict[str, int]:
    return {"total": s.prompt + s.completion, "prompt": s.prompt, "completion": s.completion}


def assert_metrics(metrics: dict[str, Any], s: MetricSums, where: str) -> None:
    """A breakdown row's `metrics` (or a user row's model entry) equal the SQL sums; successRate where it is sent."""
    assert (metrics["requests"], metrics["tokens"]) == (s.requests, tokens(s)), where
    assert close(metrics["cost"], s.spend), (where, metrics["cost"], s.spend)
    if "successRate" in metrics:
        assert math.isclose(metrics["successRate"], success_rate(s), abs_tol=1e-9), where


def assert_summary(entry: dict[str, Any], s: MetricSums, where: str) -> None:
    """A UserSummary's / ModelSummary's / daily entry's five numbers equal the SQL sums."""
    expected = (s.requests, s.prompt + s.completion, s.prompt, s.completion)
    assert (entry["requests"], entry["tokens"], entry["prompt_tokens"], entry["completion_tokens"]) == expected, where
    assert close(entry["cost"], s.spend), (where, entry["cost"], s.spend)
