"""The baseline every path is compared with: one SQL pass over LiteLLM's table, as a DBA would write it.

One statement, with `work_mem = 256MB`, returns every ingredient of the analytics document for a range and for the
previous period of equal length (`current` tells them apart): GROUPING SETS give the totals of both periods, per
user, per model, per provider, per API key, per day and per day x model. The document's distinct counts (active users
of a period or a day, models per user, users per model) come from two finer sets, (period, user, model) and
(day, user), whose rows the client counts: `count(DISTINCT ...)` would force a sort per grouping set instead of one
hashed pass, two to three times slower (measured on M). Users are LiteLLM's own `user_id` column: no join with
LiteMaaS's key mapping, so the baseline does a little less than the cache. Every row is fetched into Python through
psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from litemaas_cache.dates import DateRange

WORK_MEM = "256MB"

SQL_PASS = """
WITH usage AS (
    SELECT date >= %(start)s AS current, date, user_id, api_key, model, custom_llm_provider AS provider,
           prompt_tokens, completion_tokens, api_requests, successful_requests, failed_requests, spend
    FROM "LiteLLM_DailyUserSpend"
    WHERE date BETWEEN %(previous_start)s AND %(end)s
)
SELECT GROUPING(current, date, user_id, model, provider, api_key) AS grouping_set,
       current, date, user_id, model, provider, api_key,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(api_requests)::bigint AS requests,
       sum(successful_requests)::bigint AS successful,
       sum(failed_requests)::bigint AS failed,
       sum(spend)::double precision AS spend
FROM usage
GROUP BY GROUPING SETS (
    (current),
    (current, user_id),
    (current, model),
    (current, provider),
    (current, api_key),
    (date),
    (date, model),
    (current, user_id, model),
    (date, user_id)
)
"""

# GROUPING() of the totals set: every argument but `current` is aggregated away (bits: current=32 ... api_key=1).
_TOTALS = 0b011111


@dataclass(frozen=True)
class PassResult:
    rows: int
    current_requests: int
    previous_requests: int


class SqlPass:
    """One session (work_mem set once, as a DBA would) that runs the pass for any range."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> SqlPass:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await conn.execute(f"SET work_mem = '{WORK_MEM}'".encode())
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def run(self, days: DateRange) -> PassResult:
        """Execute the pass for `days` and its previous period and fetch every row."""
        params = {
            "start": days.start.isoformat(),
            "previous_start": days.previous().start.isoformat(),
            "end": days.end.isoformat(),
        }
        cur = await self._conn.execute(SQL_PASS.encode(), params)
        rows = await cur.fetchall()
        totals = {row[1]: int(row[9]) for row in rows if row[0] == _TOTALS}
        return PassResult(len(rows), totals.get(True, 0), totals.get(False, 0))
