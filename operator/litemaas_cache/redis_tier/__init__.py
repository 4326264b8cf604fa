"""The Redis tier: keys, codec, circuit breaker and a fail-soft store shared by all application instances."""

from .null import NullRedisStore
from .store import RedisStore

RedisTier = RedisStore | NullRedisStore
"""The Redis tier as its users see it: the real store, or the null one when REDIS_ENABLED is false."""

__all__ = ["NullRedisStore", "RedisStore", "RedisTier"]
