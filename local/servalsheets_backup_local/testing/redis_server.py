"""Start and stop throwaway ``redis-server`` processes bound to 127.0.0.1 on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket

# bandit B404/B603: starts the redis-server binary found by shutil.which, with fixed arguments.
import subprocess  # nosec B404
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from servalsheets_backup.errors import ConfigurationError


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A running redis-server process; stop() ends it by pid and removes its directory."""

    port: int
    pid: int
    workdir: Path
    password: str | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """A ``redis://`` URL for this server (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Terminate the server by pid and wait for it; idempotent."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def redis_server_binary() -> str:
    """Path of redis-server, or a ConfigurationError that says how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise ConfigurationError(
            "redis-server is not installed; install it with `apt-get install -y redis-server` "
            "(make test and make drill do this when run as root)"
        )
    return path


def start_redis(
    password: str | None = None, extra_args: list[str] | None = None, rdb: bytes | None = None
) -> RedisServer:
    """Start a redis-server on 127.0.0.1 and a free port, persistence off, and wait until it answers.

    With ``rdb``, the server loads that RDB file at start-up (as a cache seeded from a snapshot).
    """
    binary = redis_server_binary()
    workdir = Path(tempfile.mkdtemp(prefix="ssbk-redis-"))
    if rdb is not None:
        (workdir / "dump.rdb").write_bytes(rdb)
    for _attempt in range(5):
        port = free_port()
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
            "--loglevel",
            "warning",
        ]
        if password:
            args += ["--requirepass", password]
        args += extra_args or []
        process = subprocess.Popen(  # noqa: S603 - fixed binary and arguments  # nosec B603
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir
        )
        if _wait_listening(port, process):
            return RedisServer(port, process.pid, workdir, password, process)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError("redis-server did not start on 127.0.0.1")


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def pid_alive(pid: int) -> bool:
    """True while a process with ``pid`` exists (and is not a zombie we reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
