"""`python -m bench.engines`: polars against DuckDB on the engine's own work, side by side in one run.

The same day frames (decoded once, from the PostgreSQL tier of dataset M) are folded by both libraries into what a
30-day analytics document needs: sums at (user, key, model, provider) grain, per-day totals with active users, and
per day x model sums. DuckDB reads the polars frames as Arrow without copying. Prints the p50 of each over a few
interleaved runs.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time
from collections.abc import Callable

import duckdb
import polars as pl
import psycopg

from litemaas_cache.frames import decode_columns

from .dataset import MEDIUM

SUMS_SQL = "sum(prompt), sum(completion), sum(requests), sum(successful), sum(failed), sum(spend)"


def _load(dsn: str, days: int) -> pl.DataFrame:
    with psycopg.connect(dsn) as conn:
        rows = (
            conn.cursor(binary=True)
            .execute(
                "SELECT day, aggregates FROM litemaas_cache.daily_usage WHERE aggregates IS NOT NULL"
                " ORDER BY day DESC LIMIT %s",
                (days,),
            )
            .fetchall()
        )
    return pl.concat(decode_columns(p).with_columns(day=pl.lit(d, dtype=pl.Date)) for d, p in rows)


def _polars(frame: pl.DataFrame) -> None:
    sums = [pl.col(c).sum() for c in ("prompt", "completion", "requests", "successful", "failed", "spend")]
    frame.group_by("user", "key", "model", "provider").agg(sums)
    frame.group_by("day").agg(*sums, pl.col("user").filter(pl.col("requests") > 0).n_unique())
    frame.group_by("day", "model", "provider").agg(sums)


def _duckdb(frame: pl.DataFrame) -> None:
    con = duckdb.connect()
    con.register("usage", frame.to_arrow())
    con.sql(f"SELECT user, key, model, provider, {SUMS_SQL} FROM usage GROUP BY ALL").to_arrow_table()
    con.sql(
        f"SELECT day, {SUMS_SQL}, count(DISTINCT user) FILTER (WHERE requests > 0) FROM usage GROUP BY day"
    ).to_arrow_table()
    con.sql(f"SELECT day, model, provider, {SUMS_SQL} FROM usage GROUP BY ALL").to_arrow_table()
    con.close()


def main() -> None:
    dsn = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + MEDIUM.database_name
    frame = _load(dsn, 60)
    print(f"{frame.height:,} rows (60 days of dataset M), {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    runs: dict[str, list[float]] = {"polars": [], "duckdb": []}
    work: dict[str, Callable[[pl.DataFrame], None]] = {"polars": _polars, "duckdb": _duckdb}
    for i in range(7):
        for name in ("polars", "duckdb") if i % 2 == 0 else ("duckdb", "polars"):
            started = time.perf_counter()
            work[name](frame)
            runs[name].append(time.perf_counter() - started)
    for name, samples in runs.items():
        print(f"{name:8} p50 {statistics.median(samples) * 1000:7.1f} ms over {len(samples)} runs")


if __name__ == "__main__":
    main()
