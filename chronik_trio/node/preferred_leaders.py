"""Preferred leaders: leadership goes back to each partition's first replica, so leaders
stay spread across the brokers (placement spreads the first replicas evenly).

Three ways: ElectLeaders (a PreferredLeaderRequested command through __meta, acted on by
whichever node leads the partition), right after CreateTopics (so no hand-over follows the
answer), and the automatic balancer (run), Kafka's auto leader rebalance made health-aware:

- every `leader.imbalance.check.interval.seconds` each node looks at every broker B: of the
  partitions whose preferred replica is B, the share led elsewhere (from __meta's leaders);
  above `leader.imbalance.per.broker.percentage`, the node hands each such partition it
  leads back to B, if B is in its ISR and eligible;
- B is eligible when this node has heard from it without a break, and its disk has not been
  reported degraded (disk_health.py, through __meta), for `leader_balance_min_healthy_ms`
  (hysteresis: a node that restarts, flaps or has just recovered must stay so that long
  first), and B has acknowledged everything committed in the partition (a disk that has
  just turned slow shows here before its report arrives);
- a node whose own disk is degraded hands every partition it leads to an eligible in-sync
  replica at once (checked every second), and takes none back until healthy again;
- `auto.leader.rebalance.enable=false` turns the hand-back off (ElectLeaders still works).

The three settings are broker configs (static in the node's config, dynamic through
IncrementalAlterConfigs, per broker or cluster-wide). Bound: a restarted node leads its
preferred partitions again within min_healthy + one check interval + a leader transfer
(< 1 s) once it is back in their ISR; docs/operations.md.
"""

from __future__ import annotations

import logging
import typing
import uuid

import trio

from chronik_trio.cluster.configs import resolve_broker
from chronik_trio.cluster.meta import Topic
from chronik_trio.errors import RequestTimedOut
from chronik_trio.pb import meta_pb2

from .disk_health import DiskHealth
from .meta_group import MetaMachine, MetaService
from .partition_group import PartitionReplica
from .raft_runtime import RaftRuntime
from .replicas import HostedReplicas

log = logging.getLogger(__name__)

PREFERRED_SETTLE_S = 3.0  # CreateTopics answers after this even if leadership did not move
BALANCE_TICK_S = 1.0  # liveness is tracked, and a degraded disk acted on, this often
ENABLE, INTERVAL, PERCENTAGE = ("auto.leader.rebalance.enable", "leader.imbalance.check.interval.seconds",
                                "leader.imbalance.per.broker.percentage")


class PreferredLeaders:
    def __init__(self, node_id: int, meta: MetaMachine, meta_service: MetaService,
                 replicas: HostedReplicas, *, runtime: RaftRuntime, disk: DiskHealth,
                 static_configs: typing.Callable[[], dict[str, str]], min_healthy_s: float) -> None:
        self.node_id = node_id
        self._meta = meta
        self._meta_service = meta_service
        self._replicas = replicas
        self._runtime = runtime
        self._disk = disk
        self._static_configs = static_configs
        self._min_healthy_s = min_healthy_s
        # peer -> since when heard without a break and its disk not reported degraded
        self._healthy_since: dict[int, float] = {}
        self._next_check = 0.0
        self.handed_back = 0  # leaderships handed to their preferred replica by the balancer
        self.handed_off = 0  # leaderships handed off because this node's disk is degraded
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
        while True:
            await trio.sleep(BALANCE_TICK_S)
            now = trio.current_time()
            self._track_liveness(now)
            if self._disk.degraded:
                self._hand_off_all(now)
                continue
            enabled, interval_s, percentage = self._settings()
            if not enabled or now < self._next_check:
                continue
            self._next_check = now + interval_s
            self._rebalance(now, percentage)

    def _settings(self) -> tuple[bool, float, int]:
        state, static = self._meta.state, self._static_configs()

        def value(key: str) -> str:
            return resolve_broker(key, state.broker_configs, self.node_id, static).value
        return value(ENABLE) == "true", float(value(INTERVAL)), int(value(PERCENTAGE))

    def _track_liveness(self, now: float) -> None:
        degraded = self._meta.state.disk_degraded
        for peer in list(self._runtime.peers):
            if self._runtime.is_reachable(peer, now) and peer not in degraded:
                self._healthy_since.setdefault(peer, now)
            else:
                self._healthy_since.pop(peer, None)

    def eligible(self, node_id: int, now: float) -> bool:
        """Whether node_id may be given leadership: (another node) it has been heard without a
        break, and its disk not reported degraded, for min_healthy_s."""
        if node_id == self.node_id:
            return not self._disk.degraded and node_id not in self._meta.state.disk_degraded
        since = self._healthy_since.get(node_id)
        return since is not None and now - since >= self._min_healthy_s

    @staticmethod
    def _keeps_up(replica: PartitionReplica, node_id: int) -> bool:
        """Whether node_id has acknowledged everything committed in the partition, as its
        leader sees it: a replica whose disk has just turned slow lags here before it
        reports itself degraded, and a leader transfer to it would stall writes."""
        progress = replica.group.node.progress().get(node_id)
        return progress is not None and progress.match >= replica.group.node.committed_index

    def _rebalance(self, now: float, percentage: int) -> None:
        """Kafka's rule: a broker whose preferred partitions are led elsewhere for more than
        `percentage` of them gets those this node leads back (if eligible and in the ISR)."""
        state = self._meta.state
        preferred_count: dict[int, int] = {}
        led_elsewhere: dict[int, int] = {}
        for topic in state.topics.values():
            for partition, replicas in enumerate(topic.replicas):
                if not replicas:
                    continue
                preferred = replicas[0]
                preferred_count[preferred] = preferred_count.get(preferred, 0) + 1
                known = state.leader_of(topic, partition)
                if known is not None and known.leader != preferred:
                    led_elsewhere[preferred] = led_elsewhere.get(preferred, 0) + 1
        wanting = {b for b, n in led_elsewhere.items()
                   if 100 * n > percentage * preferred_count[b] and b != self.node_id and self.eligible(b, now)}
        if not wanting:
            return
        for (name, partition), replica in self._replicas.items():
            topic = state.topics.get(name)
            if topic is None or replica.closed or not replica.is_leader or replica.group.transfer_pending():
                continue
            preferred = topic.replicas[partition][0]
            if preferred in wanting and preferred in replica.isr and self._keeps_up(replica, preferred):
                log.info("handing %s-%d back to its preferred leader, node %d", name, partition, preferred)
                self.handed_back += 1
                replica.group.transfer_leader(preferred)

    def _hand_off_all(self, now: float) -> None:
        """This node's disk is degraded: every partition it leads goes to an eligible in-sync
        replica (preferred order), if there is one."""
        state = self._meta.state
        for (name, partition), replica in self._replicas.items():
            topic = state.topics.get(name)
            if topic is None or replica.closed or not replica.is_leader or replica.group.transfer_pending():
                continue
            target = self._handoff_target(topic.replicas[partition], replica, now)
            if target is not None:
                log.info("disk degraded: handing %s-%d to node %d", name, partition, target)
                self.handed_off += 1
                replica.group.transfer_leader(target)

    def _handoff_target(self, replicas: tuple[int, ...], replica: PartitionReplica, now: float) -> int | None:
        isr = replica.isr
        for candidate in replicas:
            if (candidate != self.node_id and candidate in isr and self.eligible(candidate, now)
                    and self._keeps_up(replica, candidate)):
                return candidate
        return None
