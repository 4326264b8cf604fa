"""The Redis value codec and key space: pure checks, plus what a real Redis does with values that are not ours."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from litemaas_cache.analytics import Page
from litemaas_cache.codec import MAGIC, Codec, CorruptValue
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import UsageFilters, build_query
from litemaas_cache.frames import MAGIC as DAY_MAGIC
from litemaas_cache.frames import decode_columns, encode_day, read_header
from litemaas_cache.manager import CacheManager
from litemaas_cache.redis_tier.keys import RESULT_KINDS, KeySpace

# -- codec (pure) ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=10), children, max_size=8),
    max_leaves=60,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values, threshold=st.sampled_from([0, 16, 1024]))
def test_codec_roundtrips_any_json_value(value: Any, threshold: int) -> None:
    codec = Codec(threshold)
    assert codec.decode(codec.encode(value)) == value


def test_small_values_stay_raw_and_large_ones_are_compressed() -> None:
    codec = Codec(compress_threshold=1024)
    small = {"v": [1, 2], "r": {"totalRequests": 5}}
    encoded = codec.encode(small)
    assert encoded.startswith(MAGIC + b"j")
    assert codec.decode(encoded) == small

    large = {"rows": [[f"user-{i}", "key", None, "gpt-4o", "openai", i, i * 2, 3, 3, 0, 0.25] for i in range(2000)]}
    raw_size = len(orjson.dumps(large))
    encoded = codec.encode(large)
    assert encoded.startswith(MAGIC + b"z")
    assert len(encoded) < raw_size / 3, "zstd should shrink repetitive aggregates a lot"
    assert codec.decode(encoded) == large


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("empty", lambda good_raw, good_zstd: b""),
        ("foreign, no magic", lambda good_raw, good_zstd: b'{"v": [1], "r": 2}'),
        ("plain text", lambda good_raw, good_zstd: b"hello world"),
        ("header only", lambda good_raw, good_zstd: MAGIC),
        ("magic and kind, no body", lambda good_raw, good_zstd: MAGIC + b"j"),
        ("wrong format version", lambda good_raw, good_zstd: b"LMC2" + good_raw[len(MAGIC) :]),
        ("unknown encoding kind", lambda good_raw, good_zstd: MAGIC + b"x" + good_raw[len(MAGIC) + 1 :]),
        ("truncated json", lambda good_raw, good_zstd: good_raw[:-3]),
        ("truncated zstd frame", lambda good_raw, good_zstd: good_zstd[: len(good_zstd) // 2]),
        ("corrupt zstd frame", lambda good_raw, good_zstd: MAGIC + b"z" + b"\x28\xb5\x2f\xfd garbage bytes"),
        ("json kind holding zstd", lambda good_raw, good_zstd: MAGIC + b"j" + good_zstd[len(MAGIC) + 1 :]),
        ("zstd kind holding json", lambda good_raw, good_zstd: MAGIC + b"z" + good_raw[len(MAGIC) + 1 :]),
    ],
)
def test_undecodable_values_raise_corrupt_value(name: str, make: Callable[[bytes, bytes], bytes]) -> None:
    value = {"v": [1, 2, 3], "r": {"rows": list(range(300))}}
    good_raw = Codec(compress_threshold=10**9).encode(value)
    good_zstd = Codec(compress_threshold=0).encode(value)
    assert good_raw.startswith(MAGIC + b"j")
    assert good_zstd.startswith(MAGIC + b"z")
    with pytest.raises(CorruptValue):
        Codec().decode(make(good_raw, good_zstd))


# -- keys (pure) -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["litemaas:", "test:ab12:", "a*b?[c]\\:", "x"])
def test_result_keys_parse_back_to_their_range(prefix: str) -> None:
    keys = KeySpace(prefix)
    days = DateRange(dt.date(2024, 2, 27), dt.date(2024, 3, 2))
    fingerprint = UsageFilters(model_ids=["gpt-4o"]).fingerprint()
    for kind in RESULT_KINDS:
        key = keys.result(kind, days, fingerprint)
        assert key.startswith(prefix)
        assert keys.result_range(key) == days
    # keys that are not result keys, or not well-formed ones, parse to None
    assert keys.result_range(keys.day(days.start)) is None
    assert keys.result_range(keys.versions) is None
    assert keys.result_range(keys.stats) is None
    assert keys.result_range(keys.lock(keys.result("analytics", days, fingerprint))) is None
    assert keys.result_range(f"{prefix}res:analytics:2024-02-30:2024-03-01:{fingerprint}") is None
    assert keys.result_range(f"{prefix}res:analytics:2024-02-01:{fingerprint}") is None
    assert keys.result_range(f"{prefix}res:analytics:2024-02-01:2024-02-02:{fingerprint}:extra") is None


def test_scan_patterns_escape_glob_characters_of_the_prefix() -> None:
    keys = KeySpace("a*b?[c]:")
    assert keys.all_pattern == "a\\*b\\?\\[c\\]:*"


def test_filter_fingerprints_are_stable_and_order_insensitive() -> None:
    a = UsageFilters(model_ids=["b", "a", "a"], user_ids=["u1"])
    b = UsageFilters(user_ids=["u1"], model_ids=["a", "b"])
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != UsageFilters(model_ids=["a"]).fingerprint()
    assert UsageFilters().fingerprint() == UsageFilters().fingerprint()


def test_lock_keys_are_distinct_from_result_keys() -> None:
    keys = KeySpace("p:")
    result = keys.result("analytics", DateRange(dt.date(2024, 1, 1), dt.date(2024, 1, 2)), "f")
    assert keys.lock(result) == "p:lock:res:analytics:2024-01-01:2024-01-02:f"
    assert not keys.lock(result).startswith("p:res:")


# -- in Redis: values that are not ours are misses, never errors ------------------------------------------


def _query(start: dt.date, end: dt.date, **filters: list[str]) -> Any:
    return build_query(start, end, max_days=90, max_ids=1000, **filters)


async def test_garbage_in_result_and_day_keys_is_a_logged_miss(
    fresh_dsn: str,
    redis_target: dict[str, object],
    redis_client: Redis | RedisCluster,
    open_manager: Callable[..., Awaitable[CacheManager]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = await open_manager(fresh_dsn, **redis_target)
    today = utc_today()
    days = DateRange(today - dt.timedelta(days=20), today - dt.timedelta(days=14))
    query = _query(days.start, days.end)
    first = await manager.analytics(query)
    assert first.tier == "source"
    key = manager.keys.result("analytics", query.range, query.filters.fingerprint())
    assert (await manager.analytics(query)).tier == "redis"

    bad_values = [
        b"garbage",  # foreign
        Codec(0).encode({"v": [1], "r": 1})[:-4],  # truncated zstd
        Codec().encode({"unexpected": "shape"}),  # ours, but not a result entry
        b"LMC9j{}",  # a future format version
    ]
    caplog.set_level(logging.WARNING, logger="litemaas_cache")
    for bad in bad_values:
        caplog.clear()
        before = manager.counters.local.get("computations", 0)
        await redis_client.set(key, bad)
        answer = await manager.analytics(query)
        assert answer.value == first.value
        assert manager.counters.local["computations"] == before + 1, f"{bad!r} must be a miss"
        assert "ignoring unreadable redis entry" in caplog.text, f"{bad!r} must be logged"
        assert (await manager.analytics(query)).tier == "redis", "the recomputed entry replaces the garbage"

    # day entries that are not a current-layout payload of that day at its version: all read as absent, PostgreSQL
    # answers, and its copy (the same bytes) replaces them
    day = days.start + dt.timedelta(days=2)
    other = days.start + dt.timedelta(days=3)
    assert (await manager.get_days([day])).from_redis == 1
    good = await redis_client.get(manager.keys.day(day))
    assert good is not None
    header = read_header(good)
    assert header.day == day
    body = len(DAY_MAGIC) + 5 + int.from_bytes(good[len(DAY_MAGIC) + 1 : len(DAY_MAGIC) + 5], "big")
    columns = decode_columns(good)
    older = Codec().encode({"day": day.isoformat(), "complete": True, "version": header.version, "table": {}})
    bad_days = {
        "foreign bytes": b"\x00\x01garbage",
        "the result codec's bytes": MAGIC + b"z" + b"nope",
        "the previous release's orjson day": older,
        "another layout": DAY_MAGIC + bytes([good[len(DAY_MAGIC)] + 1]) + good[len(DAY_MAGIC) + 1 :],
        "a truncated header": good[: len(DAY_MAGIC) + 7],
        "damaged columns": good[: body + (len(good) - body) // 2],
        "another day's entry": await redis_client.get(manager.keys.day(other)),
        "an older version of the day": encode_day(day, columns, is_complete=True, version=header.version - 1).payload,
    }
    for name, bad in bad_days.items():
        assert bad is not None
        await redis_client.set(manager.keys.day(day), bad)
        fetch = await manager.get_days([day])
        assert (fetch.from_redis, fetch.from_postgres, fetch.from_source) == (0, 1, 0), name
        assert fetch.days[day].payload == good, name
        assert await redis_client.get(manager.keys.day(day)) == good, f"{name}: the PostgreSQL copy was written back"
        assert (await manager.get_days([day])).from_redis == 1, name
    await redis_client.delete(manager.keys.day(day))
    await redis_client.hset(manager.keys.day(day), "not", "a string")
    fetch = await manager.get_days([day])
    assert fetch.from_redis == 0
    assert day in fetch.days
    await redis_client.delete(manager.keys.day(day))
    assert (await manager.analytics(_query(days.start, days.end, model_ids=["gpt-4o"]))).value["period"]


# -- no multi-key command spans two hash slots ---------------------------------------------------------------

_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b'"': b'"', b"\\": b"\\"}


def _unescape(token: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(token):
        if token[i : i + 1] == b"\\":
            nxt = token[i + 1 : i + 2]
            if nxt == b"x":
                out += bytes([int(token[i + 2 : i + 4], 16)])
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out += token[i : i + 1]
        i += 1
    return bytes(out)


async def test_every_command_touches_keys_of_one_slot(
    fresh_dsn: str, key_prefix: str, open_manager: Callable[..., Awaitable[CacheManager]]
) -> None:
    """Record every command our code sends (MONITOR on standalone Redis) during reads, warming, invalidation and
    stats; COMMAND GETKEYS names the keys of each, and all keys of one command must share a hash slot."""
    port = int(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit(":", 1)[1].split("/")[0])
    marker = uuid.uuid4().hex
    monitor = await asyncio.create_subprocess_exec(
        "redis-cli", "-p", str(port), "monitor", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert monitor.stdout is not None
    stdout = monitor.stdout
    lines: list[bytes] = []

    async def read_line(deadline: float, what: str) -> bytes:
        try:
            return await asyncio.wait_for(stdout.readline(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pytest.fail(f"redis-cli monitor did not show {what} within 10s")

    async def read_until(needle: bytes, what: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            line = await read_line(deadline, what)
            if not line:
                pytest.fail(f"redis-cli monitor exited before showing {what}")
            lines.append(line)
            if needle in line:
                return

    probe = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        first = await read_line(time.monotonic() + 10, "that it attached (OK)")
        assert first.strip() == b"OK", first

        manager = await open_manager(fresh_dsn)  # standalone REDIS_URL, the test's key prefix
        today = utc_today()
        query = _query(today - dt.timedelta(days=9), today)
        await manager.analytics(query)
        await manager.analytics(query)
        await manager.breakdown("model", _query(today - dt.timedelta(days=3), today), Page())
        await manager.warm([DateRange(today - dt.timedelta(days=2), today)], breakdowns=["user"])
        await manager.invalidate(DateRange(today - dt.timedelta(days=5), today - dt.timedelta(days=4)))
        await manager.stats()
        await probe.echo(f"end-{marker}")
        await read_until(f"end-{marker}".encode(), "the end marker")
    finally:
        monitor.kill()
        await asyncio.wait_for(monitor.wait(), 10)
        await probe.aclose()

    checker = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    seen: dict[str, int] = {}
    try:
        for line in lines:
            args = [_unescape(t) for t in _TOKEN.findall(line)]
            if not args or not any(key_prefix.encode() in a for a in args):
                continue
            name = args[0].decode().upper()
            assert name != "SCAN", "reads, warming, invalidation and stats never scan the keyspace"
            keys = [k.encode() if isinstance(k, str) else k for k in await checker.command_getkeys(*args)]
            slots = {key_slot(k) for k in keys}
            assert keys, (name, args)
            assert all(k.startswith(key_prefix.encode()) for k in keys), (name, keys)
            assert len(slots) == 1, f"{name} touches keys of {len(slots)} slots: {keys}"
            seen[name] = seen.get(name, 0) + 1
    finally:
        await checker.aclose()
    # the commands the store uses, all seen (so the check above really covered them)
    for name in ("GET", "SET", "HMGET", "EVAL", "UNLINK", "HINCRBY", "HGETALL", "ZADD", "ZRANGEBYSCORE", "ZCOUNT"):
        assert seen.get(name), f"no {name} recorded; seen: {seen}"
