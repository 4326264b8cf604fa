"""A private Redis Sentinel setup on loopback: one master, one replica and three sentinels (quorum 2), each a
redis-server of tests/support/redis_server.py, for tests that fail the master over."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from redis import Redis
from redis.exceptions import RedisError

from tests.support.redis_server import RedisServer

MASTER_NAME = "cachemaster"
# Quick failure detection: the master is subjectively down after 1 s without an answer.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000


class SentinelSetup:
    """`with SentinelSetup(tmp_path) as setup:` then `setup.url`, `setup.failover()` or `setup.kill_master()`.

    `password` is the AUTH of the master and the replica (and what the sentinels use to reach them);
    `sentinel_password` that of the sentinels themselves."""

    def __init__(self, workdir: Path, password: str | None = None, sentinel_password: str | None = None) -> None:
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.master = RedisServer(workdir / "master", extra_args=auth)
        self.replica = RedisServer(
            workdir / "replica", extra_args=[*auth, "--replicaof", "127.0.0.1", str(self.master.port)]
        )
        self.sentinels = [
            RedisServer(
                workdir / f"sentinel-{n}",
                config=self._sentinel_config(),
                extra_args=["--sentinel", *(["--requirepass", sentinel_password] if sentinel_password else [])],
            )
            for n in range(3)
        ]

    def _sentinel_config(self) -> str:
        lines = [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
        if self.sentinel_password:
            # Sentinels talk to each other with this password too.
            lines.append(f"sentinel sentinel-pass {self.sentinel_password}")
        return "\n".join(lines) + "\n"

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of the master (with both passwords, when set)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = f"?sentinel_password={quote(self.sentinel_password, safe='')}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/0{query}"

    def node(self, server: RedisServer) -> Redis:
        """A plain client of a data node."""
        return Redis(host="127.0.0.1", port=server.port, password=self.password, socket_timeout=2)

    def sentinel(self, index: int = 0) -> Redis:
        return Redis(
            host="127.0.0.1", port=self.sentinels[index].port, password=self.sentinel_password, socket_timeout=2
        )

    def ask_sentinels(self, question: Callable[[Redis], Any]) -> list[Any]:
        """Each sentinel's answer to `question` (None from one that cannot be reached)."""
        answers = []
        for index in range(len(self.sentinels)):
            try:
                with self.sentinel(index) as client:
                    answers.append(question(client))
            except RedisError:
                answers.append(None)
        return answers

    def _named_ports(self) -> list[int | None]:
        """The master's port as each sentinel names it."""
        addresses = self.ask_sentinels(lambda client: client.sentinel_get_master_addr_by_name(MASTER_NAME))
        return [int(address[1]) if address else None for address in addresses]

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        return next((port for port in self._named_ports() if port is not None), None)

    def current_master(self) -> RedisServer:
        port = self.master_port()
        for server in (self.master, self.replica):
            if server.port == port:
                return server
        raise AssertionError(f"the sentinels name no master of this setup (port {port})")

    def other(self, server: RedisServer) -> RedisServer:
        return self.replica if server is self.master else self.master

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait("the replica to be in sync", lambda: self.in_sync(self.replica))
        self.wait("every sentinel to know the replica and the two other sentinels", self._sentinels_ready)

    def in_sync(self, replica: RedisServer) -> bool:
        try:
            with self.node(replica) as client:
                info = client.info("replication")
        except RedisError:
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        states = self.ask_sentinels(lambda client: client.sentinel_master(MASTER_NAME))
        return all(
            state is not None and int(state["num-other-sentinels"]) == 2 and int(state["num-slaves"]) == 1
            for state in states
        )

    def failover(self) -> RedisServer:
        """SENTINEL FAILOVER: the replica is promoted, the old master is demoted and its clients dropped. Returns
        the new master once every sentinel names it."""
        old = self.current_master()
        with self.sentinel() as client:
            client.sentinel_failover(MASTER_NAME)
        return self.wait_for_new_master(old)

    def kill_master(self) -> RedisServer:
        """SIGKILL the master: the sentinels notice after DOWN_AFTER_MS, agree, and promote the replica."""
        old = self.current_master()
        old.stop()
        return self.wait_for_new_master(old)

    def wait_for_new_master(self, old: RedisServer, seconds: float = 30.0) -> RedisServer:
        new = self.other(old)
        self.wait(f"the sentinels to name port {new.port} the master", lambda: self._all_name(new), seconds)
        self.wait(f"port {new.port} to accept writes", lambda: self._writable(new), seconds)
        return new

    def _all_name(self, server: RedisServer) -> bool:
        return all(port == server.port for port in self._named_ports())

    def _writable(self, server: RedisServer) -> bool:
        try:
            with self.node(server) as client:
                return client.info("replication").get("role") == "master"
        except RedisError:
            return False

    @staticmethod
    def wait(what: str, condition: Callable[[], bool], seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {seconds}s waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()

    def __enter__(self) -> SentinelSetup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
