"""The bench databases: seeded once per parameter set, then reused by every later run (also on later days)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg

from litemaas_cache.dates import utc_today
from litemaas_cache.db import Database
from litemaas_cache.schema import migrate
from litemaas_cache.seed import create_source_tables, seed

WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class SeedParams:
    days: int
    users: int
    models: int
    seed_value: int

    @property
    def database_name(self) -> str:
        return f"litemaas_bench_{self.days}d_{self.users}u_{self.models}m_s{self.seed_value}"


# M: `litemaas-cache seed --days 91 --users 9000 --models 25 --seed 7`, about 2.2M source rows.
MEDIUM = SeedParams(days=91, users=9000, models=25, seed_value=7)
# L: a year of the same users and models, about 8.8M source rows (bench-full only).
LARGE = SeedParams(days=365, users=9000, models=25, seed_value=7)


@dataclass(frozen=True)
class Dataset:
    name: str  # "M" or "L"
    dsn: str
    params: SeedParams
    source_rows: int
    end: dt.date  # the seed's last day: the day it ran, a partial day
    reused: bool
    seed_seconds: float

    @property
    def last_full_day(self) -> dt.date:
        """Where the bench's ranges end: the last complete seeded day, never today, so no day has a short TTL."""
        return self.end - dt.timedelta(days=1)

    def as_dict(self) -> dict[str, object]:
        return {
            "database": self.params.database_name,
            "sourceRows": self.source_rows,
            "days": self.params.days,
            "users": self.params.users,
            "models": self.params.models,
            "seed": self.params.seed_value,
            "end": self.end.isoformat(),
            "reused": self.reused,
            "seedSeconds": round(self.seed_seconds, 1),
        }


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _seeded(dsn: str) -> tuple[dict[str, object], dt.date, int] | None:
    """The parameters, end day and row count a finished seed recorded, or None (absent or unfinished)."""
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute(b"SELECT params, end_day, source_rows FROM bench_meta").fetchone()
    except psycopg.Error:
        return None
    return None if row is None else (dict(row[0]), row[1], int(row[2]))


def _other_sessions(admin_dsn: str, name: str) -> int:
    """Sessions of other processes connected to the database (a seed in progress, another bench)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            b"SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


async def ensure_dataset(admin_dsn: str, params: SeedParams, label: str | None = None) -> Dataset:
    """Reuse the finished seed of `params`; wait while another process is seeding it; else (re)create and seed it.

    A database is only dropped when no seed finished in it and no other process is connected to it.
    """
    name = params.database_name
    label = label or name
    dsn = _with_database(admin_dsn, name)
    while True:
        meta = _seeded(dsn)
        if meta is not None and meta[0] == asdict(params):
            async with Database(dsn) as db:
                await migrate(db)  # a dataset seeded by an older release gets the cache schema of this one
            return Dataset(label, dsn, params, meta[2], meta[1], reused=True, seed_seconds=0.0)
        if not _other_sessions(admin_dsn, name):
            break
        print(
            f"{name}: not seeded yet and in use by another process; checking again in {WAIT_SECONDS:.0f}s", flush=True
        )
        await asyncio.sleep(WAIT_SECONDS)
    print(f"seeding {name}: {params.days} days, {params.users} users, {params.models} models ...", flush=True)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}".encode())
        conn.execute(f"CREATE DATABASE {name}".encode())
    started = time.monotonic()
    today = utc_today()
    async with Database(dsn) as db:
        await migrate(db)
        await create_source_tables(db)
        report = await seed(
            db, days=params.days, users=params.users, models=params.models, seed_value=params.seed_value, today=today
        )
        async with db.cache_connection() as conn:
            await conn.execute(b'ANALYZE "LiteLLM_DailyUserSpend"')
            await conn.execute(
                b"CREATE TABLE bench_meta (params jsonb NOT NULL, end_day date NOT NULL, source_rows bigint)"
            )
            await conn.execute(
                b"INSERT INTO bench_meta VALUES (%s, %s, %s)",
                (psycopg.types.json.Jsonb(asdict(params)), today, report.rows_inserted),
            )
            await conn.commit()
    seconds = time.monotonic() - started
    print(f"seeded {report.rows_inserted:,} source rows in {seconds:.1f}s", flush=True)
    return Dataset(label, dsn, params, report.rows_inserted, today, reused=False, seed_seconds=seconds)


async def user_ids(dataset: Dataset) -> list[str]:
    """Every LiteMaaS user id of the dataset, in a stable order (the pool of never-asked filters)."""
    async with await psycopg.AsyncConnection.connect(dataset.dsn) as conn:
        cur = await conn.execute(b"SELECT id::text FROM users ORDER BY id")
        return [str(row[0]) for row in await cur.fetchall()]
