"""The `litemaas-cache` command line: migrate, seed, analytics, warm, invalidate, stats, api, operator."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from .analytics import Page
from .dates import resolve_range
from .db import Database
from .errors import CacheError, InvalidRequest
from .filters import UsageFilters, build_query
from .logs import TEXT_FORMAT, use_log_format
from .manager import CacheManager
from .redaction import install_log_redaction
from .schema import migrate as run_migrations
from .settings import Settings, load_settings
from .vocabulary import DIMENSIONS, Dimension, InvalidationTier

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Two-tier (Redis + PostgreSQL) cache for LiteMaaS / LiteLLM admin usage analytics.",
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error stays on one line, however long
T = TypeVar("T")
log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_BACKEND = 1


def _run(coro: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Load settings and run `coro`; every failure becomes one line on stderr, with no secret, and an exit code.

    A failure nobody planned for is one line too (its traceback goes to the log with --verbose, redacted).
    """
    redact: Callable[[str], str] = str
    try:
        settings = load_settings()
        redact = settings.redact
        use_log_format(settings.log_format)
        install_log_redaction(redact)
        return asyncio.run(coro(settings))
    except InvalidRequest as exc:
        _fail(redact(f"error: {exc}"), EXIT_BAD_INPUT)
    except CacheError as exc:
        _fail(redact(f"error: {exc}"), EXIT_BACKEND)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        log.info("unexpected failure", exc_info=True)
        _fail(redact(f"error: unexpected {type(exc).__name__}: {exc}"), EXIT_BACKEND)


def _fail(message: str, code: int) -> NoReturn:
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(code) from None


def _dimension(value: str) -> Dimension:
    if value not in DIMENSIONS:
        raise InvalidRequest("--by", f"{value!r} is not one of {', '.join(DIMENSIONS)}")
    return value


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format=TEXT_FORMAT,
        stream=sys.stderr,
    )


@app.command()
def migrate() -> None:
    """Create or upgrade the daily-cache schema (idempotent, safe to run concurrently)."""

    async def go(settings: Settings) -> None:
        async with Database(settings.database_dsn, settings.litellm_dsn) as db:
            applied = await run_migrations(db)
        out.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")

    _run(go)


@app.command()
def seed(
    days: Annotated[int, typer.Option(min=1, max=3660, help="Days of usage, ending today (UTC).")] = 30,
    users: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    models: Annotated[int, typer.Option(min=1, max=200)] = 5,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 1,
) -> None:
    """Create LiteLLM's and LiteMaaS's tables when missing and fill them with synthetic usage."""
    from .seed import create_source_tables
    from .seed import seed as run_seed

    async def go(settings: Settings) -> None:
        async with Database(settings.database_dsn, settings.litellm_dsn) as db:
            await create_source_tables(db)
            report = await run_seed(db, days=days, users=users, models=models, seed_value=seed_value)
        out.print(
            f"seeded {report.start}..{report.end}: {report.users} users, {report.api_keys} keys "
            f"(+{report.unmapped_keys} unmapped), {report.rows_generated} rows generated, "
            f"{report.rows_inserted} new"
        )

    _run(go)


def _manager_call(fn: Callable[[CacheManager], Awaitable[T]]) -> T:
    async def go(settings: Settings) -> T:
        async with CacheManager.open(settings) as manager:
            return await fn(manager)

    return _run(go)


@app.command()
def analytics(
    start: Annotated[str, typer.Option("--start", help="First day, YYYY-MM-DD (UTC).")],
    end: Annotated[str, typer.Option("--end", help="Last day, YYYY-MM-DD (UTC), inclusive.")],
    user: Annotated[list[str] | None, typer.Option("--user", help="Filter: LiteMaaS user id.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Filter: model name.")] = None,
    provider: Annotated[list[str] | None, typer.Option("--provider", help="Filter: provider.")] = None,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Filter: key alias or hash.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Breakdown by user, model or provider.")] = None,
    page: Annotated[int, typer.Option(help="Breakdown page (1-based).")] = 1,
    limit: Annotated[int, typer.Option("--limit", "--page-size", help="Breakdown rows per page (1-200).")] = 50,
    sort_by: Annotated[
        str,
        typer.Option(
            help="Breakdown sort field: totalRequests, totalTokens, promptTokens, completionTokens, "
            "totalCost, or username / modelName / providerName."
        ),
    ] = "totalTokens",
    ascending: Annotated[bool, typer.Option("--asc", help="Sort the breakdown ascending.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document; the tier goes to stderr.")] = False,
) -> None:
    """Admin analytics (or a breakdown) for a date range, read through Redis -> PostgreSQL -> source."""

    async def go(manager: CacheManager) -> None:
        query = build_query(
            start,
            end,
            user_ids=user,
            model_ids=model,
            provider_ids=provider,
            api_key_ids=api_key,
            max_days=manager.settings.max_range_days,
            max_ids=manager.settings.max_filter_ids,
        )
        started = time.perf_counter()
        if by is None:
            answer = await manager.analytics(query)
        else:
            answer = await manager.breakdown(_dimension(by), query, Page(page, limit, sort_by, not ascending))
        took = f"{answer.tier} in {(time.perf_counter() - started) * 1000:.1f} ms"
        if as_json:
            _print_json(answer.value)
            err.print(f"tier: {took}", markup=False, highlight=False)
        elif by is None:
            _print_analytics(answer.value, took)
        else:
            _print_breakdown(_dimension(by), answer.value, took)

    _manager_call(go)


def _print_analytics(doc: dict[str, Any], tier: str) -> None:
    period = doc["period"]
    days = (dt.date.fromisoformat(period["endDate"]) - dt.date.fromisoformat(period["startDate"])).days + 1
    table = Table(title=f"Usage {period['startDate']} .. {period['endDate']} ({days} days)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("vs previous", justify="right")
    trends = doc["trends"]
    rows = [
        ("requests", f"{doc['totalRequests']:,}", trends["requestsTrend"]),
        ("tokens", f"{doc['totalTokens']['total']:,}", trends["totalTokensTrend"]),
        ("cost ($)", f"{doc['totalCost']['total']:,.2f}", trends["costTrend"]),
        ("active users", f"{doc['activeUsers']} of {doc['totalUsers']}", trends["usersTrend"]),
        ("success rate", f"{doc['successRate']:.2f}%", None),
    ]
    for name, value, change in rows:
        table.add_row(name, value, f"{change['percentageChange']:+.2f}%" if change else "")
    out.print(table)
    top = Table(title="Top models (by cost)")
    for column in ("model", "provider", "requests", "tokens", "cost ($)"):
        top.add_column(column, justify="right" if column not in ("model", "provider") else "left")
    for m in doc["topModels"]:
        top.add_row(m["modelName"], m["provider"], f"{m['requests']:,}", f"{m['tokens']:,}", f"{m['cost']:,.2f}")
    out.print(top)
    out.print(f"answered by: {tier}")


_ROW_NAME = {"user": "username", "model": "modelName", "provider": "provider"}


def _print_breakdown(dimension: Dimension, doc: dict[str, Any], tier: str) -> None:
    p = doc["pagination"]
    table = Table(title=f"By {dimension} (page {p['page']}/{max(p['totalPages'], 1)}, {p['total']} rows)")
    for column in (dimension, "requests", "tokens", "cost ($)", "success"):
        table.add_column(column, justify="left" if column == dimension else "right")
    for row in doc["data"]:
        metrics = row["metrics"]
        success = metrics.get("successRate")  # a user row has it per model only
        table.add_row(
            str(row[_ROW_NAME[dimension]]),
            f"{metrics['requests']:,}",
            f"{metrics['tokens']['total']:,}",
            f"{metrics['cost']:,.2f}",
            "-" if success is None else f"{success:.2f}%",
        )
    out.print(table)
    out.print(f"answered by: {tier}")


@app.command()
def warm(
    range_: Annotated[
        list[str], typer.Option("--range", help="Preset (today, last-7-days, ...) or START..END; repeatable.")
    ],
    by: Annotated[list[str] | None, typer.Option("--by", help="Also warm these breakdowns.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fill day aggregates and range results for the given ranges."""

    async def go(manager: CacheManager) -> None:
        ranges = [resolve_range(spec, field="--range") for spec in range_]
        for days in ranges:
            if days.days > manager.settings.max_range_days:
                raise InvalidRequest(
                    "--range", f"{days} spans {days.days} days; at most {manager.settings.max_range_days}"
                )
        with err.status("warming") as status:
            report = await manager.warm(
                ranges,
                [UsageFilters()],
                [_dimension(d) for d in by or []],
                progress=lambda line: status.update(f"warming {line}"),
            )
        if as_json:
            _print_json(report.as_dict())
        else:
            out.print(
                f"warmed {', '.join(report.ranges)}: {report.keys_written} keys written, {report.days_warmed} days, "
                f"{report.results_warmed} results in {report.duration_seconds:.2f}s"
                + ("" if report.redis_available else " (redis unavailable: PostgreSQL only)")
            )

    _manager_call(go)


@app.command()
def invalidate(
    start: Annotated[str, typer.Option("--start", help="First day to purge, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--end", help="Last day to purge, YYYY-MM-DD.")],
    tier: Annotated[str, typer.Option(help="redis, postgres or all.")] = "all",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Purge a date range from the cache tiers; afterwards no tier serves a stale read of those days."""

    async def go(manager: CacheManager) -> None:
        days = resolve_range(f"{start}..{end}", field="--start/--end")
        tiers: tuple[InvalidationTier, ...] = {
            "all": ("redis", "postgres"),
            "redis": ("redis",),
            "postgres": ("postgres",),
        }.get(tier) or ()  # type: ignore[assignment]
        if not tiers:
            raise InvalidRequest("--tier", f"{tier!r} is not one of redis, postgres, all")
        report = await manager.invalidate(days, tiers)
        if as_json:
            _print_json(report.as_dict())
        else:
            out.print(
                f"invalidated {days}: {report.days_purged} days purged, {report.versions_bumped} versions bumped, "
                f"{report.keys_deleted} redis keys deleted (redis: {report.redis_status})"
            )
        if report.redis_status == "unavailable":
            err.print("warning: redis was unreachable; day versions are re-synced from PostgreSQL on reconnect")

    _manager_call(go)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Hit rates per tier, key count, memory, breaker state."""

    async def go(manager: CacheManager) -> None:
        report = await manager.stats()
        if as_json:
            _print_json(report)
            return
        table = Table(title="litemaas-cache stats")
        table.add_column("metric")
        table.add_column("value", justify="right")
        redis, postgres = report["redis"], report["postgres"]
        for name, value in (
            ("hit rate (answered without the source)", report["hitRate"]),
            ("requests", report["requests"]),
            ("redis available", redis["available"]),
            ("redis breaker", redis["breaker"]),
            ("redis failure", redis["failure"]),
            ("redis result hits / misses", f"{redis['hits']} / {redis['misses']}"),
            ("redis keys under prefix", redis["keyCount"]),
            ("redis memory used (bytes)", redis["memoryUsedBytes"]),
            ("postgres day hits / misses", f"{postgres['dayHits']} / {postgres['dayMisses']}"),
            ("counters", report["counterScope"]),
        ):
            table.add_row(name, "-" if value is None else str(value))
        out.print(table)

    _manager_call(go)


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Watch only these namespaces (default: all).")
    ] = None,
    standalone: Annotated[
        bool, typer.Option(envvar="OPERATOR_STANDALONE", help="Run without peering (a single replica).")
    ] = False,
    peering: Annotated[str, typer.Option(envvar="OPERATOR_PEERING", help="Peering object name.")] = (
        "litemaas-cache-operator"
    ),
    liveness: Annotated[str, typer.Option(envvar="OPERATOR_LIVENESS", help="Liveness endpoint URL.")] = (
        "http://0.0.0.0:8080/healthz"
    ),
) -> None:
    """Run the kopf operator: CacheWarmPolicy and CacheInvalidation reconciliation."""
    import kopf

    from .controller import handlers  # noqa: F401 - registers the handlers

    # The startup handler owns kopf's settings, except this one, which depends on the namespaces: watching only
    # namespaces named exactly (no glob), kopf would still list and watch every namespace of the cluster to find
    # them, which a namespaced install's Role does not allow (403s, and about a minute of retries at every start).
    # Without that scan the named namespaces are the watched ones, and CRDs are discovered once, at start.
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.scanning.disabled = bool(namespace) and not any(c in ns for ns in namespace or () for c in "!*?,")
    # Settings are loaded here first only to fail fast, naming the variable, before connecting to Kubernetes;
    # the startup handler loads them again for itself.
    _run(
        lambda _settings: kopf.operator(
            clusterwide=not namespace,
            namespaces=namespace or (),
            standalone=standalone,
            peering_name=peering,
            liveness_endpoint=liveness,
            settings=kopf_settings,
        )
    )


@app.command()
def api(
    host: Annotated[str, typer.Option(envvar="API_HOST")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="API_PORT", min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP analytics API (LiteMaaS JWTs, admin API keys or the service token; rate-limited)."""
    from .webapi import serve

    _run(lambda settings: serve(settings, host, port))


def main() -> None:
    """Console-script entry point."""
    app()
