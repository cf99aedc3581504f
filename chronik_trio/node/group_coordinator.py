"""The group coordinator: consumer groups on the leaders of `__consumer_offsets` partitions.

The coordinator of group g is the leader of partition partition_for(g, N) of the internal
topic `__consumer_offsets` (created through __meta on the first FindCoordinator; N =
offsets_topic_num_partitions, replication factor min(offsets_topic_replication_factor,
brokers)). Every replica of such a partition derives a GroupStore (group/store.py) from the
partition's committed batches; the leader additionally runs the live groups (group/group.py):
members, sessions, rebalances.

- Offset commits and group metadata (written when a generation's assignment is complete,
  when a static member's id changes, when a group becomes Empty) are record batches proposed
  through the partition's Raft group; a commit is answered once committed.
- A node that becomes leader of an offsets partition answers COORDINATOR_LOAD_IN_PROGRESS
  until it has applied its whole log (up to the new term's first entry), then builds the live
  groups from the GroupStore: members as of the last written generation, sessions restarted.
  A group that was Stable stays Stable, so its members' heartbeats succeed at once.
- A node that stops leading drops the live groups (noticed at once, or at the loop's next
  wake, at most IDLE_WAKE_S later); waiting JoinGroup / SyncGroup calls are
  answered NOT_COORDINATOR, and clients look up the coordinator again.

Time: sessions and rebalances use trio's clock (monotonic); record timestamps (commit times,
expiry) use the node's wall clock.
"""

from __future__ import annotations

import logging
import random
import typing

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import MetaState, Topic
from chronik_trio.errors import BrokerError, NotEnoughReplicas, NotLeader, ProposalFailed
from chronik_trio.group import (OFFSETS_TOPIC, Group, GroupError, GroupRecord, GroupState, GroupStore, JoinCompleted,
                                JoinRequest, JoinResult, MemberRecord, OffsetRecord, PersistWanted,
                                SyncCompleted, SyncPending, SyncResult, partition_for)
from chronik_trio.group.records import build_batch, group_key, offset_key
from chronik_trio.group.subscription import subscription_topics
from chronik_trio.group.store import group_batch, offsets_batch
from chronik_trio.kafka.records import parse_batches

from .internal_topic import InternalTopic, ShardedCoordinator
from .partition_group import PartitionReplica
from .seams import system_rng, uuid4

log = logging.getLogger(__name__)

IDLE_WAKE_S = 1.0  # with nothing due, the loop still wakes this often (leadership checks)
DUE_MARGIN_MS = 0.001
LOAD_WAIT_S_MAX = 2.0  # a request waits this long for a new leader's load, then is told to retry
JOIN_GRACE_S = 5.0  # beyond the rebalance timeout, a JoinGroup gives up waiting (never expected)
SYNC_WAIT_S_MAX = 60.0  # a SyncGroup waits for the leader's assignment at most this long
WRITE_RECORDS_MAX = 10_000  # tombstones per expiry batch: bounds one Raft entry
OFFSET_METADATA_BYTES_MAX = 4096  # Kafka's offset.metadata.max.bytes
BATCH_BYTES_MAX = 1 << 30  # our own batches: parse_batches only checks their framing

DEFAULTS = {
    "offsets_topic_num_partitions": 10,
    "offsets_topic_replication_factor": 3,
    "offsets_retention_minutes": 7 * 24 * 60,
    "offsets_retention_check_interval_ms": 600_000,
    "group_initial_rebalance_delay_ms": 3000,
    "group_min_session_timeout_ms": 6000,
    "group_max_session_timeout_ms": 1_800_000,
}


class _Slot:
    """Where a waiting JoinGroup / SyncGroup gets its answer."""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value = None

    def set(self, value) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()


class _Shard:
    """The coordinator of one offsets partition while this node leads it (one term)."""

    def __init__(self, replica: PartitionReplica, term: int, load_index: int) -> None:
        self.replica = replica
        self.term = term
        self.load_index = load_index  # the new term's first entry: applied = everything loaded
        self.loaded = False
        self.groups: dict[str, Group] = {}
        self.joins: dict[tuple[str, str], _Slot] = {}
        self.syncs: dict[tuple[str, str], _Slot] = {}
        self.due_ms: dict[str, float] = {}  # group -> when its tick() may have work (sessions, rebalances)
        self.dirty: set[str] = set()  # groups whose metadata must be written
        self.writing: set[str] = set()  # groups with a writer task running

    @property
    def store(self) -> GroupStore:
        return self.replica.machine.states[GroupStore.name]

    @property
    def current(self) -> bool:
        return (not self.replica.closed and self.replica.is_leader
                and self.replica.leader_epoch == self.term)


class GroupSettings(typing.Protocol):
    """The coordinator's settings (node.config.NodeConfig has them); a missing one takes
    its DEFAULTS value."""

    @property
    def offsets_topic_num_partitions(self) -> int: ...
    @property
    def offsets_topic_replication_factor(self) -> int: ...
    @property
    def offsets_retention_minutes(self) -> int: ...
    @property
    def offsets_retention_check_interval_ms(self) -> int: ...
    @property
    def group_initial_rebalance_delay_ms(self) -> int: ...
    @property
    def group_min_session_timeout_ms(self) -> int: ...
    @property
    def group_max_session_timeout_ms(self) -> int: ...


class CoordinatorHost(typing.Protocol):
    """What the coordinator uses from its node (node.node.Node)."""

    @property
    def config(self) -> GroupSettings: ...
    @property
    def meta(self) -> MetaState:
        """This node's applied copy of __meta."""
    def wall_clock_ms(self) -> int:
        """Record timestamps (commit times, expiry)."""
    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           validate_only: bool = False, replication_factor: int = -1,
                           assignment: list[list[int]] | None = None,
                           timeout_s: float = ...) -> Topic:
        """For __consumer_offsets; raises BrokerError."""


class GroupCoordinator(ShardedCoordinator):
    def __init__(self, node: CoordinatorHost, rng: random.Random | None = None) -> None:
        self.node = node
        self._rng = rng if rng is not None else system_rng()  # member ids
        self.shards: dict[int, _Shard] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()  # set when something falls due before the loop's next wake
        self._wake_at_s = 0.0
        # Compacted, as Kafka's: every record is keyed, deletions are tombstones.
        self._topic = InternalTopic(OFFSETS_TOPIC, {"cleanup.policy": "compact"})

    # --- settings ---------------------------------------------------------------------------------

    def setting(self, name: str) -> int:
        return int(getattr(self.node.config, name, DEFAULTS[name]))

    def now_ms(self) -> float:
        return trio.current_time() * 1000

    # --- partitions of __consumer_offsets (replicas.py calls these) ------------------------------

    TOPIC = OFFSETS_TOPIC

    @classmethod
    def _new_store(cls) -> GroupStore:
        return GroupStore()

    def _new_shard(self, replica: PartitionReplica, term: int, load_index: int) -> _Shard:
        return _Shard(replica, term, load_index)

    def _unload(self, shard: _Shard) -> None:
        for group in shard.groups.values():
            group.mark_dead()
            self._dispatch(shard, group)
        for slot in shard.joins.values():
            slot.set(JoinResult(ErrorCode.not_coordinator))
        for slot in shard.syncs.values():
            slot.set(SyncResult(ErrorCode.not_coordinator))
        shard.groups.clear()
        if shard.loaded:
            log.info("offsets partition %d: no longer the coordinator (term %d)", shard.replica.partition,
                     shard.term)

    def _load(self, shard: _Shard) -> None:
        now = self.now_ms()
        store = shard.store
        for group_id, record in store.groups.items():
            group = self._new_group(group_id)
            group.load(now, protocol_type=record.protocol_type, protocol_name=record.protocol_name,
                       generation_id=record.generation_id, leader_id=record.leader_id,
                       members=[(m.member_id, m.instance_id, m.client_id, m.client_host, m.session_timeout_ms,
                                 m.rebalance_timeout_ms, m.subscription, m.assignment) for m in record.members])
            shard.groups[group_id] = group
            shard.due_ms[group_id] = group.next_deadline_ms()
        self._wake.set()
        for group_id in store.offsets:
            if group_id not in shard.groups:
                shard.groups[group_id] = self._new_group(group_id)
        shard.loaded = True
        log.info("offsets partition %d: coordinator at term %d with %d group(s)", shard.replica.partition,
                 shard.term, len(shard.groups))

    def _new_group(self, group_id: str) -> Group:
        return Group(group_id, initial_rebalance_delay_ms=self.setting("group_initial_rebalance_delay_ms"),
                     session_timeout_ms_min=self.setting("group_min_session_timeout_ms"),
                     session_timeout_ms_max=self.setting("group_max_session_timeout_ms"))

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for shard in self.shards.values():  # leaders since before the loop ran
                nursery.start_soon(self._load_when_applied, shard)
            task_status.started()
            next_expiry = trio.current_time() + self.setting("offsets_retention_check_interval_ms") / 1000
            while True:
                # Sleep until the first session or rebalance deadline (or a shard is ready to
                # load): an idle node does not wake for groups that have nothing due.
                self._wake_at_s = min(self._next_due_s(), next_expiry)
                with trio.move_on_at(self._wake_at_s):
                    await self._wake.wait()
                self._wake = trio.Event()
                self._tick()
                if trio.current_time() >= next_expiry:
                    next_expiry = trio.current_time() + self.setting("offsets_retention_check_interval_ms") / 1000
                    for shard in list(self.shards.values()):
                        if shard.loaded:
                            nursery.start_soon(self._expire, shard)

    def _next_due_s(self) -> float:
        now_s = trio.current_time()
        due_s = now_s + IDLE_WAKE_S
        for shard in self.shards.values():
            if shard.loaded and shard.due_ms:
                # A microsecond late: ms / 1000 * 1000 can come back an ulp below ms, and a
                # wake before a deadline by the ms clock the groups read (now_ms) ticks
                # nothing and sleeps until the same moment again, a spin that lasts until the
                # clock moves past it (forever under a virtual clock; found by the simulation).
                due_s = min(due_s, (min(shard.due_ms.values()) + DUE_MARGIN_MS) / 1000)
        return due_s

    def _tick(self) -> None:
        now = self.now_ms()
        for partition, shard in list(self.shards.items()):
            if not shard.current:
                if self.shards.get(partition) is shard:
                    del self.shards[partition]
                self._unload(shard)
                continue
            if not shard.loaded:
                if shard.replica.machine.applied_index >= shard.load_index:
                    self._load(shard)
                continue
            for group_id, due_ms in list(shard.due_ms.items()):
                group = shard.groups.get(group_id)
                if group is None:
                    del shard.due_ms[group_id]
                elif due_ms <= now:
                    group.tick(now)
                    self._dispatch(shard, group)

    def _dispatch(self, shard: _Shard, group: Group) -> None:
        """Deliver the group's events (after every call into it) and note its next deadline."""
        due_ms = shard.due_ms[group.group_id] = group.next_deadline_ms()
        if due_ms / 1000 < self._wake_at_s:
            self._wake.set()
        for event in group.take_events():
            if isinstance(event, JoinCompleted):
                slot = shard.joins.pop((group.group_id, event.member_id), None)
                if slot is not None:
                    slot.set(event.result)
            elif isinstance(event, SyncCompleted):
                slot = shard.syncs.pop((group.group_id, event.member_id), None)
                if slot is not None:
                    slot.set(event.result)
            elif isinstance(event, PersistWanted):
                shard.dirty.add(group.group_id)
                if group.group_id not in shard.writing and self._nursery is not None:
                    shard.writing.add(group.group_id)
                    self._nursery.start_soon(self._write_group, shard, group)

    # --- writing through Raft ---------------------------------------------------------------------

    async def _produce(self, shard: _Shard, batch: bytes, *, transactional: bool = False) -> None:
        """Write one batch to the offsets partition; return once committed. Raises GroupError.
        transactional: TxnOffsetCommit's batch, which carries the transaction's producer id
        and epoch but no sequence: the leader appends it as Kafka's coordinator does, without
        the idempotent producer's sequence check (nothing else writes with that id here)."""
        if not shard.current:
            raise GroupError("not the coordinator", ErrorCode.not_coordinator)
        headers = parse_batches(batch, batch_bytes_max=BATCH_BYTES_MAX)
        try:
            await shard.replica.produce(batch, headers, -1, coordinator=transactional)
        except (NotLeader, ProposalFailed) as exc:
            raise GroupError(f"offsets write failed: {exc}", ErrorCode.not_coordinator) from None
        except NotEnoughReplicas as exc:
            raise GroupError(f"offsets write refused: {exc}", ErrorCode.coordinator_not_available) from None
        except BrokerError as exc:  # a transactional batch the partition refused (its rules)
            raise GroupError(f"offsets write refused: {exc}", exc.error_code) from None
        if not shard.current:
            # Committed, but this node no longer leads: the next coordinator has it; the
            # client should talk to that one.
            raise GroupError("leadership moved during the write", ErrorCode.not_coordinator)

    def _group_record(self, group: Group) -> GroupRecord:
        assignments = group.snapshot_assignments()
        members = tuple(MemberRecord(m.member_id, m.instance_id, m.client_id, m.client_host, m.session_timeout_ms,
                                     m.rebalance_timeout_ms, m.metadata(group.protocol_name),
                                     assignments.get(m.member_id, b""))
                        for m in group.members.values())
        return GroupRecord(group.protocol_type, group.generation_id, group.protocol_name, group.leader_id,
                           self.node.wall_clock_ms(), members)

    async def _write_group(self, shard: _Shard, group: Group) -> None:
        """The one writer of a group's metadata: each round writes the group as it is now,
        so the log's last record of the group is its latest state."""
        try:
            while group.group_id in shard.dirty:
                shard.dirty.discard(group.group_id)
                generation = group.generation_id
                record = None if group.state == GroupState.DEAD else self._group_record(group)
                try:
                    await self._produce(shard, group_batch(group.group_id, record, self.node.wall_clock_ms()))
                except GroupError as exc:
                    log.info("group %s: metadata of generation %d not written: %s", group.group_id, generation, exc)
                    group.persist_failed(self.now_ms(), generation, exc.error_code)
                else:
                    group.persisted(generation)
                self._dispatch(shard, group)
        finally:
            shard.writing.discard(group.group_id)

    async def _expire(self, shard: _Shard) -> None:
        retention_ms = self.setting("offsets_retention_minutes") * 60_000

        def empty(group_id: str) -> bool:
            group = shard.groups.get(group_id)
            return group is None or group.state == GroupState.EMPTY

        tombstones = shard.store.expired(self.node.wall_clock_ms(), retention_ms, empty)
        for start in range(0, len(tombstones), WRITE_RECORDS_MAX):
            try:
                await self._produce(shard, build_batch(tombstones[start:start + WRITE_RECORDS_MAX],
                                                       self.node.wall_clock_ms()))
            except GroupError as exc:
                log.info("offsets partition %d: expiry not written: %s", shard.replica.partition, exc)
                return
        if tombstones:
            log.info("offsets partition %d: expired %d record(s)", shard.replica.partition, len(tombstones))
        for group_id, group in list(shard.groups.items()):
            if group.state == GroupState.EMPTY and group_id not in shard.store.group_ids():
                del shard.groups[group_id]

    # --- finding the coordinator -------------------------------------------------------------------

    async def offsets_topic(self) -> Topic | None:
        """__consumer_offsets, created on first use; None while it is being created."""
        return await self._topic.get(self.node, self._nursery, self.setting("offsets_topic_num_partitions"),
                                     self.setting("offsets_topic_replication_factor"))

    def coordinator_partition(self, topic: Topic, group_id: str) -> int:
        return partition_for(group_id, topic.partition_count)

    def _shard_for(self, group_id: str) -> _Shard:
        """This node's loaded coordinator of group_id, or GroupError."""
        if not group_id:
            raise GroupError("empty group id", ErrorCode.invalid_group_id)
        topic = self.node.meta.topics.get(OFFSETS_TOPIC)
        if topic is None:
            raise GroupError("no offsets topic yet", ErrorCode.coordinator_not_available)
        shard = self.shards.get(self.coordinator_partition(topic, group_id))
        if shard is None or not shard.current:
            raise GroupError("not the coordinator", ErrorCode.not_coordinator)
        if not shard.loaded and shard.replica.machine.applied_index >= shard.load_index:
            self._load(shard)  # caught up since the last tick
        if not shard.loaded:
            raise GroupError("loading", ErrorCode.coordinator_load_in_progress)
        return shard

    async def _loaded_shard(self, group_id: str) -> _Shard:
        """_shard_for, waiting up to LOAD_WAIT_S_MAX while this node's coordinator is still
        applying its log (a moment, usually): fewer COORDINATOR_LOAD_IN_PROGRESS answers,
        which some clients' admin calls do not retry."""
        deadline = trio.current_time() + LOAD_WAIT_S_MAX
        while True:
            try:
                return self._shard_for(group_id)
            except GroupError as exc:
                if exc.error_code != ErrorCode.coordinator_load_in_progress or trio.current_time() >= deadline:
                    raise
            topic = self.node.meta.topics[OFFSETS_TOPIC]  # _shard_for found it, and the shard
            with trio.move_on_at(deadline):
                await self.shards[self.coordinator_partition(topic, group_id)].replica.group.wait_advanced()

    def _group(self, shard: _Shard, group_id: str, *, create: bool) -> Group | None:
        group = shard.groups.get(group_id)
        if group is None and create:
            group = shard.groups[group_id] = self._new_group(group_id)
        return group

    # --- the group APIs (kafka/handlers/groups.py) --------------------------------------------------

    async def join(self, group_id: str, request: JoinRequest) -> JoinResult:
        try:
            shard = await self._loaded_shard(group_id)
        except GroupError as exc:
            return JoinResult(exc.error_code, request.member_id)
        group = self._group(shard, group_id, create=True)
        new_member_id = f"{request.client_id}-{uuid4(self._rng)}"
        outcome = group.join(self.now_ms(), request, new_member_id)
        if isinstance(outcome, JoinResult):
            self._dispatch(shard, group)
            return outcome
        slot = _Slot()
        key = (group_id, outcome.member_id)
        old = shard.joins.get(key)
        if old is not None:
            old.set(JoinResult(ErrorCode.rebalance_in_progress, outcome.member_id))
        shard.joins[key] = slot
        self._dispatch(shard, group)
        with trio.move_on_after(request.rebalance_timeout_ms / 1000 + JOIN_GRACE_S):
            await slot.event.wait()
        if shard.joins.get(key) is slot:
            del shard.joins[key]
        return slot.value if slot.value is not None else JoinResult(ErrorCode.rebalance_in_progress,
                                                                    outcome.member_id)

    async def sync(self, group_id: str, member_id: str, generation_id: int, instance_id: str | None,
                   protocol_type: str | None, protocol_name: str | None,
                   assignments: typing.Sequence[tuple[str, bytes]]) -> SyncResult:
        try:
            shard = await self._loaded_shard(group_id)
        except GroupError as exc:
            return SyncResult(exc.error_code)
        group = self._group(shard, group_id, create=False)
        if group is None:
            return SyncResult(ErrorCode.unknown_member_id)
        outcome = group.sync(self.now_ms(), member_id, generation_id, instance_id, protocol_type,
                             protocol_name, assignments)
        if isinstance(outcome, SyncResult):
            self._dispatch(shard, group)
            return outcome
        assert isinstance(outcome, SyncPending), outcome
        slot = _Slot()
        key = (group_id, member_id)
        old = shard.syncs.get(key)
        if old is not None:
            old.set(SyncResult(ErrorCode.rebalance_in_progress))
        shard.syncs[key] = slot
        self._dispatch(shard, group)
        with trio.move_on_after(SYNC_WAIT_S_MAX):
            await slot.event.wait()
        if shard.syncs.get(key) is slot:
            del shard.syncs[key]
        return slot.value if slot.value is not None else SyncResult(ErrorCode.rebalance_in_progress)

    async def heartbeat(self, group_id: str, member_id: str, generation_id: int, instance_id: str | None) -> ErrorCode:
        try:
            shard = await self._loaded_shard(group_id)
        except GroupError as exc:
            return exc.error_code
        group = self._group(shard, group_id, create=False)
        if group is None:
            return ErrorCode.unknown_member_id
        error = group.heartbeat(self.now_ms(), member_id, generation_id, instance_id)
        self._dispatch(shard, group)
        return error

    async def leave(self, group_id: str, members: typing.Sequence[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """(top-level error, one error per member)."""
        try:
            shard = await self._loaded_shard(group_id)
        except GroupError as exc:
            return exc.error_code, []
        group = self._group(shard, group_id, create=False)
        if group is None:
            return ErrorCode.none, [ErrorCode.unknown_member_id for _ in members]
        errors = [group.leave(self.now_ms(), member_id, instance_id) for member_id, instance_id in members]
        self._dispatch(shard, group)
        return ErrorCode.none, errors

    async def commit(self, group_id: str, member_id: str, generation_id: int, instance_id: str | None,
                     offsets: typing.Sequence[tuple[str, int, int, int, str | None]], *,
                     producer: tuple[int, int] | None = None) -> list[ErrorCode]:
        """OffsetCommit of (topic, partition, offset, leader epoch, metadata); one error each.
        producer: TxnOffsetCommit's (producer id, epoch): the offsets are written as a
        transactional batch and count only once the transaction's commit marker lands."""
        try:
            shard = await self._loaded_shard(group_id)
        except GroupError as exc:
            return [exc.error_code] * len(offsets)
        group = self._group(shard, group_id, create=False)
        if group is None:
            if generation_id >= 0:
                return [ErrorCode.illegal_generation] * len(offsets)
            group = self._group(shard, group_id, create=True)
        # A TxnOffsetCommit without member info (v0-v2, or a producer outside the group) is
        # not checked against the group, as in Kafka; with it, as an OffsetCommit is.
        unchecked = producer is not None and generation_id < 0 and not member_id
        error = ErrorCode.none if unchecked else group.check_commit(member_id, generation_id, instance_id)
        if error != ErrorCode.none:
            return [error] * len(offsets)
        if not unchecked:
            group.commit_seen(self.now_ms(), member_id)
        errors: list[ErrorCode] = []
        writes = []
        now_wall = self.node.wall_clock_ms()
        for topic, partition, offset, epoch, metadata in offsets:
            known = self.node.meta.topics.get(topic)
            if known is None or not 0 <= partition < known.partition_count:
                errors.append(ErrorCode.unknown_topic_or_partition)
            elif metadata is not None and len(metadata.encode()) > OFFSET_METADATA_BYTES_MAX:
                errors.append(ErrorCode.offset_metadata_too_large)
            else:
                errors.append(ErrorCode.none)
                writes.append((topic, partition, OffsetRecord(offset, epoch, metadata, now_wall)))
        if writes:
            try:
                await self._produce(shard, offsets_batch(group_id, writes, now_wall, producer=producer),
                                    transactional=producer is not None)
            except GroupError as exc:
                errors = [exc.error_code if e == ErrorCode.none else e for e in errors]
        return errors

    async def unstable_offsets(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions with an offset in an undecided transaction (OffsetFetch require_stable)."""
        return (await self._loaded_shard(group_id)).store.unstable(group_id)

    async def fetch(self, group_id: str, partitions: typing.Sequence[tuple[str, int]] | None
              ) -> dict[tuple[str, int], OffsetRecord | None]:
        """Committed offsets (None: none committed); partitions None means all of the group's.
        Raises GroupError when this node cannot answer for the group."""
        shard = await self._loaded_shard(group_id)
        committed = shard.store.committed(group_id)
        if partitions is None:
            return dict(committed)
        return {tp: committed.get(tp) for tp in partitions}

    def list_groups(self) -> list[Group]:
        return [group for shard in self.shards.values() if shard.loaded and shard.current
                for group in shard.groups.values() if group.state != GroupState.DEAD]

    async def describe(self, group_id: str) -> Group | None:
        """The live group (None: unknown here). Raises GroupError."""
        return (await self._loaded_shard(group_id)).groups.get(group_id)

    async def delete_group(self, group_id: str) -> ErrorCode:
        try:
            shard = await self._loaded_shard(group_id)
        except GroupError as exc:
            return exc.error_code
        group = shard.groups.get(group_id)
        if group is None or group.state == GroupState.DEAD:
            return ErrorCode.group_id_not_found
        if group.state != GroupState.EMPTY:
            return ErrorCode.non_empty_group
        tombstones = [(key, None) for key in _offset_keys(group_id, shard.store.committed(group_id))]
        tombstones.append((group_key(group_id), None))
        group.mark_dead()
        self._dispatch(shard, group)
        shard.groups.pop(group_id, None)
        try:
            await self._produce(shard, build_batch(tombstones, self.node.wall_clock_ms()))
        except GroupError as exc:
            return exc.error_code
        return ErrorCode.none

    async def delete_offsets(self, group_id: str, partitions: typing.Sequence[tuple[str, int]]
                             ) -> tuple[ErrorCode, list[ErrorCode]]:
        """OffsetDelete: refused per partition (GROUP_SUBSCRIBED_TO_TOPIC) while a consumer
        group that is not Empty subscribes to the topic; Kafka's rule."""
        try:
            shard = await self._loaded_shard(group_id)
        except GroupError as exc:
            return exc.error_code, []
        group = shard.groups.get(group_id)
        if group is None or group.state == GroupState.DEAD:
            return ErrorCode.group_id_not_found, []
        if group.state != GroupState.EMPTY and group.protocol_type != "consumer":
            return ErrorCode.non_empty_group, []
        subscribed = _subscribed_topics(group) if group.state != GroupState.EMPTY else set()
        errors, doomed = [], []
        for topic, partition in partitions:
            if topic in subscribed:
                errors.append(ErrorCode.group_subscribed_to_topic)
            else:
                errors.append(ErrorCode.none)
                doomed.append((topic, partition))
        committed = shard.store.committed(group_id)
        tombstones = [(key, None) for key in _offset_keys(
            group_id, {tp: None for tp in doomed if tp in committed})]
        if tombstones:
            try:
                await self._produce(shard, build_batch(tombstones, self.node.wall_clock_ms()))
            except GroupError as exc:
                return exc.error_code, []
        return ErrorCode.none, errors


def _offset_keys(group_id: str, partitions) -> list[bytes]:
    return [offset_key(group_id, topic, partition) for topic, partition in sorted(partitions)]


def _subscribed_topics(group: Group) -> set[str]:
    """The topics in the members' consumer-protocol subscriptions (version, topics, ...)."""
    topics: set[str] = set()
    for member in group.members.values():
        topics |= subscription_topics(member.metadata(group.protocol_name))
    return topics
