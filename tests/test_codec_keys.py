"""The Redis value codec and key space: pure checks, plus what a real Redis does with values that are not ours."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from litemaas_cache.analytics import Page
from litemaas_cache.codec import ENCODINGS, MAGIC, Body, CorruptValue, compress, decode_entry, encode_entry
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.filters import UsageFilters, build_query
from litemaas_cache.frames import MAGIC as DAY_MAGIC
from litemaas_cache.frames import decode_columns, encode_day, read_header
from litemaas_cache.manager import CacheManager
from litemaas_cache.redis_tier.keys import RESULT_KINDS, KeySpace
from litemaas_cache.vocabulary import ContentEncoding

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
@given(value=json_values, vector=st.lists(st.integers(min_value=0, max_value=2**40), max_size=5))
def test_entries_roundtrip_any_json_value_in_every_encoding(value: Any, vector: list[int]) -> None:
    body = Body.of(value)
    for encoding in ENCODINGS:
        read_vector, stored = decode_entry(encode_entry(vector, body, encoding), encoding)
        assert read_vector == vector
        served = Body(encoded={encoding: stored})
        assert served.encoded(encoding) == stored, "a hit serves the stored bytes as they are"
        assert served.value() == value
        assert served.json() == orjson.dumps(value)


def test_bodies_are_standard_gzip_and_zstd_and_compress_documents() -> None:
    document = {"rows": [[f"user-{i}", "key", None, "gpt-4o", "openai", i, i * 2, 3, 3, 0, 0.25] for i in range(2000)]}
    raw = orjson.dumps(document)
    body = Body.of(document)
    assert gzip.decompress(body.encoded("gzip")) == raw
    assert zstandard.ZstdDecompressor().decompress(body.encoded("zstd")) == raw
    assert len(body.encoded("zstd")) < len(raw) / 3, "zstd should shrink repetitive aggregates a lot"
    assert len(body.encoded("gzip")) < len(raw) / 3
    assert (body.has("zstd"), body.has("gzip")) == (True, True)
    assert Body(encoded={"gzip": body.encoded("gzip")}).encoded("zstd") == body.encoded("zstd"), "transcoded"


def _bad_entries(good_zstd: bytes, good_gzip: bytes) -> dict[str, bytes]:
    start = len(MAGIC) + 9
    length = int.from_bytes(good_zstd[len(MAGIC) + 1 : len(MAGIC) + 5], "big")
    vector, body = good_zstd[start : start + length], good_zstd[start + length :]

    def entry(vector: bytes, body: bytes, kind: bytes = b"z") -> bytes:
        return MAGIC + kind + len(vector).to_bytes(4, "big") + len(body).to_bytes(4, "big") + vector + body

    return {
        "empty": b"",
        "foreign, no magic": b'{"v": [1], "r": 2}',
        "plain text": b"hello world",
        "header only": MAGIC,
        "magic and kind, no lengths": MAGIC + b"z",
        "the previous format": b"LMC1z" + good_zstd[len(MAGIC) + 1 :],
        "a gzip entry under the zstd key": good_gzip,
        "unknown kind": entry(vector, body, b"x"),
        "truncated body": good_zstd[:-3],
        "trailing bytes": good_zstd + b"\x00",
        "vector not json": entry(b"#" * length, body),
        "vector not integers": entry(b'["a"]', body),
        "vector not a list": entry(b"7", body),
        "no body": entry(vector, b""),
    }


@pytest.mark.parametrize("name", list(_bad_entries(b"x" * 20, b"y" * 20)))
def test_undecodable_entries_raise_corrupt_value(name: str) -> None:
    body = Body.of({"rows": list(range(300))})
    good_zstd, good_gzip = encode_entry([1, 2, 3], body, "zstd"), encode_entry([1, 2, 3], body, "gzip")
    with pytest.raises(CorruptValue):
        decode_entry(_bad_entries(good_zstd, good_gzip)[name], "zstd")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_undecodable_bodies_raise_corrupt_value(encoding: ContentEncoding) -> None:
    good = Body.of({"rows": list(range(300))}).encoded(encoding)
    for bad in (good[: len(good) // 2], b"garbage bytes", compress(b"{not json", encoding)):
        with pytest.raises(CorruptValue):
            Body(encoded={encoding: bad}).value()


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
    key = manager.keys.result_entry(manager.keys.result("analytics", query.range, query.filters.fingerprint()), "zstd")
    assert (await manager.analytics(query)).tier == "redis"
    good = await redis_client.get(key)
    assert good is not None
    vector = decode_entry(good, "zstd")[0]

    bad_values = [
        b"garbage",  # foreign
        good[: len(good) - 4],  # a truncated body: the vector matches, the length does not
        encode_entry(vector, Body.of({"unexpected": "shape"}), "gzip"),  # ours, but the other encoding
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
    older = b"LMC1j" + orjson.dumps({"day": day.isoformat(), "complete": True, "version": header.version})
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
