"""An in-process cluster of RaftRuntimes over real files and a controllable in-memory network."""

from __future__ import annotations

import pathlib
import random

import trio
import trio.testing

from chronik_trio.node.raft_group import RaftGroup
from chronik_trio.node.raft_runtime import RaftRuntime
from chronik_trio.raft.config import Config
from chronik_trio.raft.rawnode import RawNode
from chronik_trio.raft.types import StateRole
from chronik_trio.storage import Disk
from chronik_trio.storage.raft_storage import DurableRaftStorage

TICK_S = 0.01
# settle(): the real time every task must stay blocked for the runtimes to count as idle (a
# worker-thread fsync finishing wakes one), and a bound on the rounds of that wait.
SETTLE_CUSHION_S = 0.005
SETTLE_ROUNDS_MAX = 5000


class RecordingMachine:
    """Applies by recording; the result of an entry is its index."""

    def __init__(self) -> None:
        self.applied: list[tuple[int, bytes]] = []
        self.leader_changes: list[tuple[int, StateRole, int]] = []

    def apply(self, entries):
        self.applied.extend((e.index, e.data) for e in entries if e.data)
        return [e.index for e in entries]

    def on_soft_state(self, leader_id, role, term):
        self.leader_changes.append((leader_id, role, term))

    def on_conf_state(self, index, conf_state):
        pass

    def restore(self, snapshot):
        raise AssertionError("these tests never compact")


class LocalCluster:
    def __init__(self, root: pathlib.Path, node_ids=(1, 2, 3), groups=("g",), seed: int = 1,
                 disk: Disk | None = None, first_group: str | None = None, **raft_options) -> None:
        """disk: every group's Disk (default a plain one); first_group: the group every
        Ready pass takes first (as a node does __meta); raft_options: more raft.Config
        fields for every group (e.g. a small max_committed_size_per_ready_bytes)."""
        self.first_group = first_group
        self.root = root
        self.disk = disk if disk is not None else Disk()
        self.raft_options = raft_options
        self.node_ids = tuple(node_ids)
        self.group_ids = tuple(groups)
        self.seed = seed
        self.cut: set[tuple[int, int]] = set()  # (from, to) links that drop everything
        self.runtimes: dict[int, RaftRuntime] = {}
        self.machines: dict[tuple[int, str], RecordingMachine] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.incarnations: dict[int, int] = {}  # node -> its liveness messages' process id
        self.in_pass: dict[int, bool] = {}  # node -> whether its runtime is inside a Ready pass
        # Every Raft message sent: (from, to, type, the sender's pass count). Messages of one
        # pass to one peer have one pass count: the transport sends them as one RaftBatch.
        self.sent: list[tuple[int, int, object, int]] = []

    def _send_from(self, node_id: int):
        def send(group_id, message):
            self.sent.append((node_id, message.to, message.type, self.runtimes[node_id].passes))
            if (node_id, message.to) in self.cut or message.to not in self.runtimes:
                return
            self.runtimes[message.to].deliver(group_id, message)
        return send

    def _heartbeat_from(self, node_id: int):
        def heartbeat(peer):
            if (node_id, peer) not in self.cut and peer in self.runtimes:
                self.hear(peer, node_id, self.incarnations[node_id])
        return heartbeat

    def hear(self, at: int, peer: int, incarnation: int) -> None:
        """Node `at` gets a liveness message from `peer`'s process `incarnation`."""
        self.runtimes[at].heard_from(peer)
        self.runtimes[at].liveness_from(peer, incarnation)

    def build(self, node_id: int, *, bootstrap: bool) -> RaftRuntime:
        runtime = RaftRuntime(node_id, self._send_from(node_id), tick_interval_s=TICK_S,
                              heartbeat=self._heartbeat_from(node_id), peer_silence_s=15 * TICK_S)
        runtime.set_peers(self.node_ids)
        self._watch_passes(node_id, runtime)
        for gid in self.group_ids:
            directory = self.root / f"n{node_id}" / gid
            if bootstrap:
                storage = DurableRaftStorage.bootstrap(self.disk, directory, voters=self.node_ids, kafka=False)
            else:
                storage = DurableRaftStorage(self.disk, directory, kafka=False)
            machine = RecordingMachine()
            self.machines[(node_id, gid)] = machine
            rng = random.Random(self.seed * 1000 + node_id)
            node = RawNode(Config(id=node_id, election_tick=10, heartbeat_tick=2, rng=rng,
                                  **self.raft_options), storage)
            runtime.add(RaftGroup(gid, node, storage, machine, runtime.wake), first=gid == self.first_group)
        return runtime

    def _watch_passes(self, node_id: int, runtime: RaftRuntime) -> None:
        """Record when the runtime is inside a Ready pass (for settle), before it runs."""
        self.in_pass[node_id] = False
        ready_pass = runtime.ready_pass

        async def watched() -> None:
            self.in_pass[node_id] = True
            try:
                await ready_pass()
            finally:
                self.in_pass[node_id] = False

        runtime.ready_pass = watched

    async def settle(self, among=None) -> None:
        """Until every task is blocked and no runtime (of among) is inside a Ready pass: each
        then waits for a wake-up, with everything it was woken for done. Under a MockClock
        that stands still no tick ever fires, so whatever is left undone then would have
        waited for a tick."""
        nodes = [n for n in self.runtimes if among is None or n in among]
        for _ in range(SETTLE_ROUNDS_MAX):
            await trio.testing.wait_all_tasks_blocked(SETTLE_CUSHION_S)
            if not any(self.in_pass[n] for n in nodes):
                return
        raise AssertionError(f"runtimes {nodes} still in a Ready pass after {SETTLE_ROUNDS_MAX} rounds")

    async def start(self, nursery, node_id: int, *, bootstrap: bool) -> None:
        runtime = self.build(node_id, bootstrap=bootstrap)
        self.runtimes[node_id] = runtime
        self.incarnations[node_id] = self.incarnations.get(node_id, 0) + 1
        scope, done = trio.CancelScope(), trio.Event()
        self.scopes[node_id] = (scope, done)

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            try:
                with scope:
                    await runtime.run(task_status=task_status)
            finally:
                done.set()

        await nursery.start(run)

    async def crash(self, node_id: int) -> None:
        """Stop a node abruptly (its files stay as written; what was synced is what counts).
        Waits for its runtime task to end first, as a dead process does nothing more."""
        scope, done = self.scopes.pop(node_id)
        scope.cancel()
        await done.wait()
        runtime = self.runtimes.pop(node_id)
        for group in runtime.groups.values():
            group.close()

    def isolate(self, node_id: int) -> None:
        for other in self.node_ids:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut.clear()

    def leader(self, group_id: str = "g", among=None) -> int | None:
        leaders = [n for n, r in self.runtimes.items() if (among is None or n in among)
                   and r.groups[group_id].is_leader]
        return leaders[0] if len(leaders) == 1 else None

    async def wait_leader(self, group_id: str = "g", among=None, timeout_s: float = 10) -> int:
        with trio.fail_after(timeout_s):
            while (leader := self.leader(group_id, among)) is None:
                await trio.sleep(TICK_S)
        return leader
