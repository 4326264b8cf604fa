"""The Redis client of a REDIS_URL: a standalone server, a Redis Cluster, or a master found through Sentinel.

redis-py parses redis:// and rediss:// URLs and follows a Sentinel-managed master (redis.asyncio.sentinel), but has
no URL for a Sentinel setup. This module reads the convention of redisvl and prefect-redis:

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/master-name[/db][?options]
    rediss+sentinel://...  (TLS to the master, its replicas and the sentinels alike)

Sentinels listen on 26379 unless a port is given. The URL's userinfo is the master's AUTH; `sentinel_username` and
`sentinel_password` options authenticate to the sentinels (which often have no password); every other option is a
redis-py URL option (ssl_ca_certs, ssl_cert_reqs, ...) parsed by redis-py itself, and on a TLS scheme the ssl_*
options apply to the sentinel connections too, so one CA covers the whole setup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

RedisClient = Redis | RedisCluster
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_SENTINEL_PORT = 26379
# How often a Sentinel client asks the sentinels where the master is, even if no connection broke. After a failover
# the old master stays writable until the sentinels demote it (up to ~10 s, their INFO period), and whatever a
# client writes to it meanwhile is lost: asking every second bounds that window for this process.
MASTER_CHECK_SECONDS = 1.0
_SENTINEL_AUTH_OPTIONS = ("sentinel_username", "sentinel_password")
# What redis-py's URL parser returns that a Sentinel-managed pool decides for itself (where the master is).
_FOUND_BY_SENTINEL = ("host", "port", "connection_class")


class SentinelUrlError(ValueError):
    """A redis+sentinel:// URL that cannot be used; the message never quotes the URL (it may hold a password)."""


@dataclass(frozen=True)
class SentinelTarget:
    """A master known to a set of sentinels, and how to connect to both."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    tls: bool
    # redis-py connection options of the master (db, AUTH, ssl_*, ...) and of the sentinels.
    master_options: dict[str, Any] = field(default_factory=dict)
    sentinel_options: dict[str, Any] = field(default_factory=dict)


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SENTINEL_SCHEMES)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a redis+sentinel:// or rediss+sentinel:// URL; a SentinelUrlError says what is wrong with it."""
    scheme, _, rest = url.strip().partition("://")
    tls = scheme.lower() == "rediss+sentinel"
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    userinfo, _, hosts = location.rpartition("@")
    sentinels = tuple(_sentinel_address(host) for host in hosts.split(","))
    names = [unquote(part) for part in path.split("/") if part]
    if not names:
        raise SentinelUrlError("names no master: add its name as the path (redis+sentinel://host:26379/mymaster)")
    if len(names) > 2 or (len(names) == 2 and not names[1].isdigit()):
        raise SentinelUrlError("has a path that is not /master-name or /master-name/db (a database number)")
    options = parse_qsl(query, keep_blank_values=True)
    sentinel_auth = {name: value for name, value in options if name in _SENTINEL_AUTH_OPTIONS}
    # The master's options, read by redis-py's own URL parser from the equivalent standalone URL.
    standalone = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}sentinel-managed/"
    standalone += names[1] if len(names) == 2 else "0"
    kept = [(name, value) for name, value in options if name not in _SENTINEL_AUTH_OPTIONS]
    if kept:
        standalone += "?" + urlencode(kept)
    try:
        master_options: dict[str, Any] = dict(parse_url(standalone))
    except ValueError as exc:
        raise SentinelUrlError(str(exc)) from None
    for name in _FOUND_BY_SENTINEL:
        master_options.pop(name, None)
    sentinel_options: dict[str, Any] = {
        name.removeprefix("sentinel_"): value for name, value in sentinel_auth.items() if value
    }
    if tls:
        master_options["ssl"] = True  # SentinelConnectionPool's switch to its TLS connection class
        sentinel_options |= {name: value for name, value in master_options.items() if name.startswith("ssl")}
    return SentinelTarget(sentinels, names[0], tls, master_options, sentinel_options)


def _sentinel_address(text: str) -> tuple[str, int]:
    """host, host:port, [v6], [v6]:port."""
    host, port = text.strip(), ""
    if host.startswith("["):
        host, _, port = host[1:].partition("]")
        port = port.removeprefix(":")
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    if not host:
        raise SentinelUrlError("lists an empty sentinel address (expected host[:port], comma-separated)")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise SentinelUrlError("has a sentinel port that is not a number from 1 to 65535")
    return unquote(host), int(port) if port else DEFAULT_SENTINEL_PORT


class _MasterWatchingPool(SentinelConnectionPool):
    """A Sentinel-managed pool that reports when the sentinels name a different master than before (a failover):
    every new connection asks them, so the first one after a failover notices."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        self.on_master_change: Callable[[str], None] = kwargs.pop("on_master_change")
        self.next_check = 0.0
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]

    async def get_master_address(self) -> Any:
        previous = self.master_address
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        if previous is not None and address != previous:
            self.on_master_change(f"{address[0]}:{address[1]}")
        return address

    async def aclose(self) -> None:
        """Closing the client closes its pool: and with it the sentinel connections, which nothing else owns."""
        await super().aclose()
        await self.sentinel_manager.aclose()


async def follow_master(client: RedisClient) -> None:
    """Ask the sentinels where the master is now (a Sentinel client; nothing for others), so that a failover is
    noticed (on_master_change) and idle connections to the old master are dropped; at most every
    MASTER_CHECK_SECONDS."""
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, _MasterWatchingPool) and time.monotonic() >= pool.next_check:
        pool.next_check = time.monotonic() + MASTER_CHECK_SECONDS
        await pool.get_master_address()


def open_client(
    url: str, *, cluster: bool, timeout: float, on_master_change: Callable[[str], None] | None = None
) -> RedisClient:
    """The client of REDIS_URL. `on_master_change(new address)` is called when a Sentinel failover moved the master."""
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels),
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout, **target.sentinel_options},
        )
        client: Redis = sentinel.master_for(
            target.master,
            connection_pool_class=_MasterWatchingPool,
            on_master_change=on_master_change or (lambda _address: None),
            retry_on_timeout=False,
            **common,
            **target.master_options,
        )
        return client
    if cluster:
        return RedisCluster.from_url(url, **common)
    return Redis.from_url(url, retry_on_timeout=False, **common)
