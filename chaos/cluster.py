"""A cluster of `chronik-trio node` processes behind the harness's proxies.

How nodes are wired is the network's business (network.py): by default node i listens on
127.0.0.1, clients are told (--advertised) the address of node i's client proxy, and node
i's --peers list names, for every other node j, the proxy of link i->j (its own entry is
its real Raft address, where it listens). The harness itself talks to /health and /faults
on the real Raft port, never through a proxy, so a cut link never hides a node from it.

Processes are started, signalled and reaped by PID only. Node output is appended to
nodes/node<i>.log across restarts. Leaders are learnt from the log lines the node
documents for operators: "group G: leader is node L at term T (seen by node N)".
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import attrs
import trio

from .network import NetworkUnavailable, make_network
from .proxy import LinkState

log = logging.getLogger(__name__)

CHRONIK_TRIO = str(pathlib.Path(sys.executable).parent / "chronik-trio")
LEADER_LINE = re.compile(rb"group (\S+): leader is node (\d+) at term (\d+) \(seen by node (\d+)\)")
STOP_TIMEOUT_S = 15.0
POLL_S = 0.05
EXIT_POLL_S = 0.1
HTTP_TIMEOUT_S = 5.0
META_GROUP = "__meta"


class ClusterError(Exception):
    """The cluster could not be started or driven as asked."""


def free_ports(count: int) -> list[int]:
    """Distinct ports free at the moment (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@attrs.define(eq=False)
class NodeProcess:
    node_id: int
    kafka_port: int
    raft_port: int
    data_dir: pathlib.Path
    log_path: pathlib.Path
    args: list[str]
    proc: subprocess.Popen | None = None
    raft_host: str = "127.0.0.1"
    paused: bool = False
    log_start: int = 0  # where the current process's output starts in log_path
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Cluster:
    """`size` nodes with ids 1..size. Use `async with` inside a nursery-owning task:

        cluster = Cluster(root, size, history=h)
        async with trio.open_nursery() as nursery:
            await cluster.start(nursery)
            ...
            await cluster.stop()
    """

    def __init__(self, root: pathlib.Path, size: int, *, fault_injection: bool = False,
                 node_args: tuple[str, ...] = (), record=lambda event: None,
                 ready_timeout_s: float = 90.0, network: str = "proxy") -> None:
        self.root = root
        self.size = size
        self.ids = list(range(1, size + 1))
        self.fault_injection = fault_injection
        self.node_args = list(node_args)
        self.record = record
        self.ready_timeout_s = ready_timeout_s
        self.nodes: dict[int, NodeProcess] = {}
        self.network = make_network(network)
        self._leaders: dict[str, tuple[int, int]] = {}  # group -> (term, leader)
        self._log_read: dict[int, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Set up the network and start every node; return once every node logged `ready`.

        Raises:
            ClusterError: a node was not ready in time, or the network mode cannot run here.
        """
        try:
            await self.network.setup(nursery, self.ids, free_ports(2 * self.size))
        except NetworkUnavailable as exc:
            raise ClusterError(str(exc)) from None
        (self.root / "nodes").mkdir(parents=True, exist_ok=True)
        for n in self.ids:
            a = self.network.addresses(n, self.ids)
            data_dir = self.root / "nodes" / f"node{n}"
            args = [*self.network.command_prefix(n), CHRONIK_TRIO, "node", "--node-id", str(n),
                    "--listen", a.listen, "--advertised", a.advertised, "--data-dir", str(data_dir),
                    "--peers", a.peers, "--log-level", "info",
                    *(["--fault-injection"] if self.fault_injection else []), *self.node_args]
            self.nodes[n] = NodeProcess(n, int(a.listen.rpartition(":")[2]), a.raft_port, data_dir,
                                        self.root / "nodes" / f"node{n}.log", args, raft_host=a.raft_host)
        for n in self.ids:
            self.spawn(n)
        nursery.start_soon(self._watch_exits)
        with trio.move_on_after(self.ready_timeout_s):
            async with trio.open_nursery() as waits:
                for n in self.ids:
                    waits.start_soon(self.wait_ready, n)
        not_ready = [n for n in self.ids if not self.is_ready(n)]
        if not_ready:
            raise ClusterError(f"node(s) {not_ready} not ready after {self.ready_timeout_s:.0f} s; "
                               f"see {self.root / 'nodes'}")

    def spawn(self, n: int) -> None:
        node = self.nodes[n]
        assert not node.running, f"node {n} is already running (pid {node.pid})"
        node.log_start = node.log_path.stat().st_size if node.log_path.exists() else 0
        with open(node.log_path, "ab") as out:
            node.proc = subprocess.Popen(node.args, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        node.paused = False
        node.starts += 1
        self.record({"type": "node", "node": n, "what": "started", "detail": f"pid {node.proc.pid}"})

    def is_ready(self, n: int) -> bool:
        return self.nodes[n].running and f"node {n} ready:".encode() in self.current_log(n)

    async def wait_ready(self, n: int, timeout_s: float | None = None) -> bool:
        """Until node n logs `ready` (True), exits or the timeout passes (False)."""
        with trio.move_on_after(timeout_s if timeout_s is not None else self.ready_timeout_s):
            while True:
                if not self.nodes[n].running:
                    self._note_exit(n)
                    return False
                if self.is_ready(n):
                    self.record({"type": "node", "node": n, "what": "ready"})
                    return True
                await trio.sleep(POLL_S * 2)
        return False

    async def _watch_exits(self) -> None:
        """Record each process's exit when it happens (a node may stop on its own)."""
        while True:
            for n in self.ids:
                self._note_exit(n)
            await trio.sleep(EXIT_POLL_S)

    def _note_exit(self, n: int) -> None:
        node = self.nodes[n]
        if node.proc is not None and node.proc.poll() is not None and not getattr(node.proc, "_noted", False):
            node.proc._noted = True  # type: ignore[attr-defined]
            self.record({"type": "node", "node": n, "what": "exited", "detail": f"code {node.proc.returncode}"})

    def send_signal(self, n: int, sig: signal.Signals) -> bool:
        """Send `sig` to node n's process by PID; False if it is not running."""
        node = self.nodes[n]
        if not node.running:
            return False
        if sig == signal.SIGKILL or sig == signal.SIGTERM:
            if node.paused and sig == signal.SIGTERM:
                os.kill(node.pid, signal.SIGCONT)
            node.paused = False
        os.kill(node.pid, sig)
        if sig == signal.SIGSTOP:
            node.paused = True
        elif sig == signal.SIGCONT:
            node.paused = False
        return True

    async def wait_exit(self, n: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        node = self.nodes[n]
        with trio.move_on_after(timeout_s):
            while node.running:
                await trio.sleep(POLL_S)
        if node.running:
            return False
        self._note_exit(n)
        return True

    async def kill(self, n: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal node n and reap it (SIGKILL if SIGTERM did not end it in time)."""
        if self.send_signal(n, sig) and not await self.wait_exit(n):
            self.send_signal(n, signal.SIGKILL)
            await self.wait_exit(n)

    async def restart(self, n: int, timeout_s: float | None = None) -> bool:
        """Start node n again from its data dir if it is not running; True once ready."""
        if not self.nodes[n].running:
            self._note_exit(n)
            self.spawn(n)
        return await self.wait_ready(n, timeout_s)

    async def stop(self) -> None:
        """Stop every node by PID: SIGTERM (after SIGCONT), wait, SIGKILL stragglers."""
        for n in self.ids:
            if n in self.nodes and self.nodes[n].running:
                self.send_signal(n, signal.SIGTERM)
        for n in self.ids:
            if n in self.nodes and not await self.wait_exit(n):
                self.send_signal(n, signal.SIGKILL)
                await self.wait_exit(n)

    def kill_all_now(self) -> None:
        """Synchronous last resort (on an error or cancellation): SIGKILL every node by PID,
        then remove what the network mode set up."""
        for node in self.nodes.values():
            if node.running:
                os.kill(node.pid, signal.SIGKILL)
                node.proc.wait(timeout=STOP_TIMEOUT_S)
        self.network.teardown()

    def running(self) -> list[int]:
        return [n for n in self.ids if self.nodes[n].running and not self.nodes[n].paused]

    # --- network -----------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return self.network.bootstrap(self.ids)

    def set_link(self, src: int, dst: int, state: LinkState, delay_s: float = 0.0) -> None:
        self.network.set_link(src, dst, state, delay_s)

    def set_client_link(self, n: int, state: LinkState, delay_s: float = 0.0) -> None:
        self.network.set_client_link(n, state, delay_s)

    def heal_network(self) -> None:
        self.network.heal()

    # --- logs and leaders --------------------------------------------------------------------

    def current_log(self, n: int) -> bytes:
        node = self.nodes[n]
        try:
            with open(node.log_path, "rb") as f:
                f.seek(node.log_start)
                return f.read()
        except FileNotFoundError:
            return b""

    def _scan_leader_lines(self) -> None:
        for n, node in self.nodes.items():
            try:
                with open(node.log_path, "rb") as f:
                    f.seek(self._log_read.get(n, 0))
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            self._log_read[n] = self._log_read.get(n, 0) + end
            for m in LEADER_LINE.finditer(data[:end]):
                group, leader, term = m[1].decode(), int(m[2]), int(m[3])
                if term >= self._leaders.get(group, (-1, 0))[0]:
                    self._leaders[group] = (term, leader)

    def group_leader(self, group: str) -> tuple[int, int] | None:
        """(leader, term) of the highest term any node has logged for `group`."""
        self._scan_leader_lines()
        found = self._leaders.get(group)
        return (found[1], found[0]) if found else None

    def partition_group(self, topic: str, partition: int) -> str | None:
        """The Raft group id of a partition: its topic id (from any replica's data dir)."""
        for node in self.nodes.values():
            path = node.data_dir / "partitions" / f"{topic}-{partition}" / "topic_id"
            try:
                return f"{path.read_text().strip()}-{partition}"
            except OSError:
                continue
        return None

    def partition_leader(self, topic: str, partition: int) -> int | None:
        group = self.partition_group(topic, partition)
        found = self.group_leader(group) if group else None
        return found[0] if found else None

    def partition_replicas(self, topic: str, partition: int) -> list[int]:
        return [n for n, node in self.nodes.items()
                if (node.data_dir / "partitions" / f"{topic}-{partition}").is_dir()]

    # --- HTTP: /health and /faults -----------------------------------------------------------

    async def http(self, n: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One HTTP/1.1 request to node n's Raft port (in a worker thread)."""
        url = f"http://{self.nodes[n].raft_host}:{self.nodes[n].raft_port}{path}"
        data = json.dumps(body).encode() if body is not None else None

        def call() -> tuple[int, dict]:
            request = urllib.request.Request(url, data=data, method=method,
                                             headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                    return response.status, json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                text = exc.read()
                try:
                    return exc.code, json.loads(text)
                except ValueError:
                    return exc.code, {"error": text.decode(errors="replace")}
        return await trio.to_thread.run_sync(call)

    async def set_disk_faults(self, n: int, faults: dict) -> tuple[int, dict] | None:
        """POST /faults on node n; None when the node did not answer (it may have exited)."""
        try:
            return await self.http(n, "POST", "/faults", faults)
        except (OSError, ValueError) as exc:
            log.info("node %d: /faults %s: %r", n, faults, exc)
            return None
