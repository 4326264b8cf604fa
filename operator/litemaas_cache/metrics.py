"""Prometheus metrics of one process (the API or the operator): every metric name and label is defined here, once.

The cache's parts know nothing of Prometheus. stats.Counters tells a CacheMetrics of each count and timing as it
happens (each counter name has one series below); the breaker state, the pools and the warms in progress are read
from the manager when Prometheus scrapes. Each process keeps its own registry, never prometheus_client's global one,
so two managers in one process (tests) never collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .redis_tier.breaker import BreakerState
from .vocabulary import CounterName, TimingName

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from .manager import CacheManager

PREFIX = "litemaas_cache"
NO_TIER = "none"
"""The tier label of an HTTP answer that names none (errors, writes, /healthz)."""
UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route serves (404 / 405): one series, whatever the path."""
BREAKER_STATES: tuple[str, ...] = (*(state.value for state in BreakerState), "disabled")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a Redis hit answers in milliseconds, a cold year from LiteLLM's table in tens of seconds."""
MAINTENANCE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class CacheMetrics:
    """The metrics of one process, in their own registry; `attach` a manager to feed and read them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=self.registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", doc, labels, buckets=buckets, registry=self.registry)

        self._http_series: dict[tuple[str, str, int, str], Histogram] = {}
        self.http_duration = histogram(
            "http_request_duration_seconds",
            "API requests by route template, method, status and the tier that answered (X-Cache-Tier).",
            ("route", "method", "status", "tier"),
            HTTP_BUCKETS,
        )
        requests = counter("requests", "Range results asked for (analytics, breakdowns, filter options, warms).")
        source = counter(
            "source_reads",
            "Reads that reached LiteLLM's table: kind=day counts days computed from it, kind=result the results "
            "whose computation needed it (the complement of the overall hit rate).",
            ("kind",),
        )
        hits = counter("hits", "Reads a cache tier answered, by kind (day, result) and tier.", ("kind", "tier"))
        misses = counter(
            "misses", "Reads a cache tier could not answer, by kind (day, result) and tier.", ("kind", "tier")
        )
        locks = counter("result_locks", "Result lease locks taken at once or found held.", ("outcome",))
        warms = counter("warms", "Warms finished, by outcome (success, failure).", ("outcome",))
        self._series: dict[CounterName, Counter] = {
            "requests": requests,
            "requests:source": source.labels(kind="result"),
            "computations": counter("computations", "Range results computed (not found in Redis)."),
            "result:memory:hit": hits.labels(kind="result", tier="memory"),
            "result:redis:hit": hits.labels(kind="result", tier="redis"),
            "result:redis:miss": misses.labels(kind="result", tier="redis"),
            "lock:acquired": locks.labels(outcome="acquired"),
            "lock:contended": locks.labels(outcome="contended"),
            "day:memory:hit": hits.labels(kind="day", tier="memory"),
            "day:redis:hit": hits.labels(kind="day", tier="redis"),
            "day:redis:miss": misses.labels(kind="day", tier="redis"),
            "day:postgres:hit": hits.labels(kind="day", tier="postgres"),
            "day:postgres:miss": misses.labels(kind="day", tier="postgres"),
            "day:source:computed": source.labels(kind="day"),
            "day:grace": counter("grace_day_reads", "Reads of yesterday while it is still treated as changing."),
            "freshness:days-refreshed": counter(
                "days_refreshed", "Cached days invalidated because their rows in LiteLLM's table changed."
            ),
            "rebuilds": counter("rebuilds", "Rebuilds (refresh-today, rebuild-cache)."),
            "invalidations": counter("invalidations", "Invalidations of a date range."),
            "warm:succeeded": warms.labels(outcome="success"),
            "warm:failed": warms.labels(outcome="failure"),
            "warm:keys-written": counter("warm_keys_written", "Redis keys written by warms."),
        }
        self._timings: dict[TimingName, Histogram] = {
            "warm": histogram("warm_duration_seconds", "How long a warm took.", (), MAINTENANCE_BUCKETS),
            "invalidation": histogram(
                "invalidation_duration_seconds", "How long an invalidation took.", (), MAINTENANCE_BUCKETS
            ),
        }

    def attach(self, manager: CacheManager) -> None:
        """Count what `manager` counts, and read its breaker, pools and warms at each scrape."""
        manager.counters.listen(self)
        self.registry.register(ManagerCollector(manager))

    def counted(self, name: CounterName, amount: int) -> None:
        self._series[name].inc(amount)

    def timed(self, name: TimingName, seconds: float) -> None:
        self._timings[name].observe(seconds)

    def observe_request(self, route: str, method: str, status: int, tier: str, seconds: float) -> None:
        labels = (route, method, status, tier)
        series = self._http_series.get(labels)
        if series is None:  # each label set is looked up once; they are bounded (see app.metrics_middleware)
            series = self._http_series[labels] = self.http_duration.labels(route, method, str(status), tier)
        series.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus's text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ManagerCollector(Collector):
    """What is read at scrape time: the Redis breaker state, the PostgreSQL pools' usage, the warms in progress."""

    def __init__(self, manager: CacheManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        breaker = GaugeMetricFamily(
            f"{PREFIX}_redis_breaker_state",
            "The Redis circuit breaker: 1 for its current state (open: Redis is bypassed; disabled: REDIS_ENABLED "
            "is false).",
            labels=("state",),
        )
        current = self._manager.redis.state
        for state in BREAKER_STATES:
            breaker.add_metric((state,), 1.0 if state == current else 0.0)
        yield breaker
        yield from _pool_families(self._pools())
        maintenance = self._manager.maintenance
        yield GaugeMetricFamily(f"{PREFIX}_warms_running", "Warms running now.", value=maintenance.warms_running)
        yield GaugeMetricFamily(
            f"{PREFIX}_warms_waiting",
            "Warms waiting for a slot (WARM_MAX_CONCURRENT).",
            value=maintenance.warms_waiting,
        )

    def _pools(self) -> list[AsyncConnectionPool[Any]]:
        db = self._manager.db
        return [db.cache_pool] if db.source_pool is db.cache_pool else [db.cache_pool, db.source_pool]


# psycopg_pool's get_stats() keys: gauges of the moment, then counters since the pool opened (absent while zero).
_POOL_GAUGES = {
    "pool_size": ("db_pool_connections", "Connections the pool holds (busy or idle)."),
    "pool_available": ("db_pool_available", "Idle connections ready for a request."),
    "pool_max": ("db_pool_max", "Most connections the pool may hold (DB_POOL_MAX_SIZE)."),
    "requests_waiting": ("db_pool_waiting", "Requests queued for a connection now."),
}
_POOL_COUNTERS = {
    "requests_num": ("db_pool_requests", "Connections requested from the pool."),
    "requests_queued": ("db_pool_requests_queued", "Requests that had to wait for a connection."),
    "requests_errors": ("db_pool_request_errors", "Requests refused: timed out or the queue was full (a 503)."),
}


def _pool_families(pools: list[AsyncConnectionPool[Any]]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    stats = [(pool.name, pool.get_stats()) for pool in pools]
    for key, (name, doc) in _POOL_GAUGES.items():
        gauge = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=("pool",))
        for pool, values in stats:
            gauge.add_metric((pool,), values.get(key, 0))
        yield gauge
    for key, (name, doc) in _POOL_COUNTERS.items():
        total = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=("pool",))
        for pool, values in stats:
            total.add_metric((pool,), values.get(key, 0))
        yield total
