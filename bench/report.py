"""The report of one run: a side-by-side table for the terminal and docs/benchmarks.md, and the JSON results file."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATHS = (
    ("sqlPass", "SQL pass (GROUPING SETS): the baseline"),
    ("cold", "cold: every tier invalidated"),
    ("postgresTier", "PostgreSQL tier (Redis disabled)"),
    ("redisDayTier", "Redis day tier, user filter never asked"),
    ("memoryDayTier", "days held in memory, user filter never asked"),
    ("redisResultHit", "Redis result hit"),
    ("rawGetDecode", "raw Redis GET + decode of that key"),
    ("apiConcurrent", "HTTP API, 6 concurrent new user filters"),
)
TITLE = 42
CELL = 38


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def _x(value: float | None) -> str:
    """A ratio: 1.25x from one up, 1/N below one (1/1.2, 1/12, 1/2,292: N times less)."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 1:
        return f"{value:.2f}x"
    inverse = 1 / value
    return f"1/{inverse:.1f}" if inverse < 10 else f"1/{inverse:,.0f}"


def _same(document: int, sql: int) -> str:
    return f"equal ({document:,})" if document == sql else f"DIFFER: {document:,} vs {sql:,}"


def _cell(view: dict[str, Any], path: str) -> str:
    samples = view["paths"].get(path)
    if samples is None:
        return " " * CELL
    over = "" if path == "sqlPass" else _x(view["overSqlP50"].get(path))
    return f"{_ms(samples['p50Ms']):>12}{_ms(samples['p99Ms']):>10}{samples['runs']:>6}{over:>10}"


def _dataset_line(name: str, ds: dict[str, Any]) -> str:
    return (
        f"{name}: {ds['sourceRows']:,} source rows, {ds['days']} days to {ds['end']}, {ds['users']} users,"
        f" {ds['models']} models ({ds['database']}{', reused' if ds['reused'] else ''})"
    )


def header(report: dict[str, Any]) -> list[str]:
    """What was measured where: mode, time, engine commit, datasets, versions, machine."""
    versions, engine = report["versions"], report["engine"]
    return [
        f"litemaas-cache bench ({report['mode']}), {report['generatedAt']}, engine {engine['commit']}"
        + (" with uncommitted changes under operator/" if engine["dirty"] else ""),
        *(_dataset_line(name, ds) for name, ds in report["datasets"].items()),
        f"PostgreSQL {versions['postgres']}, Redis {versions['redis']}, Python {versions['python']};"
        f" {report['machine']['cpus']} CPUs, load average {report['machine']['loadAverage']} at the start",
    ]


def render(report: dict[str, Any]) -> str:
    views = report["views"]
    lines = [
        *header(report),
        "",
        f"{'':<{TITLE}}" + "".join(f"{v['label'] + ' (' + v['dataset'] + '), ' + v['range']:>{CELL}}" for v in views),
        f"{'path':<{TITLE}}" + f"{'p50 ms':>12}{'p99 ms':>10}{'runs':>6}{'x SQL':>10}" * len(views),
    ]
    lines.append("-" * len(lines[-1]))
    for path, title in PATHS:
        if any(path in v["paths"] for v in views):
            lines.append(f"{title:<{TITLE}}" + "".join(_cell(v, path) for v in views))
    lines.append("")
    facts: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
        ("Redis result hit / raw GET + decode, p50", "hitOverRaw", lambda v: _x(v["hitOverRaw"])),
        ("rows the SQL pass fetched", "sqlRows", lambda v: f"{v['sqlRows']:,}"),
        ("cached result (bytes, as stored)", "resultBytes", lambda v: f"{v['resultBytes']:,}"),
        (
            "totalRequests: document vs SQL pass",
            "documentRequests",
            lambda v: _same(v["documentRequests"], v["sqlRequests"]),
        ),
    ]
    for title, key, fact in facts:
        lines.append(f"{title:<{TITLE}}" + "".join(f"{fact(v) if key in v else '-':>{CELL}}" for v in views))
    lines.append("")
    for probe in report["memory"]:
        lines.append(
            f"peak RSS of a cold {probe['view']} query ({probe['dataset']}) in a fresh process:"
            f" {probe['peakRssMiB']:,.0f} MiB ({probe['rssBeforeMiB']:,.0f} MiB before the query;"
            f" the query took {_ms(probe['ms'])} ms)"
        )
    c = report.get("concurrency")
    if c:
        tiers = ", ".join(f"{t} x{c['tiers'].count(t)}" for t in sorted(set(c["tiers"])))
        lines.append(
            f"HTTP API, {len(c['tiers'])} concurrent {c['view']} requests ({c['dataset']}), each a new user filter:"
            f" p50 {_ms(c['answers']['p50Ms'])} ms, slowest {_ms(c['answers']['maxMs'])} ms (tiers: {tiers});"
            f" /healthz polled every 20 ms meanwhile: max {_ms(c['healthz']['maxMs'])} ms,"
            f" p50 {_ms(c['healthz']['p50Ms'])} ms over {c['healthz']['runs']} polls"
        )
    w = report.get("warmHttp")
    if w:
        for tier, measured in w["tiers"].items():
            for encoding, e in measured.items():
                lines.append(
                    f"warm HTTP read of the {w['view']} document ({w['dataset']}) from {tier},"
                    f" client accepting {encoding}: p50 {_ms(e['http']['p50Ms'])} ms for {e['bodyBytes']:,} bytes;"
                    f" raw GET of its Redis entry ({e['entryBytes']:,} bytes) p50 {_ms(e['rawGet']['p50Ms'])} ms;"
                    f" HTTP / raw GET {_x(e['httpOverRawGet'])} ({e['http']['runs']} runs each)"
                )
    x = report.get("export")
    if x:
        for e in x["exports"]:
            lines.append(
                f"{x['days']}-day export ({x['dataset']}), {e['format']}, streamed by the HTTP API:"
                f" {e['bytes']:,} bytes in {e['chunksReceived']} chunks, first byte {_ms(e['firstByteMs'])} ms,"
                f" all {_ms(e['ms'])} ms"
                f" (tier {e['tier']}); the API's peak RSS {e['peakRssMiB']:,.0f} MiB"
                f" ({x['before']['peakRssMiB']:,.0f} MiB before the first export)"
            )
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN (a ratio without samples) becomes null, so the results file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write(report: dict[str, Any], table: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite({**report, "table": table.splitlines()}), indent=2) + "\n")


def _ratio_to(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return _x(value / base)


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_peers(result: dict[str, Any]) -> str:
    """The peers' comparison (bench/peers/suite.py) as markdown tables: the replay, then stampede, invalidation and
    new ranges. PostgreSQL ratios are per request, against the baseline peer (no cache, LiteMaaS's query per day)."""
    peers, plan = result["peers"], result["plan"]
    base = peers[result["baseline"]]
    lines = [
        f"Dataset {result['dataset']}, ranges ending {result['today']}; replay: {plan['traceRequests']} requests"
        f" ({plan['replayMinutes']} simulated minutes; the no-cache peers answer its first {plan['noCacheRequests']}),"
        f" 4 worker processes; changed day {result['changedDay']}.",
        "",
        "| peer | requests | p50 ms | p99 ms | hit rate | PG statements / request | x no cache"
        " | PG rows read / request | x no cache | PG blocks / request | x no cache | Redis keys | Redis bytes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base_pg = base["replay"]["pg"]
    for name, p in peers.items():
        r = p["replay"]
        lines.append(
            f"| {name} | {r['requests']} | {_ms(r['latency']['p50Ms'])} | {_ms(r['latency']['p99Ms'])}"
            f" | {_pct(r['hitRate'])} | {_n(r['pg']['callsPerRequest'], 1)}"
            f" | {_ratio_to(r['pg']['callsPerRequest'], base_pg['callsPerRequest'])}"
            f" | {_n(r['pg']['tuplesReadPerRequest'])}"
            f" | {_ratio_to(r['pg']['tuplesReadPerRequest'], base_pg['tuplesReadPerRequest'])}"
            f" | {_n(r['pg']['blocksPerRequest'])}"
            f" | {_ratio_to(r['pg']['blocksPerRequest'], base_pg['blocksPerRequest'])}"
            f" | {_n(r.get('redisKeys'))} | {_n(r.get('redisBytes'))} |"
        )
    lines += [
        "",
        f"| peer | stampede: computations of {plan['stampede']} identical cold requests | stampede p50 / p99 ms"
        " | invalidation ms | answers after the invalidation | wrong answers"
        f" | new ranges/filters ({plan['newRequests']}): p50 / p99 ms | new: PG statements / request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, p in peers.items():
        s, r, n = p["stampede"], p["replay"], p["newRanges"]
        lines.append(
            f"| {name} | {s['computations']} | {_ms(s['latency']['p50Ms'])} / {_ms(s['latency']['p99Ms'])}"
            f" | {_ms(p.get('invalidationMs'))} | {r['answersAfterInvalidation']} | {r['wrongAfterInvalidation']}"
            f" | {_ms(n['latency']['p50Ms'])} / {_ms(n['latency']['p99Ms'])} | {_n(n['pg']['callsPerRequest'], 1)} |"
        )
    return "\n".join(lines)
