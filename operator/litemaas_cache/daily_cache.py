"""The persistent tier: one PostgreSQL row per UTC day, filled from the source under a per-day advisory lock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from .aggregates import DayUsage
from .codec import Codec
from .dates import DateRange, utc_now
from .db import Database
from .schema import SCHEMA
from .source import fetch_day_rows

# Namespace of the two-int advisory locks that serialise fills and invalidations of one day.
DAY_LOCK_NAMESPACE = 0x4C4D44

_LOCK_DAYS_SQL = "SELECT pg_advisory_xact_lock(%s, d) FROM (SELECT unnest(%s::int[]) AS d ORDER BY 1) AS days"

_READ_SQL = f"""
SELECT day, aggregates, is_complete, version, updated_at
FROM {SCHEMA}.daily_usage WHERE day = ANY(%s)
"""

_UPSERT_SQL = f"""
INSERT INTO {SCHEMA}.daily_usage AS t
    (day, aggregates, is_complete, row_count, requests, total_tokens, spend, version, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (day) DO UPDATE SET
    aggregates = EXCLUDED.aggregates, is_complete = EXCLUDED.is_complete, row_count = EXCLUDED.row_count,
    requests = EXCLUDED.requests, total_tokens = EXCLUDED.total_tokens, spend = EXCLUDED.spend,
    version = EXCLUDED.version, updated_at = now()
"""

_PURGE_SQL = f"""
WITH cached AS (
    SELECT day FROM {SCHEMA}.daily_usage WHERE day BETWEEN %(start)s AND %(end)s AND aggregates IS NOT NULL
), bumped AS (
    INSERT INTO {SCHEMA}.daily_usage AS t (day, aggregates, is_complete, version, updated_at)
    SELECT d::date, NULL, false, 1, now() FROM generate_series(%(start)s::date, %(end)s::date, '1 day') AS d
    ON CONFLICT (day) DO UPDATE SET
        aggregates = NULL, is_complete = false, row_count = 0, requests = 0, total_tokens = 0, spend = 0,
        version = t.version + 1, updated_at = now()
    RETURNING day, version
)
SELECT bumped.day, bumped.version, cached.day IS NOT NULL FROM bumped LEFT JOIN cached USING (day)
"""


@dataclass(frozen=True)
class FreshnessPolicy:
    """When a cached day may be served: past days forever, today (and yesterday in the grace) for a TTL."""

    current_day_ttl: dt.timedelta
    yesterday_grace: dt.timedelta

    def is_current(self, day: dt.date, now: dt.datetime | None = None) -> bool:
        """Still changing: today or later, or yesterday within the grace period after UTC midnight."""
        now = now or utc_now()
        today = now.date()
        if day >= today:
            return True
        midnight = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
        return day == today - dt.timedelta(days=1) and now - midnight < self.yesterday_grace

    def is_fresh(self, day: dt.date, updated_at: dt.datetime, is_complete: bool, now: dt.datetime) -> bool:
        if is_complete and not self.is_current(day, now):
            return True
        return now - updated_at < self.current_day_ttl and (is_complete or self.is_current(day, now))


@dataclass(frozen=True)
class PurgeResult:
    days_purged: int
    versions: dict[dt.date, int]


class PostgresDayCache:
    """Reads, fills and purges day aggregates in the litemaas_cache.daily_usage table."""

    def __init__(self, db: Database, policy: FreshnessPolicy, codec: Codec) -> None:
        self._db = db
        self.policy = policy
        self._codec = codec

    async def get(self, days: Sequence[dt.date]) -> dict[dt.date, DayUsage]:
        """The fresh cached days among `days` (stale, purged and absent days are left out)."""
        async with self._db.cache_connection() as conn:
            fresh, _ = await self._read(conn, days)
        return fresh

    async def _read(
        self, conn: psycopg.AsyncConnection[Any], days: Sequence[dt.date]
    ) -> tuple[dict[dt.date, DayUsage], dict[dt.date, int]]:
        """The fresh cached days among `days`, and the current version of every day that has a row."""
        cur = await conn.execute(_READ_SQL, (list(days),))
        now = utc_now()
        fresh: dict[dt.date, DayUsage] = {}
        versions: dict[dt.date, int] = {}
        for day, aggregates, is_complete, version, updated_at in await cur.fetchall():
            versions[day] = int(version)
            if aggregates is not None and self.policy.is_fresh(day, updated_at, is_complete, now):
                fresh[day] = self._to_day_usage(day, aggregates, is_complete, version)
        return fresh, versions

    async def fill(self, days: Sequence[dt.date]) -> tuple[dict[dt.date, DayUsage], int]:
        """Compute missing or stale days from the source and store them; returns (days, how many computed).

        Each day's advisory lock is held across the check and the write, so concurrent fills of a day
        compute it once: a second filler waits, then finds the first filler's fresh row.
        """
        if not days:
            return {}, 0
        ordered = sorted(set(days))
        async with self._db.cache_connection() as conn, conn.transaction():
            await conn.execute(_LOCK_DAYS_SQL, (DAY_LOCK_NAMESPACE, [d.toordinal() for d in ordered]))
            result, versions = await self._read(conn, ordered)
            now = utc_now()
            missing = [d for d in ordered if d not in result]
            computed = await fetch_day_rows(self._db, missing)
            for day, rows in computed.items():
                # The day's lock is held, so the next version is known before writing: the stored bytes carry it
                # and are exactly what the Redis tier stores too (no second encoding).
                usage = DayUsage(day, tuple(rows), not self.policy.is_current(day, now), versions.get(day, 0) + 1)
                usage = replace(usage, encoded=self._codec.encode(usage.to_payload()))
                await conn.execute(
                    _UPSERT_SQL,
                    (day, usage.encoded, usage.is_complete, len(rows), *usage.totals(), usage.version),
                )
                result[day] = usage
        return result, len(missing)

    async def purge(self, days: DateRange) -> PurgeResult:
        """Drop the aggregates of every day in the range and bump each day's version (uncached days too)."""
        async with self._db.cache_connection() as conn, conn.transaction():
            ordinals = [d.toordinal() for d in days]
            await conn.execute(_LOCK_DAYS_SQL, (DAY_LOCK_NAMESPACE, ordinals))
            cur = await conn.execute(_PURGE_SQL, {"start": days.start, "end": days.end})
            rows = await cur.fetchall()
        return PurgeResult(
            days_purged=sum(1 for _, _, was_cached in rows if was_cached),
            versions={day: int(version) for day, version, _ in rows},
        )

    async def versions(self, days: Sequence[dt.date]) -> dict[dt.date, int]:
        """The current version of each day (0 for a day never cached)."""
        async with self._db.cache_connection() as conn:
            cur = await conn.execute(
                f"SELECT day, version FROM {SCHEMA}.daily_usage WHERE day = ANY(%s)", (list(days),)
            )
            known = {day: int(version) for day, version in await cur.fetchall()}
        return {day: known.get(day, 0) for day in days}

    def _to_day_usage(self, day: dt.date, aggregates: bytes, complete: bool, version: int) -> DayUsage:
        """The stored payload, with the row's own flags (the bytes are reused as they are when they agree)."""
        usage = DayUsage.from_payload(self._codec.decode(aggregates))
        same = (usage.day, usage.is_complete, usage.version) == (day, complete, version)
        return replace(usage, is_complete=complete, version=int(version), encoded=aggregates if same else None)

    async def all_versions(self) -> dict[dt.date, int]:
        async with self._db.cache_connection() as conn:
            cur = await conn.execute(f"SELECT day, version FROM {SCHEMA}.daily_usage")
            return {day: int(version) for day, version in await cur.fetchall()}
