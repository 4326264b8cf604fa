"""Checks that no cached day is half-written: every daily_usage row with a payload decodes, and its payload and its
own total columns equal what LiteLLM's table gives for that day."""

from __future__ import annotations

import psycopg

from litemaas_cache.frames import decode_columns, read_header
from tests.support.metrics import close

_CACHED = """SELECT day, aggregates, version, is_complete, requests, total_tokens, spend
             FROM litemaas_cache.daily_usage WHERE aggregates IS NOT NULL ORDER BY day"""
_SOURCE = """SELECT date::date, sum(api_requests)::bigint, sum(prompt_tokens + completion_tokens)::bigint,
                    sum(spend)::float8
             FROM "LiteLLM_DailyUserSpend" GROUP BY 1"""


def audit_cached_days(dsn: str) -> int:
    """Assert every cached day matches the source; returns how many days were checked."""
    with psycopg.connect(dsn) as conn:
        source = {day: totals for day, *totals in conn.execute(_SOURCE.encode()).fetchall()}
        cached = conn.execute(_CACHED.encode()).fetchall()
    for day, payload, version, is_complete, requests, tokens, spend in cached:
        header = read_header(bytes(payload))
        assert (header.day, header.version, header.is_complete) == (day, version, is_complete), day
        columns = decode_columns(bytes(payload))
        decoded = (int(columns["requests"].sum()), int(columns["prompt"].sum() + columns["completion"].sum()))
        want_requests, want_tokens, want_spend = source.get(day, (0, 0, 0.0))
        assert decoded == (requests, tokens) == (want_requests, want_tokens), (day, decoded, requests, tokens)
        assert close(float(columns["spend"].sum()), want_spend), (day, float(columns["spend"].sum()), want_spend)
        assert close(spend, want_spend), (day, spend, want_spend)
    return len(cached)
