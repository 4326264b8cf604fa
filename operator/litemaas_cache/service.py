"""The analytics service: the read path of an analytics document or a breakdown, top to bottom.

    query -> source freshness (at most every CACHE_FRESHNESS_CHECK_MINUTES: days whose rows changed are invalidated)
          -> result cache (Redis result entry, single flight, lease lock)
          -> on a miss: the covered days, chunk by chunk, through the tiered day store (Redis -> PostgreSQL -> source)
          -> each chunk folded by the columnar engine in a worker thread
          -> the document built from the folded range, stored back as a result entry

At most ANALYTICS_MAX_CONCURRENT computations run at once in a process; the rest queue, and the event loop stays
free for health checks and Redis hits meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from .analytics import (
    Labels,
    Page,
    TrendRule,
    active_users,
    analytics_document,
    breakdown_rows,
    filter_options,
    keys_needed,
    paginate,
    users_needed,
)
from .dates import DateRange
from .day_store import DayFetch, TieredDayStore
from .db import Database
from .dictionary import DimensionDictionary
from .engine import CodeFilter, RangeAccumulator, RangeSummary
from .filters import AnalyticsQuery, UsageFilters
from .freshness import SourceFreshness
from .redis_tier.keys import KeySpace, ResultKind
from .result_cache import Answer, Computed, ResultCache, ResultJob
from .settings import Settings
from .source import count_users, key_aliases, keys_with_aliases, load_users
from .vocabulary import CodedColumn, ContentEncoding, Dimension

_BREAKDOWN_KINDS: dict[Dimension, ResultKind] = {"user": "by-user", "model": "by-model", "provider": "by-provider"}


class AnalyticsService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        keys: KeySpace,
        results: ResultCache,
        days: TieredDayStore,
        dictionary: DimensionDictionary,
        freshness: SourceFreshness,
    ) -> None:
        self._settings = settings
        self._db = db
        self._keys = keys
        self._results = results
        self._days = days
        self._dictionary = dictionary
        self._freshness = freshness
        self._slots = asyncio.Semaphore(settings.max_concurrent_computations)

    async def analytics(self, query: AnalyticsQuery, encoding: ContentEncoding = "zstd") -> Answer:
        """The admin analytics document for a validated query (a Redis hit is fetched in its stored `encoding`)."""
        await self._freshness.check_if_due()
        current, previous = query.range, query.range.previous()

        async def compute() -> Computed:
            summary, fetch = await self._summarise(current, previous, query.filters, per_day=True)
            labels = await self.labels(summary, None, query.filters)
            document = await asyncio.to_thread(analytics_document, current, summary, labels, self.trend_rule)
            return self._computed(document, fetch)

        covered = DateRange(previous.start, current.end)
        return await self._results.get(self._job("analytics", query, covered, compute), encoding)

    async def breakdown(
        self, dimension: Dimension, query: AnalyticsQuery, page: Page, encoding: ContentEncoding = "zstd"
    ) -> Answer:
        """One page of a by-user / by-model / by-provider breakdown. The full list is cached, and so is each page
        cut from it, so a page asked again is served as stored instead of decoding the full list again."""
        page.check(dimension)
        await self._freshness.check_if_due()

        async def compute() -> Computed:
            rows = await self.rows(dimension, query, counted=False)
            document = await asyncio.to_thread(lambda: paginate(dimension, rows.value, page))
            return Computed(document, rows.versions, rows.tier, rows.keys_written)

        job = self._job(_BREAKDOWN_KINDS[dimension], query, query.range, compute, page.fingerprint)
        return await self._results.get(replace(job, derived=True), encoding)

    async def rows(self, dimension: Dimension, query: AnalyticsQuery, *, counted: bool = True) -> Answer:
        """Every row of a breakdown, unpaginated and unsorted: the list its pages and the export are cut from
        (`counted`: False when looked up for a page, whose own lookup counts the request)."""
        await self._freshness.check_if_due()

        async def compute() -> Computed:
            summary, fetch = await self._summarise(query.range, None, query.filters, per_day=False)
            labels = await self.labels(summary, dimension)
            rows = await asyncio.to_thread(breakdown_rows, dimension, summary, labels)
            return self._computed(rows, fetch)

        job = self._job(_BREAKDOWN_KINDS[dimension], query, query.range, compute)
        return await self._results.get(replace(job, counted=counted))

    async def filter_options(self, days: DateRange, encoding: ContentEncoding = "zstd") -> Answer:
        """The models and users with usage in `days`, to choose filters from."""
        await self._freshness.check_if_due()
        query = AnalyticsQuery(start_date=days.start, end_date=days.end)

        async def compute() -> Computed:
            summary, fetch = await self._summarise(days, None, query.filters, per_day=False)
            labels = await self._labels(active_users(summary), [])
            return self._computed(await asyncio.to_thread(filter_options, summary, labels), fetch)

        return await self._results.get(self._job("filter-options", query, days, compute), encoding)

    @property
    def trend_rule(self) -> TrendRule:
        return TrendRule(self._settings.trend_stable_percent, self._settings.trend_precision)

    async def labels(
        self, summary: RangeSummary, dimension: Dimension | None, filters: UsageFilters | None = None
    ) -> Labels:
        """What the analytics document (dimension None, with its filters) or a breakdown shows of LiteMaaS's users
        and keys."""
        total_users_of = (filters, summary) if dimension is None and filters is not None else None
        return await self._labels(users_needed(summary, dimension), keys_needed(summary, dimension), total_users_of)

    async def _labels(
        self,
        users: list[str],
        keys: list[str],
        total_users_of: tuple[UsageFilters, RangeSummary] | None = None,
    ) -> Labels:
        """What LiteMaaS's users and api_keys tables say about the users and keys the answer shows (and, for the
        analytics document, how many users there are: see count_users)."""
        async with self._db.cache_connection() as conn:
            known = await load_users(conn, users)
            aliases = await key_aliases(conn, keys)
            total = None
            if total_users_of is not None:
                filters, summary = total_users_of
                total = await count_users(conn, filters.user_ids, active_users(summary))
        return Labels(known, aliases, total)

    def _job(
        self, kind: ResultKind, query: AnalyticsQuery, covered: DateRange, compute: Any, part: str = ""
    ) -> ResultJob:
        """The result job of a query; `part` names a piece of the result (a breakdown page) cached on its own."""
        # filter options share the breakdowns' TTL: both are lists read alongside the analytics document
        ttl = self._settings.ttl_analytics if kind == "analytics" else self._settings.ttl_breakdown
        if self._days.is_current(query.range.end):
            ttl = min(ttl, self._settings.ttl_current_day)
        fingerprint = query.filters.fingerprint() + (f"-{part}" if part else "")
        return ResultJob(self._keys.result(kind, query.range, fingerprint), ttl, covered, compute)

    @staticmethod
    def _computed(value: Any, fetch: DayFetch) -> Computed:
        return Computed(value, fetch.versions, fetch.tier, fetch.redis_written)

    async def _summarise(
        self, current: DateRange, previous: DateRange | None, filters: UsageFilters, *, per_day: bool
    ) -> tuple[RangeSummary, DayFetch]:
        """Fold the range (and the previous period) chunk by chunk, holding one chunk (and the next) at a time."""
        covered = [*current, *(previous or ())]
        async with self._slots:
            where, complete = await self.code_filter(filters)
            accumulator = RangeAccumulator(current, previous, where, per_day=per_day)
            fetch = DayFetch()
            async for chunk in self._days.stream(covered, fetch, accumulator.needs_columns):
                if not complete:
                    # A filter value without a code yet (never seen in any cached day): the chunk just fetched from
                    # the source may have registered it. Codes are append-only, so every earlier chunk rightly
                    # matched nothing for it.
                    where, complete = await self.code_filter(filters)
                    accumulator.filter_by(where)
                await asyncio.to_thread(accumulator.add, chunk)
            async with self._db.cache_connection() as conn:
                await self._dictionary.learn_codes(conn, await asyncio.to_thread(accumulator.codes))
            summary = await asyncio.to_thread(accumulator.summary, self._dictionary)
        return summary, fetch

    async def code_filter(self, filters: UsageFilters) -> tuple[CodeFilter, bool]:
        """The filters as dictionary codes (an API-key filter also matches the keys whose alias it names), and
        whether every value asked for has a code (else a day still to be fetched from the source may give it one)."""
        if filters.is_empty():
            return CodeFilter(), True
        async with self._db.cache_connection() as conn:
            aliased = await keys_with_aliases(conn, filters.api_key_ids)
            asked: dict[CodedColumn, list[str]] = {
                "user": filters.user_ids,
                "key": [*filters.api_key_ids, *aliased],
                "model": filters.model_ids,
                "provider": filters.provider_ids,
            }
            wanted = {column: values for column, values in asked.items() if values}
            await self._dictionary.learn_values(conn, wanted)
        codes = {column: tuple(self._dictionary.codes_of(column, values)) for column, values in wanted.items()}
        complete = all(len(codes[column]) == len(set(values)) for column, values in wanted.items())
        return CodeFilter(**codes), complete
