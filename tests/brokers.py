"""Start and stop real `chronik-trio node` processes for integration tests.

Processes are tracked by PID and always cleaned up by PID (never by name).
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

# The console script installed beside the interpreter running the tests.
CHRONIK_TRIO = str(pathlib.Path(sys.executable).parent / "chronik-trio")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A currently free loopback port, never one this process handed out before (the OS
    may offer the same ephemeral port again as soon as the probe socket closes)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


class BrokerProcess:
    """One `chronik-trio node` process on 127.0.0.1 with its own data dir and log file."""

    def __init__(self, data_dir: pathlib.Path, *, node_id: int = 1, port: int | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.node_id = node_id
        self.port = port or free_port()
        self.data_dir = data_dir
        self.extra_args = list(extra_args or [])
        self.log_path = data_dir.parent / f"node{node_id}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        return [CHRONIK_TRIO, "node", "--node-id", str(self.node_id),
                "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
                "--log-level", "info", *self.extra_args]

    def start(self, *, wait: bool = True) -> "BrokerProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"node not listening after {timeout_s}s:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> int:
        """SIGKILL by PID and reap; returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=STOP_TIMEOUT_S) if self.proc else 0

    def stop(self) -> int:
        """SIGTERM by PID, wait for a clean exit, SIGKILL if it does not come."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                raise
        return self.proc.returncode

    def restart(self) -> "BrokerProcess":
        self.stop()
        return self.start()
