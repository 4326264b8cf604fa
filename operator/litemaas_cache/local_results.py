"""Result bodies kept in this process as Redis stores them (compressed, in the encoding a client asked for), within
a memory budget: the documents the admin pages ask for again and again.

A body read from Redis is kept with its version vector, until the Redis entry's own expiry. It is served again only
when that vector still equals the version mirror's current versions of its days, read from Redis at the time of the
read (the check a Redis entry passes; usually a round trip of two small fields, see redis_tier.mirror), so an
invalidation is never served from here, and without Redis nothing is. What a hit saves is the transfer of the body
from Redis, most of a warm read.
"""

from __future__ import annotations

from dataclasses import dataclass

from .budget_lru import BudgetLru
from .vocabulary import ContentEncoding


@dataclass(frozen=True)
class HeldResult:
    vector: list[int]
    body: bytes


class LocalResults:
    def __init__(self, budget_bytes: int) -> None:
        self._kept: BudgetLru[tuple[str, ContentEncoding], HeldResult] = BudgetLru(budget_bytes)

    @property
    def enabled(self) -> bool:
        return self._kept.enabled

    def get(self, key: str, encoding: ContentEncoding) -> HeldResult | None:
        return self._kept.get((key, encoding))

    def put(self, key: str, encoding: ContentEncoding, held: HeldResult, ttl_seconds: float) -> None:
        self._kept.put((key, encoding), held, len(held.body), ttl_seconds)

    def drop(self, key: str, encoding: ContentEncoding) -> None:
        self._kept.drop((key, encoding))
