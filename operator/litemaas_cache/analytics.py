"""Admin analytics and breakdowns computed from day aggregates (pure functions; no I/O)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal

from .aggregates import DayUsage, RowFilter, UsageRow
from .dates import DateRange
from .errors import InvalidRequest
from .filters import UsageFilters
from .hotpath import gc_paused
from .source import UserInfo

Dimension = Literal["user", "model", "provider"]
DIMENSIONS: tuple[Dimension, ...] = ("user", "model", "provider")
TOP_MODELS = 10
TOP_USERS = 5
MAX_PAGE_SIZE = 500


@dataclass
class Tally:
    """Running sums of the usage metrics."""

    requests: int = 0
    successful: int = 0
    failed: int = 0
    prompt: int = 0
    completion: int = 0
    spend: float = 0.0
    users: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.successful += row.successful
        self.failed += row.failed
        self.prompt += row.prompt_tokens
        self.completion += row.completion_tokens
        self.spend += row.spend
        if row.requests > 0:
            self.users.add(row.user_id)
            self.models.add(row.model)
            self.keys.add(row.api_key)

    def absorb(self, other: Tally) -> None:
        """Add another tally's sums (its sets are not merged)."""
        self.requests += other.requests
        self.successful += other.successful
        self.failed += other.failed
        self.prompt += other.prompt
        self.completion += other.completion
        self.spend += other.spend

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion

    @property
    def success_rate(self) -> float:
        return round(100.0 * self.successful / self.requests, 2) if self.requests else 0.0

    def metrics(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "successfulRequests": self.successful,
            "failedRequests": self.failed,
            "totalTokens": self.tokens,
            "promptTokens": self.prompt,
            "completionTokens": self.completion,
            "cost": money(self.spend),
            "successRate": self.success_rate,
        }


def money(value: float) -> float:
    return round(value, 6)


def trend(current: float, previous: float) -> dict[str, Any]:
    """LiteMaaS's trend shape: the change against the previous period of equal length."""
    if previous:
        change = round(100.0 * (current - previous) / previous, 2)
    else:
        change = 100.0 if current else 0.0
    direction = "up" if current > previous else "down" if current < previous else "stable"
    return {"current": current, "previous": previous, "percentageChange": change, "direction": direction}


def period(days: DateRange) -> dict[str, Any]:
    return {"startDate": days.start.isoformat(), "endDate": days.end.isoformat(), "days": days.days}


def _sorted_top(tallies: Mapping[str, Tally], limit: int | None = None) -> list[tuple[str, Tally]]:
    ranked = sorted(tallies.items(), key=lambda kv: (-kv[1].requests, -kv[1].spend, kv[0]))
    return ranked if limit is None else ranked[:limit]


@dataclass
class RangeSums:
    """One pass over a range's day aggregates: rows merged across days, plus the per-day views."""

    rows: list[UsageRow]
    by_day: dict[dt.date, Tally]
    by_day_model: dict[tuple[dt.date, str, str], Tally]


def sum_range(days: Iterable[DayUsage], keep: RowFilter, *, per_day: bool = True) -> RangeSums:
    """Merge the kept rows of every day at (user, key, model, provider) grain; with `per_day`, also total each day
    and each day x model.

    This is the hot loop of a cold analytics read (one iteration per row of every day), so it works on plain lists
    and locals; everything else is then derived from the much smaller merged rows. The grain sum is merge_rows'
    inlined: a separate merge_rows pass over the kept rows made compute_analytics 40% slower (2.2 s -> 3.1 s on
    2M rows), so the two stay apart on purpose and the property tests hold them to the same result.
    """
    grain: dict[tuple[str, str, str, str], list[Any]] = {}
    by_day: dict[dt.date, Tally] = {}
    by_day_model: dict[tuple[dt.date, str, str], Tally] = {}
    everything = keep.keeps_everything
    for usage in days:
        day_cells: dict[tuple[str, str], list[Any]] = {}
        users: set[str] = set()
        for row in usage.rows:
            if not everything and not keep(row):
                continue
            user, key, _, model, provider, prompt, completion, requests, successful, failed, spend = row
            cell = grain.get((user, key, model, provider))
            if cell is None:
                grain[(user, key, model, provider)] = list(row)
            else:
                cell[5] += prompt
                cell[6] += completion
                cell[7] += requests
                cell[8] += successful
                cell[9] += failed
                cell[10] += spend
            if not per_day:
                continue
            if requests > 0:
                users.add(user)
            day_cell = day_cells.get((model, provider))
            if day_cell is None:
                day_cells[(model, provider)] = [requests, successful, failed, prompt, completion, spend]
            else:
                day_cell[0] += requests
                day_cell[1] += successful
                day_cell[2] += failed
                day_cell[3] += prompt
                day_cell[4] += completion
                day_cell[5] += spend
        if not per_day:
            continue
        day_total = Tally(users=users)
        for (model, provider), cell in day_cells.items():
            tally = Tally(*cell)
            by_day_model[(usage.day, model, provider)] = tally
            day_total.absorb(tally)
        by_day[usage.day] = day_total
    return RangeSums([UsageRow(*cell) for cell in grain.values()], by_day, by_day_model)


@gc_paused()
def compute_analytics(
    days: DateRange,
    filters: UsageFilters,
    current: Iterable[DayUsage],
    previous: Iterable[DayUsage],
    users: Mapping[str, UserInfo],
) -> dict[str, Any]:
    """The full admin analytics document (camelCase) for `days` under `filters`."""
    keep = RowFilter(filters)
    sums = sum_range(current, keep)
    total = Tally()
    by_user: dict[str, Tally] = defaultdict(Tally)
    by_model: dict[str, Tally] = defaultdict(Tally)
    by_provider: dict[str, Tally] = defaultdict(Tally)
    by_key: dict[str, Tally] = defaultdict(Tally)
    model_provider: dict[str, str] = {}
    key_info: dict[str, tuple[str | None, str]] = {}
    for row in sums.rows:
        total.add(row)
        by_user[row.user_id].add(row)
        by_model[row.model].add(row)
        by_provider[row.provider].add(row)
        by_key[row.api_key].add(row)
        model_provider.setdefault(row.model, row.provider)
        key_info.setdefault(row.api_key, (row.key_alias, row.user_id))
    by_day = {day: sums.by_day.get(day, Tally()) for day in days}

    prev = Tally()
    for row in sum_range(previous, keep, per_day=False).rows:
        prev.add(row)

    def user_entry(user_id: str, tally: Tally) -> dict[str, Any]:
        info = users.get(user_id)
        return {
            "userId": user_id,
            "username": info.username if info else user_id,
            "email": info.email if info else None,
            "requests": tally.requests,
            "totalTokens": tally.tokens,
            "cost": money(tally.spend),
            "models": len(tally.models),
        }

    def model_entry(model: str, tally: Tally) -> dict[str, Any]:
        return {"model": model, "provider": model_provider[model], **tally.metrics(), "users": len(tally.users)}

    top_user = _sorted_top(by_user, 1)
    top_model = _sorted_top(by_model, 1)
    top_key = _sorted_top(by_key, 1)
    return {
        "period": period(days),
        "totalUsers": len(by_user),
        "activeUsers": len(total.users),
        "totalRequests": total.requests,
        "totalTokens": {"total": total.tokens, "prompt": total.prompt, "completion": total.completion},
        "totalCost": {
            "total": money(total.spend),
            "byProvider": {name: money(t.spend) for name, t in sorted(by_provider.items())},
            "byModel": {name: money(t.spend) for name, t in sorted(by_model.items())},
            "byUser": {name: money(t.spend) for name, t in sorted(by_user.items())},
        },
        "successRate": total.success_rate,
        "topMetrics": {
            "topUser": user_entry(*top_user[0]) if top_user else None,
            "topModel": model_entry(*top_model[0]) if top_model else None,
            "topApiKey": {
                "apiKey": top_key[0][0],
                "keyAlias": key_info[top_key[0][0]][0],
                "userId": key_info[top_key[0][0]][1],
                "requests": top_key[0][1].requests,
                "cost": money(top_key[0][1].spend),
            }
            if top_key
            else None,
        },
        "trends": {
            "requests": trend(total.requests, prev.requests),
            "cost": trend(money(total.spend), money(prev.spend)),
            "users": trend(len(total.users), len(prev.users)),
            "totalTokens": trend(total.tokens, prev.tokens),
            "promptTokens": trend(total.prompt, prev.prompt),
            "completionTokens": trend(total.completion, prev.completion),
        },
        "dailyUsage": [
            {"date": day.isoformat(), **tally.metrics(), "activeUsers": len(tally.users)}
            for day, tally in sorted(by_day.items())
        ],
        "dailyModelUsage": [
            {
                "date": day.isoformat(),
                "model": model,
                "provider": provider,
                "requests": t.requests,
                "totalTokens": t.tokens,
                "promptTokens": t.prompt,
                "completionTokens": t.completion,
                "cost": money(t.spend),
            }
            for (day, model, provider), t in sorted(sums.by_day_model.items())
        ],
        "topModels": [model_entry(m, t) for m, t in _sorted_top(by_model, TOP_MODELS)],
        "topUsers": [user_entry(u, t) for u, t in _sorted_top(by_user, TOP_USERS)],
    }


@gc_paused()
def compute_breakdown(
    dimension: Dimension,
    filters: UsageFilters,
    current: Iterable[DayUsage],
    users: Mapping[str, UserInfo],
) -> list[dict[str, Any]]:
    """Every item of a by-user / by-model / by-provider breakdown, unpaginated and unsorted."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    providers: dict[str, str] = {}
    keep = RowFilter(filters)
    everything = keep.keeps_everything
    name_of = attrgetter({"user": "user_id", "model": "model", "provider": "provider"}[dimension])
    for usage in current:
        for row in usage.rows:
            if everything or keep(row):
                tallies[name_of(row)].add(row)  # one Tally per row: cheaper than a merge for one dimension
                providers.setdefault(row.model, row.provider)
    items = []
    for name, tally in tallies.items():
        item: dict[str, Any]
        if dimension == "user":
            info = users.get(name)
            item = {
                "userId": name,
                "username": info.username if info else name,
                "email": info.email if info else None,
                **tally.metrics(),
                "models": len(tally.models),
                "apiKeys": len(tally.keys),
            }
        elif dimension == "model":
            item = {"model": name, "provider": providers[name], **tally.metrics(), "users": len(tally.users)}
        else:
            item = {"provider": name, **tally.metrics(), "models": len(tally.models), "users": len(tally.users)}
        items.append(item)
    return items


BREAKDOWN_SORT_FIELDS = ("requests", "cost", "totalTokens", "promptTokens", "completionTokens", "successRate")


@dataclass(frozen=True)
class Page:
    number: int = 1
    size: int = 50
    sort_by: str = "requests"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.number < 1:
            raise InvalidRequest("page", f"{self.number} is not a page number (1 or more)")
        if not 1 <= self.size <= MAX_PAGE_SIZE:
            raise InvalidRequest("pageSize", f"{self.size} is outside 1..{MAX_PAGE_SIZE}")
        if self.sort_by not in (*BREAKDOWN_SORT_FIELDS, "name"):
            allowed = ", ".join((*BREAKDOWN_SORT_FIELDS, "name"))
            raise InvalidRequest("sortBy", f"{self.sort_by!r} is not one of {allowed}")


def paginate(dimension: Dimension, days: DateRange, items: Sequence[dict[str, Any]], page: Page) -> dict[str, Any]:
    """Sort and cut one page of a breakdown; ties break on the item's name so pages are stable."""
    name_field = {"user": "userId", "model": "model", "provider": "provider"}[dimension]
    if page.sort_by == "name":
        ordered = sorted(items, key=lambda i: i[name_field], reverse=page.descending)
    else:
        ordered = sorted(items, key=lambda i: i[name_field])
        ordered.sort(key=lambda i: i[page.sort_by], reverse=page.descending)
    first = (page.number - 1) * page.size
    return {
        "period": period(days),
        "dimension": dimension,
        "items": ordered[first : first + page.size],
        "pagination": {
            "page": page.number,
            "pageSize": page.size,
            "total": len(ordered),
            "totalPages": (len(ordered) + page.size - 1) // page.size,
        },
        "sortBy": page.sort_by,
        "sortOrder": "desc" if page.descending else "asc",
    }
