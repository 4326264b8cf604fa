"""Result documents served as stored: content negotiation (pure), and over HTTP on real PostgreSQL and Redis the
zstd / gzip / identity answers, byte for byte the stored entry, still refused once an invalidation raised a day's
version."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import zstandard
from redis.asyncio import Redis

from litemaas_cache.codec import decode_entry
from litemaas_cache.dates import DateRange
from litemaas_cache.filters import UsageFilters, build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.webapi.negotiation import accepted
from tests.conftest import make_settings, managed
from tests.support.api import ADMIN_KEY, bearer, serving
from tests.test_api_contract import ADMIN, RANGE, START, TODAY, UNLIMITED


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("gzip, deflate", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("zstd;q=0.5, gzip;q=0.9", "gzip"),
        ("zstd;q=0, gzip", "gzip"),
        ("*", "zstd"),
        ("*;q=0.1, zstd;q=0", "gzip"),
        ("gzip;q=0, *;q=0", None),
        ("GZIP;Q=1", "gzip"),
        ("gzip;q=nonsense, zstd", "zstd"),
        ("br", None),
    ],
)
def test_the_client_gets_the_best_stored_encoding_it_accepts(header: str | None, chosen: str | None) -> None:
    assert accepted(header) == chosen


@pytest_asyncio.fixture
async def served(fresh_dsn: str, key_prefix: str) -> AsyncIterator[tuple[CacheManager, str]]:
    async with managed(fresh_dsn, key_prefix, **UNLIMITED) as manager, serving(manager) as client:
        yield manager, str(client.make_url(""))


async def _post(url: str, encoding: str | None, body: dict[str, Any] = RANGE) -> tuple[Any, bytes]:
    headers = {**bearer(ADMIN_KEY), "Accept-Encoding": encoding or "identity"}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(f"{url.rstrip('/')}{ADMIN}/analytics", json=body, headers=headers) as response,
    ):
        return response, await response.read()


async def test_hits_are_the_stored_bytes_in_the_encoding_asked(served: tuple[CacheManager, str]) -> None:
    manager, url = served
    cold, cold_body = await _post(url, "gzip")
    assert (cold.status, cold.headers["X-Cache-Tier"]) == (200, "source")
    document = orjson.loads(gzip.decompress(cold_body))
    key = manager.keys.result("analytics", DateRange(START, TODAY), UsageFilters().fingerprint())
    async with Redis.from_url(make_settings(manager.settings.database_dsn).redis_dsn) as redis:
        for encoding in ("zstd", "gzip"):
            response, body = await _post(url, encoding)
            assert response.headers["X-Cache-Tier"] == "redis"
            assert response.headers["Content-Encoding"] == encoding
            assert response.headers["Vary"] == "Accept-Encoding"
            stored = await redis.get(manager.keys.result_entry(key, encoding))
            assert stored is not None
            assert body == decode_entry(stored, encoding)[1], "served as stored"
        decoded = zstandard.ZstdDecompressor().decompress((await _post(url, "zstd"))[1])
        assert orjson.loads(decoded) == document
        plain, plain_body = await _post(url, None)
        assert "Content-Encoding" not in plain.headers
        assert orjson.loads(plain_body) == document
        query = build_query(START, TODAY, max_days=90, max_ids=1000)
        assert (await manager.analytics(query)).value == document, "in-process callers get the value"

        # An invalidation that only raises a day's version (no Redis delete): the stored entries stay in Redis, and
        # are refused by the version check in either encoding; the next read computes again.
        await manager.invalidate(DateRange(TODAY, TODAY), tiers=("postgres",))
        covered = list(DateRange(query.range.previous().start, TODAY))
        for encoding in ("zstd", "gzip"):
            assert await redis.exists(manager.keys.result_entry(key, encoding)) == 1
            assert await manager.redis.get_result(key, covered, encoding) is None, encoding
        response, _ = await _post(url, "zstd")
        assert response.headers["X-Cache-Tier"] != "redis"


async def test_breakdown_pages_are_stored_and_served_as_stored(served: tuple[CacheManager, str]) -> None:
    manager, url = served
    headers = {**bearer(ADMIN_KEY), "Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession() as session:
        first = await session.post(f"{url.rstrip('/')}{ADMIN}/by-user?limit=3", json=RANGE, headers=headers)
        page = await first.json()
        before = manager.counters.local.get("computations", 0)
        again = await session.post(f"{url.rstrip('/')}{ADMIN}/by-user?limit=3", json=RANGE, headers=headers)
        assert (again.headers["X-Cache-Tier"], again.headers["Content-Encoding"]) == ("redis", "gzip")
        assert await again.json() == page
        other = await session.post(f"{url.rstrip('/')}{ADMIN}/by-user?limit=3&page=2", json=RANGE, headers=headers)
        assert (await other.json())["data"] != page["data"]
        assert manager.counters.local.get("computations", 0) == before, "pages are cut from the cached list"
