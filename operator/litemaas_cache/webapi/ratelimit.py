"""Per-caller rate limits of the HTTP API, shared by every API instance through Redis.

Fixed windows, as LiteMaaS's @fastify/rate-limit counts: a caller's window in a bucket opens with its first request
and lasts the bucket's window; the first `limit` requests in it are served, the rest get 429 until it closes. The
count lives in Redis (one Lua call: INCRBY, and PEXPIRE when the window opens), so all instances draw on one
allowance. When Redis cannot be asked (down, its breaker open, REDIS_ENABLED=false) each process counts on its own:
the limits still hold, per process, and no request fails because of Redis.

A request is counted in Redis before it is answered, except while its caller is far from the limit: once this
process has seen the caller's window in Redis, and as long as at most half the limit is used as far as it knows,
its requests are answered at once and counted in Redis a moment later (WRITE_BEHIND_SECONDS, several together).
Past half the limit every request waits for its count again, carrying the ones not yet sent, so the limit itself is
enforced on exact counts; instances that all see a caller below half its limit may together let through, within
WRITE_BEHIND_SECONDS, more than that half before they learn of each other. A warm read then costs no round trip
for its rate limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..redis_tier.keys import KeySpace
from ..settings import Settings
from ..vocabulary import RateBucket
from .problems import ApiError

WINDOW_SECONDS: Mapping[RateBucket, int] = {"analytics": 60, "export": 60, "rebuild": 300}
"""LiteMaaS's windows: a minute for analytics and export, five minutes for a cache rebuild."""
LOCAL_PRUNE_AT = 10_000
"""Per-process windows kept before closed ones are swept (a sweep runs when their number has doubled)."""
WRITE_BEHIND_SECONDS = 0.05
"""How long requests answered below half the limit wait, together, before they are counted in Redis."""


class SharedWindows(Protocol):
    """Counts a request in a window every instance sees (RedisStore); None when that cannot be done now."""

    async def count_in_window(self, key: str, window_ms: int, amount: int = 1) -> tuple[int, int] | None: ...


@dataclass(frozen=True)
class RateRule:
    limit: int
    window_seconds: int


def rules_from_settings(settings: Settings) -> dict[RateBucket, RateRule]:
    limits: dict[RateBucket, int] = {
        "analytics": settings.admin_analytics_rate_limit,
        "export": settings.admin_export_rate_limit,
        "rebuild": settings.admin_cache_rebuild_limit,
    }
    return {bucket: RateRule(limit, WINDOW_SECONDS[bucket]) for bucket, limit in limits.items()}


@dataclass(frozen=True)
class Allowance:
    """Where one request leaves its caller in a bucket's current window."""

    bucket: RateBucket
    rule: RateRule
    counted: int
    reset_ms: int

    @property
    def allowed(self) -> bool:
        return self.counted <= self.rule.limit

    @property
    def reset_seconds(self) -> int:
        return max(1, math.ceil(self.reset_ms / 1000))

    def headers(self) -> dict[str, str]:
        """@fastify/rate-limit's headers: the limit, what is left, seconds until the window closes."""
        headers = {
            "x-ratelimit-limit": str(self.rule.limit),
            "x-ratelimit-remaining": str(max(0, self.rule.limit - self.counted)),
            "x-ratelimit-reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["retry-after"] = str(self.reset_seconds)
        return headers

    def refusal(self) -> ApiError:
        return ApiError(
            429,
            "RATE_LIMITED",
            f"rate limit exceeded: {self.rule.limit} requests per {self.rule.window_seconds} s; "
            f"retry in {self.reset_seconds} s",
            {
                "bucket": self.bucket,
                "limit": self.rule.limit,
                "windowSeconds": self.rule.window_seconds,
                "retryAfterSeconds": self.reset_seconds,
            },
        )


class LocalWindows:
    """This process's fixed windows: the count when Redis cannot be asked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (requests counted, when the window closes)
        self._sweep_at = LOCAL_PRUNE_AT

    def count_in_window(self, key: str, window_ms: int) -> tuple[int, int]:
        now = self._clock()
        counted, closes = self._windows.get(key, (0, now))
        if closes <= now:
            counted, closes = 0, now + window_ms / 1000
            self._sweep(now)
        self._windows[key] = (counted + 1, closes)
        return counted + 1, math.ceil((closes - now) * 1000)

    def __len__(self) -> int:
        """Windows held, closed ones not yet swept included."""
        return len(self._windows)

    def _sweep(self, now: float) -> None:
        """Forget closed windows once there are many: memory stays bounded by the callers of one window."""
        if len(self._windows) < self._sweep_at:
            return
        self._windows = {key: window for key, window in self._windows.items() if window[1] > now}
        self._sweep_at = max(LOCAL_PRUNE_AT, 2 * len(self._windows))


@dataclass
class _SeenWindow:
    """A caller's window in Redis as this process last saw it, and the requests it answered since without counting
    them there yet."""

    counted: int
    closes: float
    window_ms: int
    unsent: int = 0


class RateLimiter:
    """Counts each request of a caller in its bucket, in Redis when it can, else in this process."""

    def __init__(self, rules: Mapping[RateBucket, RateRule], shared: SharedWindows, keys: KeySpace) -> None:
        self.rules = dict(rules)
        self._shared = shared
        self._keys = keys
        self._local = LocalWindows()
        self._seen: dict[str, _SeenWindow] = {}
        self._sending: asyncio.Task[None] | None = None

    async def count(self, bucket: RateBucket, subject: str) -> Allowance:
        rule = self.rules[bucket]
        key = self._keys.rate_limit(bucket, subject)
        seen = self._seen.get(key)
        now = time.monotonic()
        if seen is not None and seen.closes > now and seen.counted + seen.unsent < rule.limit // 2:
            seen.unsent += 1
            self._send_soon()
            return Allowance(bucket, rule, seen.counted + seen.unsent, math.ceil((seen.closes - now) * 1000))
        window_ms = rule.window_seconds * 1000
        unsent = seen.unsent if seen is not None and seen.closes > now else 0
        if seen is not None:
            seen.unsent = 0
        counted = await self._shared.count_in_window(key, window_ms, unsent + 1)
        if counted is None:
            self._seen.pop(key, None)
            counted = self._local.count_in_window(key, window_ms)
        else:
            self._seen[key] = _SeenWindow(counted[0], time.monotonic() + counted[1] / 1000, window_ms)
        return Allowance(bucket, rule, *counted)

    def _send_soon(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_unsent(WRITE_BEHIND_SECONDS))

    async def _send_unsent(self, delay: float) -> None:
        """Count in Redis the requests answered without waiting; a window Redis cannot count is forgotten, so the
        caller's next request asks again (and counts in this process if Redis is down)."""
        await asyncio.sleep(delay)
        now = time.monotonic()
        stale = [key for key, seen in self._seen.items() if seen.closes <= now]
        for key in stale:
            del self._seen[key]
        batch = {key: seen for key, seen in self._seen.items() if seen.unsent}
        amounts = {key: seen.unsent for key, seen in batch.items()}
        for seen in batch.values():
            seen.unsent = 0
        replies = await asyncio.gather(
            *(self._shared.count_in_window(key, seen.window_ms, amounts[key]) for key, seen in batch.items())
        )
        for (key, seen), reply in zip(batch.items(), replies, strict=True):
            if reply is None:
                self._seen.pop(key, None)
            elif self._seen.get(key) is seen:
                seen.counted = max(seen.counted, reply[0])

    async def close(self) -> None:
        """Send what is not yet counted in Redis (the application is stopping): the send under way is let finish
        (cancelled, it could drop the counts it had taken), then whatever it did not take."""
        if self._sending is not None:
            await self._sending
        if any(seen.unsent for seen in self._seen.values()):
            await self._send_unsent(0)
