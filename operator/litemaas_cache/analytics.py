"""The admin analytics document and the breakdowns, built from a range's folded aggregates (pure; no I/O).

engine.py reduces a range to a RangeSummary at (user, key, model, provider) grain; everything here groups that
summary (tens of thousands of cells at most, whatever the range's length) and shapes the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from .dates import DateRange
from .engine import RangeSummary, distinct_active
from .errors import InvalidRequest
from .frames import SUMS
from .source import UserInfo
from .vocabulary import Dimension

TOP_MODELS = 10
TOP_USERS = 5
MAX_PAGE_SIZE = 500


def money(value: float) -> float:
    return round(value, 6)


def success_rate(successful: int, requests: int) -> float:
    return round(100.0 * successful / requests, 2) if requests else 0.0


def metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """The metric fields of a row of sums."""
    return {
        "requests": row["requests"],
        "successfulRequests": row["successful"],
        "failedRequests": row["failed"],
        "totalTokens": row["prompt"] + row["completion"],
        "promptTokens": row["prompt"],
        "completionTokens": row["completion"],
        "cost": money(row["spend"]),
        "successRate": success_rate(row["successful"], row["requests"]),
    }


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


def _ranked(frame: pl.DataFrame, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows by requests, then spend (descending), then name: a stable order for ties."""
    ordered = frame.sort(["requests", "spend", name], descending=[True, True, False], nulls_last=True)
    return (ordered if limit is None else ordered.head(limit)).to_dicts()


def _user_fields(user_id: str, users: Mapping[str, UserInfo]) -> dict[str, Any]:
    info = users.get(user_id)
    return {"userId": user_id, "username": info.username if info else user_id, "email": info.email if info else None}


def _by_model(grain: pl.DataFrame) -> pl.DataFrame:
    """Per model: sums, distinct active users, and the provider that served most of its requests."""
    return grain.group_by("model").agg(
        *SUMS,
        distinct_active("user").alias("users"),
        pl.col("provider").sort_by(["requests", "provider"], descending=[True, False]).first(),
    )


def users_needed(summary: RangeSummary, dimension: Dimension | None) -> list[str]:
    """The users whose name and email the answer shows: all of a by-user breakdown, else the top users."""
    by_user = summary.grain.group_by("user").agg(SUMS)
    if dimension == "user":
        return by_user["user"].to_list()
    if dimension is None:
        return [row["user"] for row in _ranked(by_user, "user", TOP_USERS)]
    return []


def top_key(summary: RangeSummary) -> str | None:
    """The API key with the most requests (ties: spend, then key)."""
    ranked = _ranked(summary.grain.group_by("key").agg(SUMS), "key", 1)
    return ranked[0]["key"] if ranked else None


def analytics_document(
    days: DateRange, summary: RangeSummary, users: Mapping[str, UserInfo], key_alias: str | None
) -> dict[str, Any]:
    """The full admin analytics document (camelCase) for `days`."""
    grain = summary.grain
    total = grain.select(SUMS).row(0, named=True)
    active_users = grain.select(distinct_active("user")).item()
    by_user = grain.group_by("user").agg(*SUMS, distinct_active("model").alias("models"))
    by_model = _by_model(grain)
    by_provider = grain.group_by("provider").agg(SUMS)
    by_key = grain.group_by("key").agg(*SUMS, pl.col("user").first())
    previous = summary.previous_totals

    def user_entry(row: dict[str, Any]) -> dict[str, Any]:
        return {
            **_user_fields(row["user"], users),
            "requests": row["requests"],
            "totalTokens": row["prompt"] + row["completion"],
            "cost": money(row["spend"]),
            "models": row["models"],
        }

    def model_entry(row: dict[str, Any]) -> dict[str, Any]:
        return {"model": row["model"], "provider": row["provider"], **metrics(row), "users": row["users"]}

    def spend_by(frame: pl.DataFrame, name: str) -> dict[str, float]:
        return {n: money(v) for n, v in frame.sort(name).select(name, "spend").iter_rows()}

    top_user = _ranked(by_user, "user", 1)
    top_model = _ranked(by_model, "model", 1)
    top_key = _ranked(by_key, "key", 1)
    total_tokens, previous_tokens = total["prompt"] + total["completion"], previous["prompt"] + previous["completion"]
    daily = {row["day"]: row for row in summary.daily.iter_rows(named=True)}
    empty_day = {**dict.fromkeys(("requests", "successful", "failed", "prompt", "completion"), 0), "spend": 0.0}
    return {
        "period": period(days),
        "totalUsers": by_user.height,
        "activeUsers": active_users,
        "totalRequests": total["requests"],
        "totalTokens": {"total": total_tokens, "prompt": total["prompt"], "completion": total["completion"]},
        "totalCost": {
            "total": money(total["spend"]),
            "byProvider": spend_by(by_provider, "provider"),
            "byModel": spend_by(by_model, "model"),
            "byUser": spend_by(by_user, "user"),
        },
        "successRate": success_rate(total["successful"], total["requests"]),
        "topMetrics": {
            "topUser": user_entry(top_user[0]) if top_user else None,
            "topModel": model_entry(top_model[0]) if top_model else None,
            "topApiKey": {
                "apiKey": top_key[0]["key"],
                "keyAlias": key_alias,
                "userId": top_key[0]["user"],
                "requests": top_key[0]["requests"],
                "cost": money(top_key[0]["spend"]),
            }
            if top_key
            else None,
        },
        "trends": {
            "requests": trend(total["requests"], previous["requests"]),
            "cost": trend(money(total["spend"]), money(previous["spend"])),
            "users": trend(active_users, summary.previous_active_users),
            "totalTokens": trend(total_tokens, previous_tokens),
            "promptTokens": trend(total["prompt"], previous["prompt"]),
            "completionTokens": trend(total["completion"], previous["completion"]),
        },
        "dailyUsage": [
            {
                "date": day.isoformat(),
                **metrics(daily.get(day, empty_day)),
                "activeUsers": daily[day]["activeUsers"] if day in daily else 0,
            }
            for day in days
        ],
        "dailyModelUsage": [
            {
                "date": row["day"].isoformat(),
                "model": row["model"],
                "provider": row["provider"],
                "requests": row["requests"],
                "totalTokens": row["prompt"] + row["completion"],
                "promptTokens": row["prompt"],
                "completionTokens": row["completion"],
                "cost": money(row["spend"]),
            }
            for row in summary.daily_models.sort("day", "model", "provider").iter_rows(named=True)
        ],
        "topModels": [model_entry(row) for row in _ranked(by_model, "model", TOP_MODELS)],
        "topUsers": [user_entry(row) for row in _ranked(by_user, "user", TOP_USERS)],
    }


def breakdown_items(dimension: Dimension, summary: RangeSummary, users: Mapping[str, UserInfo]) -> list[dict[str, Any]]:
    """Every item of a by-user / by-model / by-provider breakdown, unpaginated and unsorted."""
    grain = summary.grain
    if dimension == "user":
        frame = grain.group_by("user").agg(
            *SUMS, distinct_active("model").alias("models"), distinct_active("key").alias("apiKeys")
        )
        return [
            {**_user_fields(row["user"], users), **metrics(row), "models": row["models"], "apiKeys": row["apiKeys"]}
            for row in frame.iter_rows(named=True)
        ]
    if dimension == "model":
        return [
            {"model": row["model"], "provider": row["provider"], **metrics(row), "users": row["users"]}
            for row in _by_model(grain).iter_rows(named=True)
        ]
    frame = grain.group_by("provider").agg(
        *SUMS, distinct_active("model").alias("models"), distinct_active("user").alias("users")
    )
    return [
        {"provider": row["provider"], **metrics(row), "models": row["models"], "users": row["users"]}
        for row in frame.iter_rows(named=True)
    ]


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
