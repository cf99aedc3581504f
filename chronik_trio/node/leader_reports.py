"""ISR and leader reports: __meta learns which partitions this node leads, and their ISR.

A partition's leader reports itself to __meta at once when it becomes leader, and again
whenever its ISR changes: every ISR_CHECK_S it recomputes the ISR of each partition it
leads (partition.state.InSyncReplicas, fed from Raft progress and node liveness). Reports
are proposals to __meta, at most LEADER_REPORTS_INFLIGHT_MAX at once; a report that cannot
reach __meta is retried.
"""

from __future__ import annotations

import logging
import uuid

import trio

from chronik_trio.errors import MetaUnavailable
from chronik_trio.pb import meta_pb2

from .meta_group import MetaMachine, MetaService
from .partition_group import PartitionMachine
from .raft_runtime import RaftRuntime
from .replicas import HostedReplicas

log = logging.getLogger(__name__)

LEADER_REPORTS_INFLIGHT_MAX = 64  # concurrent __meta proposals reporting partition leaders
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
        self._isr_alive: frozenset[int] = frozenset()  # nodes alive at the last ISR check
        # (topic id, partition) -> (term, ISR, last index) of idle groups already checked
        self._isr_quiet: dict[tuple[uuid.UUID, int], tuple[int, tuple[int, ...], int]] = {}

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
        runtime = self._runtime
        alive = frozenset(p for p in runtime.peers if runtime.is_alive(p, now))
        if alive != self._isr_alive:
            self._isr_alive, self._isr_quiet = alive, {}
        for replica in self._replicas.all():
            group = replica.group
            if replica.closed or not group.is_leader or group.lock.locked():
                continue
            # An idle (quiesced) group's ISR depends only on which nodes are alive: one
            # already checked in this state is skipped (with 1,000 groups this loop was
            # a quarter of an idle node's CPU).
            key = (replica.topic_id, replica.partition)
            if group.quiesced and self._isr_quiet.get(key) == (group.term, replica.isr, group.node.last_index()):
                continue
            before = replica.isr
            isr = replica.update_isr(now, runtime.is_alive)
            known = self._meta.state.leaders.get(key)
            if isr != before or (known and known.isr and known.isr != isr and known.epoch == group.term):
                self._pending[key] = (group.term, isr)
                self._wanted.set()
            elif group.quiesced:
                self._isr_quiet[key] = (group.term, isr, group.node.last_index())

    async def _report_loop(self) -> None:
        """Tell __meta promptly about every partition this node now leads."""
        limiter = trio.CapacityLimiter(LEADER_REPORTS_INFLIGHT_MAX)
        async with trio.open_nursery() as nursery:
            while True:
                await self._wanted.wait()
                self._wanted = trio.Event()
                reports, self._pending = self._pending, {}
                for (topic_id, partition), (term, isr) in reports.items():
                    self._isr_version += 1
                    nursery.start_soon(self._report, limiter, topic_id, partition, term, isr,
                                       self._isr_version)

    async def _report(self, limiter: trio.CapacityLimiter, topic_id: uuid.UUID, partition: int, term: int,
                      isr: tuple[int, ...], isr_version: int) -> None:
        async with limiter:
            known = self._meta.state.leaders.get((topic_id, partition))
            if known is not None and (known.leader, known.epoch, known.isr) == (self.node_id, term, isr):
                return
            try:
                await self._meta_service.propose(meta_pb2.MetaCommand(
                    partition_leader_changed=meta_pb2.PartitionLeaderChanged(
                        topic_id=topic_id.bytes, partition=partition, leader=self.node_id,
                        leader_epoch=term, isr=isr, isr_version=isr_version)))
            except MetaUnavailable as exc:
                log.warning("could not report leadership of %s-%d: %s", topic_id.hex, partition, exc)
                self._pending.setdefault((topic_id, partition), (term, isr))
                self._wanted.set()
