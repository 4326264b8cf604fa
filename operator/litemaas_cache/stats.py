"""Hit and miss counters (per process, and shared through Redis when it is up) and the stats document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .vocabulary import CounterName, TimingName

if TYPE_CHECKING:
    from .redis_tier import RedisTier


class CountListener(Protocol):
    """Told of every count and timing as it happens (metrics.py turns them into Prometheus series)."""

    def counted(self, name: CounterName, amount: int) -> None: ...

    def timed(self, name: TimingName, seconds: float) -> None: ...


class Counters:
    """Named counters: kept in this process, and added to Redis's shared hash (buffered) when Redis is in use.
    Listeners hear of each count, and of timings, which are this process's own and never go to Redis."""

    def __init__(self, redis: RedisTier) -> None:
        self._redis = redis
        self.local: dict[str, int] = {}
        self._listeners: list[CountListener] = []

    def listen(self, listener: CountListener) -> None:
        self._listeners.append(listener)

    def add(self, name: CounterName, amount: int = 1) -> None:
        if amount <= 0:
            return
        self.local[name] = self.local.get(name, 0) + amount
        self._redis.count(name, amount)
        for listener in self._listeners:
            listener.counted(name, amount)

    def timed(self, name: TimingName, seconds: float) -> None:
        for listener in self._listeners:
            listener.timed(name, seconds)


def _rate(hits: int, misses: int) -> float | None:
    return round(100.0 * hits / (hits + misses), 2) if hits + misses else None


async def stats_document(redis: RedisTier, counters: Counters) -> dict[str, Any]:
    """Hit/miss counters per tier (shared through Redis when it is up), key count, memory, breaker."""
    shared = await redis.read_stats()
    values = shared if shared is not None else dict(counters.local)
    info = await redis.server_info()
    available = redis.available and info is not None
    requests = values.get("requests", 0)
    from_source = values.get("requests:source", 0)
    result_hits, result_misses = values.get("result:redis:hit", 0), values.get("result:redis:miss", 0)
    day_hits, day_misses = values.get("day:postgres:hit", 0), values.get("day:postgres:miss", 0)
    return {
        "counterScope": "shared" if shared is not None else "process",
        "hitRate": _rate(requests - from_source, from_source),
        "requests": requests,
        "computations": values.get("computations", 0),
        "memory": {"dayHits": values.get("day:memory:hit", 0), "resultHits": values.get("result:memory:hit", 0)},
        "redis": {
            "enabled": redis.enabled,
            "available": available,
            "breaker": redis.state,
            # why Redis is not in use (out of memory, read-only, unreachable...): None while it is, or when disabled
            "failure": None if available or not redis.enabled else str(redis.failure or "unreachable"),
            "hits": result_hits,
            "misses": result_misses,
            "hitRate": _rate(result_hits, result_misses),
            "dayHits": values.get("day:redis:hit", 0),
            "dayMisses": values.get("day:redis:miss", 0),
            "keyCount": info["keyCount"] if info else None,
            "memoryUsedBytes": info["memoryUsedBytes"] if info else None,
        },
        "postgres": {
            "dayHits": day_hits,
            "dayMisses": day_misses,
            "hitRate": _rate(day_hits, day_misses),
            "daysComputedFromSource": values.get("day:source:computed", 0),
        },
        "invalidations": values.get("invalidations", 0),
    }


async def cache_metrics(redis: RedisTier, counters: Counters) -> dict[str, Any]:
    """LiteMaaS's eight cache metrics, from our counters (shared through Redis when it is up): hits (from Redis, or
    from a process's copy of a Redis entry) and misses of the result cache, rebuilds (rebuild-cache and
    refresh-today), the result lease lock taken at once or found held, and reads of yesterday treated as still
    changing (the grace after midnight)."""
    shared = await redis.read_stats()
    values = shared if shared is not None else dict(counters.local)
    hits = values.get("result:redis:hit", 0) + values.get("result:memory:hit", 0)
    misses = values.get("result:redis:miss", 0)
    acquired, contended = values.get("lock:acquired", 0), values.get("lock:contended", 0)
    return {
        "cacheHits": hits,
        "cacheMisses": misses,
        "cacheRebuilds": values.get("rebuilds", 0),
        "lockAcquisitionSuccesses": acquired,
        "lockAcquisitionFailures": contended,
        "gracePeriodApplications": values.get("day:grace", 0),
        "cacheHitRate": hits / (hits + misses) if hits + misses else 0.0,
        "lockContentionRate": contended / (acquired + contended) if acquired + contended else 0.0,
    }
