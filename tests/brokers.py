"""Real `chronik-trio node` processes for integration tests, on the node-process harness
(`nodeharness`): started, signalled and reaped by PID, ready when /health says so.

BrokerProcess is one node with its own data dir and log file. A node without --peers also
gets --admin-listen on a free port (unless the test gives one), so that /health can say
when it is ready. Fixtures stop every broker at teardown and fail the test if any exited
without the test causing it (nodeharness.UnexpectedExit).
"""

from __future__ import annotations

import pathlib
import re
import signal
import sys

from nodeharness import NodeProcess, chronik_trio_command, free_port, free_ports, node_args
from nodeharness.process import READY_TIMEOUT_S, health_address_in

from chronik_trio.tools.bench_local import scrape

__all__ = ["CHRONIK_TRIO", "READY_TIMEOUT_S", "BrokerProcess", "free_port", "free_ports"]

# The console script installed beside the interpreter running the tests.
CHRONIK_TRIO = str(pathlib.Path(sys.executable).parent / "chronik-trio")


class BrokerProcess:
    """One `chronik-trio node` process on 127.0.0.1 with its own data dir and log file.

    extra_args may be changed before a start; the command is built at each start."""

    def __init__(self, data_dir: pathlib.Path, *, node_id: int = 1, port: int | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.node_id = node_id
        self.port = port or free_port()
        self.data_dir = data_dir
        self.extra_args = list(extra_args or [])
        self.log_path = data_dir.parent / f"node{node_id}-{self.port}.log"
        self._admin_port: int | None = None
        self.process = NodeProcess(node_id, [], self.log_path, None)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def proc(self):
        return self.process.proc

    def args(self) -> list[str]:
        args = node_args(self.node_id, listen=self.bootstrap, data_dir=self.data_dir,
                         extra=self.extra_args)
        if health_address_in(args, self.node_id) is None:
            self._admin_port = self._admin_port or free_port()
            args += ["--admin-listen", f"127.0.0.1:{self._admin_port}"]
        return [*chronik_trio_command(), *args]

    def start(self, *, wait: bool = True) -> "BrokerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = self.args()
        self.process.command = command
        self.process.health_address = health_address_in(command, self.node_id)
        self.process.start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.process.wait_ready(timeout_s)

    def log_text(self) -> str:
        return self.process.log_text()

    def signal(self, sig: int) -> None:
        self.process.signal(signal.Signals(sig))

    def kill(self) -> int:
        """SIGKILL by PID and reap; returns the exit code."""
        return self.process.kill()

    def stop(self) -> int:
        """SIGTERM by PID, wait for a clean exit, SIGKILL if it does not come (a problem)."""
        code = self.process.stop()
        return 0 if code is None else code

    def expect_exit(self) -> None:
        """The current process is meant to exit on its own (a test provoked it)."""
        self.process.expect_exit()

    def restart(self) -> "BrokerProcess":
        self.stop()
        return self.start()


def fetch_session_counters(broker: "BrokerProcess") -> dict[str, float]:
    """The node's chronik_fetch_* counters (fetch sessions, KIP-227) from its /metrics."""
    text = scrape(broker.process.health_address)
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^chronik_(fetch_\w+?)(?:_total)? (\S+)$", text, re.M)}
