"""`chronik-trio dev-cluster`: a local cluster of real `chronik-trio node` processes.

One supervisor (this process) starts N nodes on 127.0.0.1 through the node-process harness
(`nodeharness`), Kafka ports `base_port .. base_port+N-1`, Raft ports right after them
(`base_port+N .. base_port+2N-1`), data in `DATA_DIR/nodeI` with the node's log in
`DATA_DIR/nodeI/node.log`. It prints the bootstrap string once every node says in /health
that it serves Kafka, then waits:

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
import json
import os
import pathlib
import shutil
import signal
import socket
import sys

import attrs
import trio

from nodeharness import NodeGroup, NodeProcess, describe_exit, node_args

NODES_MAX = 7  # an odd-sized Raft group of up to 7 voters; more only slows a laptop down
HOST = "127.0.0.1"
MANIFEST = "dev-cluster.json"  # marks a data dir as ours: --clean wipes only such a dir
READY_TIMEOUT_S = 60.0  # a loaded 2-core machine starts 7 nodes in well under this
STOP_TIMEOUT_S = 15.0  # a node's own shutdown takes at most ~3 s of request grace plus syncs
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


def node_command(spec: NodeSpec, peers: str, log_level: str, admin_listen: str | None = None) -> list[str]:
    return [sys.executable, "-m", "chronik_trio.cli",
            *node_args(spec.node_id, listen=spec.kafka_address, data_dir=spec.data_dir, peers=peers,
                       admin_listen=admin_listen, log_level=log_level)]


def node_process(spec: NodeSpec, peers: str, log_level: str, admin_listen: str | None = None) -> NodeProcess:
    """The harness's process of one node: /health on its Raft address (on admin_listen for a
    node without peers), in its own process group, SIGTERMed by the kernel if the supervisor
    dies without stopping it."""
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    return NodeProcess(spec.node_id, node_command(spec, peers, log_level, admin_listen), spec.log_path,
                       admin_listen or f"{HOST}:{spec.raft_port}", banner="dev-cluster",
                       own_process_group=True, with_parent=True)


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

async def stop_all(nodes: dict[int, NodeProcess], out) -> list[int]:
    """SIGTERM every running node by PID, wait, SIGKILL by PID what is left; reap all.

    Returns the ids of nodes that did not stop cleanly (non-zero exit or SIGKILL needed; a
    node killed by the SIGTERM itself, still starting, is not counted).
    """
    running = {i: node for i, node in nodes.items() if node.running}
    async with trio.open_nursery() as nursery:
        for node in running.values():
            nursery.start_soon(node.stop_async, STOP_TIMEOUT_S)
    unclean = []
    for node_id, node in sorted(running.items()):
        code = node.returncode
        if code == -signal.SIGKILL:  # stop_async's last resort
            print(f"dev-cluster: node {node_id} (pid {node.pid}) still running {STOP_TIMEOUT_S:.0f} s "
                  f"after SIGTERM: SIGKILL", file=out, flush=True)
            unclean.append(node_id)
        elif code == -signal.SIGTERM:
            # SIGTERM's default action: the node was still starting, before its handler was
            # installed. Its storage recovers from a kill at any point (storage.md), and a
            # Ctrl-C right after start is no failure worth exit 1.
            print(f"dev-cluster: node {node_id} (pid {node.pid}) stopped while still starting",
                  file=out, flush=True)
        elif code != 0:
            print(f"dev-cluster: node {node_id} (pid {node.pid}) stopped with {describe_exit(code)}",
                  file=out, flush=True)
            unclean.append(node_id)
    return unclean


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
    group: NodeGroup = attrs.Factory(NodeGroup)
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
    node = run.group[spec.node_id]
    await node.wait_exit_async()
    run.fail(f"node {spec.node_id} (pid {node.pid}) exited unexpectedly with {describe_exit(node.returncode)}; "
             f"last lines of {spec.log_path}:\n{log_tail(spec.log_path)}")


async def _on_signals(run: _Run, signals) -> None:
    async for signum in signals:
        run.say(f"received {signal.Signals(signum).name}: stopping every node")
        run.stop.set()


async def _announce_when_ready(run: _Run) -> None:
    """Once every node says in /health that it serves Kafka (a node that exits meanwhile
    is _watch's to report)."""
    waiting = await run.group.wait_all_ready_async(READY_TIMEOUT_S)
    if any(not run.group[n].running for n in waiting):
        return  # _watch says which node exited, with its log
    if waiting:
        tails = "\n".join(f"--- last lines of {s.log_path}:\n{log_tail(s.log_path)}"
                          for s in run.specs if s.node_id in waiting)
        run.fail(f"node(s) {waiting} not ready after {READY_TIMEOUT_S:.0f} s\n{tails}")
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
                    # Spawned here, in the main thread: the kernel's SIGTERM on our death
                    # follows the forking thread (nodeharness.die_with_parent).
                    node = run.group.add(node_process(spec, peers, log_level)).start()
                    run.say(f"node {spec.node_id}: kafka {spec.kafka_address}, raft {HOST}:{spec.raft_port}, "
                            f"pid {node.pid}, log {spec.log_path}")
                    nursery.start_soon(_watch, run, spec)
                nursery.start_soon(_announce_when_ready, run)
                await run.stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                unclean = await stop_all(run.group.nodes, out)
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
