"""Real servers for the connector tests: started on a free loopback port, stopped by PID.

A server that cannot start fails the test run (its log is in the error); nothing is
skipped. Every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["ServerProcess", "find_binary", "free_port", "wait_for_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """True once something accepts connections on 127.0.0.1:``port`` (False on timeout or
    when ``alive()`` turns False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


def find_binary(name: str, *candidates: str) -> str:
    """The path of a server binary: on PATH or at one of ``candidates``.

    Raises:
        RuntimeError: not installed (``.ci/run`` installs the servers the tests need).
    """
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"{name} is not installed; .ci/run installs it (apt-get install), or install it "
        f"yourself: the connector tests run against the real server"
    )


class ServerProcess:
    """A server process of a test: ``start()`` waits until its port accepts connections,
    ``stop()`` ends it by its PID (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        port: int,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.port = port
        self.log_path = log_path
        self.env = env
        self.user = user
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if self.env is None else {**os.environ, **self.env},
                user=self.user,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        process = self.process
        if not wait_for_port(self.port, timeout, lambda: process.poll() is None):
            self.stop()
            raise RuntimeError(
                f"{self.name} did not start on 127.0.0.1:{self.port} within {timeout} s "
                f"(exit code {process.returncode}); its log:\n{self.log()}"
            )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)

    @contextlib.contextmanager
    def running(self, timeout: float = 30.0) -> Iterator[ServerProcess]:
        self.start(timeout)
        try:
            yield self
        finally:
            self.stop()
