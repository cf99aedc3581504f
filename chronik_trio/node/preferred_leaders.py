"""Preferred leaders: leadership goes back to each partition's first replica, so leaders
stay spread across the brokers.

Three ways: ElectLeaders (a PreferredLeaderRequested command through __meta, acted on by
whichever node leads the partition), right after CreateTopics (so no hand-over follows the
answer), and periodically, once a preferred replica is in sync again after a restart.
"""

from __future__ import annotations

import logging
import uuid

import trio

from chronik_trio.cluster.meta import Topic
from chronik_trio.errors import RequestTimedOut
from chronik_trio.pb import meta_pb2

from .meta_group import MetaMachine, MetaService
from .replicas import HostedReplicas

log = logging.getLogger(__name__)

PREFERRED_SETTLE_S = 3.0  # CreateTopics answers after this even if leadership did not move


class PreferredLeaders:
    def __init__(self, node_id: int, meta: MetaMachine, meta_service: MetaService,
                 replicas: HostedReplicas, balance_interval_s: float) -> None:
        self.node_id = node_id
        self._meta = meta
        self._meta_service = meta_service
        self._replicas = replicas
        self._balance_interval_s = balance_interval_s
        meta.command_listeners.append(self._meta_command)

    async def elect(self, topic: Topic, partition: int, timeout_s: float) -> bool:
        """ElectLeaders (preferred): False if the preferred replica already leads; True once
        it leads in this node's metadata. Raises RequestTimedOut on timeout."""
        preferred = topic.replicas[partition][0]
        known = self._meta.state.leader_of(topic, partition)
        if known is not None and known.leader == preferred:
            return False
        applied = await self._meta_service.propose(meta_pb2.MetaCommand(
            preferred_leader_requested=meta_pb2.PreferredLeaderRequested(
                topic_id=topic.topic_id.bytes, partition=partition)))
        if not applied.ok:
            raise applied.error
        with trio.move_on_after(timeout_s):
            while (lead := self._meta.state.leader_of(topic, partition)) is None or lead.leader != preferred:
                await self._meta.changed.wait()
            return True
        raise RequestTimedOut(f"the preferred replica did not take over in time ({timeout_s:.0f} s)")

    async def settle(self, topic: Topic) -> None:
        """Before answering CreateTopics: if a partition's first leader is not its preferred
        replica, have leadership moved now (bounded), so no hand-over follows the answer
        while the client's first produce is on its way."""
        with trio.move_on_after(PREFERRED_SETTLE_S):
            async with trio.open_nursery() as nursery:
                for p in range(topic.partition_count):
                    if self._meta.state.leader_of(topic, p).leader != topic.replicas[p][0]:
                        nursery.start_soon(self.elect, topic, p, PREFERRED_SETTLE_S)

    def _meta_command(self, command: meta_pb2.MetaCommand) -> None:
        """A PreferredLeaderRequested was applied: if this node leads that partition, hand
        leadership to its preferred replica (called from the Ready pass: queue, not step)."""
        request = command.preferred_leader_requested
        topic = self._meta.state.topics_by_id.get(uuid.UUID(bytes=request.topic_id))
        replica = self._replicas.get(topic.name, request.partition) if topic else None
        if replica is None or not replica.is_leader:
            return
        preferred = topic.replicas[request.partition][0]
        if preferred != self.node_id:
            log.info("handing %s-%d to its preferred leader, node %d, as requested",
                     topic.name, request.partition, preferred)
            replica.group.transfer_leader(preferred)

    async def run(self) -> None:
        """Hand leadership back to a partition's first replica once it is in sync again
        (after a restart)."""
        while True:
            await trio.sleep(self._balance_interval_s)
            for (name, partition), replica in self._replicas.items():
                topic = self._meta.state.topics.get(name)
                if topic is None or replica.closed or not replica.is_leader:
                    continue
                preferred = topic.replicas[partition][0]
                if preferred != self.node_id and preferred in replica.isr and \
                        not replica.group.transfer_pending():
                    log.info("handing %s-%d back to its preferred leader, node %d", name, partition, preferred)
                    replica.group.transfer_leader(preferred)
