"""The Redis tier when REDIS_ENABLED is false: every read misses and every write is dropped, so callers never branch
on whether Redis is configured."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..codec import Body
from ..dates import DateRange
from ..frames import DayFrame
from ..vocabulary import ContentEncoding
from .keys import KeySpace
from .store import RedisFailure, StoredResult


class NullRedisStore:
    """Stands in for RedisStore: the same calls, the answers of a Redis that holds nothing."""

    enabled = False
    available = False
    state = "disabled"
    failure: RedisFailure | None = None

    def __init__(self, keys: KeySpace) -> None:
        self.keys = keys

    async def close(self) -> None:
        return None

    async def raise_versions(self, versions: dict[dt.date, int]) -> bool:
        return True

    async def versions(self, days: Sequence[dt.date]) -> dict[dt.date, int] | None:
        return None

    async def get_days(self, days: Sequence[dt.date]) -> dict[dt.date, DayFrame]:
        return {}

    async def put_days(self, days: Iterable[DayFrame], ttl: Callable[[DayFrame], int]) -> int:
        return 0

    async def still_current(self, days: Sequence[dt.date], vector: list[int]) -> bool:
        return False

    async def get_result(
        self, key: str, days: Sequence[dt.date], encoding: ContentEncoding = "zstd"
    ) -> StoredResult | None:
        return None

    async def put_result(self, key: str, versions: dict[dt.date, int], body: Body, ttl: int) -> bool:
        return False

    async def purge(self, days: DateRange) -> int | None:
        return 0

    async def try_lock(self, key: str, seconds: float) -> str | None:
        return None

    async def unlock(self, key: str, token: str) -> None:
        return None

    async def count_in_window(self, key: str, window_ms: int, amount: int = 1) -> tuple[int, int] | None:
        return None

    def count(self, counter: str, amount: int = 1) -> None:
        return None

    async def maybe_flush_stats(self) -> None:
        return None

    async def flush_stats(self) -> None:
        return None

    async def read_stats(self) -> dict[str, int] | None:
        return None

    async def server_info(self) -> dict[str, Any] | None:
        return None

    async def delete_all(self) -> int:
        return 0
