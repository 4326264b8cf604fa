"""PostgreSQL connection pools: the LiteMaaS database (daily cache, users, api_keys) and LiteLLM's database."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from .errors import BackendUnavailable

set_json_loads(orjson.loads)
set_json_dumps(orjson.dumps)

CONNECT_TIMEOUT_SECONDS = 5


def describe_pg_error(exc: BaseException) -> str:
    """A short description of a PostgreSQL error that never includes the DSN (and so no password)."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return f"{type(exc).__name__}: {exc.diag.message_primary}"
    return type(exc).__name__


@dataclass(frozen=True)
class SessionLimits:
    """Bounds on every session and on the pool's queue (DB_* settings); the defaults bound nothing (seeding and
    migrations run unbounded). Unset, a statement or a wait for a lock may last for ever."""

    statement_timeout_seconds: float | None = None
    lock_timeout_seconds: float | None = None
    pool_timeout_seconds: float = 30.0
    max_waiting: int = 0  # psycopg_pool: 0 = an unbounded queue

    def session_settings(self) -> dict[str, int]:
        """The PostgreSQL settings each session gets (milliseconds)."""
        timeouts = {"statement_timeout": self.statement_timeout_seconds, "lock_timeout": self.lock_timeout_seconds}
        return {name: int(value * 1000) for name, value in timeouts.items() if value is not None}


UNBOUNDED = SessionLimits()


class Database:
    """Owns the pools; use `async with Database(dsn, litellm_dsn) as db:`."""

    def __init__(
        self, dsn: str, litellm_dsn: str | None = None, *, max_size: int = 10, limits: SessionLimits = UNBOUNDED
    ) -> None:
        kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "litemaas-cache"}
        if settings := limits.session_settings():
            kwargs["options"] = " ".join(f"-c {name}={value}" for name, value in settings.items())

        def pool(conninfo: str, name: str) -> AsyncConnectionPool[Any]:
            return AsyncConnectionPool(
                conninfo,
                min_size=1,
                max_size=max_size,
                timeout=limits.pool_timeout_seconds,
                max_waiting=limits.max_waiting,
                # One round trip per checkout: after a PostgreSQL restart the pool's idle connections are dead, and
                # without the check each of them would fail one request before the pool replaced it.
                check=AsyncConnectionPool.check_connection,
                kwargs=kwargs,
                open=False,
                name=name,
            )

        self.cache_pool = pool(dsn, "litemaas")
        self.source_pool = (
            self.cache_pool if litellm_dsn is None or litellm_dsn == dsn else pool(litellm_dsn, "litellm")
        )

    async def open(self, wait_seconds: float = 10.0) -> None:
        try:
            await self.cache_pool.open(wait=True, timeout=wait_seconds)
            if self.source_pool is not self.cache_pool:
                await self.source_pool.open(wait=True, timeout=wait_seconds)
        except Exception as exc:
            await self.close()
            raise BackendUnavailable("postgresql", describe_pg_error(exc)) from None

    async def close(self) -> None:
        await self.cache_pool.close()
        if self.source_pool is not self.cache_pool:
            await self.source_pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def identity(self) -> str:
        """Which database this is, as a short stable hash of the server's system identifier (unique per cluster,
        kept by physical replicas) and the database's name. Cached entries live under it, so two deployments
        that share a Redis and a key prefix never read each other's entries."""
        async with self.cache_connection() as conn:
            cur = await conn.execute("SELECT current_database()")
            row = await cur.fetchone()
            name = str(row[0]) if row else ""
            try:
                async with conn.transaction():
                    cur = await conn.execute("SELECT system_identifier::text FROM pg_control_system()")
                    row = await cur.fetchone()
                system = str(row[0]) if row else ""
            except psycopg.errors.InsufficientPrivilege:  # a managed server that hides it: the name still tells
                system = ""
        return hashlib.blake2b(f"{system}/{name}".encode(), digest_size=5).hexdigest()

    @asynccontextmanager
    async def cache_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection to the LiteMaaS database; connection failures become BackendUnavailable."""
        async with _translated(), self.cache_pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def source_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection to LiteLLM's database."""
        async with _translated(), self.source_pool.connection() as conn:
            yield conn


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except TooManyRequests:
        raise BackendUnavailable("postgresql", "too many reads are waiting for a connection") from None
    except PoolTimeout:
        raise BackendUnavailable("postgresql", "no connection was free in time") from None
    except psycopg.OperationalError as exc:  # connection lost, statement or lock timeout
        raise BackendUnavailable("postgresql", describe_pg_error(exc)) from None
