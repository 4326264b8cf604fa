"""The words the whole package shares: cache tiers, the dimensions of usage, its metrics and the placeholder values
for what LiteLLM leaves empty. Defined here once; every other module imports them."""

from __future__ import annotations

from typing import Literal

Tier = Literal["memory", "redis", "postgres", "source"]
"""Where an answer came from, the lowest tier it needed: this process's decoded days, a Redis entry, the PostgreSQL
daily cache, or LiteLLM's table."""

InvalidationTier = Literal["redis", "postgres"]
"""The tiers an invalidation can purge (the source is the truth and is never purged)."""

LogFormat = Literal["text", "json"]
"""How log lines are written (LOG_FORMAT): text for people, json (one object per line) for log collectors."""

Dimension = Literal["user", "model", "provider"]
"""The dimensions a breakdown groups by."""
DIMENSIONS: tuple[Dimension, ...] = ("user", "model", "provider")

CodedColumn = Literal["user", "key", "model", "provider"]
"""The text dimensions of a day aggregate, stored as integer codes (see dictionary.py)."""
CODED_COLUMNS: tuple[CodedColumn, ...] = ("user", "key", "model", "provider")

METRICS: tuple[str, ...] = ("prompt", "completion", "requests", "successful", "failed", "spend")
"""The summed columns of a day aggregate, in payload order (all integers but spend)."""

UNMAPPED_USER_ID = "unmapped"
"""The user of usage whose API key LiteMaaS does not know (including LiteLLM's empty api_key)."""
UNKNOWN_USER_ID = "00000000-0000-0000-0000-000000000000"
"""How LiteMaaS names UNMAPPED_USER_ID on the wire (its "Unknown User"); accepted as a userIds filter too."""
UNKNOWN_USERNAME = "Unknown User"
UNKNOWN_USER_EMAIL = "unknown@system.local"
DEFAULT_ROLE = "user"
"""The role shown for a user whose LiteMaaS record names none (and for the Unknown User)."""
UNKNOWN_MODEL = "unknown"
"""The model of usage LiteLLM recorded without one (a NULL or empty model, such as MCP tool calls)."""
UNKNOWN_PROVIDER = "unknown"
"""The provider when LiteLLM gives none and the model name does not tell."""

Role = Literal["admin", "admin-readonly", "user", "api"]
"""LiteMaaS's role names as its tokens carry them (`roles` claim); admin keys hold admin and api."""

Permission = Literal["usage:own", "admin:usage:read", "admin:usage:write"]
"""What a route requires: a user's own usage, reading everyone's usage, or changing the caches (refresh-today,
rebuild-cache, invalidate)."""

ServiceScope = Literal["read", "admin"]
"""What the service token (API_TOKEN) of application instances may do: read usage, or also change the caches."""

RateBucket = Literal["analytics", "export", "rebuild"]
"""The rate-limit counters a route draws from, as LiteMaaS groups its admin usage routes."""

CounterName = Literal[
    "requests",
    "requests:source",
    "computations",
    "result:memory:hit",
    "result:redis:hit",
    "result:redis:miss",
    "lock:acquired",
    "lock:contended",
    "day:memory:hit",
    "day:redis:hit",
    "day:redis:miss",
    "day:postgres:hit",
    "day:postgres:miss",
    "day:source:computed",
    "day:grace",
    "freshness:days-refreshed",
    "rebuilds",
    "invalidations",
    "warm:succeeded",
    "warm:failed",
    "warm:keys-written",
]
"""The cache's counters (stats.Counters): result requests, those that needed LiteLLM's table, results computed; result
and day reads per tier (tier:hit / tier:miss); result lease locks; days read in the grace after midnight; days whose
source rows changed after caching; rebuilds, invalidations and warms. metrics.py gives each a Prometheus series."""

TimingName = Literal["warm", "invalidation"]
"""The durations the cache reports besides its counters (per process, never shared through Redis)."""

ContentEncoding = Literal["zstd", "gzip"]
"""How a result document is stored in Redis and served over HTTP: zstd to clients that offer it, gzip to the rest
(every HTTP client accepts gzip); a client accepting neither gets the JSON decompressed."""

ExportFormat = Literal["csv", "json"]
"""The file formats of LiteMaaS's usage export."""
