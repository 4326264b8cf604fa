"""Schema migrations on real PostgreSQL: idempotent, and safe when several processes migrate at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg

from litemaas_cache.db import Database
from litemaas_cache.schema import SCHEMA, available_migrations, migrate

ALL = [name for _, name, _ in available_migrations()]


def migration_rows(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT version, name FROM {SCHEMA}.schema_migrations ORDER BY version").fetchall()


def daily_usage_columns(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'daily_usage'",
            (SCHEMA,),
        ).fetchall()
    return {r[0] for r in rows}


def test_bundled_migrations_are_numbered_and_unique() -> None:
    versions = [v for v, _, _ in available_migrations()]
    assert versions
    assert versions == sorted(set(versions))
    assert versions[0] == 1


async def test_migrate_twice_applies_nothing_the_second_time(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    async with Database(dsn) as db:
        first = await migrate(db)
        second = await migrate(db)
    assert first == ALL
    assert second == []
    assert migration_rows(dsn) == [(v, n) for v, n, _ in available_migrations()]
    assert {"day", "aggregates", "is_complete", "version", "updated_at"} <= daily_usage_columns(dsn)


async def test_migrate_again_from_a_new_connection_keeps_data(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    async with Database(dsn) as db:
        await migrate(db)
        async with db.cache_connection() as conn:
            await conn.execute(f"INSERT INTO {SCHEMA}.daily_usage (day, aggregates) VALUES ('2025-01-01', '{{}}')")
    async with Database(dsn) as db:
        assert await migrate(db) == []
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.daily_usage").fetchone() == (1,)


async def test_concurrent_migrations_on_a_brand_new_database(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()

    async def run() -> list[str]:
        async with Database(dsn, max_size=2) as db:
            return await migrate(db)

    results = await asyncio.gather(*(run() for _ in range(4)))
    # Every migration was applied by exactly one of the racers; the others found it done.
    applied = [name for names in results for name in names]
    assert sorted(applied) == sorted(ALL)
    assert sum(1 for names in results if names) == 1
    rows = migration_rows(dsn)
    assert [v for v, _ in rows] == sorted({v for v, _ in rows})
    assert [n for _, n in rows] == ALL
    assert "day" in daily_usage_columns(dsn)


def test_cli_migrate_is_idempotent(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    exe = str(Path(sys.executable).with_name("litemaas-cache"))
    env = {**os.environ, "DATABASE_URL": dsn}
    env.pop("LITELLM_DATABASE_URL", None)
    first = subprocess.run([exe, "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False)
    second = subprocess.run([exe, "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "applied:" in first.stdout
    assert all(name in first.stdout for name in ALL)
    assert "up to date" in second.stdout
    assert len(migration_rows(dsn)) == len(ALL)


async def test_0002_purges_days_cached_as_jsonb_and_bumps_their_versions(make_empty_dsn: Callable[[], str]) -> None:
    dsn = make_empty_dsn()
    async with Database(dsn) as db:
        assert await migrate(db, up_to=1) == ["0001_daily_usage.sql"]
        async with db.cache_connection() as conn:
            await conn.execute(
                f"INSERT INTO {SCHEMA}.daily_usage (day, aggregates, is_complete, requests, version)"
                """ VALUES ('2025-01-01', '{"rows": [["u", "k", null, "m", "p", 1, 1, 1, 1, 0, 0.1]]}', true, 1, 4),"""
                " ('2025-01-02', NULL, false, 0, 2)"
            )
        assert await migrate(db, up_to=2) == ["0002_aggregates_bytea.sql"]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT day::text, aggregates, is_complete, requests, version FROM {SCHEMA}.daily_usage ORDER BY day"
        ).fetchall()
        column_type = conn.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'daily_usage' AND column_name = 'aggregates'",
            (SCHEMA,),
        ).fetchone()
    assert column_type == ("bytea",)
    assert rows == [("2025-01-01", None, False, 0, 5), ("2025-01-02", None, False, 0, 2)]
