"""`python -m bench.run` (`make bench`): the cache's latencies and ratios, all measured side by side in one run.

(a) cold (every tier invalidated: computed from LiteLLM's table) vs warm (Redis result hit) analytics, p50/p99,
    for a 30-day and a 90-day query;
(b) the hit rate of a quick run of repeated queries (200 drawn from 10 distinct ones, Redis results cold);
(c) a Redis-hit `manager.analytics` read against a raw redis GET + codec decode of the same bytes (interleaved);
(d) cold analytics (PostgreSQL day cache empty) against a plain SQL GROUP BY over the same source rows;
(e) a PostgreSQL-tier hit with Redis disabled.

Needs DATABASE_URL (a role that may create databases) and REDIS_URL, as `make bench` sets them. The bench database
is seeded once per size and UTC day and reused. Results are printed as a table and written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import math
import os
import platform
import random
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from litemaas_cache.codec import Codec
from litemaas_cache.dates import DateRange
from litemaas_cache.filters import AnalyticsQuery, build_query
from litemaas_cache.manager import CacheManager
from litemaas_cache.settings import load_settings

from .dataset import Dataset, SeedParams, ensure_dataset
from .measure import Samples, ratio, timed

RESULTS_DIR = Path(__file__).resolve().parent / "results"

PLAIN_GROUP_BY = """
SELECT date, api_key, model, custom_llm_provider,
       sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint,
       sum(api_requests)::bigint, sum(successful_requests)::bigint, sum(failed_requests)::bigint,
       sum(spend)::double precision
FROM "LiteLLM_DailyUserSpend"
WHERE date BETWEEN %s AND %s
GROUP BY date, api_key, model, custom_llm_provider
"""


def _query(days: DateRange, **filters: list[str]) -> AnalyticsQuery:
    return build_query(days.start, days.end, max_days=90, max_ids=1000, **filters)


def _covered(days: DateRange) -> DateRange:
    """What an analytics query reads: its range and the previous period of equal length."""
    return DateRange(days.previous().start, days.end)


async def _plain_sql(dsn: str, days: DateRange) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(PLAIN_GROUP_BY.encode(), (days.start.isoformat(), days.end.isoformat()))
        return len(await cur.fetchall())


async def _bench_range(
    label: str,
    days: DateRange,
    manager: CacheManager,
    pg_only: CacheManager,
    raw: Redis | RedisCluster,
    dataset: Dataset,
    args: argparse.Namespace,
) -> dict[str, Any]:
    query = _query(days)
    covered = _covered(days)
    cold, sql, pg, warm = Samples("cold"), Samples("sql"), Samples("pg"), Samples("warm")
    hit_read, raw_read = Samples("hit-read"), Samples("raw-read")

    for _ in range(args.cold_runs):
        report = await manager.invalidate(covered)  # every tier: the next read computes from the source
        assert report.complete, report.as_dict()
        answer = await timed(cold, lambda: manager.analytics(query))
        assert answer.tier == "source", answer.tier
    sql_rows = 0
    for _ in range(args.cold_runs):
        sql_rows = await timed(sql, lambda: _plain_sql(dataset.dsn, covered))

    # (e) the PostgreSQL day cache is full (one untimed read refreshes today if its short TTL ran out meanwhile);
    # Redis is off for this manager, so every read computes the result from PostgreSQL's day rows
    await pg_only.analytics(query)
    pg_tiers: dict[str, int] = {}
    for _ in range(args.pg_runs):
        answer = await timed(pg, lambda: pg_only.analytics(query))
        pg_tiers[answer.tier] = pg_tiers.get(answer.tier, 0) + 1

    # (a) warm: Redis result hits
    first = await manager.analytics(query)
    for _ in range(args.warm_runs):
        answer = await timed(warm, lambda: manager.analytics(query))
        assert answer.tier == "redis", answer.tier

    # (c) the same hit against a raw GET + decode of the bytes it reads, interleaved (alternating which goes first)
    key = manager.keys.result("analytics", query.range, query.filters.fingerprint())
    codec = Codec(manager.settings.compress_threshold)
    encoded = await raw.get(key)
    assert encoded is not None, f"{key} is not in Redis"

    async def raw_get_decode() -> Any:
        data = await raw.get(key)
        assert isinstance(data, bytes)
        return codec.decode(data)

    for i in range(args.warm_runs):
        pair = [(hit_read, lambda: manager.analytics(query)), (raw_read, raw_get_decode)]
        for samples, make in pair if i % 2 == 0 else pair[::-1]:
            await timed(samples, make)

    return {
        "label": label,
        "range": str(days),
        "coveredDays": covered.days,
        "totalRequests": first.value["totalRequests"],
        "resultBytes": len(encoded),
        "sqlGroupedRows": sql_rows,
        "cold": cold.as_dict(),
        "warm": warm.as_dict(),
        "plainSql": sql.as_dict(),
        "postgresTier": {**pg.as_dict(), "tiers": pg_tiers},
        "redisHitRead": hit_read.as_dict(),
        "rawGetDecode": raw_read.as_dict(),
        "ratios": {
            "coldOverWarmP50": ratio(cold.p50, warm.p50),
            "coldOverPlainSqlP50": ratio(cold.p50, sql.p50),
            "postgresOverWarmP50": ratio(pg.p50, warm.p50),
            "hitReadOverRawP50": ratio(hit_read.p50, raw_read.p50),
            "hitReadOverRawMean": ratio(hit_read.mean, raw_read.mean),
        },
    }


async def _bench_hit_rate(
    manager: CacheManager, end: dt.date, data_days: int, args: argparse.Namespace
) -> dict[str, Any]:
    """(b) 200 queries drawn from 10 distinct ones, starting with no Redis entries (PostgreSQL warm)."""
    rng = random.Random(args.seed)
    span = min(data_days, 90)

    def last(n: int, offset: int = 0) -> DateRange:
        offset = min(offset, span - 1)
        n = max(1, min(n, span - offset))
        stop = end - dt.timedelta(days=offset)
        return DateRange(stop - dt.timedelta(days=n - 1), stop)

    distinct = [
        _query(last(7)),
        _query(last(30)),
        _query(last(span)),
        _query(last(14, 7)),
        _query(last(30), model_ids=["gpt-4o"]),
        _query(last(30), provider_ids=["openai"]),
        _query(last(7), model_ids=["claude-3-5-sonnet", "gpt-4o-mini"]),
        _query(last(30, 30)),
        _query(last(1)),
        _query(last(span), model_ids=["llama-3.1-8b-instruct"]),
    ]
    report = await manager.invalidate(DateRange(end - dt.timedelta(days=2 * span), end), tiers=("redis",))
    assert report.complete
    before = dict(manager.local_counters)
    latency = Samples("repeated")
    for _ in range(args.repeat_queries):
        query = rng.choice(distinct)
        await timed(latency, functools.partial(manager.analytics, query))

    def delta(name: str) -> int:
        return manager.local_counters.get(name, 0) - before.get(name, 0)

    hits, misses = delta("result:redis:hit"), delta("result:redis:miss")
    return {
        "queries": args.repeat_queries,
        "distinct": len(distinct),
        "redisResultHits": hits,
        "redisResultMisses": misses,
        "redisHitRate": round(100.0 * hits / (hits + misses), 2) if hits + misses else None,
        "answeredWithoutSource": round(100.0 * (1 - delta("requests:source") / max(1, delta("requests"))), 2),
        "latency": latency.as_dict(),
    }


async def _versions(dataset: Dataset, raw: Redis | RedisCluster) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(dataset.dsn) as conn:
        cur = await conn.execute(b"SHOW server_version")
        row = await cur.fetchone()
    info = await raw.info("server")
    redis_version = info.get("redis_version") if isinstance(info, dict) and "redis_version" in info else None
    if redis_version is None and isinstance(info, dict):  # a cluster answers per node
        first: Any = next(iter(info.values()), {})
        redis_version = first.get("redis_version") if isinstance(first, dict) else None
    return {
        "postgres": str(row[0]) if row else "?",
        "redis": str(redis_version or "?"),
        "python": platform.python_version(),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn = os.environ.get("DATABASE_URL")
    if not admin_dsn:
        raise SystemExit("DATABASE_URL is not set: run `make bench` (it starts PostgreSQL and Redis)")
    redis_url = args.redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if args.quick:
        params = SeedParams(days=30, users=150, models=10, seed_value=args.seed)
        ranges = {"7-day": 7, "30-day": 30}
    else:
        params = SeedParams.for_rows(args.rows_target, days=args.days, seed_value=args.seed)
        ranges = {"30-day": 30, "90-day": 90}
    dataset = await ensure_dataset(admin_dsn, params)
    end = dataset.end
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    common: dict[str, object] = {"database_url": dataset.dsn, "redis_url": redis_url, "redis_key_prefix": prefix}
    if args.redis_cluster:
        common["redis_cluster"] = True
    raw: Redis | RedisCluster = RedisCluster.from_url(redis_url) if args.redis_cluster else Redis.from_url(redis_url)
    results: dict[str, Any] = {}
    try:
        async with (
            CacheManager.open(load_settings(**common)) as manager,
            CacheManager.open(load_settings(**common, redis_enabled=False)) as pg_only,
        ):
            for label, n in ranges.items():
                days = DateRange(end - dt.timedelta(days=n - 1), end)
                print(f"measuring the {label} query ({days}) ...", flush=True)
                results[label] = await _bench_range(label, days, manager, pg_only, raw, dataset, args)
            print("measuring repeated queries ...", flush=True)
            hit_rate = await _bench_hit_rate(manager, end, params.days, args)
            assert manager.redis is not None
            await manager.redis.delete_all()
        versions = await _versions(dataset, raw)
    finally:
        await raw.aclose()
    return {
        "generatedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "database": params.database_name,
            "sourceRows": dataset.source_rows,
            "days": params.days,
            "users": params.users,
            "models": params.models,
            "seed": params.seed_value,
            "end": end.isoformat(),
            "reused": dataset.reused,
            "seedSeconds": round(dataset.seed_seconds, 1),
        },
        "redis": {"url": redis_url.split("@")[-1], "cluster": bool(args.redis_cluster)},
        "versions": versions,
        "ranges": results,
        "repeated": hit_rate,
    }


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.1f}" if value >= 10 else f"{value:.3f}"


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}x" if value >= 10 else f"{value:.2f}x"


def render(report: dict[str, Any]) -> str:
    ds, ranges = report["dataset"], report["ranges"]
    labels = list(ranges)
    width = 44
    lines = [
        f"litemaas-cache bench: {ds['sourceRows']:,} source rows ({ds['days']} days to {ds['end']},"
        f" {ds['users']} users, {ds['models']} models; database {ds['database']}{', reused' if ds['reused'] else ''})",
        f"PostgreSQL {report['versions']['postgres']}, Redis {report['versions']['redis']}"
        f" ({'cluster' if report['redis']['cluster'] else 'standalone'}), Python {report['versions']['python']}",
        "",
    ]
    head = f"{'measurement':<{width}}" + "".join(
        f"{label + ' p50 ms':>16}{'p99 ms':>11}{'runs':>6}" for label in labels
    )
    lines += [head, "-" * len(head)]
    rows = [
        ("(a) cold: all tiers invalidated -> source", "cold"),
        ("(a) warm: Redis result hit", "warm"),
        ("(c) Redis-hit manager.analytics read", "redisHitRead"),
        ("(c) raw redis GET + codec decode, same key", "rawGetDecode"),
        ("(d) plain SQL GROUP BY over the same rows", "plainSql"),
        ("(e) PostgreSQL-tier hit (Redis disabled)", "postgresTier"),
    ]
    for title, name in rows:
        cells = ""
        for label in labels:
            s = ranges[label][name]
            cells += f"{_ms(s['p50Ms']):>16}{_ms(s['p99Ms']):>11}{s['runs']:>6}"
        lines.append(f"{title:<{width}}{cells}")
    lines.append("")
    ratio_rows = [
        ("(a) cold / warm, p50", "coldOverWarmP50"),
        ("(d) cold (source) / plain SQL GROUP BY, p50", "coldOverPlainSqlP50"),
        ("(e) PostgreSQL tier / Redis hit, p50", "postgresOverWarmP50"),
        ("(c) analytics hit / raw GET+decode, p50", "hitReadOverRawP50"),
        ("(c) analytics hit / raw GET+decode, mean", "hitReadOverRawMean"),
    ]
    lines.append(f"{'ratio':<{width}}" + "".join(f"{label:>33}" for label in labels))
    for title, name in ratio_rows:
        lines.append(f"{title:<{width}}" + "".join(f"{_x(ranges[label]['ratios'][name]):>33}" for label in labels))
    lines.append(
        f"{'cached result size (bytes, compressed)':<{width}}"
        + "".join(f"{ranges[label]['resultBytes']:>33,}" for label in labels)
    )
    lines.append(
        f"{'plain SQL grouped rows (range + previous)':<{width}}"
        + "".join(f"{ranges[label]['sqlGroupedRows']:>33,}" for label in labels)
    )
    rep = report["repeated"]
    lines += [
        "",
        f"(b) {rep['queries']} queries drawn from {rep['distinct']} distinct ones, Redis results cold at the start:"
        f" Redis result hit rate {rep['redisHitRate']}% ({rep['redisResultHits']} hits / {rep['redisResultMisses']}"
        f" misses), answered without the source {rep['answeredWithoutSource']}%,"
        f" latency p50 {_ms(rep['latency']['p50Ms'])} ms, p99 {_ms(rep['latency']['p99Ms'])} ms",
    ]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN (a ratio without samples) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rows-target", type=int, default=1_000_000, help="source rows to seed (about)")
    parser.add_argument("--days", type=int, default=90, help="days of seeded data, ending today (UTC)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the data and of the query mix")
    parser.add_argument("--quick", action="store_true", help="a small dataset and 7/30-day queries (seconds)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold reads (and plain SQL runs) per range")
    parser.add_argument("--warm-runs", type=int, default=300, help="warm reads (and raw GETs) per range")
    parser.add_argument("--pg-runs", type=int, default=5, help="PostgreSQL-tier reads per range")
    parser.add_argument("--repeat-queries", type=int, default=200, help="queries of the hit-rate run")
    parser.add_argument("--redis-url", default=None, help="default: $REDIS_URL")
    parser.add_argument("--redis-cluster", action="store_true", help="the Redis URL is a cluster node")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON results file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    table = render(report)
    print()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(_finite({**report, "table": table.splitlines()}), indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
