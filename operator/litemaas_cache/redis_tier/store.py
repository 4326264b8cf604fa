"""A fail-soft Redis store: every call has a timeout, goes through the circuit breaker, and on any Redis
failure returns a neutral answer (a miss, False) instead of raising.

Correctness rests on per-day versions. PostgreSQL's daily_usage.version is the truth; the hash
`<prefix>day-versions` mirrors it and is only ever raised (a Lua max-merge). Every day entry and every
result entry carries the versions it was computed from, and a read accepts an entry only when they equal
the mirror's current versions. An invalidation raises the mirror first, so any entry computed before it,
even one written after it (the set-after-delete race), can never be read again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeout

from ..codec import Codec, CorruptValue
from ..dates import DateRange
from ..errors import CacheError
from ..frames import DayFrame, UnreadablePayload, read_header
from .breaker import BreakerState, CircuitBreaker
from .keys import KeySpace

log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster
VersionSource = Callable[[], Awaitable[dict[dt.date, int]]]

_MAX_MERGE_LUA = """
local raised = 0
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    raised = raised + 1
  end
end
return raised
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One round trip: count the request, and give a window its lifetime when its first request opens it (or when a key
# somehow lost its expiry, which would otherwise never reset).
_WINDOW_LUA = """
local counted = redis.call('INCR', KEYS[1])
local remaining = redis.call('PTTL', KEYS[1])
if remaining < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  remaining = tonumber(ARGV[1])
end
return {counted, remaining}
"""

# RedisClusterException (an unreachable cluster, no slots) is not a RedisError.
_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError, asyncio.TimeoutError)
# The one refusal that is a miss and not a failure: a key of ours holding another type (WRONGTYPE).
_STRAY_KEY = "WRONGTYPE"
STATS_FLUSH_SECONDS = 1.0

# Redis answered and refused: a state of the server that lasts until someone acts (memory freed, a primary back,
# an ACL fixed), not a blip. The first refusal opens the breaker, and only a write closes it again.
_REFUSALS = (OutOfMemoryError, ReadOnlyError, NoPermissionError)
PROBE_TTL_MS = 10_000

# What a failure says about Redis, most specific first: a reason for status conditions, and a phrase for people.
# Anything else (refused connections, resets, a cluster without slots) is "Unreachable".
_FAILURE_KINDS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str, str], ...] = (
    (OutOfMemoryError, "OutOfMemory", "out of memory: maxmemory is reached and the eviction policy refuses writes"),
    (ReadOnlyError, "ReadOnly", "read-only: the server is a replica, as after a failover"),
    (ClusterDownError, "ClusterDown", "the cluster is down"),
    (NoPermissionError, "NoPermission", "the Redis user lacks a permission (ACL)"),
    (AuthenticationError, "AuthenticationFailed", "authentication failed"),
    (BusyLoadingError, "Loading", "still loading its dataset"),
    ((RedisTimeout, TimeoutError), "Timeout", "no answer within REDIS_SOCKET_TIMEOUT"),
)


@dataclass(frozen=True)
class RedisFailure:
    """Why the last Redis call failed: `reason` for status conditions, the rest for people (never a secret: only
    the operation and the exception's type are kept)."""

    reason: str
    description: str
    operation: str
    error: str

    @classmethod
    def of(cls, operation: str, exc: BaseException) -> RedisFailure:
        for kind, reason, description in _FAILURE_KINDS:
            if isinstance(exc, kind):
                return cls(reason, description, operation, type(exc).__name__)
        return cls("Unreachable", "unreachable", operation, type(exc).__name__)

    def __str__(self) -> str:
        return f"{self.description} ({self.operation}: {self.error})"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _versions(mirror: Sequence[bytes | None]) -> list[int]:
    """An HMGET of the version mirror as numbers; a day the mirror does not hold is at version 0."""
    return [int(v) if v is not None else 0 for v in mirror]


class RedisStore:
    """Day entries, result entries, the version mirror, locks, shared counters and rate-limit windows in Redis."""

    def __init__(
        self,
        url: str,
        keys: KeySpace,
        codec: Codec,
        version_source: VersionSource,
        *,
        cluster: bool = False,
        timeout: float = 0.5,
        breaker_failures: int = 3,
        breaker_reset_seconds: float = 2.0,
        resync_seconds: float = 30.0,
    ) -> None:
        self.keys = keys
        # Even without a failure of its own, each process re-raises the shared mirror from PostgreSQL this often:
        # an invalidation that could not reach Redis (run by a process that then exited) is repaired for every
        # reader within this bound once Redis is reachable again.
        self.resync_seconds = resync_seconds
        self.codec = codec
        self.cluster = cluster
        self.timeout = timeout
        self._url = url
        self._version_source = version_source
        self._client: RedisClient | None = None
        self._synced = False
        self._synced_at = 0.0
        self._resync_lock = asyncio.Lock()
        self._resync_retry_at = 0.0  # after PostgreSQL failed a re-sync, none is tried before this
        self._missed = 0  # calls that failed or were refused: any of them may have been a version raise
        self.failure: RedisFailure | None = None  # the last failure of a call or of a recovery probe
        self._pending_stats: Counter[str] = Counter()
        self._last_flush = time.monotonic()
        self.breaker = CircuitBreaker(
            self._probe,
            self._resync_versions,
            failure_threshold=breaker_failures,
            reset_seconds=breaker_reset_seconds,
        )

    # -- connection ------------------------------------------------------------------------------------
    def _connect(self) -> RedisClient:
        if self._client is None:
            common: dict[str, Any] = {
                "socket_timeout": self.timeout,
                "socket_connect_timeout": self.timeout,
                "health_check_interval": 30,
            }
            if self.cluster:
                self._client = RedisCluster.from_url(self._url, **common)
            else:
                self._client = Redis.from_url(self._url, retry_on_timeout=False, **common)
        return self._client

    async def _probe(self) -> None:
        """The breaker's recovery probe: a write, as a PING would pass on a server that still refuses writes (out of
        memory, read-only). Its failure is remembered like a call's (Redis may be down for a new cause)."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                await self._connect().set(self.keys.probe, b"1", px=PROBE_TTL_MS)
        except _FAILURES as exc:
            self.failure = RedisFailure.of("probe", exc)
            raise

    async def close(self) -> None:
        await self.flush_stats()
        await self.breaker.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    enabled = True

    @property
    def available(self) -> bool:
        return self.breaker.state is BreakerState.CLOSED

    @property
    def state(self) -> str:
        """The breaker's state: closed (Redis in use) or open (bypassed until a probe succeeds)."""
        return self.breaker.state.value

    async def _call(
        self, operation: str, fn: Callable[[RedisClient], Awaitable[Any]], default: Any, *, versioned: bool = True
    ) -> Any:
        """Run one Redis operation under the breaker and a timeout; any Redis failure yields `default`.
        A `versioned` operation (one that reads or writes cache entries) first brings the version mirror in step."""
        if not self.breaker.allows:
            self._mark_unsynced()
            return default
        try:
            client = self._connect()
            if versioned and not await self._ensure_synced(client):
                self._mark_unsynced()
                return default
            async with asyncio.timeout(self.timeout * 4):
                result = await fn(client)
        except ResponseError as exc:
            if not str(exc).startswith(_STRAY_KEY):
                return self._failed(operation, exc, default)
            # A stray key of another type under our prefix: Redis works, this one read is a miss.
            log.warning("redis %s refused (%s); treating it as a miss", operation, str(exc)[:120])
            self.breaker.record_success()
            return default
        except _FAILURES as exc:
            return self._failed(operation, exc, default)
        self.breaker.record_success()
        return result

    def _failed(self, operation: str, exc: BaseException, default: Any) -> Any:
        """A call Redis could not serve: out of memory, read-only after a failover, cluster down, no permission,
        unreachable, too slow. Each counts towards opening the breaker, and the caller gets `default`."""
        self.failure = RedisFailure.of(operation, exc)
        self.breaker.record_failure(f"{operation}: {type(exc).__name__}")
        if isinstance(exc, _REFUSALS):
            self.breaker.trip()
        log.warning("redis %s failed (%s); falling back", operation, type(exc).__name__)
        self._mark_unsynced()
        return default

    def _mark_unsynced(self) -> None:
        """A call failed or was refused. It may have been a version raise that never landed (redis-py's
        ConnectionError and TimeoutError are not OSError, so this covers every failure), so the mirror may lag
        PostgreSQL: re-sync it before Redis is trusted again, even if the breaker never opened."""
        self._missed += 1
        self._synced = False

    async def _ensure_synced(self, client: RedisClient) -> bool:
        """Whether the mirror may be trusted for a call, re-syncing it first when due (one re-sync at a time).
        When PostgreSQL cannot give the versions, Redis itself is fine (no breaker failure) but cannot be trusted:
        calls are misses until a re-sync succeeds, tried again at most every REDIS_BREAKER_RESET_SECONDS."""
        if self._synced and time.monotonic() - self._synced_at < self.resync_seconds:
            return True
        if self._synced and self._resync_lock.locked():
            return True  # a periodic re-sync is under way; the mirror was in step moments ago
        async with self._resync_lock:
            if self._synced and time.monotonic() - self._synced_at < self.resync_seconds:
                return True
            if time.monotonic() < self._resync_retry_at:
                return False
            try:
                await self._resync_versions(client)
            except CacheError as exc:
                self._resync_retry_at = time.monotonic() + self.breaker.reset_seconds
                log.warning("redis not used until its version mirror can be re-synced: %s", exc)
                return False
        return True

    async def _resync_versions(self, client: RedisClient | None = None) -> None:
        """Raise the mirror to PostgreSQL's versions (on first contact and after every outage). PostgreSQL is read
        outside the Redis timeout: a slow or failing PostgreSQL is not a Redis failure."""
        missed = self._missed
        versions = await self._version_source()
        async with asyncio.timeout(self.timeout * 4):
            await self._merge_versions(client or self._connect(), versions)
        # A call that failed or was refused meanwhile may have missed a raise newer than `versions`.
        self._synced = self._missed == missed
        self._synced_at = time.monotonic()

    async def _merge_versions(self, client: RedisClient, versions: dict[dt.date, int]) -> int:
        """Raise mirror entries to `versions` (never lowers one); returns how many were raised."""
        if not versions:
            return 0
        args: list[str | int] = []
        for day, version in versions.items():
            args += [day.isoformat(), version]
        return int(await client.eval(_MAX_MERGE_LUA, 1, self.keys.versions, *args))

    # -- versions ----------------------------------------------------------------------------------------
    async def raise_versions(self, versions: dict[dt.date, int]) -> bool:
        """Raise the mirror (after an invalidation or a rewrite); False when Redis could not be reached."""
        return await self._call("raise-versions", lambda c: self._merge_versions(c, versions), None) is not None

    async def versions(self, days: Sequence[dt.date]) -> dict[dt.date, int] | None:
        """The mirror's current version of each day (0 when absent), or None when Redis cannot be asked."""

        async def read(client: RedisClient) -> dict[dt.date, int]:
            mirror = await client.hmget(self.keys.versions, [d.isoformat() for d in days])
            return dict(zip(days, _versions(cast(list[bytes | None], mirror)), strict=True))

        return cast(dict[dt.date, int] | None, await self._call("versions", read, None)) if days else {}

    # -- day entries -------------------------------------------------------------------------------------
    async def get_days(self, days: Sequence[dt.date]) -> dict[dt.date, DayFrame]:
        """The days whose Redis entry is present, of the current layout and at the mirror's current version
        (payloads only: their columns are decoded by whoever aggregates them)."""

        async def read(client: RedisClient) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for day in days:
                pipe.get(self.keys.day(day))
            pipe.hmget(self.keys.versions, [d.isoformat() for d in days])
            return await pipe.execute()

        if not days:
            return {}
        replies = await self._call("get-days", read, None)
        if replies is None:
            return {}
        *values, mirror = replies
        found: dict[dt.date, DayFrame] = {}
        for day, data, version in zip(days, values, _versions(mirror), strict=True):
            if data is None:
                continue
            try:
                header = read_header(data)
            except UnreadablePayload as exc:
                log.info("redis entry %s is not readable (%s): a miss", self.keys.day(day), exc)
                continue
            if header.day == day and header.version == version:
                found[day] = DayFrame(header, None, data)
        return found

    async def put_days(self, days: Iterable[DayFrame], ttl: Callable[[DayFrame], int]) -> int:
        """Store day payloads (raising the mirror to their versions first); returns how many were written."""
        entries = list(days)

        async def write(client: RedisClient) -> int:
            await self._merge_versions(client, {d.day: d.version for d in entries})
            pipe = client.pipeline(transaction=False)
            for day in entries:
                pipe.set(self.keys.day(day.day), day.payload, ex=ttl(day))
            await pipe.execute()
            return len(entries)

        if not entries:
            return 0
        return cast(int, await self._call("put-days", write, 0))

    # -- result entries ----------------------------------------------------------------------------------
    async def get_result(self, key: str, days: Sequence[dt.date]) -> Any | None:
        """A cached result whose version vector equals the mirror's current versions of `days`."""

        async def read(client: RedisClient) -> Any | None:
            pipe = client.pipeline(transaction=False)
            pipe.get(key)
            pipe.hmget(self.keys.versions, [d.isoformat() for d in days])
            data, mirror = await pipe.execute()
            if data is None:
                return None
            try:
                entry = self.codec.decode(data)
                vector, value = entry["v"], entry["r"]
            except (CorruptValue, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable redis entry %s: %s", key, exc)
                return None
            return value if vector == _versions(mirror) else None

        return await self._call("get-result", read, None)

    async def put_result(self, key: str, versions: dict[dt.date, int], value: Any, ttl: int) -> bool:
        """Store a result computed from days at `versions` (ordered by day), and index it until it expires."""

        async def write(client: RedisClient) -> bool:
            await self._merge_versions(client, versions)
            vector = [versions[d] for d in sorted(versions)]
            now = time.time()
            pipe = client.pipeline(transaction=False)
            pipe.set(key, self.codec.encode({"v": vector, "r": value}), ex=ttl)
            pipe.zadd(self.keys.results_index, {key: now + ttl})
            pipe.zremrangebyscore(self.keys.results_index, "-inf", now)  # keeps the index to live entries
            await pipe.execute()
            return True

        return cast(bool, await self._call("put-result", write, False))

    # -- invalidation ------------------------------------------------------------------------------------
    async def purge(self, days: DateRange) -> int | None:
        """Delete the range's day entries and every live result entry overlapping it (found in the results index,
        never by a keyspace scan); None when unreachable. Version raises already make them unreadable: deleting
        them frees their memory before their TTL would."""

        async def delete(client: RedisClient) -> int:
            live = await client.zrangebyscore(self.keys.results_index, time.time(), "+inf")
            overlapping = [
                key
                for key in map(_text, cast(list[bytes], live))
                if (covered := self.keys.result_range(key)) is not None and covered.overlaps(days)
            ]
            doomed = [*(self.keys.day(d) for d in days), *overlapping]
            pipe = client.pipeline(transaction=False)
            for key in doomed:
                # Not pipe.unlink(): on a cluster pipeline that is a multi-key coroutine and queues nothing.
                pipe.execute_command("UNLINK", key)
            if overlapping:
                pipe.zrem(self.keys.results_index, *overlapping)
            replies: list[int] = await pipe.execute()
            return sum(replies[: len(doomed)])

        return cast(int | None, await self._call("purge", delete, None))

    def _scan(self, client: RedisClient, pattern: str) -> Any:
        if isinstance(client, RedisCluster):
            return client.scan_iter(match=pattern, count=1000, target_nodes=RedisCluster.PRIMARIES)
        return client.scan_iter(match=pattern, count=1000)

    # -- stampede lock -----------------------------------------------------------------------------------
    async def try_lock(self, key: str, seconds: float) -> str | None:
        """A short-lease lock on a result key; returns the owner token, or None if someone else holds it."""
        token = secrets.token_hex(8)

        async def acquire(client: RedisClient) -> str | None:
            got = await client.set(self.keys.lock(key), token, nx=True, px=int(seconds * 1000))
            return token if got else None

        return cast(str | None, await self._call("lock", acquire, None))

    async def unlock(self, key: str, token: str) -> None:
        await self._call(
            "unlock",
            lambda c: c.eval(_RELEASE_LUA, 1, self.keys.lock(key), token),
            None,
        )

    # -- rate-limit windows ------------------------------------------------------------------------------
    async def count_in_window(self, key: str, window_ms: int) -> tuple[int, int] | None:
        """Count one request in the fixed window at `key` (opened by its first request, `window_ms` long): the
        requests counted so far and the milliseconds until the window closes; None when Redis cannot be asked."""

        async def count(client: RedisClient) -> tuple[int, int]:
            counted, remaining_ms = await client.eval(_WINDOW_LUA, 1, key, window_ms)
            return int(counted), int(remaining_ms)

        return cast(tuple[int, int] | None, await self._call("rate-limit", count, None, versioned=False))

    # -- statistics --------------------------------------------------------------------------------------
    def count(self, counter: str, amount: int = 1) -> None:
        """Add to a shared counter (buffered; flushed at most every second)."""
        self._pending_stats[counter] += amount

    async def maybe_flush_stats(self) -> None:
        if self._pending_stats and time.monotonic() - self._last_flush >= STATS_FLUSH_SECONDS:
            await self.flush_stats()

    async def flush_stats(self) -> None:
        if not self._pending_stats:
            return
        pending, self._pending_stats = self._pending_stats, Counter()
        self._last_flush = time.monotonic()

        async def flush(client: RedisClient) -> bool:
            pipe = client.pipeline(transaction=False)
            for name, amount in pending.items():
                pipe.hincrby(self.keys.stats, name, amount)
            await pipe.execute()
            return True

        if not await self._call("stats", flush, False):
            self._pending_stats.update(pending)

    async def read_stats(self) -> dict[str, int] | None:
        await self.flush_stats()

        async def read(client: RedisClient) -> dict[str, int]:
            raw = await client.hgetall(self.keys.stats)
            return {_text(k): int(v) for k, v in raw.items()}

        return cast(dict[str, int] | None, await self._call("stats", read, None))

    async def server_info(self) -> dict[str, Any] | None:
        """Keys of this cache (day entries present, live result entries, and the shared hashes), counted from the
        version mirror and the results index rather than by a scan, and memory used (summed over primaries)."""

        async def info(client: RedisClient) -> dict[str, Any]:
            days = [_text(day) for day in await client.hkeys(self.keys.versions)]
            pipe = client.pipeline(transaction=False)
            for key in [*(self.keys.day(dt.date.fromisoformat(d)) for d in days), *self._shared_keys]:
                pipe.exists(key)
            pipe.zcount(self.keys.results_index, time.time(), "+inf")
            *present, results = await pipe.execute()
            if isinstance(client, RedisCluster):
                per_node = await client.info("memory", target_nodes=RedisCluster.PRIMARIES)
                memory = sum(int(v["used_memory"]) for v in per_node.values())
            else:
                memory = int((await client.info("memory"))["used_memory"])
            return {"keyCount": sum(int(p) for p in present) + int(results), "memoryUsedBytes": memory}

        return cast(dict[str, Any] | None, await self._call("info", info, None))

    @property
    def _shared_keys(self) -> tuple[str, ...]:
        return (self.keys.versions, self.keys.stats, self.keys.results_index)

    async def delete_all(self) -> int:
        """Remove every key under the prefix (tests and benchmarks only: this one scans the keyspace)."""

        async def delete(client: RedisClient) -> int:
            removed = 0
            async for key in self._scan(client, self.keys.all_pattern):
                removed += int(await client.unlink(key))
            return removed

        return cast(int, await self._call("delete-all", delete, 0))
