"""The simulated cluster: N real `Node`s in this trio run, their seams bound to the
simulation, and the interface the nemesis (nemesis.py) drives, as `chaos run`'s Cluster.

Seams (docs/simulation.md): each Node gets from the caller its Disk (SimDisk), its wall
clock (virtual time plus a per-node skew), its Kafka listener, its transport (over the
simulated network), its randomness (a random.Random drawn from the seed, new for each
start) and its thread hand-off (run inline after the disk's virtual fsync latency).
Nothing is bound process-wide.
"""

from __future__ import annotations

import functools
import logging
import pathlib
import random
import shutil
import signal

import attrs
import trio

from chronik_trio.node.config import FIELD_TYPES, NodeConfig
from chronik_trio.node.node import Node
from chronik_trio.node.raft_runtime import _run_tickets as fsync_round
from chronik_trio.raft.types import StateRole
from chronik_trio.storage.disk import DiskFaults
from chronik_trio.transport.transport import Transport

from ..proxy import LinkState
from .disk import SimDisk, error_number
from .net import CLIENTS, ENDPOINT, Link, SimNetwork, on_grid

log = logging.getLogger(__name__)

KAFKA_PORT = 9092
RAFT_PORT = 7000
SKEW_MAX_MS = 2000
JOIN_TIMEOUT_S = 120.0  # a spare started with --join must serve Kafka within this (as a start does)


@attrs.define
class _Proc:
    returncode: int | None = None


@attrs.define
class SimNode:
    node_id: int
    data_dir: pathlib.Path
    disk: SimDisk
    skew_ms: int
    node: Node | None = None
    scope: trio.CancelScope | None = None
    running: bool = False
    paused: bool = False
    exited: trio.Event = attrs.Factory(trio.Event)
    proc: _Proc = attrs.Factory(_Proc)
    starts: int = 0
    join: str = ""  # a spare's --join, set at each join (SimCluster.join_spare)
    # The fsync work in progress (its latency being slept): a power loss cuts it short.
    syncing: set = attrs.Factory(set)


class _SimTransport(Transport):
    """The real transport without the Date header hypercorn puts in every answer: its value
    is the real clock's second, and HPACK encodes a repeated value in a byte and a new one in
    about thirty, so the bytes on the simulated wire depended on when, in real time, each
    answer was made (on the machine's load). Nothing reads the header."""

    def _hypercorn_config(self):
        config = super()._hypercorn_config()
        config.include_date_header = False
        return config


def config_overrides(node_args: tuple[str, ...]) -> dict[str, object]:
    """The scenario's node_args (`--flag value` pairs of `chronik-trio node`, as `chaos run`
    passes them) as NodeConfig fields."""
    out: dict[str, object] = {}
    args = list(node_args)
    while args:
        flag = args.pop(0)
        name = flag.removeprefix("--").replace("-", "_")
        if not flag.startswith("--") or name not in FIELD_TYPES or not args:
            raise ValueError(f"node_args: {flag!r} is not a `--flag value` pair of a node setting")
        value = args.pop(0)
        kind = FIELD_TYPES[name]
        out[name] = int(value) if kind in (int, "int") else float(value) if kind in (float, "float") else value
    return out


class SimCluster:
    """What the nemesis needs of a cluster (chaos/cluster.py's Cluster), in process."""

    def __init__(self, root: pathlib.Path, n: int, rng: random.Random, net: SimNetwork,
                 record, nursery: trio.Nursery, node_patch=None, *,
                 node_rng: random.Random, crash_after_vote: float = 0.0,
                 node_args: tuple[str, ...] = (), spares: int = 0) -> None:
        self.ids = list(range(1, n + 1))  # the members (a spare while it has joined)
        self.spare_ids = list(range(n + 1, n + spares + 1))
        self.config = config_overrides(node_args)
        self.rng = rng
        self.node_rng = node_rng  # each started Node's own generator is drawn from it
        # Election safety (Raft's "at most one leader per term"): (group, term) -> the first
        # node seen leading it; and the violations found (each pair once).
        self.leaders: dict[tuple[str, int], int] = {}
        self.safety: list[str] = []
        self._reported: set[tuple[str, int, int]] = set()
        # Simulation only: the chance that a node is killed right after it grants a vote (its
        # vote response sent), and restarted 50-300 ms later, within the term's election.
        self.crash_after_vote = crash_after_vote
        self._votes_seen: set[tuple[int, str, int, int]] = set()  # (node, group, term, vote)
        self.net = net
        self._root = root
        self.record = record
        self.nursery = nursery
        self.node_patch = node_patch  # a bug-class test's patch of each new Node
        self.peers = ",".join(f"{i}@n{i}:{RAFT_PORT}" for i in self.ids)
        self.nodes = {i: SimNode(i, root / f"node{i}", SimDisk(random.Random(rng.getrandbits(64)), root),
                                 rng.randrange(-SKEW_MAX_MS, SKEW_MAX_MS + 1)) for i in self.ids}
        # Spares (issue 17's join-remove): drawn after the members, so a scenario without
        # spares keeps its runs. A spare's peers name the members and itself; it joins through
        # node 1 (join_spare); the members learn its Raft address from __meta.
        for i in self.spare_ids:
            self.nodes[i] = self._spare(i)
        self.joins = 0
        self.bootstrap = [(f"n{i}", KAFKA_PORT) for i in self.ids]
        self.admin = None  # the nemesis's admin requests (client.Admin), set by the driver

    # --- lifecycle -------------------------------------------------------------------------

    async def start_all(self) -> None:
        async with trio.open_nursery() as starting:
            for i in self.ids:
                starting.start_soon(self.restart, i, 120.0)

    def _spare(self, n: int) -> SimNode:
        return SimNode(n, self._root / f"node{n}", SimDisk(random.Random(self.rng.getrandbits(64)), self._root),
                       self.rng.randrange(-SKEW_MAX_MS, SKEW_MAX_MS + 1))

    async def join_spare(self, n: int) -> bool:
        """Start spare node n on an empty disk with --join; True once it serves Kafka (a voter
        of __meta, registered). The joins alternate between --join's two forms, both through
        node 1: its Raft address (ID@HOST:PORT: the transport's join call) first, then its
        Kafka listener (HOST:PORT: DescribeQuorum and AddRaftVoter, on streams the node opens
        with its transport's connect). (grow-shrink.yaml's second cycle kills the __meta
        leader during the join: then through the Kafka listener, whose node may be the one
        killed.)"""
        self.nodes[n] = self._spare(n)  # an empty disk (the retired one's data is gone)
        self.nodes[n].join = f"1@n1:{RAFT_PORT}" if self.joins % 2 == 0 else f"n1:{KAFKA_PORT}"
        self.joins += 1
        self.record({"type": "node", "node": n, "what": "joining", "detail": f"--join {self.nodes[n].join}"})
        self.ids.append(n)
        return await self.restart(n, JOIN_TIMEOUT_S)

    async def retire_spare(self, n: int) -> None:
        """Stop spare node n (after its removal from the cluster) and forget its data."""
        await self.kill(n, signal.SIGTERM)
        self.ids.remove(n)
        shutil.rmtree(self.nodes[n].data_dir, ignore_errors=True)

    async def restart(self, n: int, timeout_s: float) -> bool:
        sim = self.nodes[n]
        if sim.running:
            return True
        self.net.power_on(n)
        # Injected disk faults live in the process (as /faults does): a new one has none.
        sim.disk.faults = DiskFaults()
        if sim.starts:  # the host's clock may have been stepped while the process was down
            sim.skew_ms = self.rng.randrange(-SKEW_MAX_MS, SKEW_MAX_MS + 1)
        if n in self.spare_ids:
            membership = {"peers": f"{self.peers},{n}@n{n}:{RAFT_PORT}", "join": sim.join}
        else:
            membership = {"peers": self.peers}
        config = NodeConfig(node_id=n, listen=f"n{n}:{KAFKA_PORT}", data_dir=sim.data_dir,
                            log_level="warning", **membership, **self.config)
        node = Node(config, disk=sim.disk,
                    wall_clock_ms=lambda: int((trio.current_time() + 1.7e9) * 1000) + sim.skew_ms,
                    make_transport=self._transport,
                    rng=random.Random(self.node_rng.getrandbits(64)),
                    run_sync=functools.partial(self._run_sync, sim))
        if self.node_patch is not None:
            self.node_patch(node)
        sim.node, sim.running, sim.exited, sim.proc = node, True, trio.Event(), _Proc()
        sim.starts += 1
        self.record({"type": "node", "node": n, "what": "started", "detail": f"start {sim.starts}, wall clock {sim.skew_ms:+d} ms"})
        ready = trio.Event()
        self.nursery.start_soon(self._run, sim, node, ready)
        with trio.move_on_after(timeout_s):
            async with trio.open_nursery() as waiting:
                async def until_exit():
                    await sim.exited.wait()
                    waiting.cancel_scope.cancel()
                waiting.start_soon(until_exit)
                await ready.wait()
                waiting.cancel_scope.cancel()
            if ready.is_set():
                self.record({"type": "node", "node": n, "what": "ready"})
                return True
        return False

    async def _run_sync(self, sim: SimNode, fn, *args, **_ignored):
        """The node's thread hand-off (Node's run_sync seam): the work runs inline, after the
        node's disk's fsync latency in virtual time. Every fsync round of a node goes through
        here, among them the round that persists a new leader's first entry, so this is also
        where the node's Raft groups are checked for election safety (pure reads)."""
        self._check_election_safety(sim)
        votes = self._granted_votes(sim) if self.crash_after_vote else set()
        with trio.CancelScope() as cut:
            if sim.disk.power_cut:
                cut.cancel()
            sim.syncing.add(cut)
            try:
                await trio.sleep_until(on_grid(trio.current_time() + sim.disk.fsync_latency_s()))
            finally:
                sim.syncing.discard(cut)
        if (cut.cancelled_caught or sim.disk.power_cut) and fn is fsync_round:
            # The power went during the round, or before it (the runtime starts a pass's
            # second round in the same shielded step, after the cut): none of it became
            # durable (the caller's scope is cancelled, and what the node sends now goes
            # nowhere). Not sleeping it: the node would outlive its power by a stalled fsync.
            return None
        result = fn(*args)
        new = votes - self._votes_seen
        self._votes_seen |= votes
        if new and self.rng.random() < self.crash_after_vote:
            self.nursery.start_soon(self._crash_after_vote, sim.node_id, sim.starts, sorted(new)[0])
        return result

    def _granted_votes(self, sim: SimNode) -> set[tuple[int, str, int, int]]:
        if not sim.running or sim.node is None:
            return set()
        return {(sim.node_id, group_id, g.node.raft.term, g.node.raft.vote)
                for group_id, g in sim.node.runtime.groups.items()
                if g.node.raft.vote not in (0, sim.node_id)}

    async def _crash_after_vote(self, n: int, start: int, vote) -> None:
        """Kill node n once its vote response is on the wire; restart it soon after."""
        await trio.sleep(0.005)  # the runtime sends the response after this fsync round
        sim = self.nodes[n]
        if not sim.running or sim.starts != start:
            return
        self.record({"type": "node", "node": n, "what": "crash-after-vote",
                     "detail": f"group {vote[1]} term {vote[2]} voted {vote[3]}"})
        await self.kill(n)
        await trio.sleep(self.rng.uniform(0.05, 0.3))
        await self.restart(n, 30.0)

    def _check_election_safety(self, sim: SimNode) -> None:
        if not sim.running or sim.node is None:
            return
        for group_id, group in sim.node.runtime.groups.items():
            raft = group.node.raft  # the Raft state itself, not the group's copy of it
            if raft.state != StateRole.LEADER:
                continue
            term = raft.term
            first = self.leaders.setdefault((group_id, term), sim.node_id)
            if first != sim.node_id and (group_id, term, sim.node_id) not in self._reported:
                self._reported.add((group_id, term, sim.node_id))
                problem = (f"election_safety: group {group_id} had two leaders in term {term} "
                           f"(nodes {first} and {sim.node_id})")
                self.safety.append(problem)
                self.record({"type": "node", "node": sim.node_id, "what": "election-safety",
                             "detail": problem})

    def _transport(self, node_id, listen, peers, network, registry, health) -> Transport:
        """The node's transport over the simulated network (Node's TransportFactory seam)."""
        return _SimTransport(node_id, [self.net.listen(node_id, listen)], peers, network.on_batch,
                         network.report_unreachable, report_snapshot=network.report_snapshot,
                         registry=registry, health=health, on_peer_down=network.peer_down,
                         connect=self.net.connect)

    async def _run(self, sim: SimNode, node: Node, ready: trio.Event) -> None:
        ENDPOINT.set(sim.node_id)
        code = 0
        with trio.CancelScope() as scope:
            sim.scope = scope
            try:
                listeners = [self.net.listen(sim.node_id, (f"n{sim.node_id}", KAFKA_PORT))]
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.run, listeners)
                    ready.set()
            except Exception as exc:  # the node stopped on its own (a disk error, a bug)
                code = 1
                log.warning("node %d stopped: %r", sim.node_id, exc)
                self.record({"type": "node", "node": sim.node_id, "what": "error",
                             "detail": f"{type(exc).__name__}: {exc}"[:300]})
        if scope.cancelled_caught:
            code = -9
        sim.running = False
        sim.proc = _Proc(code)
        if code != -9:  # a killed node's connections were reset when it was killed
            self.net.crash(sim.node_id)
        self.record({"type": "node", "node": sim.node_id, "what": "exited", "detail": f"code {code}"})
        sim.exited.set()

    async def kill(self, n: int, sig=signal.SIGKILL) -> None:
        sim = self.nodes[n]
        if not sim.running:
            return
        if sig == signal.SIGTERM:
            sim.node.request_shutdown()
            with trio.move_on_after(30):
                await sim.exited.wait()
            if sim.running:
                await self.kill(n, signal.SIGKILL)
            return
        if sim.paused:
            self.net.resume(n)
            sim.paused = False
        self.net.crash(n)
        sim.scope.cancel()
        await sim.exited.wait()

    async def power_off(self, nodes: list[int], *, torn: bool) -> list[str]:
        notes = []
        for n in nodes:
            sim = self.nodes[n]
            sim.disk.cut_power()
            if sim.running:
                self.net.crash(n, power_off=True)
                for cut in sim.syncing:
                    cut.cancel()
                sim.scope.cancel()
                await sim.exited.wait()
            notes += [f"node {n}: {x}" for x in sim.disk.power_loss(torn=torn)]
        return notes

    def expect_exit(self, n: int) -> None:
        """A fault may stop node n (the history's node_crashes check judges the exit)."""

    async def refresh_leaders(self) -> None:
        """Leaders are read from the nodes' memory when asked (partition_leader)."""
        await trio.lowlevel.checkpoint()

    async def wait_exit(self, n: int, timeout_s: float) -> bool:
        with trio.move_on_after(timeout_s):
            await self.nodes[n].exited.wait()
            return True
        return False

    def running(self) -> list[int]:
        return [n for n in self.ids if self.nodes[n].running]

    def send_signal(self, n: int, sig) -> None:
        sim = self.nodes[n]
        if sig == signal.SIGSTOP and sim.running and not sim.paused:
            sim.paused = True
            self.net.pause(n)
        elif sig == signal.SIGCONT and sim.paused:
            sim.paused = False
            self.net.resume(n)

    # --- network and disk ------------------------------------------------------------------

    def set_link(self, a: int, b: int, state: LinkState, delay_s: float = 0.0) -> None:
        self.net.set_link(a, b, Link(state.value), delay_s)

    def set_client_link(self, n: int, state: LinkState, delay_s: float = 0.0) -> None:
        self.net.set_link(CLIENTS, n, Link(state.value), delay_s)
        self.net.set_link(n, CLIENTS, Link(state.value), delay_s)

    def heal_network(self) -> None:
        self.net.heal()

    async def set_disk_faults(self, n: int, body: dict):
        sim = self.nodes[n]
        if body.get("power_loss"):
            await self.power_off([n], torn=bool(self.rng.getrandbits(1)))
            return 200, {}
        faults = sim.disk.faults
        if "fsync_latency_ms" in body:
            faults.fsync_latency_s = body["fsync_latency_ms"] / 1000
        if "latency_ms" in body:
            faults.fsync_latency_s = faults.write_latency_s = body["latency_ms"] / 1000
        if "error" in body:
            number = error_number(body["error"])
            on = body.get("error_on", "both")
            faults.write_errno = number if on in ("write", "both") else None
            faults.fsync_errno = number if on in ("fsync", "both") else None
        return 200, {}

    # --- what the nemesis asks about the cluster -------------------------------------------

    def _any_node(self) -> Node | None:
        for n in self.ids:
            sim = self.nodes[n]
            if sim.running and sim.node is not None and sim.node.meta_service is not None:
                return sim.node
        return None

    def partition_leader(self, topic: str, partition: int) -> int | None:
        node = self._any_node()
        t = node.meta.topics.get(topic) if node else None
        if t is None:
            return None
        lead = node.meta.leader_of(t, partition)
        return lead.leader if lead else None

    def partition_replicas(self, topic: str, partition: int) -> list[int] | None:
        node = self._any_node()
        t = node.meta.topics.get(topic) if node else None
        return list(t.replicas[partition]) if t else None

    def group_leader(self, group: str):
        node = self._any_node()
        if node is None:
            return None
        group = node.meta_service.group
        return (group.leader_id, group.term) if group.leader_id else None

