"""One `chronik-trio node` process: started, signalled and reaped by its PID.

A NodeProcess is one node identity (its command line, log file and /health address) over
any number of processes: start() after an exit starts the next one from the same data dir.
It remembers, for each process, whether its exit was caused (stop, kill, a terminating
signal, or expect_exit() for an exit the caller provoked otherwise); an exit nobody caused,
or a stop that did not end cleanly, is kept in `problems` across restarts.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import signal
import subprocess
import sys
import time

import attrs
import trio

from .health import HEALTH_TIMEOUT_S, fetch_health

READY_TIMEOUT_S = 60.0  # a loaded 2-core machine; a node is ready once __meta has a quorum
STOP_TIMEOUT_S = 15.0  # a node's own shutdown takes at most ~3 s of request grace plus syncs
POLL_S = 0.05  # how often readiness and exits are polled
LOG_TAIL_BYTES = 4000  # of a failed node's log, in error messages
# A clean stop: exit code 0, or SIGTERM's default action (the node was still starting,
# before its handler was installed; its storage recovers from a kill at any point).
CLEAN_STOP_CODES = frozenset({0, -signal.SIGTERM})
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class NodeExited(Exception):
    """The node's process exited while the harness waited for it to become ready."""


class NotReady(Exception):
    """The node did not report itself ready (/health `serving_kafka`) in time."""


class UnexpectedExit(AssertionError):
    """At teardown: some node exited without the harness causing it, or did not stop
    cleanly. An AssertionError, so a test whose teardown finds one fails."""


def chronik_trio_command() -> list[str]:
    """How to run `chronik-trio`: the console script beside this interpreter, else the
    module (a checkout run without installing the script)."""
    script = pathlib.Path(sys.executable).parent / "chronik-trio"
    return [str(script)] if script.exists() else [sys.executable, "-m", "chronik_trio.cli"]


def node_args(node_id: int, *, listen: str, data_dir: pathlib.Path, peers: str | None = None,
              admin_listen: str | None = None, log_level: str = "info",
              extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The arguments of `chronik-trio node` (after the program) for one node."""
    args = ["node", "--node-id", str(node_id), "--listen", listen, "--data-dir", str(data_dir)]
    if peers:
        args += ["--peers", peers]
    if admin_listen:
        args += ["--admin-listen", admin_listen]
    return [*args, "--log-level", log_level, *extra]


def health_address_in(args: list[str], node_id: int) -> str | None:
    """Where a node with these arguments serves /health: --admin-listen, else its own entry
    of --peers (its Raft address); None if neither is given (no HTTP server at all)."""
    def flag(name: str) -> str | None:
        return args[args.index(name) + 1] if name in args[:-1] else None
    if flag("--admin-listen"):
        return flag("--admin-listen")
    for entry in (flag("--peers") or "").split(","):
        member, _, address = entry.strip().partition("@")
        if member == str(node_id):
            return address
    return None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def die_with_parent():
    """A preexec_fn asking the kernel to SIGTERM the child when the forking thread dies
    (Linux), so no node outlives a supervisor killed without stopping them; None elsewhere.
    The signal follows the forking *thread*: spawn from the main thread."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


@attrs.define(eq=False)
class NodeProcess:
    """One node: `command` is the full argv (a prefix such as `ip netns exec NS` included),
    output is appended to `log_path`, /health is asked at `health_address` (HOST:PORT)."""

    node_id: int
    command: list[str]
    log_path: pathlib.Path
    health_address: str | None
    banner: str | None = None  # if set, "--- BANNER: starting COMMAND" is logged before each start
    own_process_group: bool = False  # a terminal's Ctrl-C then reaches only the supervisor
    with_parent: bool = False  # die_with_parent()
    proc: subprocess.Popen | None = None
    paused: bool = False
    log_start: int = 0  # where the current process's output starts in log_path
    starts: int = 0
    problems: list[str] = attrs.Factory(list)  # exits nobody caused, unclean stops
    _exit_caused: frozenset[int] | None | bool = False  # False: uncaused; None: any code; else the codes
    _exit_examined: bool = False

    # --- state -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def log_text(self) -> str:
        """Everything this node logged, over all its processes."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def current_log(self) -> str:
        """What the current (last started) process logged."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def forget_log_so_far(self) -> None:
        """current_log() starts from here on (to look only at what is logged next)."""
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, chars: int = LOG_TAIL_BYTES) -> str:
        return self.current_log()[-chars:]

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "NodeProcess":
        """Start a new process (after an exit: from the same data dir); does not wait."""
        assert not self.running, f"node {self.node_id} is already running (pid {self.pid})"
        self.examine_exit()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            if self.banner:
                log.write(f"--- {self.banner}: starting {' '.join(self.command)}\n".encode())
                log.flush()
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                process_group=0 if self.own_process_group else None,
                preexec_fn=die_with_parent() if self.with_parent else None)
        self.paused, self._exit_caused, self._exit_examined = False, False, False
        self.starts += 1
        return self

    def health(self, timeout_s: float = HEALTH_TIMEOUT_S) -> dict | None:
        """The node's /health answer; None if not running, paused or not answering."""
        if not self.running or self.paused or self.health_address is None:
            return None
        return fetch_health(self.health_address, timeout_s)

    def is_ready(self) -> bool:
        """Whether the node says it serves Kafka clients (registered in __meta)."""
        answer = self.health()
        return bool(answer and answer.get("serving_kafka") is True)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> "NodeProcess":
        """Until /health says the node serves Kafka.

        Raises:
            NodeExited: the process exited first (the message holds its log's tail).
            NotReady: not ready within timeout_s.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running:
                raise NodeExited(self._exited_message())
            if self.is_ready():
                return self
            if time.monotonic() >= deadline:
                raise NotReady(f"node {self.node_id} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(POLL_S)

    async def wait_ready_async(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """Until /health says the node serves Kafka (True), it exits or the time is up."""
        with trio.move_on_after(timeout_s):
            while self.running:
                if await trio.to_thread.run_sync(self.is_ready):
                    return True
                await trio.sleep(POLL_S * 2)
        return False

    def _exited_message(self) -> str:
        return (f"node {self.node_id} (pid {self.pid}) exited with {describe_exit(self.proc.returncode)}"
                f":\n{self.log_tail()}")

    # --- signals -----------------------------------------------------------------------------

    def signal(self, sig: signal.Signals) -> bool:
        """Send sig by PID; False if the process is not running. A terminating signal makes
        the exit caused (SIGTERM and SIGINT: caused if it ends cleanly; others: any code); a
        paused process is continued first so that it can act on SIGTERM or SIGINT."""
        if not self.running:
            return False
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._expect(CLEAN_STOP_CODES | {-sig})
            if self.paused:
                os.kill(self.pid, signal.SIGCONT)
                self.paused = False
        elif sig not in (signal.SIGSTOP, signal.SIGCONT):
            self._expect(None)
        os.kill(self.pid, sig)
        if sig in (signal.SIGSTOP, signal.SIGCONT, signal.SIGKILL):
            self.paused = sig == signal.SIGSTOP
        return True

    def pause(self) -> None:
        """SIGSTOP: the process stops being scheduled (a GC pause, a loaded machine)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def expect_exit(self) -> None:
        """The current process's exit, with any code, is the caller's doing (a power loss
        through /faults, injected disk errors): not a problem."""
        self._expect(None)

    def _expect(self, codes: frozenset[int] | None) -> None:
        if self._exit_caused is False or codes is None:
            self._exit_caused = codes

    def kill(self) -> int:
        """SIGKILL by PID and reap; returns the exit code."""
        self.signal(signal.SIGKILL)
        return self.proc.wait(timeout=STOP_TIMEOUT_S) if self.proc is not None else 0

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM by PID and wait for a clean exit; SIGKILL if it does not come within
        timeout_s (then a problem). Returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.signal(signal.SIGTERM):
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._kill_straggler(timeout_s)
        self.examine_exit()
        return self.proc.returncode

    def _kill_straggler(self, timeout_s: float) -> None:
        self.problems.append(f"node {self.node_id} (pid {self.pid}) still running {timeout_s:.0f} s after "
                             f"SIGTERM: SIGKILL\n{self.log_tail()}")
        self._exit_caused = None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    async def wait_exit_async(self, timeout_s: float | None = None) -> bool:
        """Until the process has exited and is reaped (True), or timeout_s passed (False).
        Woken by the exit itself where the OS has pidfds (Linux), else polled."""
        if self.proc is None or self.proc.poll() is not None:
            return True  # (a reaped PID may belong to another process by now: no pidfd)
        with trio.move_on_after(timeout_s if timeout_s is not None else float("inf")):
            try:
                pidfd = os.pidfd_open(self.proc.pid)
            except (AttributeError, OSError):  # no pidfds here, or the process is gone
                pidfd = None
            if pidfd is not None:
                try:
                    await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
            while self.running:  # reaps it; polls only without a pidfd
                await trio.sleep(POLL_S)
            return True
        return not self.running

    async def stop_async(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """stop() that waits without blocking trio."""
        if self.proc is None:
            return None
        if self.signal(signal.SIGTERM) and not await self.wait_exit_async(timeout_s):
            self._kill_straggler(timeout_s)
        self.examine_exit()
        return self.proc.returncode

    # --- exits -------------------------------------------------------------------------------

    def examine_exit(self) -> str | None:
        """If the current process has exited and nobody caused that exit (or a stop did not
        end cleanly), record it in `problems` (once) and return it."""
        if self.proc is None or self.proc.poll() is None or self._exit_examined:
            return None
        self._exit_examined = True
        code, caused = self.proc.returncode, self._exit_caused
        if caused is None or (caused is not False and code in caused):
            return None
        why = "nobody stopped it" if caused is False else "stopped uncleanly"
        problem = f"{self._exited_message()}\n({why})"
        self.problems.append(problem)
        return problem
