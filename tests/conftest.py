"""Shared fixtures: real PostgreSQL and Redis (started by scripts/services.sh), one seeded database per session,
fresh copies of it for tests that change data, and a cache manager with its own Redis key prefix."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import pytest_asyncio
from scripts import generate

from litemaas_cache.db import Database
from litemaas_cache.manager import CacheManager
from litemaas_cache.schema import migrate
from litemaas_cache.seed import create_source_tables, seed
from litemaas_cache.settings import Settings, load_settings

SEED_ARGS = {"days": 40, "users": 30, "models": 6, "seed_value": 7}


def base_dsn() -> str:
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        pytest.fail("DATABASE_URL is not set: run the tests through `make test` (it starts PostgreSQL and Redis)")
    return dsn


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin(sql: str) -> None:
    with psycopg.connect(base_dsn(), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


async def prepare_database(dsn: str) -> None:
    """Migrate, create LiteLLM's and LiteMaaS's source tables, and seed them (the session database, private servers)."""
    async with Database(dsn) as db:
        await migrate(db)
        await create_source_tables(db)
        await seed(db, **SEED_ARGS)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def seeded_dsn() -> Iterator[str]:
    """A database migrated and seeded once per session; treat it as read-only (use `fresh_dsn` to write)."""
    name = f"litemaas_test_{os.getpid()}"
    _admin(f"DROP DATABASE IF EXISTS {name}")
    _admin(f"CREATE DATABASE {name}")
    dsn = with_database(base_dsn(), name)
    asyncio.run(prepare_database(dsn))
    yield dsn
    drop_database(dsn)


@contextmanager
def _databases(template_dsn: str | None) -> Iterator[Callable[[], str]]:
    """A factory of databases (copies of `template_dsn`, or empty), all dropped on exit."""
    created: list[str] = []

    def make() -> str:
        created.append(create_database(template_dsn))
        return created[-1]

    try:
        yield make
    finally:
        for dsn in created:
            drop_database(dsn)


@pytest.fixture
def make_dsn(seeded_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory of throwaway copies of the seeded database (CREATE DATABASE ... TEMPLATE)."""
    with _databases(seeded_dsn) as make:
        yield make


@pytest.fixture
def fresh_dsn(make_dsn: Callable[[], str]) -> str:
    return make_dsn()


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix of this test's own, so tests never see each other's keys."""
    return f"test:{uuid.uuid4().hex[:10]}:"


def make_settings(dsn: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": dsn,
        "redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    }
    values.update(overrides)
    return load_settings(**values)


@pytest_asyncio.fixture
async def manager(fresh_dsn: str, key_prefix: str) -> AsyncIterator[CacheManager]:
    """A two-tier manager on a private copy of the seeded data and a private Redis prefix."""
    async with managed(fresh_dsn, key_prefix) as m:
        yield m


@asynccontextmanager
async def managed(dsn: str, key_prefix: str, **overrides: object) -> AsyncIterator[CacheManager]:
    """A two-tier manager on `dsn` whose Redis keys (under `key_prefix`) are removed when it closes."""
    async with CacheManager.open(make_settings(dsn, redis_key_prefix=key_prefix, **overrides)) as m:
        yield m
        await m.redis.delete_all()


# --- Databases of a test's own: brand-new empty ones, or copies of the seeded one shared by a module ----------


def create_database(template_dsn: str | None = None) -> str:
    """CREATE DATABASE (empty, or a copy of `template_dsn`'s database) and return its DSN; see drop_database."""
    name = f"litemaas_t_{uuid.uuid4().hex[:12]}"
    template = f" TEMPLATE {urlsplit(template_dsn).path.lstrip('/')}" if template_dsn else ""
    _admin(f"CREATE DATABASE {name}{template}")
    return with_database(base_dsn(), name)


def drop_database(dsn: str, attempts: int = 50) -> None:
    """Drop a test database. FORCE ends our own sessions, but not an autovacuum worker that happens to be in it
    (our role may not signal it): that refusal is retried until the worker is done."""
    for attempt in range(attempts):
        try:
            _admin(f"DROP DATABASE IF EXISTS {urlsplit(dsn).path.lstrip('/')} WITH (FORCE)")
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


@pytest.fixture
def make_empty_dsn() -> Iterator[Callable[[], str]]:
    """Factory of brand-new empty databases (no schema, no tables), dropped after the test."""
    with _databases(None) as make:
        yield make


@pytest.fixture(scope="module")
def module_dsn(seeded_dsn: str) -> Iterator[str]:
    """A copy of the seeded database shared by the tests of one module (they may fill the cache tables)."""
    dsn = create_database(seeded_dsn)
    yield dsn
    drop_database(dsn)


# --- Redis tier: the local Redis Cluster, standalone/cluster parametrization, managers, raw clients -----------

import subprocess  # noqa: E402
from collections.abc import Awaitable  # noqa: E402
from contextlib import AsyncExitStack  # noqa: E402
from pathlib import Path  # noqa: E402

from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402

from tests.support.oracle import Oracle, Picks, open_oracle, pick_ids  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_CLUSTER_SCRIPT = REPO_ROOT / "scripts" / "redis-cluster.sh"
REDIS_TARGETS = ["standalone", pytest.param("cluster", marks=pytest.mark.cluster)]


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """The URL of the local 3-primary Redis Cluster (scripts/redis-cluster.sh up); fails the test if it cannot start."""
    try:
        proc = subprocess.run(
            ["bash", str(REDIS_CLUSTER_SCRIPT), "up"], capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{REDIS_CLUSTER_SCRIPT} up did not finish within 120s: {exc.stderr!r}")
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(
            f"could not start the local Redis Cluster ({REDIS_CLUSTER_SCRIPT} up exited {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(params=REDIS_TARGETS)
def redis_target(request: pytest.FixtureRequest) -> dict[str, object]:
    """Settings overrides selecting standalone Redis (REDIS_URL) or the local Redis Cluster, and the Redis tier on
    its own: no result bodies held in memory in front of it (tests/test_local_results.py tests those)."""
    alone = {"local_results_mib": 0}
    if request.param == "cluster":
        return {"redis_cluster": True, "redis_url": request.getfixturevalue("redis_cluster_url"), **alone}
    return {"redis_cluster": False, "redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), **alone}


@pytest_asyncio.fixture
async def open_manager(key_prefix: str) -> AsyncIterator[Callable[..., Awaitable[CacheManager]]]:
    """Factory `await open_manager(dsn, **overrides)` of managers (own pools each, like separate processes)
    on the test's key prefix; all are closed and the prefix's keys removed at the end."""
    opened: list[CacheManager] = []
    async with AsyncExitStack() as stack:

        async def open_(dsn: str, **overrides: object) -> CacheManager:
            overrides.setdefault("redis_key_prefix", key_prefix)
            manager = await stack.enter_async_context(CacheManager.open(make_settings(dsn, **overrides)))
            opened.append(manager)
            return manager

        yield open_
        for m in opened:  # one reachable manager is enough to remove the prefix's keys
            if m.redis.available:
                await m.redis.delete_all()
                break


@pytest_asyncio.fixture
async def redis_client(redis_target: dict[str, object]) -> AsyncIterator[Redis | RedisCluster]:
    """A plain redis-py client on the `redis_target` (to inspect TTLs or plant values)."""
    url = str(redis_target["redis_url"])
    client: Redis | RedisCluster = RedisCluster.from_url(url) if redis_target["redis_cluster"] else Redis.from_url(url)
    yield client
    await client.aclose()


# --- The SQL oracle over LiteLLM's table (tests/support/oracle.py), on the module's copy of the seeded data ----


@pytest_asyncio.fixture
async def oracle(module_dsn: str) -> AsyncIterator[Oracle]:
    async with open_oracle(module_dsn) as opened:
        yield opened


@pytest_asyncio.fixture
async def picks(oracle: Oracle) -> Picks:
    """Real ids of the seeded data for the filter scenarios."""
    return await pick_ids(oracle)


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary: HELM, the one tests/cluster/build.sh built, or PATH's (no cluster needed)."""
    if os.environ.get("LITEMAAS_SKIP_K8S") == "1":
        pytest.skip("LITEMAAS_SKIP_K8S=1")
    found = generate.find_helm()
    if found is not None and not os.access(found, os.X_OK):
        pytest.fail(f"helm at {found} (from HELM or the build cache) is not an executable file")
    if found is None:
        pytest.fail(
            "helm not found: set HELM=/path/to/helm, build it with `bash tests/cluster/build.sh` (it lands in "
            "~/.cache/litemaas-cache-operator/bin/<tag>/helm), put it on PATH, or set LITEMAAS_SKIP_K8S=1 to skip"
        )
    return found
