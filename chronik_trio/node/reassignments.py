"""Moving partition replicas: the leader of a partition being reassigned drives its Raft group
to the target __meta records (AlterPartitionReassignments, cluster/meta.py).

One step at a time, each decided afresh from the group's current config, so a new leader
(or the same one after a restart) simply continues:

1. a learner that is not in the target is removed (a cancelled move);
2. a target replica that is not a member joins as a learner (one per change); it catches
   up from the leader's log, or by a snapshot when the log start has moved past what it has;
3. once every learner of the target is caught up (replicating, within CAUGHT_UP_LAG_ENTRIES
   of the leader's last index): a leader that is not in the target first hands leadership to
   a caught-up voter that is; then one joint-consensus ConfChangeV2 makes the learners voters
   and removes the voters not in the target (Raft leaves the joint config by itself);
4. voters == target, no learner, not joint: the leader commits
   PartitionReassignmentCompleted to __meta; nodes no longer hosting a replica close it.

A move whose new replica never catches up (its node is down, or cannot keep up) waits, as
Kafka's does, until it does or the move is cancelled; the leader logs a warning naming the
move, the replicas not catching up and for how long, once STALLED_AFTER_S passed without
progress and then every STALLED_LOG_EVERY_S (docs/operations.md).

A leader that is removed while no target voter could take over keeps leading through the
joint config and hands off once the change is applied (raft/, docs/raft.md).
"""

from __future__ import annotations

import logging

import trio

from chronik_trio.cluster.meta import Reassignment, Topic
from chronik_trio.errors import BrokerError
from chronik_trio.pb import meta_pb2
from chronik_trio.raft.errors import ProposalDropped
from chronik_trio.raft.types import (ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
                                     ProgressState)

from .meta_group import MetaMachine, MetaService
from .partition_group import PartitionReplica
from .replicas import HostedReplicas

log = logging.getLogger(__name__)

STEP_INTERVAL_S = 0.1  # how often a leader looks at its moves while any is in progress
# A learner this close to the leader's last index is caught up: promoting it costs the new
# config at most this many entries of catching up before it can count toward a commit (a
# few produce requests' worth under load; a log of large batches makes each entry large).
CAUGHT_UP_LAG_ENTRIES = 16
STALLED_AFTER_S = 5.0  # a move whose learners gained nothing for this long is stalled
STALLED_LOG_EVERY_S = 60.0


def next_change(node_id: int, conf_state, progress: dict, last_index: int,
                target: tuple[int, ...]) -> ConfChangeV2 | int | bool | None:
    """What the leader node_id does next toward target: a ConfChangeV2 to propose, a node id
    to hand leadership to, True when the move is complete, or None (wait: a joint config
    being left, a learner catching up)."""
    if conf_state.voters_outgoing or conf_state.learners_next:
        return None  # joint: the leader leaves it by itself
    voters, learners, wanted = set(conf_state.voters), set(conf_state.learners), set(target)
    if learners - wanted:
        return _change((ConfChangeType.REMOVE_NODE, min(learners - wanted)))
    if wanted - voters - learners:
        return _change((ConfChangeType.ADD_LEARNER_NODE, min(wanted - voters - learners)))
    if voters == wanted:
        return True

    def caught_up(peer: int) -> bool:
        pr = progress.get(peer)
        return pr is not None and pr.state == ProgressState.REPLICATE and last_index - pr.match <= CAUGHT_UP_LAG_ENTRIES

    if not all(caught_up(learner) for learner in learners):
        return None
    if node_id not in wanted:
        heirs = sorted(v for v in voters & wanted if caught_up(v))
        if heirs:
            return heirs[0]
    changes = [(ConfChangeType.ADD_NODE, n) for n in sorted(learners)]
    changes += [(ConfChangeType.REMOVE_NODE, n) for n in sorted(voters - wanted)]
    return _change(*changes, joint=True)


def _change(*changes: tuple[ConfChangeType, int], joint: bool = False) -> ConfChangeV2:
    return ConfChangeV2(tuple(ConfChangeSingle(kind, node) for kind, node in changes),
                        ConfChangeTransition.JOINT_IMPLICIT if joint else ConfChangeTransition.AUTO)


def with_generation(cc: ConfChangeV2, generation: int) -> ConfChangeV2:
    """The change, carrying the move's generation: a replica created for this move joins
    when it applies it (RaftGroup.joining_generation)."""
    return ConfChangeV2(cc.changes, cc.transition, b"%d" % generation)


class Reassigner:
    """Runs on every node; acts only for the partitions this node leads."""

    def __init__(self, node_id: int, meta: MetaMachine, meta_service: MetaService,
                 replicas: HostedReplicas) -> None:
        self.node_id = node_id
        self._meta = meta
        self._meta_service = meta_service
        self._replicas = replicas
        # (topic id, partition) -> (what its learners held, since when, last warned at)
        self._progress_seen: dict[tuple, tuple[tuple, float, float]] = {}

    async def run(self) -> None:
        while True:
            if not self._meta.state.reassignments:
                await self._meta.changed.wait()
                continue
            moves = dict(self._meta.state.reassignments)
            for key in set(self._progress_seen) - set(moves):
                del self._progress_seen[key]
            for (topic_id, partition), move in moves.items():
                topic = self._meta.state.topics_by_id.get(topic_id)
                replica = self._replicas.get(topic.name, partition) if topic is not None else None
                if replica is not None and replica.is_leader and not replica.closed:
                    await self._step(topic, replica, move)
                else:
                    self._progress_seen.pop((topic_id, partition), None)
            await trio.sleep(STEP_INTERVAL_S)

    async def _step(self, topic: Topic, replica: PartitionReplica, move: Reassignment) -> None:
        group = replica.group
        async with group.lock:
            if not group.is_leader or group.closed:
                return
            node = group.node
            conf_state, progress = node.status().conf_state, node.progress()
            action = next_change(self.node_id, conf_state, progress, node.last_index(), move.target)
            if action is None:
                self._watch_stall(topic, replica.partition, move, conf_state, progress)
            else:
                self._progress_seen.pop((topic.topic_id, replica.partition), None)
            if isinstance(action, ConfChangeV2):
                action = with_generation(action, move.generation)
                group.unquiesce()
                try:
                    node.propose_conf_change(action)
                except ProposalDropped as exc:  # one still pending: next round
                    log.debug("%s-%d: conf change not proposed yet: %s", topic.name, replica.partition, exc)
                    return
                log.info("%s-%d: reassignment to %s: proposed %s", topic.name, replica.partition,
                         list(move.target), [(c.type.name, c.node_id) for c in action.changes])
        if isinstance(action, ConfChangeV2):
            group.wake_runtime()
        elif action is True:
            await self._complete(topic, replica.partition, move)
        elif action is not None:  # a node id: the heir
            if not group.transfer_pending():
                log.info("%s-%d: leaving the replicas: handing leadership to node %d first",
                         topic.name, replica.partition, action)
                group.transfer_leader(action)

    def _watch_stall(self, topic: Topic, partition: int, move: Reassignment, conf_state,
                     progress: dict) -> None:
        """The move waits (learners catching up): warn if they gained nothing for a while."""
        key = (topic.topic_id, partition)
        learners = tuple(sorted(conf_state.learners))
        held = (learners, tuple(progress[n].match if n in progress else -1 for n in learners))
        now = trio.current_time()
        seen = self._progress_seen.get(key)
        if seen is None or seen[0] != held:
            self._progress_seen[key] = (held, now, float("-inf"))
            return
        _, since, warned = seen
        if not learners or now - since < STALLED_AFTER_S or now - warned < STALLED_LOG_EVERY_S:
            return
        self._progress_seen[key] = (held, since, now)
        log.warning("%s-%d: reassignment to %s stalled for %.0f s: the new replica(s) on node(s) %s "
                    "gained nothing (matched up to %s); the move waits until they catch up or it is "
                    "cancelled (chronik-trio admin reassign %s %d --cancel)", topic.name, partition,
                    list(move.target), now - since, list(learners), list(held[1]), topic.name, partition)

    async def _complete(self, topic: Topic, partition: int, move: Reassignment) -> None:
        command = meta_pb2.MetaCommand(partition_reassignment_completed=meta_pb2.PartitionReassignmentCompleted(
            topic_id=topic.topic_id.bytes, partition=partition, replicas=move.target))
        try:
            applied = await self._meta_service.propose(command)
        except BrokerError as exc:  # __meta without a leader for now: next round
            log.info("%s-%d: reassignment done, not recorded yet: %s", topic.name, partition, exc)
            return
        if applied.ok:
            log.info("%s-%d: reassignment complete: replicas %s", topic.name, partition, list(move.target))
