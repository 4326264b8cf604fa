"""The PostgreSQL daily cache (PostgresDayCache) on real PostgreSQL: fill, hits, freshness, concurrency, purge, and
rows whose payload is not of the current layout (read as misses and rewritten)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import polars as pl
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from litemaas_cache.daily_cache import FreshnessPolicy, PostgresDayCache
from litemaas_cache.dates import DateRange, utc_today
from litemaas_cache.db import Database
from litemaas_cache.dictionary import DimensionDictionary
from litemaas_cache.frames import (
    GRAIN,
    MAGIC,
    DayFrame,
    UnreadablePayload,
    decode_columns,
    encode_day,
    read_header,
)
from litemaas_cache.manager import CacheManager
from litemaas_cache.schema import SCHEMA
from litemaas_cache.source import SOURCE_TABLE, SourceReader
from litemaas_cache.vocabulary import UNKNOWN_MODEL

TODAY = utc_today()
POLICY = FreshnessPolicy(current_day_ttl=dt.timedelta(minutes=5), yesterday_grace=dt.timedelta(hours=2))


def ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


@pytest_asyncio.fixture
async def db(fresh_dsn: str) -> AsyncIterator[Database]:
    async with Database(fresh_dsn, max_size=4) as database:
        yield database


@pytest.fixture
def source(fresh_dsn: str) -> Iterator[SourceReader]:
    reader = SourceReader(fresh_dsn)
    yield reader
    reader.close()


@pytest.fixture
def dictionary() -> DimensionDictionary:
    return DimensionDictionary()


@pytest.fixture
def cache(db: Database, source: SourceReader, dictionary: DimensionDictionary) -> PostgresDayCache:
    return PostgresDayCache(db, POLICY, source, dictionary)


@asynccontextmanager
async def opened_cache(dsn: str, policy: FreshnessPolicy = POLICY) -> AsyncIterator[PostgresDayCache]:
    """A cache on pools and a source reader of its own (like another process)."""
    reader = SourceReader(dsn)
    try:
        async with Database(dsn, max_size=4) as db:
            yield PostgresDayCache(db, policy, reader, DimensionDictionary())
    finally:
        reader.close()


def totals(day: DayFrame) -> tuple[int, int, float]:
    """(requests, tokens, spend) of a day's columns (decoded from its payload when not at hand)."""
    requests, tokens, spend = (
        day.columns()
        .select(pl.col("requests").sum(), (pl.col("prompt") + pl.col("completion")).sum(), pl.col("spend").sum())
        .row(0)
    )
    return int(requests), int(tokens), float(spend)


def cells(day: DayFrame) -> pl.DataFrame:
    """A day's columns in grain order (a computation does not promise any row order)."""
    return day.columns().sort(GRAIN)


def payloads(days: dict[dt.date, DayFrame]) -> dict[dt.date, bytes]:
    """What a tier holds for each day: the payload bytes (equal bytes, equal days)."""
    return {day: frame.payload for day, frame in days.items()}


def orjson_era_payload(day: dt.date, version: int) -> bytes:
    """A day as the previous release stored it: its orjson codec's encoding ("LMC1", "j" for uncompressed JSON) of
    a dictionary-encoded table."""
    table = {"users": [], "keys": [], "aliases": [], "models": [], "providers": [], "columns": {}}
    return b"LMC1j" + orjson.dumps({"day": day.isoformat(), "complete": True, "version": version, "table": table})


async def rows(db: Database, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    async with db.cache_connection() as conn:
        cur = await conn.execute(sql.encode(), params)
        return await cur.fetchall()


async def execute(db: Database, sql: str, params: Any = ()) -> None:
    async with db.cache_connection() as conn:
        await conn.execute(sql.encode(), params)


async def requests_by_key_and_model(db: Database, day: dt.date) -> dict[tuple[str, str], int]:
    """Requests per (api key, model) of a day straight from the source table (a NULL or empty model is "unknown")."""
    found = await rows(
        db,
        f"""SELECT api_key, COALESCE(NULLIF(model, ''), %s), sum(api_requests) FROM {SOURCE_TABLE}
            WHERE date = %s GROUP BY 1, 2""",
        (UNKNOWN_MODEL, day.isoformat()),
    )
    return {(key, model): int(requests) for key, model, requests in found}


def cached_requests_by_key_and_model(day: DayFrame, dictionary: DimensionDictionary) -> dict[tuple[str, str], int]:
    """The same from a day's columns, their codes turned back into text through the dictionary."""
    grouped = day.columns().group_by("key", "model").agg(pl.col("requests").sum())
    keys, models = dictionary.names(grouped["key"]), dictionary.names(grouped["model"])
    return {(k, m): int(r) for k, m, r in zip(keys, models, grouped["requests"], strict=True)}


async def source_totals(db: Database, day: dt.date) -> tuple[int, int, float]:
    ((requests, tokens, spend),) = await rows(
        db,
        f"""SELECT COALESCE(sum(api_requests), 0), COALESCE(sum(prompt_tokens + completion_tokens), 0),
                   COALESCE(sum(spend), 0) FROM {SOURCE_TABLE} WHERE date = %s""",
        (day.isoformat(),),
    )
    return int(requests), int(tokens), float(spend)


async def test_past_days_are_complete_and_served_without_recompute(
    db: Database, cache: PostgresDayCache, dictionary: DimensionDictionary
) -> None:
    days = [ago(n) for n in range(10, 3, -1)]
    assert await cache.get(days) == {}
    filled, computed = await cache.fill(days)
    assert computed == len(days)
    assert sorted(filled) == days
    for day in days:
        usage = filled[day]
        assert (usage.day, usage.is_complete, usage.version) == (day, True, 1)
        assert usage.frame is not None, "a day just computed carries its columns"
        # the payload holds exactly those columns behind that header
        assert read_header(usage.payload) == usage.header
        assert decode_columns(usage.payload).equals(usage.frame)
        requests, tokens, spend = totals(usage)
        s_requests, s_tokens, s_spend = await source_totals(db, day)
        assert (requests, tokens) == (s_requests, s_tokens)
        assert spend == pytest.approx(s_spend, rel=1e-9, abs=1e-6)
        assert requests > 0
        # the codes stand for the source's own keys and models
        assert cached_requests_by_key_and_model(usage, dictionary) == await requests_by_key_and_model(db, day)

    again, computed_again = await cache.fill(days)
    assert computed_again == 0
    assert payloads(again) == payloads(filled)
    served = await cache.get(days)
    assert payloads(served) == payloads(filled)
    assert {d: u.header for d, u in served.items()} == {d: u.header for d, u in filled.items()}
    assert all(u.frame is None for u in served.values()), "a hit is the payload; its columns are decoded on demand"
    assert await cache.versions(days) == dict.fromkeys(days, 1)
    stored = await rows(
        db,
        f"""SELECT day, is_complete, version, row_count, requests, total_tokens, spend, aggregates
            FROM {SCHEMA}.daily_usage ORDER BY day""",
    )
    assert [(d, c, v) for d, c, v, *_ in stored] == [(d, True, 1) for d in days]
    for d, _, _, row_count, requests, tokens, spend, payload in stored:
        assert bytes(payload) == filled[d].payload
        assert row_count == filled[d].columns().height
        assert (requests, tokens) == totals(filled[d])[:2]
        assert float(spend) == pytest.approx(totals(filled[d])[2], rel=1e-9, abs=1e-6)


async def test_a_day_without_usage_is_cached_as_empty(db: Database, cache: PostgresDayCache) -> None:
    empty = ago(300)
    assert await source_totals(db, empty) == (0, 0, 0.0)
    filled, computed = await cache.fill([empty])
    assert computed == 1
    assert filled[empty].columns().height == 0
    assert filled[empty].is_complete
    stored = await rows(
        db,
        f"SELECT aggregates, is_complete, version, row_count, requests FROM {SCHEMA}.daily_usage WHERE day = %s",
        (empty,),
    )
    assert [(read_header(data), decode_columns(data).height, ok, v, n, r) for data, ok, v, n, r in stored] == [
        (filled[empty].header, 0, True, 1, 0, 0)
    ]
    assert (filled[empty].day, filled[empty].version) == (empty, 1)
    # A hit from now on: served by get(), and fill() computes nothing.
    assert (await cache.get([empty]))[empty].columns().height == 0
    assert (await cache.fill([empty]))[1] == 0
    assert await cache.versions([empty]) == {empty: 1}


async def test_today_is_recomputed_once_older_than_the_ttl(db: Database, source: SourceReader) -> None:
    policy = FreshnessPolicy(current_day_ttl=dt.timedelta(seconds=1), yesterday_grace=dt.timedelta(hours=2))
    dictionary = DimensionDictionary()
    cache = PostgresDayCache(db, policy, source, dictionary)
    filled, computed = await cache.fill([TODAY])
    assert computed == 1
    assert not filled[TODAY].is_complete
    assert filled[TODAY].version == 1
    before = totals(filled[TODAY])[0]
    assert (await cache.fill([TODAY]))[1] == 0  # still within the TTL
    assert TODAY in await cache.get([TODAY])

    # LiteLLM records more usage today; once the cached copy is older than the TTL it is recomputed.
    async with db.source_connection() as conn:
        await conn.execute(
            f"""INSERT INTO {SOURCE_TABLE} (id, user_id, date, api_key, model, custom_llm_provider,
                    prompt_tokens, completion_tokens, spend, api_requests, successful_requests, failed_requests)
                VALUES ('test-extra', 'u', %s, 'extra-key', 'gpt-4o', 'openai', 10, 5, 0.5, 7, 7, 0)""",
            (TODAY.isoformat(),),
        )
    await asyncio.sleep(1.1)
    assert await cache.get([TODAY]) == {}  # stale: not served
    refreshed, computed = await cache.fill([TODAY])
    assert computed == 1
    assert refreshed[TODAY].version == 2
    assert totals(refreshed[TODAY])[0] == before + 7
    assert not refreshed[TODAY].is_complete
    assert cached_requests_by_key_and_model(refreshed[TODAY], dictionary)[("extra-key", "gpt-4o")] == 7

    # Aged through updated_at instead of sleeping: recomputed again, version 3.
    aged = f"UPDATE {SCHEMA}.daily_usage SET updated_at = now() - %s::interval WHERE day = %s"
    await execute(db, aged, ("1 hour", TODAY))
    assert (await cache.fill([TODAY]))[0][TODAY].version == 3
    # A past day never goes stale, however old its row.
    await cache.fill([ago(5)])
    await execute(db, aged, ("400 days", ago(5)))
    assert (await cache.fill([ago(5)]))[1] == 0


async def test_yesterday_filled_in_the_grace_period_is_recomputed_after_it(
    db: Database, cache: PostgresDayCache
) -> None:
    yesterday = ago(1)
    filled, _ = await cache.fill([yesterday])
    # Pretend it was written while still current: incomplete (row and payload header agree), an hour ago.
    incomplete = encode_day(yesterday, filled[yesterday].columns(), is_complete=False, version=1)
    await execute(
        db,
        f"""UPDATE {SCHEMA}.daily_usage SET aggregates = %s, is_complete = false, updated_at = now() - interval '1 hour'
            WHERE day = %s""",
        (incomplete.payload, yesterday),
    )
    # Within the grace period the current-day TTL (5 min) applies, so an hour-old copy is stale; after it, an
    # incomplete copy is never served. Either way: not served, recomputed, complete once the grace is over.
    assert await cache.get([yesterday]) == {}
    filled, computed = await cache.fill([yesterday])
    assert computed == 1
    assert filled[yesterday].version == 2
    assert filled[yesterday].is_complete == (not POLICY.is_current(yesterday))


def test_freshness_policy_is_current() -> None:
    policy = FreshnessPolicy(current_day_ttl=dt.timedelta(minutes=5), yesterday_grace=dt.timedelta(hours=2))
    today = dt.date(2025, 6, 10)
    yesterday = dt.date(2025, 6, 9)

    def at(hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime.combine(today, dt.time(hour, minute), tzinfo=dt.UTC)

    assert policy.is_current(today, at(0))
    assert policy.is_current(today, at(23, 59))
    assert policy.is_current(today + dt.timedelta(days=1), at(12))
    assert policy.is_current(yesterday, at(0))
    assert policy.is_current(yesterday, at(1, 59))  # within the 2-hour grace after UTC midnight
    assert not policy.is_current(yesterday, at(2, 0))  # the grace has ended
    assert not policy.is_current(yesterday, at(15))
    assert not policy.is_current(dt.date(2025, 6, 8), at(0, 30))  # the day before yesterday: never
    no_grace = FreshnessPolicy(dt.timedelta(minutes=5), dt.timedelta(0))
    assert not no_grace.is_current(yesterday, at(0))


def test_freshness_policy_is_fresh() -> None:
    policy = FreshnessPolicy(current_day_ttl=dt.timedelta(minutes=5), yesterday_grace=dt.timedelta(hours=2))
    now = dt.datetime(2025, 6, 10, 12, 0, tzinfo=dt.UTC)
    today, yesterday, old = now.date(), dt.date(2025, 6, 9), dt.date(2025, 1, 1)
    long_ago = now - dt.timedelta(days=100)
    assert policy.is_fresh(old, long_ago, True, now)  # complete past days: forever
    assert policy.is_fresh(yesterday, long_ago, True, now)
    assert not policy.is_fresh(old, now - dt.timedelta(seconds=1), False, now)  # incomplete past day: recompute
    assert policy.is_fresh(today, now - dt.timedelta(minutes=4), False, now)
    assert not policy.is_fresh(today, now - dt.timedelta(minutes=6), False, now)
    # Within the grace period yesterday follows the current-day TTL.
    early = dt.datetime(2025, 6, 10, 1, 0, tzinfo=dt.UTC)
    assert policy.is_fresh(yesterday, early - dt.timedelta(minutes=1), False, early)
    assert not policy.is_fresh(yesterday, early - dt.timedelta(minutes=10), False, early)


async def test_concurrent_fills_compute_each_day_once(fresh_dsn: str) -> None:
    days = [ago(n) for n in range(20, 4, -1)]
    async with opened_cache(fresh_dsn) as a, opened_cache(fresh_dsn) as b:
        (filled_a, computed_a), (filled_b, computed_b) = await asyncio.gather(a.fill(days), b.fill(days))
        assert computed_a + computed_b == len(days)
        assert payloads(filled_a) == payloads(filled_b)
        assert await a.versions(days) == dict.fromkeys(days, 1)

        # Overlapping sets from both pools (and a third filler): still one computation per new day.
        more = [ago(n) for n in range(30, 18, -1)]  # 10 new days, 2 already cached
        results = await asyncio.gather(a.fill(more[:8]), b.fill(more[4:]), a.fill(more[::-1]))
        assert sum(computed for _, computed in results) == len(set(more) - set(days))
        assert await b.versions(more) == dict.fromkeys(more, 1)
        # every filler got the one stored payload of each day
        stored = payloads(await a.get(more))
        assert all(payloads(filled) == {d: stored[d] for d in filled} for filled, _ in results)


async def test_purge_bumps_versions_and_drops_aggregates(db: Database, cache: PostgresDayCache) -> None:
    cached = [ago(n) for n in range(12, 8, -1)]
    await cache.fill(cached)
    await cache.fill(cached[:1])  # a hit: versions stay 1
    purge_range = DateRange(ago(14), ago(7))  # 4 cached days plus 4 never cached
    before = await cache.versions(list(purge_range))
    assert before == {d: 1 if d in cached else 0 for d in purge_range}

    result = await cache.purge(purge_range)
    assert result.days_purged == len(cached)
    assert result.versions == {d: before[d] + 1 for d in purge_range}
    assert await cache.versions(list(purge_range)) == result.versions
    stored = await rows(
        db,
        f"SELECT day, aggregates, is_complete, requests FROM {SCHEMA}.daily_usage WHERE day BETWEEN %s AND %s",
        (purge_range.start, purge_range.end),
    )
    assert {d for d, *_ in stored} == set(purge_range)  # a row (a version) even for days never cached
    assert all(agg is None and not complete and requests == 0 for _, agg, complete, requests in stored)
    assert await cache.get(list(purge_range)) == {}

    # Purging again only bumps versions; refilling recomputes with a higher version.
    again = await cache.purge(purge_range)
    assert again.days_purged == 0
    assert again.versions == {d: v + 1 for d, v in result.versions.items()}
    refilled, computed = await cache.fill(cached)
    assert computed == len(cached)
    assert {d: u.version for d, u in refilled.items()} == {d: again.versions[d] + 1 for d in cached}
    assert all(read_header(u.payload).version == u.version for u in refilled.values())
    assert all(u.is_complete and u.columns().height for u in refilled.values())
    for d, u in refilled.items():
        assert totals(u)[0] == (await source_totals(db, d))[0]
    # Days outside the range were not touched.
    assert await cache.versions([ago(20)]) == {ago(20): 0}


async def test_fill_of_nothing(cache: PostgresDayCache) -> None:
    assert await cache.fill([]) == ({}, 0)
    assert await cache.get([]) == {}


async def test_duplicate_days_in_one_fill(cache: PostgresDayCache) -> None:
    day = ago(6)
    filled, computed = await cache.fill([day, day, day])
    assert computed == 1
    assert list(filled) == [day]


# -- payloads that are not of the current layout ------------------------------------------------------------


def _header_length(payload: bytes) -> int:
    return int.from_bytes(payload[len(MAGIC) + 1 : len(MAGIC) + 5], "big")


def _other_layout(day: DayFrame) -> bytes:
    return MAGIC + bytes([day.payload[len(MAGIC)] + 1]) + day.payload[len(MAGIC) + 1 :]


def _garbled_header(day: DayFrame) -> bytes:
    start, length = len(MAGIC) + 5, _header_length(day.payload)
    return day.payload[:start] + b"~" * length + day.payload[start + length :]


def _header_of_another_version(day: DayFrame) -> bytes:
    return encode_day(day.day, day.columns(), is_complete=True, version=day.version + 1).payload


def _header_of_another_day(day: DayFrame) -> bytes:
    return encode_day(day.day - dt.timedelta(days=1), day.columns(), is_complete=True, version=day.version).payload


# name -> (the bad payload made from the good day, whether its header can still be read)
UNREADABLE: dict[str, tuple[Callable[[DayFrame], bytes], bool]] = {
    "orjson codec (previous release)": (lambda day: orjson_era_payload(day.day, day.version), False),
    "another layout byte": (_other_layout, False),
    "foreign bytes": (lambda day: b"\x00\x01garbage", False),
    "magic only": (lambda day: MAGIC, False),
    "garbled header": (_garbled_header, False),
    "header of another version than the row": (_header_of_another_version, True),
    "header of another day than the row": (_header_of_another_day, True),
}


@pytest.mark.parametrize(("make_bad", "header_readable"), list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_an_unreadable_row_is_a_miss_and_rewritten(
    db: Database, cache: PostgresDayCache, make_bad: Callable[[DayFrame], bytes], header_readable: bool
) -> None:
    day = ago(8)
    filled, _ = await cache.fill([day])
    good = filled[day]
    bad = make_bad(good)
    if header_readable:
        assert read_header(bad) != good.header, "a header that disagrees with its row"
    else:
        with pytest.raises(UnreadablePayload):
            read_header(bad)
    await execute(db, f"UPDATE {SCHEMA}.daily_usage SET aggregates = %s WHERE day = %s", (bad, day))

    assert await cache.get([day]) == {}, "not served"
    refilled, computed = await cache.fill([day])
    assert computed == 1, "recomputed from the source"
    fixed = refilled[day]
    assert fixed.version == good.version + 1
    assert read_header(fixed.payload) == fixed.header
    assert cells(fixed).equals(cells(good))
    assert totals(fixed)[0] == (await source_totals(db, day))[0]
    ((stored,),) = await rows(db, f"SELECT aggregates FROM {SCHEMA}.daily_usage WHERE day = %s", (day,))
    assert bytes(stored) == fixed.payload, "the row is rewritten"
    assert payloads(await cache.get([day])) == {day: fixed.payload}


def _damaged_columns(day: DayFrame) -> bytes:
    """The header intact, the Arrow body cut short."""
    body = len(MAGIC) + 5 + _header_length(day.payload)
    return day.payload[: body + (len(day.payload) - body) // 2]


async def test_a_row_with_damaged_columns_is_recomputed_on_request(db: Database, cache: PostgresDayCache) -> None:
    """get() reads headers only, so damaged columns show when they are decoded; the reader then asks fill() to
    recompute the day (`recompute`), which it does even though the row looks fresh."""
    day = ago(9)
    good = (await cache.fill([day]))[0][day]
    bad = _damaged_columns(good)
    assert read_header(bad) == good.header
    with pytest.raises(UnreadablePayload):
        decode_columns(bad)
    await execute(db, f"UPDATE {SCHEMA}.daily_usage SET aggregates = %s WHERE day = %s", (bad, day))

    served = await cache.get([day])
    assert payloads(served) == {day: bad}
    with pytest.raises(UnreadablePayload):
        served[day].columns()
    assert (await cache.fill([day]))[1] == 0, "without `recompute` a fresh-looking row is served as it is"
    refilled, computed = await cache.fill([day], recompute=[day])
    assert computed == 1
    assert refilled[day].version == good.version + 1
    assert cells(refilled[day]).equals(cells(good))
    assert payloads(await cache.get([day])) == {day: refilled[day].payload}


@pytest.mark.parametrize("make_bad", [_other_layout, _damaged_columns], ids=["older layout", "damaged columns"])
async def test_the_tiered_read_recomputes_an_unreadable_row_and_rewrites_both_tiers(
    manager: CacheManager, make_bad: Callable[[DayFrame], bytes]
) -> None:
    day = ago(7)
    first = await manager.get_days([day])
    assert first.from_source == 1
    good = first.days[day]
    async with manager.db.cache_connection() as conn:
        await conn.execute(
            f"UPDATE {SCHEMA}.daily_usage SET aggregates = %s WHERE day = %s".encode(), (make_bad(good), day)
        )
    client = Redis.from_url(manager.settings.redis_dsn)
    try:
        await client.delete(manager.keys.day(day))  # so that the read reaches PostgreSQL's row
        fetch = await manager.get_days([day])
        assert (fetch.from_redis, fetch.from_postgres, fetch.from_source) == (0, 0, 1)
        fixed = fetch.days[day]
        assert fixed.version == good.version + 1
        assert fixed.frame is not None, "decoded for the reader"
        assert cells(fixed).equals(cells(good))
        async with manager.db.cache_connection() as conn:
            cur = await conn.execute(f"SELECT aggregates FROM {SCHEMA}.daily_usage WHERE day = %s".encode(), (day,))
            ((stored,),) = await cur.fetchall()
        assert bytes(stored) == fixed.payload, "PostgreSQL's row is rewritten"
        assert await client.get(manager.keys.day(day)) == fixed.payload, "and Redis holds the same bytes"
    finally:
        await client.aclose()
    again = await manager.get_days([day])
    assert (again.from_redis, again.versions) == (1, {day: fixed.version})
