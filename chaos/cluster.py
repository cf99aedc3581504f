"""A cluster of `chronik-trio node` processes behind the harness's proxies.

How nodes are wired is the network's business (network.py): by default node i listens on
127.0.0.1, clients are told (--advertised) the address of node i's client proxy, and node
i's --peers list names, for every other node j, the proxy of link i->j (its own entry is
its real Raft address, where it listens). The harness itself talks to /health and /faults
on the real Raft port, never through a proxy, so a cut link never hides a node from it.
With `peer_tls` the nodes speak mutual TLS to each other (certificates made for the run,
nodeharness/certs.py), and the harness talks to each node's cleartext --admin-listen.

Processes are the node-process harness's (`nodeharness`): started, signalled and reaped by
PID only, ready when /health says `serving_kafka`. Node output is appended to
nodes/node<i>.log across restarts. Who leads which Raft group comes from each node's
/health (`leading_groups`: the highest term any running node claims), refreshed by
refresh_leaders() without blocking the trio loop that also runs the proxies.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import signal
import urllib.error
import urllib.request

import attrs
import trio

from nodeharness.certs import make_ca, make_node_certificate
from nodeharness import NodeGroup, NodeProcess, chronik_trio_command, free_ports, node_args

from .network import NetworkUnavailable, make_network
from .proxy import LinkState
from .replica_log import record_replica_logs

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
EXIT_POLL_S = 0.1
HTTP_TIMEOUT_S = 5.0
META_GROUP = "__meta"


class ClusterError(Exception):
    """The cluster could not be started or driven as asked."""


@attrs.define(eq=False)
class ChaosNode:
    """One node of the run: its harness process and where it listens."""
    process: NodeProcess
    kafka_port: int
    raft_port: int
    data_dir: pathlib.Path
    raft_host: str = "127.0.0.1"
    admin_address: str | None = None  # HOST:PORT of --admin-listen (peer_tls), else the Raft port
    exit_noted: bool = True  # whether the current process's exit was recorded (none yet)

    @property
    def node_id(self) -> int:
        return self.process.node_id

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def paused(self) -> bool:
        return self.process.paused

    @property
    def proc(self):
        return self.process.proc

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def log_path(self) -> pathlib.Path:
        return self.process.log_path


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
                 ready_timeout_s: float = 90.0, network: str = "proxy", peer_tls: bool = False,
                 spares: int = 0) -> None:
        self.root = root
        self.size = size
        self.ids = list(range(1, size + 1))  # the members (a spare while it has joined)
        self.spare_ids = list(range(size + 1, size + spares + 1))
        self.fault_injection = fault_injection
        self.node_args = list(node_args)
        self.peer_tls = peer_tls
        self.record = record
        self.ready_timeout_s = ready_timeout_s
        self.nodes: dict[int, ChaosNode] = {}
        self.group = NodeGroup()
        self.network = make_network(network)
        self._leaders: dict[str, tuple[int, int]] = {}  # group -> (leader, term), from /health

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Set up the network and start every node; return once every node is ready.

        Raises:
            ClusterError: a node was not ready in time, or the network mode cannot run here.
        """
        everyone = self.ids + self.spare_ids
        try:
            await self.network.setup(nursery, everyone, free_ports(2 * len(everyone)))
        except NetworkUnavailable as exc:
            raise ClusterError(str(exc)) from None
        (self.root / "nodes").mkdir(parents=True, exist_ok=True)
        admin_ports = free_ports(len(everyone)) if self.peer_tls else []
        if self.peer_tls:
            ca = await trio.to_thread.run_sync(make_ca, self.root / "certs")
        for n in everyone:
            # A spare's --peers names itself and the members (not the other spares), and it
            # joins through node 1's Kafka address; the members' --peers do not name spares
            # (they learn a joined spare's Raft address from __meta: those links are direct).
            a = self.network.addresses(n, self.ids if n in self.ids else [*self.ids, n])
            data_dir = self.root / "nodes" / f"node{n}"
            join = [] if n in self.ids else ["--join", self.network.addresses(1, self.ids).listen]
            tls_args, admin_address = [], None
            if self.peer_tls:
                cert, key = await trio.to_thread.run_sync(make_node_certificate, self.root / "certs", n)
                admin_address = f"{a.raft_host}:{admin_ports[n - 1]}"
                tls_args = ["--peer-ssl-cafile", str(ca), "--peer-ssl-certfile", str(cert),
                            "--peer-ssl-keyfile", str(key), "--admin-listen", admin_address]
            args = node_args(n, listen=a.listen, data_dir=data_dir, peers=a.peers,
                             extra=["--advertised", a.advertised, *join,
                                    *(["--fault-injection"] if self.fault_injection else []),
                                    *tls_args, *self.node_args])
            process = NodeProcess(n, [*self.network.command_prefix(n), *chronik_trio_command(), *args],
                                  self.root / "nodes" / f"node{n}.log",
                                  admin_address or f"{a.raft_host}:{a.raft_port}")
            self.group.add(process)
            self.nodes[n] = ChaosNode(process, int(a.listen.rpartition(":")[2]), a.raft_port, data_dir,
                                      raft_host=a.raft_host, admin_address=admin_address)
        await self._start_nodes(nursery)

    async def _start_nodes(self, nursery: trio.Nursery) -> None:
        """Spawn every node of self.nodes, watch for exits, return once every one is ready."""
        for n in self.ids:
            self.spawn(n)
        nursery.start_soon(self._watch_exits)
        ready: set[int] = set()

        async def wait(n: int) -> None:
            if await self.wait_ready(n):
                ready.add(n)
        async with trio.open_nursery() as waits:
            for n in self.ids:
                waits.start_soon(wait, n)
        not_ready = [n for n in self.ids if n not in ready]
        if not_ready:
            raise ClusterError(f"node(s) {not_ready} not ready after {self.ready_timeout_s:.0f} s; "
                               f"see {self.root / 'nodes'}")

    async def join_spare(self, n: int) -> bool:
        """Start spare node n on an empty data dir with --join; True once it serves Kafka (a
        voter of __meta, registered)."""
        shutil.rmtree(self.nodes[n].data_dir, ignore_errors=True)
        self.ids.append(n)
        self.spawn(n)
        return await self.wait_ready(n)

    async def retire_spare(self, n: int) -> None:
        """Stop spare node n (after its removal from the cluster) and forget its data."""
        await self.kill(n, signal.SIGTERM)
        self.ids.remove(n)
        shutil.rmtree(self.nodes[n].data_dir, ignore_errors=True)

    def spawn(self, n: int) -> None:
        node = self.nodes[n]
        node.process.start()
        node.exit_noted = False
        self.record({"type": "node", "node": n, "what": "started", "detail": f"pid {node.pid}"})

    def is_ready(self, n: int) -> bool:
        """One /health question (blocking, short): does node n serve Kafka?"""
        return self.nodes[n].process.is_ready()

    async def wait_ready(self, n: int, timeout_s: float | None = None) -> bool:
        """Until node n says in /health that it serves Kafka (True), exits or the timeout
        passes (False)."""
        ready = await self.nodes[n].process.wait_ready_async(
            timeout_s if timeout_s is not None else self.ready_timeout_s)
        if ready:
            self.record({"type": "node", "node": n, "what": "ready"})
        else:
            self._note_exit(n)
        return ready

    async def _watch_exits(self) -> None:
        """Record each process's exit when it happens (a node may stop on its own)."""
        while True:
            for n in self.ids:
                self._note_exit(n)
            await trio.sleep(EXIT_POLL_S)

    def _note_exit(self, n: int) -> None:
        node = self.nodes[n]
        if node.proc is not None and node.proc.poll() is not None and not node.exit_noted:
            node.exit_noted = True
            self.record({"type": "node", "node": n, "what": "exited", "detail": f"code {node.proc.returncode}"})

    def send_signal(self, n: int, sig: signal.Signals) -> bool:
        """Send `sig` to node n's process by PID; False if it is not running. SIGTERM
        continues a paused node first (nodeharness)."""
        return self.nodes[n].process.signal(sig)

    def expect_exit(self, n: int) -> None:
        """Node n's current process may exit with any code because of a fault the nemesis
        injected (power loss, a disk error); the history's node_crashes check judges it."""
        if self.nodes[n].running:
            self.nodes[n].process.expect_exit()

    async def wait_exit(self, n: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        if not await self.nodes[n].process.wait_exit_async(timeout_s):
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
        await self.group.stop_all_async(STOP_TIMEOUT_S)
        for n in self.nodes:
            self._note_exit(n)

    def kill_all_now(self) -> None:
        """Synchronous last resort (on an error or cancellation): SIGKILL every node by PID,
        then remove what the network mode set up."""
        self.group.kill_all()
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

    # --- logs and leaders ---------------------------------------------------------------------

    def current_log(self, n: int) -> bytes:
        return self.nodes[n].process.current_log().encode()

    async def refresh_leaders(self) -> None:
        """Ask every running node's /health who it leads (in a worker thread, so the
        proxies on this trio loop keep moving); group_leader() answers from that."""
        fresh = await trio.to_thread.run_sync(self.group.leaders)
        for group, (leader, term) in fresh.items():
            if term >= self._leaders.get(group, (0, -1))[1]:
                self._leaders[group] = (leader, term)

    def group_leader(self, group: str) -> tuple[int, int] | None:
        """(leader, term) of the highest term a node claimed to lead `group` in /health, as of
        the last refresh_leaders()."""
        return self._leaders.get(group)

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

    def record_replica_logs(self, topics, high_watermarks: dict, record) -> None:
        """After a stop: every replica's log below the final high watermarks into the history."""
        record_replica_logs(topics, {n: node.data_dir for n, node in self.nodes.items()}, high_watermarks,
                            record)

    def partition_replicas(self, topic: str, partition: int) -> list[int]:
        return [n for n, node in self.nodes.items()
                if (node.data_dir / "partitions" / f"{topic}-{partition}").is_dir()]

    # --- HTTP: /health and /faults -----------------------------------------------------------

    async def http(self, n: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One HTTP/1.1 request to node n's Raft port, or its admin listener (in a worker thread)."""
        node = self.nodes[n]
        url = f"http://{node.admin_address or f'{node.raft_host}:{node.raft_port}'}{path}"
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
