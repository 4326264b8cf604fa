"""A private PostgreSQL server on a free loopback port, for tests that stop and restart it (never the shared one).

It uses Debian's server binaries (the newest /usr/lib/postgresql/<version>/bin, as scripts/services.sh installs
them). PostgreSQL refuses to run as root, so under root the cluster is owned by and run as the `postgres` user, in a
folder of its own under the system temp directory (pytest's tmp_path is private to root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg

from tests.support.redis_server import free_port

SERVER_USER = "postgres"  # who runs the server when the tests run as root


def server_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise AssertionError("no PostgreSQL server binaries under /usr/lib/postgresql (run scripts/services.sh up)")
    return found[-1].parent


class PostgresServer:
    """`with PostgresServer() as server:` a fresh cluster (trust authentication on 127.0.0.1 only, no fsync),
    removed on exit; `stop()` and `start()` restart it on the same port with the same data."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bin_dir = server_bin_dir()
        self.as_root = os.geteuid() == 0
        self.workdir = Path(tempfile.mkdtemp(prefix="litemaas-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.running = False

    @property
    def superuser(self) -> str:
        return SERVER_USER if self.as_root else os.environ.get("USER", SERVER_USER)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, timeout: float = 60.0) -> None:
        argv = [str(self.bin_dir / command[0]), *command[1:]]
        if self.as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise AssertionError(f"{' '.join(command[:2])} exited {proc.returncode}: {proc.stderr}{proc.stdout}{log}")

    def init(self) -> None:
        if self.as_root:
            shutil.chown(self.workdir, SERVER_USER, SERVER_USER)
        self._run("initdb", "-D", str(self.data), "-U", self.superuser, "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        """Start (or start again) and wait until it accepts connections."""
        listen = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.workdir}"
        options = f"{listen} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self.running = True
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """A fast shutdown: every session is ended at once (open transactions roll back), as a restart does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.dsn(name)

    def __enter__(self) -> PostgresServer:
        self.init()
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
