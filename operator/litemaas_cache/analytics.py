"""The admin analytics document, the breakdown rows and the filter options, in LiteMaaS's wire shapes, built from a
range's folded aggregates (pure; no I/O). webapi/models.py declares these shapes; this module fills them.

engine.py reduces a range to a RangeSummary at (user, key, model, provider) grain; everything here groups that
summary (tens of thousands of cells at most, whatever the range's length) and shapes the answer. Where LiteMaaS
computes something wrongly, this does it right; docs/litemaas-compatibility.md lists each difference.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from .dates import DateRange
from .engine import RangeSummary, distinct_active
from .errors import InvalidRequest
from .frames import ACTIVE, SUMS
from .source import UserInfo
from .vocabulary import (
    DEFAULT_ROLE,
    UNKNOWN_USER_EMAIL,
    UNKNOWN_USER_ID,
    UNKNOWN_USERNAME,
    UNMAPPED_USER_ID,
    Dimension,
)

TOP_MODELS = 10
TOP_USERS = 5
MAX_PAGE_LIMIT = 200
# Far beyond any breakdown's last page (a row per user, model or provider), and small enough for a JSON integer.
MAX_PAGE_NUMBER = 1_000_000
DEFAULT_PAGE_LIMIT = 50
DEFAULT_SORT = "totalTokens"

Row = dict[str, Any]
_METRIC_SORTS: dict[str, Callable[[Row], Any]] = {
    "totalRequests": lambda r: r["metrics"]["requests"],
    "totalTokens": lambda r: r["metrics"]["tokens"]["total"],
    "promptTokens": lambda r: r["metrics"]["tokens"]["prompt"],
    "completionTokens": lambda r: r["metrics"]["tokens"]["completion"],
    "totalCost": lambda r: r["metrics"]["cost"],
}
_NAME_SORTS: dict[Dimension, tuple[str, Callable[[Row], Any]]] = {
    "user": ("username", lambda r: r["username"].casefold()),
    "model": ("modelName", lambda r: r["modelName"].casefold()),
    "provider": ("providerName", lambda r: r["provider"].casefold()),
}
SORT_FIELDS: dict[Dimension, tuple[str, ...]] = {
    dimension: (*_METRIC_SORTS, name) for dimension, (name, _) in _NAME_SORTS.items()
}
"""The sortBy values of each breakdown (LiteMaaS's; names compare case-insensitively)."""
_IDENTITY = {"user": "userId", "model": "modelId", "provider": "provider"}


def money(value: float) -> float:
    return round(value, 6)


def success_rate(successful: int, requests: int) -> float:
    """Successful requests as a percentage of all requests (0 when there are none), unrounded as LiteMaaS sends it."""
    return 100.0 * successful / requests if requests else 0.0


def tokens(row: Mapping[str, Any]) -> dict[str, int]:
    return {"total": row["prompt"] + row["completion"], "prompt": row["prompt"], "completion": row["completion"]}


def _day_start(day: dt.date | None) -> str | None:
    """A day as the ISO timestamp of its UTC midnight (LiteMaaS's lastActive / lastUsed)."""
    return None if day is None else f"{day.isoformat()}T00:00:00.000Z"


@dataclass(frozen=True)
class TrendRule:
    """LiteMaaS's trend rule: |change| within `stable_percent` is stable; the change is sent rounded."""

    stable_percent: float = 1.0
    precision: int = 2

    def trend(self, metric: str, current: float, previous: float) -> dict[str, Any]:
        """The change against the previous period; a previous value of 0 gives 100 % up (or 0 % stable)."""
        if not previous:
            change = 100.0 if current else 0.0
            direction = "up" if current else "stable"
        else:
            change = 100.0 * (current - previous) / previous
            direction = "stable" if abs(change) <= self.stable_percent else "up" if change > 0 else "down"
        return {
            "metric": metric,
            "current": current,
            "previous": previous,
            "percentageChange": round(change, self.precision),
            "direction": direction,
        }


@dataclass(frozen=True)
class Labels:
    """What LiteMaaS's tables say about the ids in a summary: users, key aliases, and the users it knows."""

    users: Mapping[str, UserInfo] = field(default_factory=dict)
    key_aliases: Mapping[str, str] = field(default_factory=dict)
    total_users: int | None = None  # the analytics document's totalUsers (see count_users)

    def user(self, user_id: str) -> dict[str, str]:
        """userId, username, email and role as LiteMaaS shows them; our unmapped user is its Unknown User."""
        if user_id == UNMAPPED_USER_ID:
            return {
                "userId": UNKNOWN_USER_ID,
                "username": UNKNOWN_USERNAME,
                "email": UNKNOWN_USER_EMAIL,
                "role": DEFAULT_ROLE,
            }
        info = self.users.get(user_id)
        return {
            "userId": user_id,
            "username": (info.username if info else None) or user_id,
            "email": (info.email if info else None) or "",
            "role": (info.role if info else None) or DEFAULT_ROLE,
        }

    def key_alias(self, key: str) -> str:
        """The key's LiteLLM alias, else its hash (what an apiKeyIds filter accepts for it)."""
        return self.key_aliases.get(key, key)


def _summary_numbers(row: Mapping[str, Any]) -> dict[str, Any]:
    """The five numbers of LiteMaaS's UserSummary / ModelSummary."""
    return {
        "requests": row["requests"],
        "tokens": row["prompt"] + row["completion"],
        "prompt_tokens": row["prompt"],
        "completion_tokens": row["completion"],
        "cost": money(row["spend"]),
    }


def _model_summary(row: Mapping[str, Any]) -> Row:
    return {"modelId": row["model"], "modelName": row["model"], "provider": row["provider"], **_summary_numbers(row)}


def _by_cost(frame: pl.DataFrame, name: str, limit: int | None = None) -> list[Row]:
    """Rows with requests, by spend, then requests (descending), then name: a stable order for ties."""
    ordered = frame.filter(ACTIVE).sort(["spend", "requests", name], descending=[True, True, False])
    return (ordered if limit is None else ordered.head(limit)).to_dicts()


def _with_provider(frame: pl.DataFrame, *keys: str, extra: Sequence[pl.Expr] = ()) -> pl.DataFrame:
    """Sums per `keys`, with the provider that served most of the group's requests (a model may have several)."""
    return frame.group_by(*keys).agg(
        *SUMS, *extra, pl.col("provider").sort_by(["requests", "provider"], descending=[True, False]).first()
    )


def _top_users(summary: RangeSummary) -> list[Row]:
    return _by_cost(summary.grain.group_by("user").agg(SUMS), "user", TOP_USERS)


def _top_user(by_user: pl.DataFrame) -> list[Row]:
    """LiteMaaS's topUser is never the Unknown User."""
    return _by_cost(by_user.filter(pl.col("user") != UNMAPPED_USER_ID), "user", 1)


def _top_key(summary: RangeSummary) -> list[Row]:
    by_key = summary.grain.group_by("key").agg(*SUMS, pl.col("user").first())
    return _by_cost(by_key, "key", 1)


def users_needed(summary: RangeSummary, dimension: Dimension | None) -> list[str]:
    """The users whose name, email and role the answer shows: all of a by-user breakdown, else the tops'."""
    by_user = summary.grain.group_by("user").agg(SUMS)
    if dimension == "user":
        return by_user["user"].to_list()
    if dimension is None:
        tops = [*_top_users(summary), *_top_user(by_user), *_top_key(summary)]
        return sorted({row["user"] for row in tops})
    return []


def keys_needed(summary: RangeSummary, dimension: Dimension | None) -> list[str]:
    """The API keys whose alias the answer shows: all of a by-user breakdown's, else the top key."""
    if dimension == "user":
        return summary.grain.filter(ACTIVE)["key"].unique().to_list()
    if dimension is None:
        return [row["key"] for row in _top_key(summary)]
    return []


def active_users(summary: RangeSummary) -> list[str]:
    return summary.grain.filter(ACTIVE)["user"].unique().to_list()


def analytics_document(days: DateRange, summary: RangeSummary, labels: Labels, rule: TrendRule) -> Row:
    """LiteMaaS's AnalyticsResponse for `days` (every filter, providerIds included, applies to every part)."""
    grain = summary.grain
    total = grain.select(SUMS).row(0, named=True)
    active = grain.select(distinct_active("user")).item()
    by_user = grain.group_by("user").agg(SUMS)
    by_model = _with_provider(grain, "model")
    previous = summary.previous_totals

    def user_summary(row: Row) -> Row:
        return {**labels.user(row["user"]), **_summary_numbers(row)}

    def spend_by(frame: pl.DataFrame, name: str, label: Callable[[str], str] = str) -> dict[str, float]:
        return {label(n): money(v) for n, v in frame.sort(name).select(name, "spend").iter_rows()}

    top_user, top_model, top_key = _top_user(by_user), _by_cost(by_model, "model", 1), _top_key(summary)
    total_tokens, previous_tokens = total["prompt"] + total["completion"], previous["prompt"] + previous["completion"]
    return {
        "period": {"startDate": days.start.isoformat(), "endDate": days.end.isoformat()},
        "totalUsers": active if labels.total_users is None else labels.total_users,
        "activeUsers": active,
        "totalRequests": total["requests"],
        "totalTokens": tokens(total),
        "totalCost": {
            "total": money(total["spend"]),
            "byProvider": spend_by(grain.group_by("provider").agg(SUMS), "provider"),
            "byModel": spend_by(by_model, "model"),
            "byUser": spend_by(by_user, "user", lambda user: labels.user(user)["userId"]),
        },
        "successRate": success_rate(total["successful"], total["requests"]),
        "averageLatency": 0,  # LiteLLM's daily table has no latency column
        "topMetrics": {
            "topUser": user_summary(top_user[0]) if top_user else None,
            "topModel": _model_summary(top_model[0]) if top_model else None,
            "topApiKey": _api_key_summary(top_key[0], labels) if top_key else None,
        },
        "trends": {
            f"{metric}Trend": rule.trend(metric, current, before)
            for metric, current, before in (
                ("requests", total["requests"], previous["requests"]),
                ("cost", money(total["spend"]), money(previous["spend"])),
                ("users", active, summary.previous_active_users),
                ("totalTokens", total_tokens, previous_tokens),
                ("promptTokens", total["prompt"], previous["prompt"]),
                ("completionTokens", total["completion"], previous["completion"]),
            )
        },
        "dailyUsage": [
            {"date": row["day"].isoformat(), **_summary_numbers(row)}
            for row in summary.daily.filter(ACTIVE).sort("day").iter_rows(named=True)
        ],
        "dailyModelUsage": _daily_model_usage(summary.daily_models),
        "topModels": [_model_summary(row) for row in _by_cost(by_model, "model", TOP_MODELS)],
        "topUsers": [user_summary(row) for row in _top_users(summary)],
    }


def _api_key_summary(row: Row, labels: Labels) -> Row:
    owner = labels.user(row["user"])
    return {
        "keyId": row["key"],
        "keyAlias": labels.key_alias(row["key"]),
        "userId": owner["userId"],
        "username": owner["username"],
        "requests": row["requests"],
        "tokens": row["prompt"] + row["completion"],
        "cost": money(row["spend"]),
    }


def _daily_model_usage(daily_models: pl.DataFrame) -> list[Row]:
    """Per day with requests, its models with requests, most requests first."""
    rows = _with_provider(daily_models, "day", "model").filter(ACTIVE)
    days: dict[dt.date, list[Row]] = {}
    for row in rows.sort(["day", "requests", "model"], descending=[False, True, False]).iter_rows(named=True):
        days.setdefault(row["day"], []).append(_model_summary(row))
    return [{"date": day.isoformat(), "models": models} for day, models in days.items()]


def breakdown_rows(dimension: Dimension, summary: RangeSummary, labels: Labels) -> list[Row]:
    """Every row of a by-user / by-model / by-provider breakdown, unpaginated and unsorted."""
    grain = summary.grain
    if dimension == "user":
        return _user_rows(grain, labels)
    if dimension == "model":
        frame = _with_provider(grain, "model", extra=[distinct_active("user").alias("users")])
        return [
            {
                "modelId": row["model"],
                "modelName": row["model"],
                "provider": row["provider"],
                "metrics": {**_row_metrics(row), "users": row["users"]},
            }
            for row in frame.iter_rows(named=True)
        ]
    frame = grain.group_by("provider").agg(
        *SUMS, distinct_active("model").alias("models"), distinct_active("user").alias("users")
    )
    return [
        {"provider": row["provider"], "metrics": {**_row_metrics(row), "models": row["models"], "users": row["users"]}}
        for row in frame.iter_rows(named=True)
    ]


def _row_metrics(row: Mapping[str, Any]) -> Row:
    return {
        "requests": row["requests"],
        "tokens": tokens(row),
        "cost": money(row["spend"]),
        "successRate": success_rate(row["successful"], row["requests"]),
    }


def _user_rows(grain: pl.DataFrame, labels: Labels) -> list[Row]:
    """By-user rows, each with the models and API keys the user had requests on."""
    models: dict[str, list[Row]] = {}
    for row in _with_provider(grain, "user", "model").filter(ACTIVE).sort("model").iter_rows(named=True):
        models.setdefault(row["user"], []).append(
            {
                "modelId": row["model"],
                "modelName": row["model"],
                "provider": row["provider"],
                "requests": row["requests"],
                "tokens": tokens(row),
                "cost": money(row["spend"]),
                "successRate": success_rate(row["successful"], row["requests"]),
            }
        )
    keys: dict[str, list[Row]] = {}
    by_key = grain.group_by("user", "key").agg(*SUMS, pl.col("last").max()).filter(ACTIVE).sort("key")
    for row in by_key.iter_rows(named=True):
        keys.setdefault(row["user"], []).append(
            {
                "keyId": row["key"],
                "keyAlias": labels.key_alias(row["key"]),
                "requests": row["requests"],
                "tokens": tokens(row),
                "cost": money(row["spend"]),
                "lastUsed": _day_start(row["last"]),
            }
        )
    return [
        {
            **labels.user(row["user"]),
            "metrics": {
                "requests": row["requests"],
                "tokens": tokens(row),
                "cost": money(row["spend"]),
                "models": models.get(row["user"], []),
                "apiKeys": keys.get(row["user"], []),
                "lastActive": _day_start(row["last"]),
            },
        }
        for row in grain.group_by("user").agg(*SUMS, pl.col("last").max()).iter_rows(named=True)
    ]


def filter_options(summary: RangeSummary, labels: Labels) -> Row:
    """The models (by name) and users (by username) with requests in the range: LiteMaaS's filter choices."""
    active = summary.grain.filter(ACTIVE)
    users = [labels.user(user) for user in active["user"].unique().to_list()]
    return {
        "models": [
            {"id": row["model"], "name": row["model"], "provider": row["provider"]}
            for row in _with_provider(active, "model").sort("model").iter_rows(named=True)
        ],
        "users": [
            {"userId": u["userId"], "username": u["username"], "email": u["email"]}
            for u in sorted(users, key=lambda u: (u["username"].casefold(), u["userId"]))
        ],
    }


@dataclass(frozen=True)
class Page:
    """One page of a breakdown: LiteMaaS's page (from 1), limit (1-200), sortBy and sortOrder."""

    number: int = 1
    limit: int = DEFAULT_PAGE_LIMIT
    sort_by: str = DEFAULT_SORT
    descending: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.number <= MAX_PAGE_NUMBER:
            raise InvalidRequest("page", f"{str(self.number)[:20]} is not a page number (1..{MAX_PAGE_NUMBER})")
        if not 1 <= self.limit <= MAX_PAGE_LIMIT:
            raise InvalidRequest("limit", f"{self.limit} is outside 1..{MAX_PAGE_LIMIT}")

    @property
    def fingerprint(self) -> str:
        """The page as part of a cache key (no ':' in it)."""
        return f"p{self.number}-l{self.limit}-{self.sort_by}-{'desc' if self.descending else 'asc'}"

    def check(self, dimension: Dimension) -> Page:
        """This page, when its sortBy is one of the breakdown's fields; else InvalidRequest naming sortBy."""
        if self.sort_by not in SORT_FIELDS[dimension]:
            allowed = ", ".join(SORT_FIELDS[dimension])
            raise InvalidRequest("sortBy", f"{self.sort_by!r} is not one of {allowed}")
        return self


def ordered(dimension: Dimension, rows: Sequence[Row], page: Page) -> list[Row]:
    """The rows sorted by the page's field and direction; stably, so ties keep the rows' id order."""
    page.check(dimension)
    result = sorted(rows, key=lambda r: r[_IDENTITY[dimension]])
    name, name_key = _NAME_SORTS[dimension]
    result.sort(key=name_key if page.sort_by == name else _METRIC_SORTS[page.sort_by], reverse=page.descending)
    return result


def paginate(dimension: Dimension, rows: Sequence[Row], page: Page) -> Row:
    """Sort and cut one page, in LiteMaaS's {data, pagination} envelope."""
    first = (page.number - 1) * page.limit
    total = len(rows)
    return {
        "data": ordered(dimension, rows, page)[first : first + page.limit],
        "pagination": {
            "page": page.number,
            "limit": page.limit,
            "total": total,
            "totalPages": (total + page.limit - 1) // page.limit,
            "hasNext": page.number * page.limit < total,
            "hasPrevious": page.number > 1,
        },
    }
