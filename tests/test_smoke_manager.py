"""First end-to-end check of the manager on real PostgreSQL and Redis."""

from __future__ import annotations

from litemaas_cache.dates import utc_today
from litemaas_cache.filters import build_query
from litemaas_cache.manager import CacheManager


async def test_cold_then_redis_hit(manager: CacheManager) -> None:
    today = utc_today()
    query = build_query(today.replace(day=1).isoformat(), today.isoformat(), max_days=90, max_ids=1000)
    cold = await manager.analytics(query)
    warm = await manager.analytics(query)
    assert cold.tier == "source"
    assert warm.tier == "redis"
    assert warm.value == cold.value
    assert cold.value["totalRequests"] > 0
