"""A circuit breaker: after N consecutive failures, fail fast and probe in the background until recovery."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class CircuitBreaker:
    """Closed: calls go through. Open: calls are refused while a background probe retries with backoff."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        on_recover: Callable[[], Awaitable[None]],
        *,
        failure_threshold: int = 3,
        reset_seconds: float = 2.0,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._probe = probe
        self._on_recover = on_recover
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def allows(self) -> bool:
        return self.state is BreakerState.CLOSED

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self, error: str) -> None:
        self.consecutive_failures += 1
        self.last_error = error
        if self.state is BreakerState.CLOSED and self.consecutive_failures >= self.failure_threshold:
            self.trip()

    def trip(self) -> None:
        """Open now and start probing."""
        if self.state is BreakerState.OPEN:
            return
        self.state = BreakerState.OPEN
        self.opened_at = time.monotonic()
        log.warning("redis circuit breaker opened after %d failures: %s", self.consecutive_failures, self.last_error)
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_until_recovered())

    async def _probe_until_recovered(self) -> None:
        delay = self.reset_seconds
        while True:
            await asyncio.sleep(delay)
            try:
                await self._probe()
                await self._on_recover()
            except Exception as exc:
                self.last_error = type(exc).__name__
                delay = min(delay * 2, self.max_backoff_seconds)
                continue
            self.state = BreakerState.CLOSED
            self.consecutive_failures = 0
            self.opened_at = None
            log.info("redis circuit breaker closed: redis is reachable again")
            return

    async def close(self) -> None:
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
