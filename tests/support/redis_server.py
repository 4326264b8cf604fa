"""A private redis-server on a free loopback port, for tests that stop, hang, restart or secure Redis."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """`with RedisServer(tmp_path) as server:` (no automatic snapshots; its RDB and log live in `workdir`)."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: Sequence[str] = (), config: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.extra_args = list(extra_args)  # e.g. --requirepass, or TLS options (then --port 0 --tls-port PORT)
        # A configuration file's text, for what only a file can say (a sentinel's `sentinel monitor`, which
        # the sentinel also rewrites as the setup changes); written once, so a restart keeps the rewrites.
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart on the same port, loading an RDB left by shutdown_save) and wait until it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_file = self.workdir / "redis.conf"
        if self.config is not None and not config_file.exists():
            config_file.write_text(self.config)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    *([str(config_file)] if self.config is not None else []),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--maxmemory-policy",
                    "volatile-lru",
                    *self.extra_args,  # later options win: TLS passes --port 0 --tls-port PORT
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server on port {self.port} exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            return
        raise AssertionError(f"gave up after {timeout}s waiting for redis-server to listen on port {self.port}")

    def stop(self) -> None:
        """SIGKILL (after SIGCONT, in case it is paused): connections drop, nothing is saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def shutdown_save(self) -> None:
        """Stop after writing an RDB, so the next start comes back with the same keys (a persistent Redis)."""
        assert self.process is not None
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "save"], capture_output=True, timeout=10)
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
