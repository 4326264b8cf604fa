"""Prometheus metrics: every counter of the cache has its own series, and the API's /metrics after a known sequence of
reads shows the counters moved under the right tier labels, the same numbers /api/v1/cache/stats reports."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import get_args

from litemaas_cache.dates import utc_today
from litemaas_cache.manager import CacheManager
from litemaas_cache.metrics import CacheMetrics
from litemaas_cache.vocabulary import CounterName, TimingName
from tests.support.api import SERVICE_TOKEN, authenticator, bearer, serving
from tests.support.scrape import Scrape

CHART = Path(__file__).resolve().parents[1] / "charts" / "litemaas-cache-operator"
ADMIN = "/api/v1/admin/usage"
ANALYTICS = f"{ADMIN}/analytics"


def scrape(metrics: CacheMetrics) -> Scrape:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return Scrape(body.decode())


def test_every_counter_moves_a_series_of_its_own() -> None:
    metrics = CacheMetrics()
    moved: dict[str, object] = {}
    for name in get_args(CounterName):
        before = scrape(metrics).samples
        metrics.counted(name, 3)
        after = scrape(metrics).samples
        changed = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
        assert len(changed) == 1, (name, changed)  # the _total sample only (a _created sample never changes)
        ((key, delta),) = changed.items()
        assert delta == 3, (name, key)
        moved[name] = key
    assert len(set(moved.values())) == len(moved), "two counter names share one series"


def test_every_timing_is_a_histogram() -> None:
    metrics = CacheMetrics()
    for name in get_args(TimingName):
        metrics.timed(name, 1.5)
        samples = scrape(metrics)
        assert samples.value(f"litemaas_cache_{name}_duration_seconds_count") == 1
        assert samples.value(f"litemaas_cache_{name}_duration_seconds_sum") == 1.5
        assert samples.value(f"litemaas_cache_{name}_duration_seconds_bucket", le="2.5") == 1
        assert samples.value(f"litemaas_cache_{name}_duration_seconds_bucket", le="1.0") == 0


async def test_api_metrics_after_a_known_sequence_of_reads(
    fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]]
) -> None:
    manager = await open_manager(fresh_dsn, admin_analytics_rate_limit=1000, admin_cache_rebuild_limit=1000)
    today = utc_today()
    week = {"startDate": (today - dt.timedelta(days=6)).isoformat(), "endDate": today.isoformat()}
    auth = bearer(SERVICE_TOKEN)
    async with serving(manager, authenticator(service_scope="admin")) as client:
        cold = await client.post(ANALYTICS, json=week, headers=auth)
        warm = await client.post(ANALYTICS, json=week, headers=auth)
        assert (cold.headers["X-Cache-Tier"], warm.headers["X-Cache-Tier"]) == ("source", "redis")
        assert (await client.post(ANALYTICS, json=week)).status == 401
        assert (await client.get("/no/such/path")).status == 404
        day = {"startDate": today.isoformat(), "endDate": today.isoformat()}
        rebuilt = await (await client.post(f"{ADMIN}/rebuild-cache", json=day, headers=auth)).json()
        stats = await (await client.get("/api/v1/cache/stats", headers=auth)).json()

        response = await client.get("/metrics")  # no credentials: Prometheus scrapes without a token
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        samples = Scrape(await response.text())

    def served(route: str, method: str, status: str, tier: str) -> float:
        labels = {"route": route, "method": method, "status": status, "tier": tier}
        return samples.value("litemaas_cache_http_request_duration_seconds_count", **labels)

    # Latency by route and answering tier: the cold read from the source, the second from Redis.
    assert served(ANALYTICS, "POST", "200", "source") == 1
    assert served(ANALYTICS, "POST", "200", "redis") == 1
    assert served(ANALYTICS, "POST", "401", "none") == 1
    assert served("unmatched", "GET", "404", "none") == 1
    assert served(f"{ADMIN}/rebuild-cache", "POST", "200", "none") == 1

    # Results: two analytics reads and the rebuild's warm of today (analytics, computed again after the purge).
    assert samples.value("litemaas_cache_requests_total") == stats["requests"] == 3
    assert samples.value("litemaas_cache_hits_total", kind="result", tier="redis") == stats["redis"]["hits"] == 1
    assert samples.value("litemaas_cache_misses_total", kind="result", tier="redis") == stats["redis"]["misses"] == 2
    assert samples.value("litemaas_cache_computations_total") == stats["computations"] == 2
    assert samples.value("litemaas_cache_source_reads_total", kind="result") == 2
    # Days: every tier's hits and misses as the stats document counts them; the fresh database had no day cached,
    # so each day Redis missed, PostgreSQL missed too and was computed from LiteLLM's table.
    day_misses = samples.value("litemaas_cache_misses_total", kind="day", tier="redis")
    assert day_misses == stats["redis"]["dayMisses"] > 0
    assert samples.value("litemaas_cache_hits_total", kind="day", tier="redis") == stats["redis"]["dayHits"]
    assert samples.value("litemaas_cache_hits_total", kind="day", tier="postgres") == stats["postgres"]["dayHits"]
    assert samples.value("litemaas_cache_misses_total", kind="day", tier="postgres") == stats["postgres"]["dayMisses"]
    assert samples.value("litemaas_cache_source_reads_total", kind="day") == stats["postgres"]["daysComputedFromSource"]
    assert samples.value("litemaas_cache_hits_total", kind="day", tier="memory") == stats["memory"]["dayHits"]
    assert stats["postgres"]["dayHits"] + stats["postgres"]["dayMisses"] == day_misses

    # The rebuild: one invalidation and one warm, whose keys the response reported.
    assert samples.value("litemaas_cache_rebuilds_total") == 1
    assert samples.value("litemaas_cache_invalidations_total") == stats["invalidations"] == 1
    assert samples.value("litemaas_cache_invalidation_duration_seconds_count") == 1
    assert samples.value("litemaas_cache_warms_total", outcome="success") == 1
    assert samples.value("litemaas_cache_warms_total", outcome="failure") == 0
    assert samples.value("litemaas_cache_warm_duration_seconds_count") == 1
    assert samples.value("litemaas_cache_warm_keys_written_total") == rebuilt["totalEntries"] > 0

    # Read at scrape time: the breaker, the pool, the warms in progress.
    assert samples.value("litemaas_cache_redis_breaker_state", state="closed") == 1
    assert samples.value("litemaas_cache_redis_breaker_state", state="open") == 0
    pool = manager.db.cache_pool.name
    assert samples.value("litemaas_cache_db_pool_max", pool=pool) == manager.settings.db_pool_max_size
    assert 1 <= samples.value("litemaas_cache_db_pool_connections", pool=pool) <= manager.settings.db_pool_max_size
    assert samples.value("litemaas_cache_db_pool_waiting", pool=pool) == 0
    assert samples.value("litemaas_cache_db_pool_requests_total", pool=pool) > 0
    assert samples.value("litemaas_cache_warms_running") == 0


async def test_breaker_state_without_redis(
    fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]]
) -> None:
    manager = await open_manager(fresh_dsn, redis_enabled=False)
    metrics = CacheMetrics()
    metrics.attach(manager)
    samples = scrape(metrics)
    assert samples.value("litemaas_cache_redis_breaker_state", state="disabled") == 1
    assert samples.sum("litemaas_cache_redis_breaker_state") == 1


async def test_two_apps_in_one_process_keep_their_own_registries(
    fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]]
) -> None:
    """No global registry: a second app (or a second test) registers the same names without a collision, and
    counts only its own manager's reads."""
    first, second = await open_manager(fresh_dsn), await open_manager(fresh_dsn)
    async with serving(first) as one, serving(second) as other:
        today = utc_today().isoformat()
        response = await one.post(ANALYTICS, json={"startDate": today, "endDate": today}, headers=bearer(SERVICE_TOKEN))
        assert response.status == 200
        counted = Scrape(await (await one.get("/metrics")).text())
        untouched = Scrape(await (await other.get("/metrics")).text())
    assert counted.value("litemaas_cache_requests_total") == 1
    assert untouched.value("litemaas_cache_requests_total") == 0


async def test_the_chart_queries_only_series_the_processes_export(
    fresh_dsn: str, open_manager: Callable[..., Awaitable[CacheManager]]
) -> None:
    """Every series the Grafana dashboard and the alerts query is one /metrics serves (a renamed metric would
    otherwise leave a panel empty and an alert silent for ever)."""
    queried = _queried_series()
    assert len(queried) > 10
    async with serving(await open_manager(fresh_dsn)) as client:
        assert (await client.get("/healthz")).status == 200  # one observation: the latency histogram has samples
        exported = {name for name, _ in Scrape(await (await client.get("/metrics")).text()).samples}
    assert queried - exported == set()


def _queried_series() -> set[str]:
    """The series named in the dashboard's queries and in the alerts' template."""
    dashboard = json.loads((CHART / "files" / "dashboards" / "litemaas-cache.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    texts = [*exprs, (CHART / "templates" / "prometheusrule.yaml").read_text()]
    return {name for text in texts for name in re.findall(r"\blitemaas_cache_\w+", text)}
