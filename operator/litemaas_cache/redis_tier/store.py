"""A fail-soft Redis store: every call has a timeout, goes through the circuit breaker, and on any Redis
failure returns a neutral answer (a miss, False) instead of raising.

Correctness rests on per-day versions (the version mirror, mirror.py). Every day entry and every result entry
carries the versions it was computed from, and a read accepts an entry only when they equal the mirror's current
versions. An invalidation raises the mirror first, so any entry computed before it, even one written after it (the
set-after-delete race), can never be read again.

The mirror can also lose raises without any call failing: another client's FLUSHALL (LiteMaaS flushes LiteLLM's
Redis after every model change), an eviction or an empty restart, or a Sentinel failover to a replica that had not
yet received them. Against the first kind, the mirror is trusted only while it holds MIRROR_COMPLETE, which a
re-sync from PostgreSQL sets, and only if no flush came between that re-sync's start and its end (MIRROR_INCARNATION);
an entry's versions are merged only into a complete mirror, so that a slow computation finishing after a flush cannot
plant its stale versions into the emptied mirror. Against the second, the store re-syncs as soon as the sentinels
name a new master, and the call that noticed it is a miss.
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

from ..codec import ENCODINGS, Body, CorruptValue, decode_entry, encode_entry
from ..dates import DateRange
from ..errors import CacheError
from ..frames import DayFrame, UnreadablePayload, read_header
from ..vocabulary import ContentEncoding
from .breaker import BreakerState, CircuitBreaker
from .connection import RedisClient, follow_master, open_client
from .keys import MIRROR_INCARNATION, KeySpace
from .mirror import LEASE_SECONDS, MirrorLost, VersionMirror, held_days

log = logging.getLogger(__name__)

VersionSource = Callable[[], Awaitable[dict[dt.date, int]]]

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One round trip: count requests (ARGV[2]), and give a window its lifetime (ARGV[1] ms) when its first request opens
# it (or when a key somehow lost its expiry, which would otherwise never reset).
_WINDOW_LUA = """
local counted = redis.call('INCRBY', KEYS[1], ARGV[2])
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


@dataclass(frozen=True)
class StoredResult:
    """A result entry read from Redis at the mirror's current versions: its body in the encoding asked, its version
    vector, and what is left of its TTL."""

    body: Body
    vector: list[int]
    ttl_seconds: float


class RedisStore:
    """Day entries, result entries, the version mirror, locks, shared counters and rate-limit windows in Redis."""

    def __init__(
        self,
        url: str,
        keys: KeySpace,
        version_source: VersionSource,
        *,
        cluster: bool = False,
        timeout: float = 0.5,
        breaker_failures: int = 3,
        breaker_reset_seconds: float = 2.0,
        resync_seconds: float = 30.0,
    ) -> None:
        self.keys = keys
        self.mirror = VersionMirror(keys.versions)
        # Even without a failure of its own, each process re-raises the shared mirror from PostgreSQL this often:
        # an invalidation that could not reach Redis (run by a process that then exited) is repaired for every
        # reader within this bound once Redis is reachable again.
        self.resync_seconds = resync_seconds
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
        self._failovers = 0  # times the sentinels named a new master
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
            self._client = open_client(
                self._url, cluster=self.cluster, timeout=self.timeout, on_master_change=self._master_moved
            )
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

    def _master_moved(self, address: str) -> None:
        """A Sentinel failover: the new master may lack version raises the old one acknowledged but never passed
        on, and nothing failed to say so. Re-sync before the mirror is trusted again."""
        self._failovers += 1
        self._mark_unsynced()
        log.warning("redis master moved to %s (sentinel failover): re-syncing the version mirror", address)

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
    def failovers_seen(self) -> int:
        """Sentinel failovers this process noticed (each re-synced the version mirror)."""
        return self._failovers

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
            if versioned:
                async with asyncio.timeout(self.timeout * 4):
                    await follow_master(client)  # a failover noticed here is re-synced just below
            failovers = self._failovers
            if versioned and not await self._ensure_synced(client):
                self._mark_unsynced()
                return default
            async with asyncio.timeout(self.timeout * 4):
                result = await fn(client)
        except MirrorLost:
            log.warning("redis %s: the version mirror is gone (FLUSHALL, eviction or an empty restart)", operation)
            self.breaker.record_success()
            self._mark_unsynced()
            return default
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
        if versioned and self._failovers != failovers:
            return default  # answered by a master whose mirror is not yet re-synced
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
        self.mirror.forget()

    def _leased(self, days: Sequence[dt.date]) -> list[int] | None:
        """The versions of `days` within the mirror's lease, without I/O (see mirror.py), while Redis is trusted."""
        return self.mirror.leased(days) if self._trusted() else None

    def _trusted(self) -> bool:
        """Redis is in use and its mirror re-synced recently enough: what _call checks first, without I/O."""
        return self.breaker.allows and self._synced and time.monotonic() - self._synced_at < self.resync_seconds

    async def _ensure_synced(self, client: RedisClient) -> bool:
        """Whether the mirror may be trusted for a call, re-syncing it first when due (one re-sync at a time).
        When PostgreSQL cannot give the versions, Redis itself is fine (no breaker failure) but cannot be trusted:
        calls are misses until a re-sync succeeds, tried again at most every REDIS_BREAKER_RESET_SECONDS."""
        if self._trusted():
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
        client = client or self._connect()
        # The incarnation is taken before PostgreSQL is read: if the mirror is flushed after that, these versions
        # may predate raises the flush removed, and the merge below must not call the mirror complete.
        async with asyncio.timeout(self.timeout * 4):
            incarnation = await self.mirror.incarnation(client)
        versions = await self._version_source()
        async with asyncio.timeout(self.timeout * 4):
            merged = await self.mirror.merge(
                client, versions, require=(MIRROR_INCARNATION, incarnation), complete=incarnation
            )
        # A call that failed or was refused meanwhile may have missed a raise newer than `versions`; a flush since
        # the incarnation was read leaves the mirror incomplete.
        self._synced = self._missed == missed and merged >= 0
        self._synced_at = time.monotonic()

    # -- versions ----------------------------------------------------------------------------------------
    async def raise_versions(self, versions: dict[dt.date, int]) -> bool:
        """Raise the mirror (an invalidation or a rewrite), and return once no process can still serve what the raise
        superseded: after the lease of every check made before it (mirror.LEASE_SECONDS). False when Redis could
        not be reached."""
        if await self._call("raise-versions", lambda c: self.mirror.merge(c, versions), None) is None:
            return False
        await asyncio.sleep(LEASE_SECONDS)
        return True

    async def versions(self, days: Sequence[dt.date]) -> dict[dt.date, int] | None:
        """The mirror's current version of each day (0 when absent), or None when Redis cannot be asked; one round
        trip of two small fields when this process has read these days since the mirror last changed, none while
        that was confirmed within the mirror's lease (and Redis is trusted: breaker closed, mirror re-synced)."""
        if days and (leased := self._leased(days)) is not None:
            return dict(zip(days, leased, strict=True))

        async def read(client: RedisClient) -> dict[dt.date, int]:
            _, versions = await self.mirror.read(client, days)
            return dict(zip(days, versions, strict=True))

        return cast(dict[dt.date, int] | None, await self._call("versions", read, None)) if days else {}

    async def still_current(self, days: Sequence[dt.date], vector: list[int]) -> bool:
        """Whether `vector` is still the mirror's versions of `days` (what a copy of an entry held elsewhere is
        checked against: LocalResults); False when Redis cannot be asked. Asks Redis as versions() does."""
        if (leased := self._leased(days)) is not None:
            return leased == vector

        async def read(client: RedisClient) -> bool:
            return (await self.mirror.read(client, days))[1] == vector

        return cast(bool, await self._call("versions", read, False))

    # -- day entries -------------------------------------------------------------------------------------
    async def get_days(self, days: Sequence[dt.date]) -> dict[dt.date, DayFrame]:
        """The days whose Redis entry is present, of the current layout and at the mirror's current version
        (payloads only: their columns are decoded by whoever aggregates them)."""

        def queue(pipe: Any) -> None:
            for day in days:
                pipe.get(self.keys.day(day))

        async def read(client: RedisClient) -> tuple[list[bytes | None], list[int]]:
            return await self.mirror.read(client, days, queue)

        if not days:
            return {}
        replies = await self._call("get-days", read, None)
        if replies is None:
            return {}
        values, versions = replies
        found: dict[dt.date, DayFrame] = {}
        for day, data, version in zip(days, values, versions, strict=True):
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
            await self.mirror.merge_into_complete(client, {d.day: d.version for d in entries})
            pipe = client.pipeline(transaction=False)
            for day in entries:
                pipe.set(self.keys.day(day.day), day.payload, ex=ttl(day))
            await pipe.execute()
            return len(entries)

        if not entries:
            return 0
        return cast(int, await self._call("put-days", write, 0))

    # -- result entries ----------------------------------------------------------------------------------
    async def get_result(
        self, key: str, days: Sequence[dt.date], encoding: ContentEncoding = "zstd"
    ) -> StoredResult | None:
        """A cached result, as its stored `encoding` (not decompressed), with its version vector; only when that
        vector equals the mirror's current versions of `days` (and the mirror is complete)."""
        entry = self.keys.result_entry(key, encoding)

        def queue(pipe: Any) -> None:
            pipe.get(entry)
            pipe.pttl(entry)

        async def read(client: RedisClient) -> StoredResult | None:
            (data, ttl_ms), current = await self.mirror.read(client, days, queue)
            if data is None:
                return None
            try:
                vector, body = decode_entry(data, encoding)
            except CorruptValue as exc:
                log.warning("ignoring unreadable redis entry %s: %s", key, exc)
                return None
            return StoredResult(Body(encoded={encoding: body}), vector, ttl_ms / 1000) if vector == current else None

        return cast(StoredResult | None, await self._call("get-result", read, None))

    async def put_result(self, key: str, versions: dict[dt.date, int], body: Body, ttl: int) -> bool:
        """Store a result computed from days at `versions` (ordered by day) in every encoding, and index it until
        it expires."""
        vector = [versions[d] for d in sorted(versions)]

        def encode() -> dict[str, bytes]:
            return {self.keys.result_entry(key, e): encode_entry(vector, body, e) for e in ENCODINGS}

        entries = await asyncio.to_thread(encode)  # compressing a large result takes milliseconds: off the loop

        async def write(client: RedisClient) -> bool:
            await self.mirror.merge_into_complete(client, versions)
            now = time.time()
            pipe = client.pipeline(transaction=False)
            for entry, data in entries.items():
                pipe.set(entry, data, ex=ttl)
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
            entries = [self.keys.result_entry(key, e) for key in overlapping for e in ENCODINGS]
            doomed = [*(self.keys.day(d) for d in days), *entries]
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
    async def count_in_window(self, key: str, window_ms: int, amount: int = 1) -> tuple[int, int] | None:
        """Count `amount` requests in the fixed window at `key` (opened by its first request, `window_ms` long): the
        requests counted so far and the milliseconds until the window closes; None when Redis cannot be asked."""

        async def count(client: RedisClient) -> tuple[int, int]:
            counted, remaining_ms = await client.register_script(_WINDOW_LUA)(keys=[key], args=[window_ms, amount])
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
            fields = {_text(field) for field in await client.hkeys(self.keys.versions)}
            days = held_days(fields)
            pipe = client.pipeline(transaction=False)
            for key in [*(self.keys.day(d) for d in days), *self._shared_keys]:
                pipe.exists(key)
            pipe.zcount(self.keys.results_index, time.time(), "+inf")
            *present, results = await pipe.execute()
            if isinstance(client, RedisCluster):
                per_node = await client.info("memory", target_nodes=RedisCluster.PRIMARIES)
                memory = sum(int(v["used_memory"]) for v in per_node.values())
            else:
                memory = int((await client.info("memory"))["used_memory"])
            entries = int(results) * len(ENCODINGS)
            return {"keyCount": sum(int(p) for p in present) + entries, "memoryUsedBytes": memory}

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
