"""The node: one process, one top-level nursery; every partition and __meta a Raft group.

Under the nursery: the Raft runtime (ticks, Ready passes with group commit), the HTTP/2
Raft transport when the node has peers, the partition reconciler (opens and closes
partition groups as __meta assigns them), the leader reporter, the retention loop, and the
Kafka listener with one task per connection. A node without peers is a one-voter cluster:
the same code, with nobody to send to. The node takes its listeners and Disk from the
caller, so the same code can later run under a simulated network and disk.

Shutdown (request_shutdown(), e.g. on SIGTERM): stop accepting, give in-flight requests up
to SHUTDOWN_GRACE_S to be answered, close the remaining connections (their requests fail),
stop the runtime, sync every group with its commit index, close the files.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import pathlib
import random
import shutil
import time
import uuid
import zlib

import google.protobuf.message
import trio

from chronik_trio.cluster.meta import (PARTITIONS_PER_TOPIC_MAX, Topic, TopicAlreadyExists, UnknownTopic,
                                       validate_topic_name)
from chronik_trio.partition.producers import ProducerStateTable
from chronik_trio.pb import meta_pb2, raft_pb2
from chronik_trio.raft.config import Config as RaftConfig
from chronik_trio.raft.convert import message_to_pb, peer_message_from_pb
from chronik_trio.raft.rawnode import RawNode
from chronik_trio.raft.types import MessageType
from chronik_trio.storage import Disk
from chronik_trio.storage.raft_storage import DurableRaftStorage

from .config import ConfigError, NodeConfig
from .group_coordinator import GroupCoordinator
from .kafka_server import RequestErrors, serve_connection
from .meta_group import META_GROUP_ID, MetaMachine, MetaService, MetaUnavailable
from .partition_group import PartitionMachine, PartitionReplica
from .raft_group import RaftGroup
from .raft_runtime import RaftRuntime

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 3.0  # in-flight produces commit within milliseconds; long polls do not
PRODUCER_ID_BLOCK = 1000  # ids reserved per __meta command; a restart skips the unused rest
ELECTION_TICK = 10  # x 50 ms ticks: a follower campaigns after 0.5-1 s without a leader
HEARTBEAT_TICK = 2
TOPIC_ID_FILE = "topic_id"
DELETED_SUFFIX = ".deleted"
LIVENESS_GROUP = ""  # transport messages of this group only say "I am alive"
LEADER_REPORTS_INFLIGHT_MAX = 64  # concurrent __meta proposals reporting partition leaders
DEFAULT_REPLICATION_FACTOR_MAX = 3
CREATE_TOPIC_TIMEOUT_S = 30.0
REPLAY_WARN_S = 30.0
META_SNAPSHOT_CHECK_S = 1.0
META_CATCH_UP_S = 10.0
FIRST_CAMPAIGN_RETRIES = 5
FIRST_CAMPAIGN_RETRY_S = 0.1
PREFERRED_SETTLE_S = 3.0  # CreateTopics answers after this even if leadership did not move
ISR_CHECK_S = 1.0  # how often leaders recompute their ISR (Kafka checks every lag/2)  # log which groups are slow to replay after this, then keep waiting



def _forwardable(gm) -> bool:
    """Whether a proposal from a peer is one a follower forwards: only __meta's followers do
    (MetaService.propose_anywhere), with normal entries that are MetaCommands. A committed
    entry __meta cannot decode would stop every replica on every replay."""
    if gm.group != META_GROUP_ID:
        return False
    try:
        for entry in gm.message.entries:
            if entry.type != raft_pb2.ENTRY_NORMAL:
                return False
            meta_pb2.MetaCommand.FromString(entry.data)
    except google.protobuf.message.DecodeError:
        return False
    return True

class Node:
    def __init__(self, config: NodeConfig, *, disk: Disk | None = None,
                 wall_clock_ms=lambda: int(time.time() * 1000)) -> None:
        self.config = config
        self.node_id = config.node_id
        self.disk = disk or Disk()
        self.wall_clock_ms = wall_clock_ms
        self.data_dir = pathlib.Path(config.data_dir)
        self.runtime = RaftRuntime(self.node_id, self._send, heartbeat=self._heartbeat)
        self.meta_machine = MetaMachine()
        self.meta_machine.listeners.append(self._meta_changed)
        self.meta_machine.command_listeners.append(self._meta_command)
        self.meta_service: MetaService | None = None
        self.replicas: dict[tuple[str, int], PartitionReplica] = {}
        self.transport = None
        self._liveness: dict[int, bytes] = {}
        # Tells this process from an earlier one of the same node in its liveness messages.
        self._incarnation = random.getrandbits(62) + 1
        self._isr_alive: frozenset[int] = frozenset()  # nodes alive at the last ISR check
        self._isr_quiet: dict = {}  # (topic id, partition) -> (term, ISR, last index) checked idle
        self._nursery: trio.Nursery | None = None
        self._serving = False
        self.requests_inflight = 0
        self.request_errors = RequestErrors()  # contained handler failures, in /metrics
        self._shutdown = trio.Event()
        self._reconcile_wanted = trio.Event()
        self._reconcile_lock = trio.Lock()
        # (topic id, partition) -> (term, isr) to report to __meta
        self._leader_reports: dict[tuple[uuid.UUID, int], tuple[int, tuple[int, ...]]] = {}
        self._isr_version = 0  # orders this node's reports (with the epoch)
        self._leader_report_wanted = trio.Event()
        self._producer_ids = (0, 0)  # [next, end) of this node's reserved block
        self._producer_id_lock = trio.Lock()
        self.groups = GroupCoordinator(self)  # consumer groups (on __consumer_offsets leaders)

    # --- what handlers use (kafka/handlers/context.py) ---------------------------------------

    @property
    def meta(self):
        return self.meta_machine.state

    @property
    def cluster_id(self) -> str:
        return self.meta.cluster_id

    def broker_alive(self, node_id: int) -> bool:
        """Whether this node hears from that broker (itself: always), and its connection to
        it has not broken since (a killed process shows as down at once)."""
        if self.config.peers is None:
            return node_id == self.node_id
        if not self.runtime.is_reachable(node_id, trio.current_time()):
            return False
        if node_id != self.node_id and self.transport is not None and self.transport.peer_closed(node_id):
            # Its process died a moment ago and our read loop has not run yet: act on it now
            # (the groups it led start their election too), as the transport will shortly.
            self.runtime.peer_down(node_id)
            return False
        return True

    async def meta_changed(self) -> None:
        await self.meta_machine.changed.wait()

    def meta_leader_id(self) -> int:
        return self.meta_machine.leader_id or -1

    def replica(self, topic: str, partition: int) -> PartitionReplica | None:
        return self.replicas.get((topic, partition))

    def partition_leader(self, topic: Topic, partition: int):
        return self.meta.leader_of(topic, partition)

    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           validate_only: bool = False, replication_factor: int = -1,
                           assignment: list[list[int]] | None = None,
                           timeout_s: float = CREATE_TOPIC_TIMEOUT_S) -> Topic:
        """Assign replicas across the registered brokers, commit the topic through __meta,
        and return once every partition has a leader in this node's metadata (so the first
        produce after creation succeeds), or raise TimeoutError."""
        validate_topic_name(name)
        if name in self.meta.topics:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        if assignment is None:
            assignment = self._assign(name, partitions, replication_factor)
        configs = dict(configs)
        if len(assignment[0]) >= 3:
            configs.setdefault("min.insync.replicas", "2")
        command = meta_pb2.MetaCommand(topic_created=meta_pb2.TopicCreated(
            name=name, topic_id=uuid.uuid4().bytes, configs=configs,
            partitions=[meta_pb2.PartitionAssignment(replicas=r) for r in assignment]))
        if validate_only:
            return Topic(name, uuid.UUID(bytes=command.topic_created.topic_id),
                         tuple(tuple(r) for r in assignment), configs)
        applied = await self.meta_service.propose(command)
        if not applied.ok:
            raise applied.error
        topic = self._still_there(name)
        await self._wait_for_leaders(topic, timeout_s)
        await self._settle_preferred_leaders(topic)
        log.info("created topic %s: %d partition(s), replicas %s", name, partitions, assignment)
        return topic

    async def _settle_preferred_leaders(self, topic: Topic) -> None:
        """Before answering CreateTopics: if a partition's first leader is not its preferred
        replica, have leadership moved now (bounded), so no hand-over follows the answer
        while the client's first produce is on its way."""
        with trio.move_on_after(PREFERRED_SETTLE_S):
            async with trio.open_nursery() as nursery:
                for p in range(topic.partition_count):
                    if self.meta.leader_of(topic, p).leader != topic.replicas[p][0]:
                        nursery.start_soon(self.elect_preferred_leader, topic, p, PREFERRED_SETTLE_S)

    def _assign(self, name: str, partitions: int, replication_factor: int) -> list[list[int]]:
        from chronik_trio.cluster.meta import InvalidPartitionCount, ClusterError
        from kio.schema.errors import ErrorCode

        brokers = sorted(self.meta.brokers)
        rf = min(DEFAULT_REPLICATION_FACTOR_MAX, len(brokers)) if replication_factor == -1 else replication_factor
        if rf < 1 or rf > len(brokers):
            error = ClusterError(f"replication factor {rf} is not between 1 and the cluster's "
                                 f"{len(brokers)} broker(s)")
            error.error_code = ErrorCode.invalid_replication_factor
            raise error
        if partitions < 1:
            raise InvalidPartitionCount(f"number of partitions must be positive, got {partitions}")
        if partitions > PARTITIONS_PER_TOPIC_MAX:
            raise InvalidPartitionCount(f"{partitions} partitions; a topic has at most {PARTITIONS_PER_TOPIC_MAX}")
        # Spread preferred leaders (the first replica) round-robin from a per-topic start.
        start = zlib.crc32(name.encode()) % len(brokers)
        return [[brokers[(start + p + i) % len(brokers)] for i in range(rf)] for p in range(partitions)]

    async def add_partitions(self, name: str, count: int, *, assignment: list[list[int]] | None = None,
                             validate_only: bool = False, timeout_s: float = CREATE_TOPIC_TIMEOUT_S) -> Topic:
        """Grow a topic to `count` partitions (CreatePartitions); returns once the new
        partitions have leaders here."""
        from chronik_trio.cluster.meta import InvalidPartitionCount

        topic = self.meta.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        if count <= topic.partition_count:
            raise InvalidPartitionCount(
                f"topic {name!r} has {topic.partition_count} partitions; {count} would not add any")
        rf = len(topic.replicas[0])
        new = assignment or self._assign(name, count, rf)[topic.partition_count:]
        if validate_only:
            return topic
        applied = await self.meta_service.propose(meta_pb2.MetaCommand(partitions_added=meta_pb2.PartitionsAdded(
            name=name, topic_id=topic.topic_id.bytes,
            partitions=[meta_pb2.PartitionAssignment(replicas=r) for r in new])))
        if not applied.ok:
            raise applied.error
        topic = self._still_there(name)
        await self._wait_for_leaders(topic, timeout_s)
        return topic

    def _still_there(self, name: str) -> Topic:
        """The topic just changed through __meta, unless a DeleteTopics applied in the same
        pass took it away before this task resumed."""
        topic = self.meta.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} was deleted meanwhile")
        return topic

    async def _balance_loop(self) -> None:
        """Preferred leaders: hand leadership back to a partition's first replica once it is
        in sync again (after a restart), so leaders stay spread across brokers."""
        interval_s = self.config.leader_balance_interval_ms / 1000
        while True:
            await trio.sleep(interval_s)
            for (name, partition), replica in list(self.replicas.items()):
                topic = self.meta.topics.get(name)
                if topic is None or replica.closed or not replica.is_leader:
                    continue
                preferred = topic.replicas[partition][0]
                if preferred != self.node_id and preferred in replica.isr and \
                        not replica.group.transfer_pending():
                    log.info("handing %s-%d back to its preferred leader, node %d", name, partition, preferred)
                    replica.group.transfer_leader(preferred)

    async def _wait_for_leaders(self, topic: Topic, timeout_s: float) -> None:
        with trio.fail_after(timeout_s):
            while not all(self.meta.leader_of(topic, p) for p in range(topic.partition_count)):
                await self.meta_machine.changed.wait()
                if topic.name not in self.meta.topics:  # a DeleteTopics applied meanwhile
                    raise UnknownTopic(f"topic {topic.name!r} was deleted meanwhile")

    async def auto_create(self, name: str) -> Topic:
        try:
            return await self.create_topic(name, self.config.default_partitions, {})
        except TopicAlreadyExists:
            topic = self.meta.topics[name]  # another request created it meanwhile
            await self._wait_for_leaders(topic, CREATE_TOPIC_TIMEOUT_S)
            return topic

    async def delete_topic(self, name: str) -> Topic:
        topic = self.meta.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        applied = await self.meta_service.propose(meta_pb2.MetaCommand(
            topic_deleted=meta_pb2.TopicDeleted(name=name, topic_id=topic.topic_id.bytes)))
        if not applied.ok:
            raise applied.error
        await self._reconcile()
        log.info("deleted topic %s", name)
        return topic

    async def allocate_producer_id(self) -> int:
        async with self._producer_id_lock:
            next_id, end = self._producer_ids
            if next_id >= end:
                applied = await self.meta_service.propose(meta_pb2.MetaCommand(
                    producer_ids_allocated=meta_pb2.ProducerIdsAllocated(
                        node_id=self.node_id, count=PRODUCER_ID_BLOCK)))
                next_id, end = applied.producer_id_start, applied.producer_id_start + PRODUCER_ID_BLOCK
            self._producer_ids = (next_id + 1, end)
            return next_id

    # --- Raft groups -------------------------------------------------------------------------

    def _raft_config(self, group_id: str) -> RaftConfig:
        seed = zlib.crc32(group_id.encode()) ^ (self.node_id << 20) ^ int.from_bytes(os.urandom(4), "big")
        return RaftConfig(id=self.node_id, election_tick=ELECTION_TICK, heartbeat_tick=HEARTBEAT_TICK,
                          rng=random.Random(seed))

    def _start_group(self, group_id: str, storage: DurableRaftStorage, machine, *,
                     campaign_now: bool = False) -> RaftGroup:
        snapshot = storage.snapshot(0) if storage.first_index() > 1 else None
        if snapshot is not None:
            machine.restore(snapshot)
        node = RawNode(self._raft_config(group_id), storage)
        group = RaftGroup(group_id, node, storage, machine, self.runtime.wake)
        hard_state, conf_state = storage.initial_state()
        # Replayed once the group has applied what it knew was committed; a group whose
        # only voter is this node commits its whole log as soon as it leads again.
        group.replay_target = hard_state.commit
        if conf_state.voters == (self.node_id,):
            node.campaign()  # the only voter: lead at once instead of after a timeout
            group.replay_target = storage.last_index()
        elif campaign_now:
            node.campaign()
        self.runtime.add(group)
        return group

    async def _wait_replayed(self, groups: list[RaftGroup]) -> None:
        """Until every group has applied its replay target (no quorum needed for that
        except for groups this node alone votes in, which elect themselves)."""
        with trio.move_on_after(REPLAY_WARN_S) as scope:
            await self._until_replayed(groups)
        if scope.cancelled_caught:
            slow = [g.group_id for g in groups if g.node.raft.log.applied < g.replay_target]
            log.warning("still replaying %d group(s) after %.0f s: %s", len(slow), REPLAY_WARN_S, slow[:5])
            await self._until_replayed(groups)

    async def _wait_meta_caught_up(self) -> None:
        """With peers: before serving, hear from the __meta leader and apply up to the
        commit index it sent, so Metadata does not answer from a stale copy (bounded: a
        cluster without quorum still starts, and catches up later)."""
        group = self.meta_service.group
        with trio.move_on_after(META_CATCH_UP_S):
            while not (group.leader_id and group.node.raft.log.applied >= group.node.raft.log.committed):
                await trio.sleep(self.runtime.tick_interval_s / 5)

    async def _until_replayed(self, groups: list[RaftGroup]) -> None:
        while any(g.node.raft.log.applied < g.replay_target for g in groups):
            await trio.sleep(self.runtime.tick_interval_s / 5)

    def _open_meta(self) -> None:
        directory = self.data_dir / "meta"
        segment_bytes = self.config.meta_segment_bytes
        storage = DurableRaftStorage(self.disk, directory, kafka=False, segment_bytes=segment_bytes)
        if not storage.is_initialized:
            storage.close()
            if self.config.join:
                raise ConfigError(f"{directory} is empty and --join was given: adding a member to "
                                  f"a running cluster is not supported yet; start every member "
                                  f"with the same --peers instead")
            storage = DurableRaftStorage.bootstrap(self.disk, directory, voters=self.config.voters,
                                                   kafka=False, segment_bytes=segment_bytes)
            log.info("bootstrapped __meta with voters %s", self.config.voters)
        group = self._start_group(META_GROUP_ID, storage, self.meta_machine)
        self.meta_service = MetaService(self.node_id, group, self.meta_machine)

    def _partition_dir(self, topic: Topic, partition: int) -> pathlib.Path:
        return self.data_dir / "partitions" / f"{topic.name}-{partition}"

    def _open_partition_storage(self, topic: Topic, partition: int) -> DurableRaftStorage:
        """Blocking (runs in a worker thread): open, or create and bootstrap, the storage."""
        directory = self._partition_dir(topic, partition)
        id_file = directory / TOPIC_ID_FILE
        if directory.exists() and (not id_file.exists() or id_file.read_text() != topic.topic_id.hex):
            log.warning("removing %s: it belongs to an older topic of the same name", directory)
            _remove_dirs([_rename_deleted(directory)])
        segment_bytes = int(topic.configs.get("segment.bytes", self.config.segment_bytes))
        if directory.exists():
            return DurableRaftStorage(self.disk, directory, kafka=True, segment_bytes=segment_bytes)
        self.disk.mkdir(directory)
        self.disk.replace_file(id_file, topic.topic_id.hex.encode())
        return DurableRaftStorage.bootstrap(self.disk, directory, voters=topic.replicas[partition],
                                            kafka=True, segment_bytes=segment_bytes)

    def _start_partition(self, topic: Topic, partition: int, storage: DurableRaftStorage) -> None:
        machine = PartitionMachine(topic, partition, storage.log, self._became_leader,
                                   states=[ProducerStateTable(self.config.producer_id_expiration_ms),
                                           *self.groups.states_for(topic)])
        # A new partition's preferred replica campaigns at once, the others wait for an
        # election timeout: its first leader is the preferred one, with no hand-over after.
        new = storage.last_index() == 0 and storage.initial_state()[0].term == 0
        preferred = topic.replicas[partition][0] == self.node_id
        group = self._start_group(f"{topic.topic_id.hex}-{partition}", storage, machine,
                                  campaign_now=new and preferred)
        if new and preferred and self._nursery is not None:
            # The first campaign can reach peers before they created the group (dropped);
            # try again soon rather than leave the first election to a random replica.
            self._nursery.start_soon(self._campaign_again, group)
        self.replicas[(topic.name, partition)] = PartitionReplica(
            topic, partition, group, machine, lag_time_s=self.config.replica_lag_time_max_ms / 1000,
            alive=self.runtime.is_alive)
        self.groups.attach(self.replicas[(topic.name, partition)])

    def _meta_command(self, command: meta_pb2.MetaCommand) -> None:
        """A PreferredLeaderRequested was applied: if this node leads that partition, hand
        leadership to its preferred replica (called from the Ready pass: queue, not step)."""
        request = command.preferred_leader_requested
        topic = self.meta.topics_by_id.get(uuid.UUID(bytes=request.topic_id))
        replica = self.replicas.get((topic.name, request.partition)) if topic else None
        if replica is None or not replica.is_leader:
            return
        preferred = topic.replicas[request.partition][0]
        if preferred != self.node_id:
            log.info("handing %s-%d to its preferred leader, node %d, as requested",
                     topic.name, request.partition, preferred)
            replica.group.transfer_leader(preferred)

    async def elect_preferred_leader(self, topic: Topic, partition: int, timeout_s: float) -> bool:
        """ElectLeaders (preferred): False if the preferred replica already leads; True once
        it leads in this node's metadata. Raises TooSlowError on timeout."""
        preferred = topic.replicas[partition][0]
        known = self.meta.leader_of(topic, partition)
        if known is not None and known.leader == preferred:
            return False
        applied = await self.meta_service.propose(meta_pb2.MetaCommand(
            preferred_leader_requested=meta_pb2.PreferredLeaderRequested(
                topic_id=topic.topic_id.bytes, partition=partition)))
        if not applied.ok:
            raise applied.error
        with trio.fail_after(timeout_s):
            while (lead := self.meta.leader_of(topic, partition)) is None or lead.leader != preferred:
                await self.meta_machine.changed.wait()
        return True

    async def _campaign_again(self, group: RaftGroup) -> None:
        for _ in range(FIRST_CAMPAIGN_RETRIES):
            await trio.sleep(FIRST_CAMPAIGN_RETRY_S)
            if group.closed or group.leader_id:
                return
            async with group.lock:
                group.node.campaign()
            group.wake_runtime()

    def _meta_changed(self) -> None:
        self._reconcile_wanted.set()

    async def _reconcile(self) -> None:
        """Open the partition groups __meta assigns here; stop and delete the others."""
        async with self._reconcile_lock:  # one at a time: it awaits between steps
            await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        wanted = {(t.name, p): t for t in self.meta.topics.values()
                  for p, replicas in enumerate(t.replicas) if self.node_id in replicas}
        doomed = []
        for key, replica in list(self.replicas.items()):
            topic = wanted.get(key)
            if topic is None or topic.topic_id != replica.topic_id:
                async with replica.group.lock:  # not in the middle of a Ready
                    self.runtime.remove(replica.group.group_id)
                    replica.group.close()
                    replica.closed = True
                del self.replicas[key]
                doomed.append(_rename_deleted(replica.log_directory))
        for key, topic in wanted.items():
            if key not in self.replicas:
                storage = await trio.to_thread.run_sync(self._open_partition_storage, topic, key[1])
                self._start_partition(topic, key[1], storage)
        if doomed:
            await trio.to_thread.run_sync(_remove_dirs, doomed)

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile_wanted.wait()
            self._reconcile_wanted = trio.Event()
            await self._reconcile()

    def _became_leader(self, machine: PartitionMachine, term: int) -> None:
        self._leader_reports[(machine.topic.topic_id, machine.partition)] = (term, ())
        self._leader_report_wanted.set()

    async def _isr_loop(self) -> None:
        """Recompute the ISR of every partition led here; report changes to __meta."""
        while True:
            await trio.sleep(ISR_CHECK_S)
            now = trio.current_time()
            alive = frozenset(p for p in self.runtime.peers if self.runtime.is_alive(p, now))
            if alive != self._isr_alive:
                self._isr_alive, self._isr_quiet = alive, {}
            for replica in list(self.replicas.values()):
                group = replica.group
                if replica.closed or not group.is_leader or group.lock.locked():
                    continue
                # An idle (quiesced) group's ISR depends only on which nodes are alive: one
                # already checked in this state is skipped (with 1,000 groups this loop was
                # a quarter of an idle node's CPU).
                key, state = (replica.topic_id, replica.partition), (group.term, replica.isr,
                                                                     group.node.raft.log.last_index())
                if group.quiesced and self._isr_quiet.get(key) == state:
                    continue
                before = replica.isr
                isr = replica.update_isr(now, self.runtime.is_alive)
                known = self.meta.leaders.get((replica.topic_id, replica.partition))
                if isr != before or (known and known.isr and known.isr != isr and known.epoch == group.term):
                    self._leader_reports[(replica.topic_id, replica.partition)] = (group.term, isr)
                    self._leader_report_wanted.set()
                elif group.quiesced:
                    self._isr_quiet[key] = (group.term, isr, group.node.raft.log.last_index())

    async def _leader_report_loop(self) -> None:
        """Tell __meta promptly about every partition this node now leads."""
        limiter = trio.CapacityLimiter(LEADER_REPORTS_INFLIGHT_MAX)
        async with trio.open_nursery() as nursery:
            while True:
                await self._leader_report_wanted.wait()
                self._leader_report_wanted = trio.Event()
                reports, self._leader_reports = self._leader_reports, {}
                for (topic_id, partition), (term, isr) in reports.items():
                    self._isr_version += 1
                    nursery.start_soon(self._report_leader, limiter, topic_id, partition, term, isr,
                                       self._isr_version)

    async def _report_leader(self, limiter, topic_id: uuid.UUID, partition: int, term: int,
                             isr: tuple[int, ...], isr_version: int) -> None:
        async with limiter:
            known = self.meta.leaders.get((topic_id, partition))
            if known is not None and (known.leader, known.epoch, known.isr) == (self.node_id, term, isr):
                return
            try:
                await self.meta_service.propose(meta_pb2.MetaCommand(
                    partition_leader_changed=meta_pb2.PartitionLeaderChanged(
                        topic_id=topic_id.bytes, partition=partition, leader=self.node_id,
                        leader_epoch=term, isr=isr, isr_version=isr_version)))
            except MetaUnavailable as exc:
                log.warning("could not report leadership of %s-%d: %s", topic_id.hex, partition, exc)
                self._leader_reports.setdefault((topic_id, partition), (term, isr))
                self._leader_report_wanted.set()

    # --- network -----------------------------------------------------------------------------

    def _send(self, group_id: str, message) -> None:
        if self.transport is not None:
            self.transport.send(message.to, group_id, message_to_pb(message))

    def _heartbeat(self, peer: int) -> None:
        if self.transport is not None:
            alive = self._liveness.get(peer)
            if alive is None:  # addressed like any message, so the peer's server accepts it
                # term carries this process's incarnation (RaftRuntime.liveness_from)
                alive = self._liveness[peer] = raft_pb2.Message(
                    to=peer, term=self._incarnation, **{"from": self.node_id}).SerializeToString()
            self.transport.send(peer, LIVENESS_GROUP, alive)

    def _on_batch(self, batch) -> None:
        self.runtime.heard_from(batch.from_node)
        for gm in batch.messages:
            if gm.group == LIVENESS_GROUP:  # its term carries the sender's incarnation
                self.runtime.liveness_from(batch.from_node, gm.message.term)
                continue
            message = peer_message_from_pb(gm.message)
            if message is not None and message.type == MessageType.PROPOSE and not _forwardable(gm):
                message = None
            if message is None:  # an enum value outside the protocol, a local-only type, ...
                self.runtime.malformed_drops += 1
                log.debug("dropped a message of type %d from node %d for group %s", gm.message.type,
                          batch.from_node, gm.group)
                continue
            if not self.runtime.deliver(gm.group, message):
                # A group deleted here, or not created yet (its topic is still being applied).
                self.runtime.unknown_group_drops += 1
                log.debug("dropped a message from node %d for unknown group %s", batch.from_node, gm.group)

    def _report_unreachable(self, peer: int, group_id: str) -> None:
        group = self.runtime.groups.get(group_id)
        if group is not None:
            group.report_unreachable(peer)

    def _report_snapshot(self, peer: int, group_id: str, ok: bool) -> None:
        group = self.runtime.groups.get(group_id)
        if group is not None:
            group.report_snapshot(peer, ok)

    def _make_transport(self):
        """The HTTP/2 app: Raft ingress from peers, /health and /metrics. On the node's
        entry in --peers; a node without peers serves it only with --admin-listen."""
        from prometheus_client import CollectorRegistry

        from chronik_trio.transport.transport import Transport

        from .metrics import NodeMetrics

        members = self.config.peer_addresses
        peers = {n: address for n, address in members.items() if n != self.node_id}
        listen = members[self.node_id] if members else self.config.admin_host_port
        registry = CollectorRegistry()
        metrics = NodeMetrics(registry, self.runtime, self.request_errors)
        self.runtime.observe_pass = metrics.ready_pass_seconds.observe
        self.runtime.observe_fsync = metrics.fsync_seconds.observe
        return Transport(self.node_id, listen, peers, self._on_batch, self._report_unreachable,
                         report_snapshot=self._report_snapshot, registry=registry, health=self._health,
                         on_peer_down=self.runtime.peer_down)

    def _health(self) -> dict:
        groups = list(self.runtime.groups.values())
        return {"cluster_id": self.meta.cluster_id, "meta_leader": self.meta_leader_id(),
                "groups": len(groups), "leading": sum(1 for g in groups if g.is_leader),
                "quiesced": sum(1 for g in groups if g.quiesced),
                "serving_kafka": self._serving, "partitions": len(self.replicas)}

    # --- lifecycle ---------------------------------------------------------------------------

    def _open_stores(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _remove_dirs(list((self.data_dir / "partitions").glob(f"*{DELETED_SUFFIX}")))
        self._open_meta()

    async def _ensure_cluster_id(self) -> None:
        if not self.meta.cluster_id:
            proposal = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            await self.meta_service.propose(meta_pb2.MetaCommand(
                cluster_id_proposed=meta_pb2.ClusterIdProposed(cluster_id=proposal)))

    async def _register_broker(self) -> None:
        host, port = self.config.advertised_host_port
        members = self.config.peer_addresses
        raft_address = "%s:%d" % members[self.node_id] if members else ""
        rack = self.config.rack or ""
        me = self.meta.brokers.get(self.node_id)
        if me is None or (me.host, me.port, me.rack or "", me.raft_address) != (host, port, rack, raft_address):
            await self.meta_service.propose(meta_pb2.MetaCommand(broker_registered=meta_pb2.BrokerRegistered(
                node_id=self.node_id, host=host, port=port, rack=rack, raft_address=raft_address)))

    def request_shutdown(self) -> None:
        self._shutdown.set()

    async def run(self, listeners=None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until request_shutdown(); then shut down cleanly and return."""
        self._open_stores()
        self.runtime.set_peers(self.config.voters)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.runtime.run)
                if self.config.peers is not None or self.config.admin_listen is not None:
                    self.transport = self._make_transport()
                    await nursery.start(self.transport.run)
                await self._wait_replayed([self.meta_service.group])
                await self._wait_meta_caught_up()
                await self._reconcile()  # partitions already assigned here
                await self._wait_replayed([r.group for r in self.replicas.values()])
                nursery.start_soon(self._reconcile_loop)
                nursery.start_soon(self._leader_report_loop)
                nursery.start_soon(self._retention_loop)
                nursery.start_soon(self._meta_snapshot_loop)
                nursery.start_soon(self._isr_loop)
                nursery.start_soon(self._balance_loop)
                await nursery.start(self.groups.run)
                # Serve Kafka only as a member of a working cluster: registered in __meta.
                await self._ensure_cluster_id()
                await self._register_broker()
                await self._serve_kafka(listeners, task_status)
                nursery.cancel_scope.cancel()
        except BaseException:
            # No final sync: after a failed fsync another one can report success for data
            # that never reached the disk, and recording that as durable would lie.
            for group in list(self.runtime.groups.values()):
                group.storage.close()
            raise
        self._close_cleanly()

    async def _serve_kafka(self, listeners, task_status) -> None:
        if listeners is None:
            host, port = self.config.listen_host_port
            listeners = await trio.open_tcp_listeners(port, host=host)
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptor:
                await acceptor.start(functools.partial(
                    trio.serve_listeners, self._serve_client, listeners, handler_nursery=connections))
                log.info("node %d ready: kafka %s, advertised %s, data %s, voters %s",
                         self.node_id, self.config.listen, self.config.advertised or self.config.listen,
                         self.data_dir, self.config.voters)
                task_status.started(listeners)
                self._serving = True
                await self._shutdown.wait()
                self._serving = False
                acceptor.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            log.info("shutting down: no new connections, %d request(s) in flight", self.requests_inflight)
            with trio.move_on_after(SHUTDOWN_GRACE_S):
                while self.requests_inflight:
                    await trio.sleep(0.01)
            connections.cancel_scope.cancel()

    def _close_cleanly(self) -> None:
        """Everything written is made durable and recorded as such, then files are closed."""
        groups = list(self.runtime.groups.values())
        for group in groups:
            group.storage.sync(save_commit=True)
            group.close()
        log.info("node %d stopped cleanly; %d Raft group(s) synced and closed", self.node_id, len(groups))

    async def _serve_client(self, stream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except (AttributeError, OSError):
            peer = "unknown peer"
        await serve_connection(stream, self, peer)

    async def _meta_snapshot_loop(self) -> None:
        """Snapshot __meta's state every meta_snapshot_entries applied entries and drop the
        log before it. Under the group's lock, so the state is exactly that of `applied`."""
        group = self.meta_service.group
        while True:
            await trio.sleep(META_SNAPSHOT_CHECK_S)
            async with group.lock:
                applied = group.node.raft.log.applied
                if applied - group.storage.snapshot_index < self.config.meta_snapshot_entries:
                    continue
                data = self.meta.snapshot()
                conf_state = group.node.status().conf_state
                await trio.to_thread.run_sync(group.storage.create_snapshot, applied, conf_state, data)
                group.storage.compact(applied + 1)
            log.info("__meta snapshot at index %d (%d bytes); older log segments dropped", applied, len(data))

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.config.retention_check_interval_ms / 1000)
            now_ms = self.wall_clock_ms()
            for (name, _), replica in list(self.replicas.items()):
                topic = self.meta.topics.get(name)
                if topic is None or replica.closed:
                    continue
                retention_bytes = int(topic.config("retention.bytes"))
                retention_ms = int(topic.config("retention.ms"))
                await replica.apply_retention(now_ms, retention_bytes if retention_bytes >= 0 else None,
                                              retention_ms if retention_ms >= 0 else None)


def _rename_deleted(directory: pathlib.Path) -> pathlib.Path:
    target = directory.with_name(f"{directory.name}.{uuid.uuid4().hex[:8]}{DELETED_SUFFIX}")
    try:
        os.replace(directory, target)
    except FileNotFoundError:
        pass
    return target


def _remove_dirs(directories: list[pathlib.Path]) -> None:
    for directory in directories:
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
