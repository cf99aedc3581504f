"""`chronik-trio dev-cluster`: a local cluster of real `chronik-trio node` processes.

One supervisor (this process) starts N nodes on 127.0.0.1, Kafka ports `base_port ..
base_port+N-1`, Raft ports right after them (`base_port+N .. base_port+2N-1`), data in
`DATA_DIR/nodeI` with the node's log in `DATA_DIR/nodeI/node.log`. It prints the bootstrap
string once every node has logged `node I ready`, then waits:

- SIGINT (Ctrl-C) or SIGTERM: SIGTERM to every node by PID, wait up to STOP_TIMEOUT_S,
  SIGKILL by PID whatever is left; exit 0 if every node stopped cleanly, else 1.
- a node exits on its own: say which, with the tail of its log, stop the others as above
  and exit 1.

Nodes run in their own process group, so a Ctrl-C in the terminal reaches only the
supervisor, which stops them in order; on Linux each node also gets SIGTERM from the kernel
if the supervisor dies without stopping them (PR_SET_PDEATHSIG), so none is orphaned.

Exit codes: 0 clean stop, 1 a node failed (or did not stop cleanly), 2 bad options, busy
ports or a data dir this command did not make.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import attrs
import trio

NODES_MAX = 7  # an odd-sized Raft group of up to 7 voters; more only slows a laptop down
HOST = "127.0.0.1"
MANIFEST = "dev-cluster.json"  # marks a data dir as ours: --clean wipes only such a dir
READY_TIMEOUT_S = 60.0  # a loaded 2-core machine starts 7 nodes in well under this
STOP_TIMEOUT_S = 15.0  # a node's own shutdown takes at most ~3 s of request grace plus syncs
POLL_INTERVAL_S = 0.1  # how often logs are read for `ready` (and exits polled without pidfd)
LOG_TAIL_LINES = 20  # of a failed node's log, shown on the terminal


class DevClusterError(Exception):
    """A problem with the options or the data dir; the cluster was not started."""


@attrs.frozen
class NodeSpec:
    node_id: int
    kafka_port: int
    raft_port: int
    data_dir: pathlib.Path

    @property
    def kafka_address(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.data_dir / "node.log"


def plan(nodes: int, base_port: int, data_dir: pathlib.Path) -> list[NodeSpec]:
    """The nodes of a cluster: ports and data dirs (pure)."""
    if not 1 <= nodes <= NODES_MAX:
        raise DevClusterError(f"--nodes must be 1..{NODES_MAX}, got {nodes}")
    if not 1024 <= base_port or base_port + 2 * nodes - 1 > 65535:
        raise DevClusterError(f"--base-port {base_port}: the ports {base_port}..{base_port + 2 * nodes - 1} "
                              f"must lie within 1024..65535")
    return [NodeSpec(i, base_port + i - 1, base_port + nodes + i - 1, data_dir / f"node{i}")
            for i in range(1, nodes + 1)]


def peers_of(specs: list[NodeSpec]) -> str:
    return ",".join(f"{s.node_id}@{HOST}:{s.raft_port}" for s in specs)


def node_command(spec: NodeSpec, peers: str, log_level: str) -> list[str]:
    return [sys.executable, "-m", "chronik_trio.cli", "node", "--node-id", str(spec.node_id),
            "--listen", spec.kafka_address, "--data-dir", str(spec.data_dir),
            "--peers", peers, "--log-level", log_level]


# --- the data dir and the ports (before anything starts) -------------------------------------

def prepare_data_dir(data_dir: pathlib.Path, nodes: int, base_port: int, *, clean: bool) -> None:
    """Wipe it (--clean) or check it was made for the same cluster shape; write the manifest.

    A node's Raft identity lives in its data dir, so reusing one with another node count or
    other ports would start a different cluster on old state: refused, --clean fixes it.
    """
    manifest = data_dir / MANIFEST
    wanted = {"nodes": nodes, "base_port": base_port}
    if data_dir.exists() and not data_dir.is_dir():
        raise DevClusterError(f"{data_dir} exists and is not a directory")
    ours = manifest.exists()
    empty = not data_dir.exists() or not any(data_dir.iterdir())
    if not ours and not empty:
        raise DevClusterError(f"{data_dir} is not empty and has no {MANIFEST}, so dev-cluster did not "
                              f"make it; choose another --data-dir (nothing was changed)")
    if clean and ours:
        shutil.rmtree(data_dir)
    elif ours:
        try:
            found = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise DevClusterError(f"{manifest} is unreadable ({exc}); use --clean to start afresh") from None
        if found != wanted:
            raise DevClusterError(
                f"{data_dir} holds a cluster made with --nodes {found.get('nodes')} --base-port "
                f"{found.get('base_port')}; run with those, or add --clean to wipe it")
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(wanted) + "\n")


def busy_ports(ports: list[int]) -> list[int]:
    """Ports on 127.0.0.1 a node could not listen on now (bound as the node binds them)."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                busy.append(port)
    return busy


# --- processes ---------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _pdeathsig_preexec():
    """A preexec_fn asking the kernel to SIGTERM the child when we die (Linux), or None.

    The child is forked from the main thread, which lives as long as the supervisor (the
    signal follows the forking *thread*; that is why nodes are not spawned through
    trio.run_process, which forks from a worker thread that may retire).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # we died between fork and prctl
            os._exit(1)

    return preexec


def spawn(spec: NodeSpec, peers: str, log_level: str) -> subprocess.Popen:
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    command = node_command(spec, peers, log_level)
    with open(spec.log_path, "ab") as log_file:
        log_file.write(f"--- dev-cluster: starting {' '.join(command)}\n".encode())
        log_file.flush()
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, process_group=0,
                                preexec_fn=_pdeathsig_preexec())


async def wait_exited(proc: subprocess.Popen) -> int:
    """Until the process has exited; reaps it and returns its return code."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is None:
        while proc.poll() is None:
            await trio.sleep(POLL_INTERVAL_S)
        return proc.returncode
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return proc.wait()


async def stop_all(procs: dict[int, subprocess.Popen], out) -> list[int]:
    """SIGTERM every running node by PID, wait, SIGKILL by PID what is left; reap all.

    Returns the ids of nodes that did not stop cleanly (non-zero exit or SIGKILL needed; a
    node killed by the SIGTERM itself, still starting, is not counted).
    """
    running = {i: p for i, p in procs.items() if p.poll() is None}
    for proc in running.values():
        os.kill(proc.pid, signal.SIGTERM)
    unclean = []
    with trio.move_on_after(STOP_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for proc in running.values():
                nursery.start_soon(wait_exited, proc)
    for node_id, proc in sorted(running.items()):
        if proc.poll() is None:
            print(f"dev-cluster: node {node_id} (pid {proc.pid}) still running {STOP_TIMEOUT_S:.0f} s "
                  f"after SIGTERM: SIGKILL", file=out, flush=True)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            unclean.append(node_id)
        elif proc.returncode == -signal.SIGTERM:
            # SIGTERM's default action: the node was still starting, before its handler was
            # installed. Its storage recovers from a kill at any point (storage.md), and a
            # Ctrl-C right after start is no failure worth exit 1.
            print(f"dev-cluster: node {node_id} (pid {proc.pid}) stopped while still starting",
                  file=out, flush=True)
        elif proc.returncode != 0:
            print(f"dev-cluster: node {node_id} (pid {proc.pid}) stopped with {describe_exit(proc.returncode)}",
                  file=out, flush=True)
            unclean.append(node_id)
    return unclean


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


# --- supervision -------------------------------------------------------------------------------

@attrs.define
class _Run:
    specs: list[NodeSpec]
    out: object
    procs: dict[int, subprocess.Popen] = attrs.Factory(dict)
    log_offsets: dict[int, int] = attrs.Factory(dict)  # where this run's lines start
    stop: trio.Event = attrs.Factory(trio.Event)
    failed: bool = False

    def say(self, text: str) -> None:
        print(f"dev-cluster: {text}", file=self.out, flush=True)

    def fail(self, text: str) -> None:
        if not self.stop.is_set():
            self.failed = True
            self.say(text)
            self.stop.set()


async def _watch(run: _Run, spec: NodeSpec) -> None:
    proc = run.procs[spec.node_id]
    returncode = await wait_exited(proc)
    run.fail(f"node {spec.node_id} (pid {proc.pid}) exited unexpectedly with {describe_exit(returncode)}; "
             f"last lines of {spec.log_path}:\n{log_tail(spec.log_path)}")


async def _on_signals(run: _Run, signals) -> None:
    async for signum in signals:
        run.say(f"received {signal.Signals(signum).name}: stopping every node")
        run.stop.set()


def _is_ready(run: _Run, spec: NodeSpec) -> bool:
    marker = f"node {spec.node_id} ready:".encode()
    try:
        with open(spec.log_path, "rb") as f:
            f.seek(run.log_offsets[spec.node_id])
            return marker in f.read()
    except OSError:
        return False


async def _announce_when_ready(run: _Run) -> None:
    waiting = list(run.specs)
    with trio.move_on_after(READY_TIMEOUT_S):
        while waiting:
            waiting = [s for s in waiting if not _is_ready(run, s)]
            if waiting:
                await trio.sleep(POLL_INTERVAL_S)
    if waiting:
        tails = "\n".join(f"--- last lines of {s.log_path}:\n{log_tail(s.log_path)}" for s in waiting)
        run.fail(f"node(s) {[s.node_id for s in waiting]} not ready after {READY_TIMEOUT_S:.0f} s\n{tails}")
        return
    run.say("ready; bootstrap: " + ",".join(s.kafka_address for s in run.specs))
    run.say("Ctrl-C or SIGTERM stops every node")


async def supervise(specs: list[NodeSpec], log_level: str, out=sys.stdout) -> int:
    """Run the cluster until a signal or a node failure; every node is reaped on return."""
    run = _Run(specs, out)
    peers = peers_of(specs)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_on_signals, run, signals)
                for spec in specs:
                    run.log_offsets[spec.node_id] = spec.log_path.stat().st_size if spec.log_path.exists() else 0
                    run.procs[spec.node_id] = proc = spawn(spec, peers, log_level)
                    run.say(f"node {spec.node_id}: kafka {spec.kafka_address}, raft {HOST}:{spec.raft_port}, "
                            f"pid {proc.pid}, log {spec.log_path}")
                    nursery.start_soon(_watch, run, spec)
                nursery.start_soon(_announce_when_ready, run)
                await run.stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                unclean = await stop_all(run.procs, out)
    if run.failed:
        return 1
    if unclean:
        run.say(f"node(s) {unclean} did not stop cleanly")
        return 1
    run.say("every node stopped")
    return 0


# --- the command -------------------------------------------------------------------------------

def add_parser(sub) -> None:
    p = sub.add_parser("dev-cluster", help="run a local cluster of real nodes under one supervisor")
    p.add_argument("--nodes", type=int, default=3, help=f"cluster size, 1..{NODES_MAX} (default 3)")
    p.add_argument("--base-port", type=int, default=9092,
                   help="Kafka port of node 1; node I listens on BASE+I-1 and its Raft port is "
                        "BASE+NODES+I-1 (default 9092)")
    p.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("dev-cluster"),
                   help="node I keeps its data and node.log in DATA_DIR/nodeI (default ./dev-cluster)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--clean", action="store_true", help="wipe the data dir (one made by dev-cluster) first")


def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.resolve()
    try:
        specs = plan(args.nodes, args.base_port, data_dir)
        ports = [s.kafka_port for s in specs] + [s.raft_port for s in specs]
        busy = busy_ports(ports)
        if busy:
            raise DevClusterError(f"port(s) {busy} on {HOST} are in use; choose another --base-port "
                                  f"(the cluster needs {ports[0]}..{ports[-1]})")
        prepare_data_dir(data_dir, args.nodes, args.base_port, clean=args.clean)
    except DevClusterError as exc:
        print(f"chronik-trio dev-cluster: {exc}", file=sys.stderr)
        return 2
    print(f"dev-cluster: {args.nodes} node(s) on {HOST}, data in {data_dir}", flush=True)
    return trio.run(supervise, specs, args.log_level)
