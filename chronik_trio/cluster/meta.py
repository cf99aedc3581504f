"""The __meta state machine: brokers, topics with their partition assignments, configs,
producer-id blocks. Every node applies the same committed MetaCommands in the same order and
reaches the same state; the Kafka handlers read it.

Pure and deterministic: no clocks, no randomness (topic ids come inside the commands).
"""

from __future__ import annotations

import collections
import re
import typing
import uuid

import attrs
from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError

from .acls import Acl, Operation, PatternType, Permission, ResourceType
from chronik_trio.pb import meta_pb2

from .configs import TOPIC_CONFIGS

TOPIC_NAME_CHARS = re.compile(r"^[a-zA-Z0-9._-]+$")
TOPIC_NAME_BYTES_MAX = 249  # Kafka's limit (room for ".<partition>" suffixes in file names)
# Every partition is a Raft group with its own files and lock: far more than any node hosts.
# A CreateTopics or CreatePartitions over it is refused (INVALID_PARTITIONS) before a replica
# list is built: 2^31-1 partitions once held the event loop building one.
PARTITIONS_PER_TOPIC_MAX = 10_000
INTERNAL_TOPIC_PREFIX = "__"

PRODUCER_EPOCH_MAX = 32_766  # Kafka bumps to a new producer id before epoch 32767 (Short.MAX_VALUE)
RECENT_REQUESTS_MAX = 10_000  # request ids remembered for deduplication (and in snapshots)
# Commands that change which partitions exist, their replicas or their configs: what a node's
# hosted replicas follow (MetaState.layout_version). Leader and ISR reports, thousands of them
# when a topic of many partitions is created, are not among them.
LAYOUT_COMMANDS = frozenset({
    "topic_created", "topic_deleted", "partitions_added", "topic_configs_altered", "broker_configs_altered",
    "partition_reassignment_requested", "partition_reassignment_completed"})


class ClusterError(BrokerError):
    """Expected failure of a metadata operation; carries the Kafka error code it maps to."""


class InvalidTopicName(ClusterError):
    error_code = ErrorCode.invalid_topic_exception


class TopicAlreadyExists(ClusterError):
    error_code = ErrorCode.topic_already_exists


class UnknownTopic(ClusterError):
    error_code = ErrorCode.unknown_topic_or_partition


class ProducerFenced(ClusterError):
    error_code = ErrorCode.producer_fenced


class InvalidPartitionCount(ClusterError):
    error_code = ErrorCode.invalid_partitions


class InvalidReplicationFactor(ClusterError):
    error_code = ErrorCode.invalid_replication_factor


class InvalidReplicaAssignment(ClusterError):
    error_code = ErrorCode.invalid_replica_assignment


class NoReassignmentInProgress(ClusterError):
    error_code = ErrorCode.no_reassignment_in_progress


def validate_replica_assignment(replicas: tuple[int, ...], brokers: typing.Container[int]) -> None:
    """Raise InvalidReplicaAssignment for an empty list, a broker twice, or an unknown broker
    (Kafka's controller refuses each with INVALID_REPLICA_ASSIGNMENT)."""
    if not replicas:
        raise InvalidReplicaAssignment("the replica list is empty")
    if len(set(replicas)) != len(replicas):
        raise InvalidReplicaAssignment(f"replicas {list(replicas)} name a broker more than once")
    unknown = sorted(r for r in replicas if r not in brokers)
    if unknown:
        raise InvalidReplicaAssignment(f"replicas {list(replicas)} name unknown broker(s) {unknown}")


def validate_topic_name(name: str) -> None:
    """Raise InvalidTopicName unless name is a legal Kafka topic name."""
    if not name or name in (".", ".."):
        raise InvalidTopicName(f"topic name {name!r} is not allowed")
    if len(name.encode()) > TOPIC_NAME_BYTES_MAX:
        raise InvalidTopicName(f"topic name is {len(name)} characters; the limit is {TOPIC_NAME_BYTES_MAX}")
    if not TOPIC_NAME_CHARS.match(name):
        raise InvalidTopicName(f"topic name {name!r} has characters outside [a-zA-Z0-9._-]")


@attrs.frozen(slots=True)
class Broker:
    node_id: int
    host: str
    port: int
    rack: str | None
    raft_address: str
    # listener name -> (host, port) as advertised; empty: one listener at host:port
    listeners: dict[str, tuple[str, int]] = attrs.field(factory=dict, hash=False)

    def endpoint(self, listener: str | None) -> tuple[str, int] | None:
        """Where a client that connected on `listener` reaches this broker (Kafka advertises
        the same listener name); None when this broker has no such listener."""
        if not self.listeners or listener is None:
            return self.host, self.port
        return self.listeners.get(listener)


@attrs.frozen(slots=True)
class ScramCredential:
    """A user's SCRAM credential for one mechanism (RFC 5802 section 3): never the password."""

    mechanism: str
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


@attrs.frozen(slots=True)
class Topic:
    name: str
    topic_id: uuid.UUID
    replicas: tuple[tuple[int, ...], ...]  # per partition; first is the preferred leader
    configs: dict[str, str] = attrs.field(hash=False)

    @property
    def partition_count(self) -> int:
        return len(self.replicas)

    def config(self, key: str) -> str:
        """The topic's own value, else Kafka's default (broker-level defaults are resolved by
        MetaState.topic_config)."""
        return self.configs.get(key, TOPIC_CONFIGS[key].default)


@attrs.frozen(slots=True)
class Applied:
    """What applying one command produced (for the proposer)."""

    ok: bool
    error: ClusterError | None = None
    producer_id_start: int = -1
    producer_epoch: int = -1


def _error_from_code(code: int, message: str) -> ClusterError:
    for cls in ClusterError.__subclasses__():
        if cls.error_code == code:
            return cls(message)
    return ClusterError(message, ErrorCode(code))


@attrs.frozen(slots=True)
class Reassignment:
    """A partition moving from `original` to `target` replicas (AlterPartitionReassignments).
    Meanwhile the topic's replicas are target + the others still hosting it."""

    target: tuple[int, ...]
    original: tuple[int, ...]
    # __meta's version when the move began (kept when the target is replaced or cancelled):
    # the conf changes of this move carry it, so a replica created for it knows which
    # ADD of itself in the partition's log is this move's and not an earlier one's.
    generation: int = 0

    @property
    def adding(self) -> tuple[int, ...]:
        return tuple(r for r in self.target if r not in self.original)

    @property
    def removing(self) -> tuple[int, ...]:
        return tuple(r for r in self.original if r not in self.target)


@attrs.frozen(slots=True)
class PartitionLeader:
    leader: int
    epoch: int
    isr: tuple[int, ...] = ()  # empty: not reported yet (all replicas)
    isr_version: int = 0


class MetaState:
    """The replicated cluster metadata. Mutated only by apply() and restore()."""

    def __init__(self) -> None:
        self.brokers: dict[int, Broker] = {}
        self.topics: dict[str, Topic] = {}
        self.topics_by_id: dict[uuid.UUID, Topic] = {}
        self.leaders: dict[tuple[uuid.UUID, int], PartitionLeader] = {}
        self.next_producer_id = 0
        # transactional id -> (producer id, epoch, last InitProducerId's timestamp)
        self.transactional_ids: dict[str, tuple[int, int, int]] = {}
        # Dynamic broker configs: node id as a string, or "" (cluster default) -> overrides.
        self.broker_configs: dict[str, dict[str, str]] = {}
        # Group configs (GROUP resource): group id -> overrides.
        self.group_configs: dict[str, dict[str, str]] = {}
        self.cluster_id = ""
        # user -> mechanism -> credential (SCRAM; PLAIN is checked against these too)
        self.scram_credentials: dict[str, dict[str, ScramCredential]] = {}
        self.acls: dict[Acl, None] = {}  # insertion-ordered set of ACLs (cluster/acls.py)
        # Membership (node/membership.py): nodes asked to join, not yet registered as brokers
        # (node id -> Raft HOST:PORT); nodes removed (their registration is refused); nodes
        # whose disk reports degraded (given no partition leadership).
        self.joining: dict[int, str] = {}
        self.removed_nodes: set[int] = set()
        self.disk_degraded: set[int] = set()
        self.reassignments: dict[tuple[uuid.UUID, int], Reassignment] = {}
        # The voters a partition's Raft group was bootstrapped with, for every partition ever
        # reassigned (for the others they are its replicas): a node opening a new replica of
        # it bootstraps with them and learns every later config from the log or a snapshot.
        self.bootstrap_voters: dict[tuple[uuid.UUID, int], tuple[int, ...]] = {}
        self.version = 0  # bumps on every change; readers cache derived answers by it
        # Bumps on every applied LAYOUT_COMMANDS command and every restore: a reader that
        # derives something from the topics, their replicas or configs redoes it only when
        # this moved. Local to this state's life (not in snapshots), kept across restore().
        self.layout_version = 0
        self._recent: collections.OrderedDict[bytes, Applied] = collections.OrderedDict()

    def apply(self, command: meta_pb2.MetaCommand) -> Applied:
        """Apply one committed command; a request id seen before returns its first result."""
        request_id = command.request_id
        if request_id and request_id in self._recent:
            return self._recent[request_id]
        kind = command.WhichOneof("command")
        handler = _APPLY.get(kind)
        assert handler is not None, f"unknown meta command {kind!r}"
        result = handler(self, getattr(command, kind))
        if result.ok:
            self.version += 1
            if kind in LAYOUT_COMMANDS:
                self.layout_version += 1
        if request_id:
            self._recent[request_id] = result
            while len(self._recent) > RECENT_REQUESTS_MAX:
                self._recent.popitem(last=False)
        return result

    def _cluster_id_proposed(self, cmd: meta_pb2.ClusterIdProposed) -> Applied:
        if not self.cluster_id:
            self.cluster_id = cmd.cluster_id
        return Applied(True)

    def _preferred_leader_requested(self, cmd: meta_pb2.PreferredLeaderRequested) -> Applied:
        topic = self.topics_by_id.get(uuid.UUID(bytes=cmd.topic_id))
        if topic is None or not 0 <= cmd.partition < topic.partition_count:
            return Applied(False, UnknownTopic(f"no partition {cmd.partition} of that topic"))
        return Applied(True)  # a request to the partition's leader; no state changes

    def leader_of(self, topic: Topic, partition: int) -> PartitionLeader | None:
        return self.leaders.get((topic.topic_id, partition))

    def _partition_leader_changed(self, cmd: meta_pb2.PartitionLeaderChanged) -> Applied:
        topic_id = uuid.UUID(bytes=cmd.topic_id)
        topic = self.topics_by_id.get(topic_id)
        if topic is None or not 0 <= cmd.partition < topic.partition_count:
            return Applied(False, UnknownTopic(f"no partition {cmd.partition} of topic id {topic_id}"))
        known = self.leaders.get((topic_id, cmd.partition))
        report = (cmd.leader_epoch, cmd.leader, cmd.isr_version)
        if known is not None and (known.epoch, known.leader, known.isr_version) >= report:
            return Applied(True)  # stale or repeated report: nothing changes
        self.leaders[(topic_id, cmd.partition)] = PartitionLeader(
            cmd.leader, cmd.leader_epoch, tuple(cmd.isr), cmd.isr_version)
        return Applied(True)

    def _partition_leaders_changed(self, cmd: meta_pb2.PartitionLeadersChanged) -> Applied:
        """Each report as its own PartitionLeaderChanged; one of a partition no longer there
        (its topic deleted while the report was on its way) is skipped, not an error."""
        for report in cmd.reports:
            self._partition_leader_changed(report)
        return Applied(True)

    # --- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        snap = meta_pb2.MetaSnapshot(next_producer_id=self.next_producer_id, version=self.version,
                                     cluster_id=self.cluster_id)
        for b in self.brokers.values():
            snap.brokers.add(node_id=b.node_id, host=b.host, port=b.port, rack=b.rack or "",
                             raft_address=b.raft_address,
                             listeners=[meta_pb2.ListenerEndpoint(name=n, host=h, port=p)
                                        for n, (h, p) in b.listeners.items()])
        for t in self.topics.values():
            snap.topics.add(name=t.name, topic_id=t.topic_id.bytes, configs=t.configs,
                            partitions=[meta_pb2.PartitionAssignment(replicas=r) for r in t.replicas])
        for (topic_id, partition), pl in self.leaders.items():
            snap.leaders.add(topic_id=topic_id.bytes, partition=partition, leader=pl.leader,
                             leader_epoch=pl.epoch, isr=pl.isr, isr_version=pl.isr_version)
        for request_id, a in self._recent.items():
            snap.recent.add(request_id=request_id, ok=a.ok, producer_id_start=a.producer_id_start,
                            producer_epoch=a.producer_epoch,
                            error_code=int(a.error.error_code) if a.error else 0,
                            error_message=str(a.error) if a.error else "")
        for tid, (pid, epoch, ts) in self.transactional_ids.items():
            snap.transactional_ids.add(transactional_id=tid, producer_id=pid, epoch=epoch, timestamp_ms=ts)
        for broker, configs in sorted(self.broker_configs.items()):
            snap.broker_configs.add(broker=broker, set=configs)
        for group, configs in sorted(self.group_configs.items()):
            snap.group_configs.add(group=group, set=configs)
        for user, by_mechanism in self.scram_credentials.items():
            for c in by_mechanism.values():
                snap.scram_credentials.add(user=user, mechanism=c.mechanism, iterations=c.iterations,
                                           salt=c.salt, stored_key=c.stored_key, server_key=c.server_key)
        snap.acls.extend(acl_binding(a) for a in self.acls)
        snap.joining.extend(meta_pb2.JoiningNode(node_id=n, raft_address=a) for n, a in sorted(self.joining.items()))
        snap.removed_nodes.extend(sorted(self.removed_nodes))
        snap.disk_degraded.extend(sorted(self.disk_degraded))
        for (topic_id, partition), r in self.reassignments.items():
            snap.reassignments.add(topic_id=topic_id.bytes, partition=partition, target=r.target,
                                   original=r.original, generation=r.generation)
        for (topic_id, partition), voters in self.bootstrap_voters.items():
            snap.bootstrap_voters.add(topic_id=topic_id.bytes, partition=partition, target=voters)
        return snap.SerializeToString()

    def restore(self, data: bytes) -> None:
        snap = meta_pb2.MetaSnapshot.FromString(data)
        layout_version = self.layout_version
        self.__init__()
        self.layout_version = layout_version + 1
        for b in snap.brokers:
            self._broker_registered(b)
        for t in snap.topics:
            self._topic_created(t)
        for pl in snap.leaders:
            self._partition_leader_changed(pl)
        for r in snap.recent:
            error = _error_from_code(r.error_code, r.error_message) if r.error_code else None
            self._recent[r.request_id] = Applied(r.ok, error, r.producer_id_start, r.producer_epoch)
        self.transactional_ids = {t.transactional_id: (t.producer_id, t.epoch, t.timestamp_ms)
                                  for t in snap.transactional_ids}
        for b in snap.broker_configs:
            self._broker_configs_altered(b)
        for g in snap.group_configs:
            self._group_configs_altered(g)
        self.next_producer_id, self.version = snap.next_producer_id, snap.version
        self.cluster_id = snap.cluster_id
        for c in snap.scram_credentials:
            self._scram_credential_upserted(c)
        self.acls = {acl_of(b): None for b in snap.acls}
        self.joining = {j.node_id: j.raft_address for j in snap.joining}
        self.removed_nodes = set(snap.removed_nodes)
        self.disk_degraded = set(snap.disk_degraded)
        self.reassignments = {(uuid.UUID(bytes=r.topic_id), r.partition): Reassignment(
            tuple(r.target), tuple(r.original), r.generation) for r in snap.reassignments}
        self.bootstrap_voters = {(uuid.UUID(bytes=r.topic_id), r.partition): tuple(r.target)
                                 for r in snap.bootstrap_voters}

    def _broker_registered(self, cmd: meta_pb2.BrokerRegistered) -> Applied:
        if cmd.node_id in self.removed_nodes:
            return Applied(False, ClusterError(f"node {cmd.node_id} was removed from the cluster; add it "
                                               f"again with --join on an empty data dir",
                                               ErrorCode.broker_id_not_registered))
        self.joining.pop(cmd.node_id, None)
        self.brokers[cmd.node_id] = Broker(cmd.node_id, cmd.host, cmd.port, cmd.rack or None,
                                           cmd.raft_address, {e.name: (e.host, e.port) for e in cmd.listeners})
        return Applied(True)

    def replicas_on(self, node_id: int) -> list[str]:
        """The partitions (as "topic-partition") with a replica on node_id."""
        return [f"{t.name}-{p}" for t in self.topics.values()
                for p, replicas in enumerate(t.replicas) if node_id in replicas]

    def _node_join_requested(self, cmd: meta_pb2.NodeJoinRequested) -> Applied:
        broker = self.brokers.get(cmd.node_id)
        if broker is not None:
            return Applied(False, ClusterError(
                f"node id {cmd.node_id} is in use: a registered broker at {broker.host}:{broker.port} "
                f"(raft {broker.raft_address or '-'}); remove it first or pick another id",
                ErrorCode.duplicate_voter))
        if cmd.node_id < 1 or not cmd.raft_address:
            return Applied(False, ClusterError(f"a joining node needs an id >= 1 and a Raft address, "
                                               f"got {cmd.node_id} at {cmd.raft_address!r}",
                                               ErrorCode.invalid_request))
        self.joining[cmd.node_id] = cmd.raft_address
        self.removed_nodes.discard(cmd.node_id)
        return Applied(True)

    def _node_removed(self, cmd: meta_pb2.NodeRemoved) -> Applied:
        hosted = self.replicas_on(cmd.node_id)
        if hosted and not cmd.force:
            shown = ", ".join(hosted[:10]) + (f" and {len(hosted) - 10} more" if len(hosted) > 10 else "")
            return Applied(False, ClusterError(
                f"node {cmd.node_id} still hosts replicas of {len(hosted)} partition(s): {shown}; move them "
                f"first (decommission), or force the removal of a dead node", ErrorCode.invalid_request))
        self.brokers.pop(cmd.node_id, None)
        self.joining.pop(cmd.node_id, None)
        self.disk_degraded.discard(cmd.node_id)
        self.removed_nodes.add(cmd.node_id)
        return Applied(True)

    def _node_health_reported(self, cmd: meta_pb2.NodeHealthReported) -> Applied:
        if cmd.disk_degraded:
            self.disk_degraded.add(cmd.node_id)
        else:
            self.disk_degraded.discard(cmd.node_id)
        return Applied(True)

    def _scram_credential_upserted(self, cmd: meta_pb2.ScramCredentialUpserted) -> Applied:
        if not cmd.user:
            return Applied(False, ClusterError("empty user name", ErrorCode.unacceptable_credential))
        self.scram_credentials.setdefault(cmd.user, {})[cmd.mechanism] = ScramCredential(
            cmd.mechanism, cmd.iterations, cmd.salt, cmd.stored_key, cmd.server_key)
        return Applied(True)

    def _acls_created(self, cmd: meta_pb2.AclsCreated) -> Applied:
        for binding in cmd.acls:
            self.acls[acl_of(binding)] = None
        return Applied(True)

    def _acls_deleted(self, cmd: meta_pb2.AclsDeleted) -> Applied:
        for binding in cmd.acls:
            self.acls.pop(acl_of(binding), None)
        return Applied(True)

    def _scram_credential_deleted(self, cmd: meta_pb2.ScramCredentialDeleted) -> Applied:
        by_mechanism = self.scram_credentials.get(cmd.user, {})
        if by_mechanism.pop(cmd.mechanism, None) is None:
            return Applied(False, ClusterError(f"user {cmd.user!r} has no {cmd.mechanism} credential",
                                               ErrorCode.resource_not_found))
        if not by_mechanism:
            del self.scram_credentials[cmd.user]
        return Applied(True)

    def _topic_created(self, cmd: meta_pb2.TopicCreated) -> Applied:
        if cmd.name in self.topics:
            return Applied(False, TopicAlreadyExists(f"topic {cmd.name!r} already exists"))
        topic = Topic(cmd.name, uuid.UUID(bytes=cmd.topic_id),
                      tuple(tuple(p.replicas) for p in cmd.partitions), dict(cmd.configs))
        self.topics[topic.name] = topic
        self.topics_by_id[topic.topic_id] = topic
        return Applied(True)

    def _topic_deleted(self, cmd: meta_pb2.TopicDeleted) -> Applied:
        topic = self.topics.get(cmd.name)
        if topic is None or topic.topic_id.bytes != cmd.topic_id:
            return Applied(False, UnknownTopic(f"topic {cmd.name!r} does not exist"))
        del self.topics[topic.name]
        del self.topics_by_id[topic.topic_id]
        for partition in range(topic.partition_count):
            self.leaders.pop((topic.topic_id, partition), None)
            self.reassignments.pop((topic.topic_id, partition), None)
            self.bootstrap_voters.pop((topic.topic_id, partition), None)
        return Applied(True)

    def _partitions_added(self, cmd: meta_pb2.PartitionsAdded) -> Applied:
        topic = self.topics.get(cmd.name)
        if topic is None or topic.topic_id.bytes != cmd.topic_id:
            return Applied(False, UnknownTopic(f"topic {cmd.name!r} does not exist"))
        grown = attrs.evolve(topic, replicas=topic.replicas + tuple(tuple(p.replicas) for p in cmd.partitions))
        self.topics[topic.name] = grown
        self.topics_by_id[topic.topic_id] = grown
        return Applied(True)

    # --- partition reassignment ----------------------------------------------------------------

    def partition_bootstrap_voters(self, topic: Topic, partition: int) -> tuple[int, ...]:
        """The voters a new replica of this partition bootstraps its Raft group with."""
        return self.bootstrap_voters.get((topic.topic_id, partition), topic.replicas[partition])

    def _set_replicas(self, topic: Topic, partition: int, replicas: tuple[int, ...]) -> None:
        changed = attrs.evolve(topic, replicas=topic.replicas[:partition] + (replicas,)
                               + topic.replicas[partition + 1:])
        self.topics[topic.name] = changed
        self.topics_by_id[topic.topic_id] = changed

    def _partition_reassignment_requested(self, cmd: meta_pb2.PartitionReassignmentRequested) -> Applied:
        topic = self.topics_by_id.get(uuid.UUID(bytes=cmd.topic_id))
        if topic is None or not 0 <= cmd.partition < topic.partition_count:
            return Applied(False, UnknownTopic(f"no partition {cmd.partition} of that topic"))
        key = (topic.topic_id, cmd.partition)
        current, known = topic.replicas[cmd.partition], self.reassignments.get(key)
        if cmd.cancel:
            if known is None:
                return Applied(False, NoReassignmentInProgress(
                    f"{topic.name}-{cmd.partition} has no reassignment in progress"))
            target = known.original
        else:
            target = tuple(cmd.target)
            try:
                validate_replica_assignment(target, self.brokers)
            except ClusterError as exc:
                return Applied(False, exc)
            if known is None and target == current:
                return Applied(True)  # already there: nothing to move
        self.bootstrap_voters.setdefault(key, current if known is None else known.original)
        self.reassignments[key] = Reassignment(target, known.original if known else current,
                                               known.generation if known else self.version)
        self._set_replicas(topic, cmd.partition, target + tuple(r for r in current if r not in target))
        return Applied(True)

    def _partition_reassignment_completed(self, cmd: meta_pb2.PartitionReassignmentCompleted) -> Applied:
        topic = self.topics_by_id.get(uuid.UUID(bytes=cmd.topic_id))
        if topic is None or not 0 <= cmd.partition < topic.partition_count:
            return Applied(False, UnknownTopic(f"no partition {cmd.partition} of that topic"))
        key = (topic.topic_id, cmd.partition)
        known = self.reassignments.get(key)
        if known is None or known.target != tuple(cmd.replicas):
            return Applied(False, NoReassignmentInProgress(
                f"{topic.name}-{cmd.partition} is not being reassigned to {list(cmd.replicas)}"))
        del self.reassignments[key]
        self._set_replicas(topic, cmd.partition, known.target)
        return Applied(True)

    def _producer_ids_allocated(self, cmd: meta_pb2.ProducerIdsAllocated) -> Applied:
        start = self.next_producer_id
        self.next_producer_id += cmd.count
        return Applied(True, producer_id_start=start)

    def _transactional_id_initialized(self, cmd: meta_pb2.TransactionalIdInitialized) -> Applied:
        horizon = cmd.timestamp_ms - cmd.expiration_ms
        for tid in [t for t, (_, _, ts) in self.transactional_ids.items() if ts < horizon]:
            del self.transactional_ids[tid]
        known = self.transactional_ids.get(cmd.transactional_id)
        expected = (cmd.expected_producer_id, cmd.expected_epoch)
        if known is not None and cmd.expected_producer_id >= 0 and expected == (known[0], known[1] - 1):
            # A retry of the bump this producer already got (its answer was lost): the same answer.
            return Applied(True, producer_id_start=known[0], producer_epoch=known[1])
        if known is not None and cmd.expected_producer_id >= 0 and expected != known[:2]:
            return Applied(False, ProducerFenced(
                f"transactional id {cmd.transactional_id!r} is at producer id {known[0]} epoch {known[1]}, "
                f"not {cmd.expected_producer_id} epoch {cmd.expected_epoch}"))
        if known is None or known[1] + 1 > PRODUCER_EPOCH_MAX:
            pid, epoch = self.next_producer_id, 0
            self.next_producer_id += 1
        else:
            pid, epoch = known[0], known[1] + 1
        self.transactional_ids[cmd.transactional_id] = (pid, epoch, cmd.timestamp_ms)
        return Applied(True, producer_id_start=pid, producer_epoch=epoch)

    def _topic_configs_altered(self, cmd: meta_pb2.TopicConfigsAltered) -> Applied:
        topic = self.topics.get(cmd.name)
        if topic is None:
            return Applied(False, UnknownTopic(f"topic {cmd.name!r} does not exist"))
        configs = {k: v for k, v in topic.configs.items() if k not in cmd.removed}
        configs.update(cmd.set)
        changed = attrs.evolve(topic, configs=configs)
        self.topics[topic.name] = changed
        self.topics_by_id[topic.topic_id] = changed
        return Applied(True)

    def _broker_configs_altered(self, cmd: meta_pb2.BrokerConfigsAltered) -> Applied:
        _alter_overrides(self.broker_configs, cmd.broker, cmd.set, cmd.removed)
        return Applied(True)

    def _group_configs_altered(self, cmd: meta_pb2.GroupConfigsAltered) -> Applied:
        _alter_overrides(self.group_configs, cmd.group, cmd.set, cmd.removed)
        return Applied(True)


def _alter_overrides(by_resource: dict[str, dict[str, str]], resource: str, set_, removed) -> None:
    """One resource's stored config overrides after a change (an empty set is dropped)."""
    configs = {k: v for k, v in by_resource.get(resource, {}).items() if k not in removed}
    configs.update(set_)
    if configs:
        by_resource[resource] = configs
    else:
        by_resource.pop(resource, None)


_APPLY = {
    "broker_registered": MetaState._broker_registered,
    "topic_created": MetaState._topic_created,
    "topic_deleted": MetaState._topic_deleted,
    "partitions_added": MetaState._partitions_added,
    "producer_ids_allocated": MetaState._producer_ids_allocated,
    "topic_configs_altered": MetaState._topic_configs_altered,
    "partition_leader_changed": MetaState._partition_leader_changed,
    "partition_leaders_changed": MetaState._partition_leaders_changed,
    "cluster_id_proposed": MetaState._cluster_id_proposed,
    "preferred_leader_requested": MetaState._preferred_leader_requested,
    "transactional_id_initialized": MetaState._transactional_id_initialized,
    "broker_configs_altered": MetaState._broker_configs_altered,
    "scram_credential_upserted": MetaState._scram_credential_upserted,
    "scram_credential_deleted": MetaState._scram_credential_deleted,
    "acls_created": MetaState._acls_created,
    "acls_deleted": MetaState._acls_deleted,
    "node_join_requested": MetaState._node_join_requested,
    "node_removed": MetaState._node_removed,
    "node_health_reported": MetaState._node_health_reported,
    "partition_reassignment_requested": MetaState._partition_reassignment_requested,
    "partition_reassignment_completed": MetaState._partition_reassignment_completed,
    "group_configs_altered": MetaState._group_configs_altered,
}


def acl_of(binding: meta_pb2.AclBinding) -> Acl:
    return Acl(ResourceType(binding.resource_type), binding.resource_name, PatternType(binding.pattern_type),
               binding.principal, binding.host, Operation(binding.operation), Permission(binding.permission))


def acl_binding(acl: Acl) -> meta_pb2.AclBinding:
    return meta_pb2.AclBinding(resource_type=acl.resource_type, resource_name=acl.resource_name,
                               pattern_type=acl.pattern_type, principal=acl.principal, host=acl.host,
                               operation=acl.operation, permission=acl.permission)
