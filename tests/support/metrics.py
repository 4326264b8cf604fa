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


def assert_metrics(item: dict[str, Any], s: MetricSums, where: str) -> None:
    """A breakdown item's or a day's metrics equal the SQL sums."""
    success_rate = round(100.0 * s.ok / s.requests, 2) if s.requests else 0.0
    expected = {
        "requests": s.requests,
        "successfulRequests": s.ok,
        "failedRequests": s.failed,
        "totalTokens": s.prompt + s.completion,
        "promptTokens": s.prompt,
        "completionTokens": s.completion,
        "successRate": success_rate,
    }
    assert {k: item[k] for k in expected} == expected, where
    assert close(item["cost"], s.spend), (where, item["cost"], s.spend)
