"""ISR and leader reports: __meta learns which partitions this node leads, and their ISR.

A partition's leader reports itself to __meta at once when it becomes leader, and again
whenever its ISR changes: every ISR_CHECK_S it recomputes the ISR of each partition it
leads (partition.state.InSyncReplicas, fed from Raft progress and node liveness). Reports
are batched into PartitionLeadersChanged commands to __meta (up to
LEADER_REPORTS_PER_COMMAND_MAX each, at most LEADER_REPORT_COMMANDS_INFLIGHT_MAX in flight);
a command that cannot reach __meta is retried with whatever is pending then.
"""

from __future__ import annotations

import itertools
import logging
import uuid

import trio

from chronik_trio.errors import MetaUnavailable
from chronik_trio.pb import meta_pb2

from .meta_group import MetaMachine, MetaService
from .partition_group import PartitionMachine, PartitionReplica
from .raft_runtime import RaftRuntime
from .replicas import HostedReplicas

log = logging.getLogger(__name__)

# Reports in one PartitionLeadersChanged command: one __meta entry of about 40 KB, so a
# node's share of 10,000 new partitions is a handful of entries, not 3,300.
LEADER_REPORTS_PER_COMMAND_MAX = 1000
# Such commands in flight at once per node: a few, so one lost to a __meta leader change
# does not hold every report back, but not so many that reports trickle out one by one.
LEADER_REPORT_COMMANDS_INFLIGHT_MAX = 4
ISR_CHECK_S = 1.0  # how often leaders recompute their ISR (Kafka checks every lag/2)


class LeaderReports:
    def __init__(self, node_id: int, meta: MetaMachine, meta_service: MetaService,
                 runtime: RaftRuntime, replicas: HostedReplicas) -> None:
        self.node_id = node_id
        self._meta = meta
        self._meta_service = meta_service
        self._runtime = runtime
        self._replicas = replicas
        replicas.leader_listeners.append(self.became_leader)
        # (topic id, partition) -> (term, isr) to report to __meta
        self._pending: dict[tuple[uuid.UUID, int], tuple[int, tuple[int, ...]]] = {}
        self._wanted = trio.Event()
        self._isr_version = 0  # orders this node's reports (with the epoch)
        self.commands_sent = 0  # PartitionLeadersChanged commands proposed (tests count them)
        self._isr_alive: frozenset[int] = frozenset()  # nodes alive at the last ISR check
        # Replicas the next check looks at again whatever their state: skipped because a
        # Ready pass held them, or reported and not yet seen in __meta.
        self._isr_again: dict[tuple[uuid.UUID, int], PartitionReplica] = {}
        self.isr_checks = 0  # replicas the ISR check looked at (in /metrics)
        self.isr_full_checks = 0  # checks of every replica, node liveness having changed
        self.isr_check_passes = 0  # runs of _check_isr (in /metrics)

    def became_leader(self, machine: PartitionMachine, term: int) -> None:
        """From the Ready pass (no await)."""
        self._pending[(machine.topic.topic_id, machine.partition)] = (term, ())
        self._wanted.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._isr_loop)
            nursery.start_soon(self._report_loop)

    async def _isr_loop(self) -> None:
        """Recompute the ISR of every partition led here; report changes to __meta."""
        while True:
            await trio.sleep(ISR_CHECK_S)
            self._check_isr(trio.current_time())

    def _check_isr(self, now: float) -> None:
        """A quiet (quiesced) group's ISR depends only on which nodes are alive: its
        followers all hold its whole log. So every replica is checked when that set
        changes; otherwise only the awake groups, those that went quiet since the last
        check, and those to look at again. Checking every replica every second was most
        of an idle node's CPU with 10,000 partitions (a quarter of it with 1,000)."""
        runtime = self._runtime
        self.isr_check_passes += 1
        alive = frozenset(p for p in runtime.peers if runtime.is_alive(p, now))
        went_quiet = runtime.take_went_quiet()
        again, self._isr_again = self._isr_again, {}
        if alive != self._isr_alive:
            self._isr_alive = alive
            replicas = self._replicas.all()
            self.isr_full_checks += 1
        else:
            replicas = [r for r in map(self._replica_of, itertools.chain(runtime.awake.values(), went_quiet))
                        if r is not None]
            replicas.extend(again.values())
        self.isr_checks += len(replicas)
        for replica in replicas:
            group = replica.group
            if replica.closed or not group.is_leader:
                continue
            key = (replica.topic_id, replica.partition)
            if group.lock.locked():  # in a Ready pass now: the next check
                self._isr_again[key] = replica
                continue
            before = replica.isr
            isr = replica.update_isr(now, runtime.is_alive)
            known = self._meta.state.leaders.get(key)
            if isr != before or (known and known.isr and known.isr != isr and known.epoch == group.term):
                self._pending[key] = (group.term, isr)
                self._wanted.set()
                self._isr_again[key] = replica  # until __meta holds it

    def _replica_of(self, group) -> PartitionReplica | None:
        """The partition replica whose group this is (None: __meta, or gone)."""
        topic = getattr(group.machine, "topic", None)
        if topic is None:
            return None
        replica = self._replicas.get(topic.name, group.machine.partition)
        return replica if replica is not None and replica.group is group else None

    async def _report_loop(self) -> None:
        """Tell __meta promptly about every partition this node now leads: the pending
        reports go in PartitionLeadersChanged commands of up to LEADER_REPORTS_PER_COMMAND_MAX,
        at most LEADER_REPORT_COMMANDS_INFLIGHT_MAX at once. A command is built only when a
        slot is free, so reports that come while every slot is taken join the next one."""
        slots = trio.Semaphore(LEADER_REPORT_COMMANDS_INFLIGHT_MAX)
        async with trio.open_nursery() as nursery:
            while True:
                await self._wanted.wait()
                self._wanted = trio.Event()
                await slots.acquire()
                batch = self._take_batch()
                if self._pending:
                    self._wanted.set()  # more than one command's worth: the next one
                if batch:
                    nursery.start_soon(self._report, slots, batch)
                else:
                    slots.release()

    def _take_batch(self) -> dict[tuple[uuid.UUID, int], tuple[int, tuple[int, ...], int]]:
        """Up to LEADER_REPORTS_PER_COMMAND_MAX pending reports __meta does not know yet,
        oldest first, each with its isr_version: key -> (term, isr, isr_version)."""
        batch = {}
        leaders = self._meta.state.leaders
        while self._pending and len(batch) < LEADER_REPORTS_PER_COMMAND_MAX:
            key = next(iter(self._pending))
            term, isr = self._pending.pop(key)
            known = leaders.get(key)
            if known is not None and (known.leader, known.epoch, known.isr) == (self.node_id, term, isr):
                continue  # already there (a repeat, or a report retried after it landed)
            self._isr_version += 1
            batch[key] = (term, isr, self._isr_version)
        return batch

    async def _report(self, slots: trio.Semaphore, batch) -> None:
        try:
            self.commands_sent += 1
            reports = [meta_pb2.PartitionLeaderChanged(
                topic_id=topic_id.bytes, partition=partition, leader=self.node_id, leader_epoch=term,
                isr=isr, isr_version=isr_version)
                for (topic_id, partition), (term, isr, isr_version) in batch.items()]
            await self._meta_service.propose(meta_pb2.MetaCommand(
                partition_leaders_changed=meta_pb2.PartitionLeadersChanged(reports=reports)))
        except MetaUnavailable as exc:
            log.warning("could not report leadership of %d partition(s): %s", len(batch), exc)
            for key, (term, isr, _) in batch.items():
                self._pending.setdefault(key, (term, isr))  # unless a newer report came
            self._wanted.set()
        finally:
            slots.release()
