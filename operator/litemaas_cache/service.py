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
from typing import Any

from .analytics import Page, analytics_document, breakdown_items, paginate, top_key, users_needed
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
from .source import key_alias, keys_with_aliases, load_users
from .vocabulary import CodedColumn, Dimension


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

    async def analytics(self, query: AnalyticsQuery) -> Answer:
        """The admin analytics document for a validated query."""
        await self._freshness.check_if_due()
        current, previous = query.range, query.range.previous()

        async def compute() -> Computed:
            summary, fetch = await self._summarise(current, previous, query.filters, per_day=True)
            async with self._db.cache_connection() as conn:
                users = await load_users(conn, users_needed(summary, None))
                alias = await key_alias(conn, top_key(summary))
            document = await asyncio.to_thread(analytics_document, current, summary, users, alias)
            return self._computed(document, fetch)

        covered = DateRange(previous.start, current.end)
        return await self._results.get(self._job("analytics", query, covered, compute))

    async def breakdown(self, dimension: Dimension, query: AnalyticsQuery, page: Page) -> Answer:
        """One page of a by-user / by-model / by-provider breakdown (the full list is what gets cached)."""
        await self._freshness.check_if_due()

        async def compute() -> Computed:
            summary, fetch = await self._summarise(query.range, None, query.filters, per_day=False)
            async with self._db.cache_connection() as conn:
                users = await load_users(conn, users_needed(summary, dimension))
            items = await asyncio.to_thread(breakdown_items, dimension, summary, users)
            return self._computed(items, fetch)

        kind: ResultKind = f"by-{dimension}"  # type: ignore[assignment]
        answer = await self._results.get(self._job(kind, query, query.range, compute))
        return Answer(paginate(dimension, query.range, answer.value, page), answer.tier, answer.keys_written)

    def _job(self, kind: ResultKind, query: AnalyticsQuery, covered: DateRange, compute: Any) -> ResultJob:
        ttl = self._settings.ttl_analytics if kind == "analytics" else self._settings.ttl_breakdown
        if self._days.is_current(query.range.end):
            ttl = min(ttl, self._settings.ttl_current_day)
        return ResultJob(self._keys.result(kind, query.range, query.filters.fingerprint()), ttl, covered, compute)

    @staticmethod
    def _computed(value: Any, fetch: DayFetch) -> Computed:
        return Computed(value, fetch.versions, fetch.tier, fetch.redis_written)

    async def _summarise(
        self, current: DateRange, previous: DateRange | None, filters: UsageFilters, *, per_day: bool
    ) -> tuple[RangeSummary, DayFetch]:
        """Fold the range (and the previous period) chunk by chunk, holding one chunk (and the next) at a time."""
        covered = [*current, *(previous or ())]
        async with self._slots:
            where = await self.code_filter(filters)
            accumulator = RangeAccumulator(current, previous, where, per_day=per_day)
            fetch = DayFetch()
            async for chunk in self._days.stream(covered, fetch, accumulator.needs_columns):
                await asyncio.to_thread(accumulator.add, chunk)
            async with self._db.cache_connection() as conn:
                await self._dictionary.learn_codes(conn, await asyncio.to_thread(accumulator.codes))
            summary = await asyncio.to_thread(accumulator.summary, self._dictionary)
        return summary, fetch

    async def code_filter(self, filters: UsageFilters) -> CodeFilter:
        """The filters as dictionary codes; an API-key filter also matches the keys whose alias it names."""
        if filters.is_empty():
            return CodeFilter()
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
        return CodeFilter(**codes)
