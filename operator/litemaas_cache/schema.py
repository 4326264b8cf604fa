"""Versioned schema migrations for the daily cache: idempotent and safe from concurrent processes."""

from __future__ import annotations

from importlib import resources

from .db import Database

SCHEMA = "litemaas_cache"
# One advisory lock serialises concurrent `migrate` runs (any constant unique to this project).
MIGRATION_LOCK_ID = 0x4C4D4331


def available_migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    found = []
    for entry in resources.files("litemaas_cache.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(db: Database, up_to: int | None = None) -> list[str]:
    """Apply the migrations not yet applied (up to version `up_to`, default all); returns the names applied."""
    applied_now: list[str] = []
    async with db.cache_connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        cur = await conn.execute(f"SELECT version FROM {SCHEMA}.schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, sql in available_migrations():
            if version in done or (up_to is not None and version > up_to):
                continue
            await conn.execute(sql.encode())
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied_now.append(name)
    return applied_now
