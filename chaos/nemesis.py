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

import attrs
import trio

from .cluster import Cluster
from .network import NetworkUnavailable
from .proxy import LinkState
from .scenario import FaultSpec, NemesisSpec

log = logging.getLogger(__name__)

RESTART_READY_TIMEOUT_S = 60.0
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
    return "rolling restart of every node"


class Nemesis:
    def __init__(self, cluster: Cluster, history, rng: random.Random, first_topic: tuple[str, int]) -> None:
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.first_topic = first_topic  # (name, partitions)
        self._next_id = 1
        self._fid = 0  # the fault being injected
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
        if fault.kind == "partition":
            return running  # the split is chosen when it starts
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

    # --- heal --------------------------------------------------------------------------------

    async def _heal(self, fault: FaultSpec, nodes: list[int]) -> str:
        notes = []
        if fault.kind in ("partition", "link"):
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
            if fault.kind not in ("kill", "restart", "power-loss", "rolling-restart", "disk"):
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
