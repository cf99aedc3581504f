"""The nemesis: turns a scenario's schedule into a plan (from the seed) and carries it out.

`plan()` is pure: every time and every random choice (which fault of a list, which node,
which split) comes from one `random.Random(seed)`, so a seed replays the same plan. The
choices that depend on the cluster at the time (who leads a partition now) are made when
the fault starts, from the same generator, in plan order.

Faults run one after another: a fault planned while another is still held starts when
that one has healed. Every fault records fault-start and fault-end in the history; the
heal always runs (a cancelled run heals in its finally), and `heal_all` at the end of the
run restores links, resumes paused nodes and restarts dead ones.
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import time

import attrs
import trio

from nodeharness import chronik_trio_command

from .cluster import Cluster
from .network import NetworkUnavailable
from .proxy import LinkState
from .scenario import FaultSpec, NemesisSpec

log = logging.getLogger(__name__)

RESTART_READY_TIMEOUT_S = 60.0
JOIN_KILL_AT_S = (0.2, 1.5)  # join-remove: when the __meta leader is killed after the join starts
JOIN_KILL_DOWN_S = 3.0
REMOVE_NODE_TIMEOUT_S = 90.0
# membership: a move's target keeps at least this many replicas, so that the one node the
# fault kills or cuts off leaves a quorum of the old, the new and the joint config.
MEMBERSHIP_REPLICAS_MIN = 3
MEMBERSHIP_IN_FLIGHT_S = (0.0, 0.3)  # the second fault lands this soon after the request
MOVE_DONE_TIMEOUT_S = 60.0  # after the heal, the move must complete within this
ADMIN_TIMEOUT_MS = 15_000
STALL_MARGIN_S = 2.0  # a stalled fsync lasts this much longer than the stall before a power loss


@attrs.frozen
class PlannedFault:
    at_s: float
    fault: FaultSpec


def plan(nemesis: NemesisSpec, duration_s: float, rng: random.Random) -> list[PlannedFault]:
    """Every fault of the schedule with its start time, in time order; none starts in the last
    `quiet_s` of the run."""
    end_s = duration_s - nemesis.quiet_s
    planned: list[PlannedFault] = []
    for entry in nemesis.schedule:
        times: list[float] = []
        if entry.at_s is not None:
            times = [entry.at_s]
        elif entry.every_s is not None:
            t = entry.start_s
            while t < end_s:
                times.append(t)
                t += entry.every_s
        else:
            lo, hi = entry.interval_s
            t = entry.start_s + rng.uniform(lo, hi)
            while t < end_s:
                times.append(t)
                t += rng.uniform(lo, hi)
        for t in times:
            if t < end_s:
                planned.append(PlannedFault(round(t, 3), rng.choice(entry.faults)))
    return sorted(planned, key=lambda p: p.at_s)


def describe(fault: FaultSpec) -> str:
    if fault.kind == "kill":
        return f"SIG{fault.signal} {fault.target}, restart after {fault.duration_s:g} s"
    if fault.kind == "pause":
        return f"SIGSTOP {fault.target} for {fault.duration_s:g} s"
    if fault.kind == "restart":
        return f"restart {fault.target} (SIGTERM, start)"
    if fault.kind == "partition":
        return f"partition {fault.mode} for {fault.duration_s:g} s"
    if fault.kind == "link":
        what = f"delay {fault.delay_ms:g} ms" if fault.link == "delay" else fault.link
        clients = " (clients too)" if fault.clients else ""
        return (f"{what} {'from' if fault.one_way else 'around'} {fault.target}{clients} "
                f"for {fault.duration_s:g} s")
    if fault.kind == "disk":
        what = ", ".join(x for x in (f"+{fault.latency_ms:g} ms" if fault.latency_ms else "",
                                     f"{fault.error} on {fault.error_on}" if fault.error else "") if x)
        return f"disk {what} on {fault.target} for {fault.duration_s:g} s"
    if fault.kind == "power-loss":
        stall = (f"fsyncs of all but the leader stalled for {fault.stall_followers_s:g} s, then "
                 if fault.stall_followers_s else "")
        late = (f", the leader {fault.leader_back_after_s:g} s after the others"
                if fault.leader_back_after_s else "")
        return f"{stall}power loss on {fault.target}, restart after {fault.duration_s:g} s{late}"
    if fault.kind == "join-remove":
        during = ", SIGKILL the __meta leader during the join" if fault.target == "meta-leader" else ""
        return f"a spare node joins{during}, serves {fault.duration_s:g} s, and is removed"
    if fault.kind == "membership":
        topic = fault.topic or "the first topic"
        return f"move {topic}-{fault.partition}'s replicas, {fault.mode} during it, for {fault.duration_s:g} s"
    return "rolling restart of every node"


def membership_target(replicas: list[int], nodes: list[int], rng: random.Random) -> list[int]:
    """A new replica set: one replica swapped for a node without one, one added, or one
    removed (never below MEMBERSHIP_REPLICAS_MIN), chosen by rng among those possible."""
    free = [n for n in nodes if n not in replicas]
    options = []
    if free:
        options += ["swap", "grow"]
    if len(replicas) > MEMBERSHIP_REPLICAS_MIN:
        options.append("shrink")
    if not options:
        return list(replicas)
    choice = rng.choice(options)
    if choice == "swap":
        out = rng.choice(replicas)
        return [rng.choice(free) if r == out else r for r in replicas]
    if choice == "grow":
        return [*replicas, rng.choice(free)]
    out = rng.choice(replicas)
    return [r for r in replicas if r != out]


class Nemesis:
    def __init__(self, cluster: Cluster, history, rng: random.Random, first_topic: tuple[str, int]) -> None:
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.first_topic = first_topic  # (name, partitions)
        self._next_id = 1
        self._fid = 0  # the fault being injected
        self._moving: tuple[str, int, list[int]] | None = None  # a membership fault's move
        self.active: str | None = None  # for the progress line

    async def run(self, planned: list[PlannedFault], t0_s: float) -> None:
        """Carry out the plan; times are relative to `t0_s` on the history's clock."""
        for p in planned:
            delay = t0_s + p.at_s - self.history.now()
            if delay > 0:
                await trio.sleep(delay)
            await self.inject(p.fault)

    async def inject(self, fault: FaultSpec) -> None:
        fid, self._next_id = self._next_id, self._next_id + 1
        await self.cluster.refresh_leaders()
        nodes = self._targets(fault)
        desc = describe(fault)
        if not nodes:
            self.history.record({"type": "fault-skipped", "id": fid, "kind": fault.kind, "desc": desc,
                                 "why": f"no live node matches target {fault.target}"})
            return
        self.history.record({"type": "fault-start", "id": fid, "kind": fault.kind,
                             "desc": f"{desc} -> node(s) {nodes}", "nodes": nodes})
        self.active = f"#{fid} {fault.kind} {nodes}"
        self._fid = fid
        note = ""
        try:
            note = await getattr(self, "_" + fault.kind.replace("-", "_"))(fault, nodes)
        finally:
            with trio.CancelScope(shield=True):
                note = (note or "") + await self._heal(fault, nodes)
                self.history.record({"type": "fault-end", "id": fid, "note": note.strip()})
                self.active = None
        if self._moving is not None:
            await self._wait_move()

    # --- targets -----------------------------------------------------------------------------

    def _leader(self, fault: FaultSpec) -> int | None:
        topic = fault.topic or self.first_topic[0]
        leader = self.cluster.partition_leader(topic, fault.partition)
        return leader if leader in self.cluster.running() else None

    def _targets(self, fault: FaultSpec) -> list[int]:
        running = self.cluster.running()
        target = fault.target
        if fault.kind in ("rolling-restart",) or target == "all":
            return list(self.cluster.ids)
        if fault.kind in ("partition", "membership"):
            return running  # the split, or the move, is chosen when it starts
        if target.startswith("node:"):
            n = int(target[5:])
            return [n] if n in running else []
        if target == "leader":
            leader = self._leader(fault)
            return [leader] if leader is not None else []
        if target == "meta-leader":
            found = self.cluster.group_leader("__meta")
            return [found[0]] if found and found[0] in running else []
        if target == "follower":
            leader = self._leader(fault)
            topic = fault.topic or self.first_topic[0]
            replicas = self.cluster.partition_replicas(topic, fault.partition) or self.cluster.ids
            followers = [n for n in running if n != leader and n in replicas]
            return [self.rng.choice(followers)] if followers else []
        return [self.rng.choice(running)] if running else []

    # --- faults ------------------------------------------------------------------------------

    async def _kill(self, fault: FaultSpec, nodes: list[int]) -> str:
        for n in nodes:
            await self.cluster.kill(n, signal.Signals[f"SIG{fault.signal}"])
        await trio.sleep(fault.duration_s)
        return ""

    async def _restart(self, fault: FaultSpec, nodes: list[int]) -> str:
        for n in nodes:
            await self.cluster.kill(n, signal.SIGTERM)
        return ""

    async def _rolling_restart(self, fault: FaultSpec, nodes: list[int]) -> str:
        slow = []
        for n in nodes:
            await self.cluster.kill(n, signal.SIGTERM)
            if not await self.cluster.restart(n, RESTART_READY_TIMEOUT_S):
                slow.append(n)
            await trio.sleep(fault.duration_s)
        return f"not ready in time: {slow}" if slow else ""

    async def _pause(self, fault: FaultSpec, nodes: list[int]) -> str:
        for n in nodes:
            self.cluster.send_signal(n, signal.SIGSTOP)
        await trio.sleep(fault.duration_s)
        return ""

    async def _partition(self, fault: FaultSpec, nodes: list[int]) -> str:
        ids = list(self.cluster.ids)
        leader = self._leader(fault)
        one_way = False
        if fault.mode in ("isolate-leader", "one-way-leader") and leader is not None:
            sides = [[leader], [n for n in ids if n != leader]]
            one_way = fault.mode == "one-way-leader"
        elif fault.mode == "bridge" and len(ids) >= 3:
            shuffled = self.rng.sample(ids, len(ids))
            bridge, rest = shuffled[0], shuffled[1:]
            half = len(rest) // 2
            left, right = rest[:half], rest[half:]
            for a in left:
                for b in right:
                    self._cut(a, b, False)
            self._detail(f"bridge node {bridge} between {sorted(left)} and {sorted(right)}")
            return await self._hold(fault)
        else:  # majority-minority, isolate-random, or no leader known
            shuffled = self.rng.sample(ids, len(ids))
            minority = 1 if fault.mode != "majority-minority" else (len(ids) - 1) // 2
            sides = [sorted(shuffled[:minority]), sorted(shuffled[minority:])]
        for a in sides[0]:
            for b in sides[1]:
                self._cut(a, b, one_way)
        self._detail(f"{sides[0]} {'cannot send to' if one_way else 'cut from'} {sides[1]}")
        return await self._hold(fault)

    def _detail(self, text: str) -> None:
        """What a fault chose when it started (the split), for the report."""
        self.history.record({"type": "fault-detail", "id": self._fid, "detail": text})

    def _cut(self, a: int, b: int, one_way: bool) -> None:
        self.cluster.set_link(a, b, LinkState.CUT)
        if not one_way:
            self.cluster.set_link(b, a, LinkState.CUT)

    async def _hold(self, fault: FaultSpec) -> str:
        await trio.sleep(fault.duration_s)
        return ""

    async def _link(self, fault: FaultSpec, nodes: list[int]) -> str:
        state = {"cut": LinkState.CUT, "blackhole": LinkState.BLACKHOLE, "delay": LinkState.OK}[fault.link]
        try:
            for n in nodes:
                for m in self.cluster.ids:
                    if m != n:
                        self.cluster.set_link(n, m, state, fault.delay_ms / 1000)
                        if not fault.one_way:
                            self.cluster.set_link(m, n, state, fault.delay_ms / 1000)
                if fault.clients:
                    self.cluster.set_client_link(n, state, fault.delay_ms / 1000)
        except NetworkUnavailable as exc:
            return f"not injected: {exc}"
        return await self._hold(fault)

    async def _disk(self, fault: FaultSpec, nodes: list[int]) -> str:
        body: dict = {}
        if fault.latency_ms:
            body["fsync_latency_ms"] = fault.latency_ms
        if fault.error:
            body.update(error=fault.error, error_on=fault.error_on)
        notes = []
        for n in nodes:
            if fault.error:
                self.cluster.expect_exit(n)  # a node stops on a disk error it cannot get past
            answer = await self.cluster.set_disk_faults(n, body)
            if answer is None or answer[0] != 200:
                notes.append(f"node {n}: /faults answered {answer}")
        await trio.sleep(fault.duration_s)
        return "; ".join(notes)

    async def _power_loss(self, fault: FaultSpec, nodes: list[int]) -> str:
        leader = self._leader(fault) if fault.stall_followers_s or fault.leader_back_after_s else None
        if fault.stall_followers_s and leader is not None:
            # The followers' disks stop finishing fsyncs (longer than the stall lasts), then
            # the power goes: whatever they acknowledged meanwhile was durable only on the
            # leader, if the broker waited for their fsyncs as it must.
            stalled = [n for n in nodes if n != leader]
            for n in stalled:
                await self.cluster.set_disk_faults(
                    n, {"fsync_latency_ms": (fault.stall_followers_s + STALL_MARGIN_S) * 1000})
            self._detail(f"leader {leader}; fsyncs of {stalled} stalled")
            await trio.sleep(fault.stall_followers_s)
        for n in nodes:
            self.cluster.expect_exit(n)
            await self.cluster.set_disk_faults(n, {"power_loss": True})
            if not await self.cluster.wait_exit(n, 5.0):
                await self.cluster.kill(n)
                return f"node {n} did not exit on power loss; SIGKILLed"
        await trio.sleep(fault.duration_s)
        if fault.leader_back_after_s and leader in nodes:
            # The others first, so they may elect one of themselves without the leader's log.
            slow = await self._restart_together([n for n in nodes if n != leader])
            await trio.sleep(fault.leader_back_after_s)
            if slow:
                return f"not ready {RESTART_READY_TIMEOUT_S:.0f} s after restart: {slow}"
        return ""

    async def _join_remove(self, fault: FaultSpec, nodes: list[int]) -> str:
        """A spare node joins (--join: learner, then voter of __meta through joint consensus,
        then a registered broker); with target meta-leader, the __meta leader is SIGKILLed
        while the join is in flight and restarted JOIN_KILL_DOWN_S later. The node serves
        for duration_s, then `admin remove-node` takes it out and it is stopped."""
        spare = next((n for n in self.cluster.spare_ids if n not in self.cluster.ids), None)
        if spare is None:
            return "no spare node (cluster.spares) free: nothing joined"
        started = trio.current_time()
        victims = []
        async with trio.open_nursery() as both:
            joined: list[bool] = []

            async def join() -> None:
                joined.append(await self.cluster.join_spare(spare))
            both.start_soon(join)
            if fault.target == "meta-leader":
                await trio.sleep(self.rng.uniform(*JOIN_KILL_AT_S))
                victims = [n for n in nodes if n in self.cluster.running()]
                for n in victims:
                    await self.cluster.kill(n, signal.SIGKILL)
                self._detail(f"node {spare} joining; SIGKILL __meta leader {victims}")
                await trio.sleep(JOIN_KILL_DOWN_S)
                await self._restart_together(victims)
        joined_s = trio.current_time() - started
        if not joined or not joined[0]:
            return f"node {spare} NOT ready {joined_s:.0f} s after it was started with --join"
        self._detail(f"node {spare} joined and serves after {joined_s:.1f} s")
        await trio.sleep(fault.duration_s)
        code, out = await self._admin().remove_node(spare)
        await self.cluster.retire_spare(spare)
        return f"node {spare} joined in {joined_s:.1f} s; remove-node exit {code}: {out.strip()[-200:]}"

    async def _membership(self, fault: FaultSpec, nodes: list[int]) -> str:
        """Move a partition's replicas (AlterPartitionReassignments through kafka-python's
        admin client); while its joint-consensus change is in flight, kill the leader or a
        joining replica, or isolate the leader, for duration_s; heal; then wait until the
        move is complete (ListPartitionReassignments) and Metadata shows the target."""
        topic = fault.topic or self.first_topic[0]
        admin = self._admin()
        replicas = await admin.replicas(topic, fault.partition)
        if not replicas:
            return f"{topic}-{fault.partition}: no replicas in Metadata; not moved"
        target = membership_target(replicas, list(self.cluster.ids), self.rng)
        self._detail(f"{topic}-{fault.partition}: {replicas} -> {target}, {fault.mode} during the move")
        error = await admin.alter(topic, fault.partition, target)
        if error is not None:
            return f"reassignment refused: {error}"
        await trio.sleep(self.rng.uniform(*MEMBERSHIP_IN_FLIGHT_S))
        await self.cluster.refresh_leaders()
        leader = self._leader(fault)
        victims: list[int] = []
        if fault.mode == "kill-leader" and leader is not None:
            victims = [leader]
        elif fault.mode == "kill-joining":
            joining = [n for n in target if n not in replicas and n in self.cluster.running()]
            victims = [self.rng.choice(joining)] if joining else []
        for n in victims:
            await self.cluster.kill(n, signal.SIGKILL)
        if fault.mode == "isolate-leader" and leader is not None:
            for m in self.cluster.ids:
                if m != leader:
                    self._cut(leader, m, False)
            victims = [leader]
        self._detail(f"{fault.mode} -> node(s) {victims}" if victims else f"{fault.mode}: no node to hit")
        self._moving = (topic, fault.partition, target)  # inject() waits for it after the heal
        await trio.sleep(fault.duration_s)
        return ""

    def _admin(self):
        """The cluster's admin requests: its own `admin` (the simulation's, in process) or
        kafka-python's admin client in a worker thread."""
        return getattr(self.cluster, "admin", None) or ThreadAdmin(self.cluster.bootstrap_servers)

    async def _wait_move(self) -> None:
        """After a membership fault healed (every node back): until its move completed."""
        topic, partition, target = self._moving
        self._moving = None
        started = self.history.now()
        done = await self._admin().moved(topic, partition, target, MOVE_DONE_TIMEOUT_S)
        self._detail(f"move complete {self.history.now() - started:.1f} s after the heal" if done else
                     f"move to {target} NOT complete {MOVE_DONE_TIMEOUT_S:.0f} s after the heal")

    # --- heal --------------------------------------------------------------------------------

    async def _heal(self, fault: FaultSpec, nodes: list[int]) -> str:
        notes = []
        if fault.kind in ("partition", "link", "membership"):
            self.cluster.heal_network()
        if fault.kind == "pause":
            for n in nodes:
                self.cluster.send_signal(n, signal.SIGCONT)
        if fault.kind == "disk" or fault.stall_followers_s:  # (a stall cut short by the run's end)
            for n in nodes:
                if self.cluster.nodes[n].running:
                    await self.cluster.set_disk_faults(n, {"latency_ms": 0, "error": None})
                elif fault.kind == "disk":
                    notes.append(f"node {n} exited during the disk fault ({self._exit_code(n)}); restarted")
        dead = [n for n in nodes if not self.cluster.nodes[n].running]
        for n in dead:
            if fault.kind not in ("kill", "restart", "power-loss", "rolling-restart", "disk", "membership"):
                notes.append(f"node {n} exited ({self._exit_code(n)}); restarted")
        for n in await self._restart_together(dead):
            notes.append(f"node {n} not ready {RESTART_READY_TIMEOUT_S:.0f} s after restart")
        return " ".join(notes)

    async def _restart_together(self, nodes: list[int]) -> list[int]:
        """Restart nodes at once, not one after another: a node of a cluster without quorum
        (every node lost power) is not ready until a majority runs. Returns those not ready."""
        slow = []

        async def restart(n: int) -> None:
            if not await self.cluster.restart(n, RESTART_READY_TIMEOUT_S):
                slow.append(n)
        async with trio.open_nursery() as nursery:
            for n in nodes:
                nursery.start_soon(restart, n)
        return sorted(slow)

    def _exit_code(self, n: int) -> str:
        proc = self.cluster.nodes[n].proc
        return f"exit code {proc.returncode}" if proc is not None else "never started"

    async def heal_all(self) -> list[str]:
        """End of run: every link healed, every paused node resumed, every dead node restarted."""
        notes = []
        self.cluster.heal_network()
        for n in self.cluster.ids:
            node = self.cluster.nodes[n]
            if node.paused:
                self.cluster.send_signal(n, signal.SIGCONT)
            if not node.running:
                notes.append(f"node {n} was down at the end ({self._exit_code(n)})")
        down = [n for n in self.cluster.ids if not self.cluster.nodes[n].running]
        notes += [f"node {n} not ready after its restart" for n in await self._restart_together(down)]
        return notes


def _remove_node(bootstrap: str, node_id: int) -> tuple[int, str]:
    """`chronik-trio admin remove-node` (the operator's command), retried while the cluster
    answers without a verdict (exit 2); (exit code, output)."""
    deadline = time.monotonic() + REMOVE_NODE_TIMEOUT_S
    while True:
        run = subprocess.run([*chronik_trio_command(), "admin", "--bootstrap", bootstrap, "remove-node",
                              str(node_id)], capture_output=True, text=True, timeout=REMOVE_NODE_TIMEOUT_S)
        if run.returncode != 2 or time.monotonic() > deadline:
            return run.returncode, run.stdout + run.stderr
        time.sleep(1.0)


# --- membership: Kafka's admin APIs through kafka-python (blocking: run in a worker thread) ----

def _admin(bootstrap: str):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS,
                            client_id="chaos-nemesis")


def _replicas(bootstrap: str, topic: str, partition: int) -> list[int]:
    admin = _admin(bootstrap)
    try:
        for t in admin.describe_topics([topic]):
            for p in t["partitions"]:  # Metadata's own field names
                if p["partition_index"] == partition:
                    return list(p["replica_nodes"])
        return []
    finally:
        admin.close()


def _alter(bootstrap: str, topic: str, partition: int, target: list[int]) -> str | None:
    """None once the broker accepted the move; else the error's name."""
    from kafka import TopicPartition
    admin = _admin(bootstrap)
    try:
        result = admin.alter_partition_reassignments({TopicPartition(topic, partition): target},
                                                     timeout_ms=ADMIN_TIMEOUT_MS)
        error = result.get(TopicPartition(topic, partition))
        return None if error is None else error.__name__
    except Exception as exc:  # a client error is the run's finding, not the harness's crash
        return repr(exc)
    finally:
        admin.close()


def _wait_moved(bootstrap: str, topic: str, partition: int, target: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin = _admin(bootstrap)
            try:
                ongoing = admin.list_partition_reassignments({topic: [partition]})
            finally:
                admin.close()
            if not ongoing and _replicas(bootstrap, topic, partition) == target:
                return True
        except Exception as exc:  # the cluster is still recovering: ask again
            log.info("waiting for the move of %s-%d: %r", topic, partition, exc)
        time.sleep(0.5)
    return False


class ThreadAdmin:
    """The membership fault's admin requests for a real cluster: kafka-python's admin client
    in a worker thread (chaos/sim/client.py's Admin is the simulation's)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def replicas(self, topic: str, partition: int) -> list[int]:
        return await trio.to_thread.run_sync(_replicas, self.bootstrap, topic, partition)

    async def alter(self, topic: str, partition: int, target: list[int]) -> str | None:
        return await trio.to_thread.run_sync(_alter, self.bootstrap, topic, partition, target)

    async def moved(self, topic: str, partition: int, target: list[int], timeout_s: float) -> bool:
        return await trio.to_thread.run_sync(_wait_moved, self.bootstrap, topic, partition, target, timeout_s)

    async def remove_node(self, node_id: int) -> tuple[int, str]:
        """`chronik-trio admin remove-node` (exit code, output)."""
        return await trio.to_thread.run_sync(_remove_node, self.bootstrap, node_id)
