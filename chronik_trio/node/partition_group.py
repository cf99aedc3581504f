"""A partition replica on this node: a Raft group whose log is the Kafka log.

Kafka over Raft (design.md): the leader assigns each batch its offsets and writes the term
as partitionLeaderEpoch, then proposes the batch as one entry; followers store the entries
as the leader sent them. The high watermark is the end of the last *committed* data entry,
known to every replica as it applies entries, so any replica can serve reads below it.
"""

from __future__ import annotations

import logging
import struct
import typing

import trio
from kio.schema.errors import ErrorCode

from chronik_trio import storage
from chronik_trio.cluster.meta import Topic
from chronik_trio.errors import NotEnoughReplicas, ProposalFailed
from chronik_trio.kafka.records import BatchHeader, with_offsets
from chronik_trio.record_batch import ATTR_TRANSACTIONAL, NO_PRODUCER_ID, read_header
from chronik_trio.partition.producers import ProducerEntry, ProducerStateTable, idempotent_batch
from chronik_trio.partition.transactions import (AbortedTxn, InvalidTxnState, TransactionState, TxnMarker,
                                                 control_batch)
from chronik_trio.partition.state import (BatchState, FollowerProgress, HighWatermark, InSyncReplicas,
                                          OffsetAssigner, batch_base_offset, batch_end_offset)
from chronik_trio.pb import partition_pb2
from chronik_trio.raft.types import Entry, EntryType, Snapshot, StateRole
from chronik_trio.storage.raft_storage import (partition_snapshot_data, partition_snapshot_next_offset,
                                               partition_snapshot_state)

from .raft_group import RaftGroup
from .seams import RunSync

log = logging.getLogger(__name__)

SCAN_BACK_ENTRIES_MAX = 1000  # empty entries (leader changes) between batches are few
LOG_START = struct.Struct(">q")  # the data of an EntryType.LOG_START entry (DeleteRecords)
LOG_START_STATE = "log_start"  # its key in a snapshot's states


class PartitionMachine:
    """What applying committed entries gives: the high watermark, and the BatchStates
    (partition/state.py) of this partition, e.g. its producer table. One per replica."""

    def __init__(self, topic: Topic, partition: int, log_: storage.SegmentLog,
                 on_leader: typing.Callable[["PartitionMachine", int], None],
                 states: typing.Sequence[BatchState] = ()) -> None:
        self.topic = topic
        self.partition = partition
        self.log = log_
        self._on_leader = on_leader
        self.hw = HighWatermark(log_.log_start_offset)
        self.states: dict[str, BatchState] = {state.name: state for state in states}
        self.state_end_offset = 0  # batches below it are in the states already
        # DeleteRecords: offsets below it are gone (LOG_START entries; kept in snapshots).
        self.log_start_floor = 0
        self.log_start_listeners: list[typing.Callable[[], None]] = []
        self.applied_index = 0
        self.leader_epoch = 0
        self.role = StateRole.FOLLOWER
        self.role_listeners: list[typing.Callable[[int, StateRole, int], None]] = []
        self._watchers: set[trio.Event] = set()

    @property
    def high_watermark(self) -> int:
        return self.hw.offset

    @property
    def transactions(self) -> TransactionState | None:
        # A `__transaction_state` partition's coordinator store (txn/store.py) has the same
        # state name: it is not this partition's transaction table (it has none).
        state = self.states.get(TransactionState.name)
        return state if isinstance(state, TransactionState) else None

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the oldest open transaction, else the high watermark."""
        txns = self.transactions
        return self.hw.offset if txns is None else txns.last_stable_offset(self.hw.offset)

    def apply(self, entries: typing.Sequence[Entry]) -> list:
        results = self.hw.apply([entry.data if entry.type == EntryType.NORMAL else b"" for entry in entries])
        for entry in entries:
            if entry.type == EntryType.LOG_START:
                self._log_start_moved(LOG_START.unpack(entry.data)[0])
        if self.states:
            self._apply_states(entries)
        if entries:
            self.applied_index = entries[-1].index
        if self._watchers and any(entry.data for entry in entries):
            self._wake_watchers()
        return results

    def _log_start_moved(self, offset: int) -> None:
        if offset > self.log_start_floor:
            self.log_start_floor = offset
            for listener in self.log_start_listeners:
                listener()

    def _apply_states(self, entries: typing.Sequence[Entry]) -> None:
        states = self.states.values()
        for entry in entries:
            data = entry.data
            if not data or entry.type != EntryType.NORMAL or batch_base_offset(data) < self.state_end_offset:
                continue
            view = memoryview(data)
            for state in states:
                state.apply(view, entry.index)
            self.state_end_offset = batch_end_offset(data)

    def _wake_watchers(self) -> None:
        for watcher in self._watchers:
            watcher.set()
        self._watchers.clear()

    def on_soft_state(self, leader_id: int, role: StateRole, term: int) -> None:
        self.role = role
        self.leader_epoch = term
        self._wake_watchers()  # whoever waits on this replica looks at its role again
        if role == StateRole.LEADER:
            self._on_leader(self, term)
        for listener in self.role_listeners:
            listener(leader_id, role, term)

    def on_conf_state(self, index, conf_state) -> None:
        pass

    def restore(self, snapshot: Snapshot) -> None:
        self.hw.restore(partition_snapshot_next_offset(snapshot))
        self.applied_index = max(self.applied_index, snapshot.index)
        data = partition_snapshot_state(snapshot)
        if not data:
            return
        saved = partition_pb2.PartitionSnapshotState.FromString(data)
        if LOG_START_STATE in saved.states:
            self._log_start_moved(LOG_START.unpack(saved.states[LOG_START_STATE])[0])
        if saved.end_offset < self.state_end_offset:
            return  # ours is newer (a snapshot we made ourselves, restored at start)
        self.state_end_offset = saved.end_offset
        for name, state in self.states.items():
            if name in saved.states:
                state.decode(saved.states[name])

    def snapshot_state(self) -> bytes:
        """The states as of the applied index, for a snapshot (see BatchState)."""
        states = {name: state.encode() for name, state in self.states.items()}
        states[LOG_START_STATE] = LOG_START.pack(self.log_start_floor)
        return partition_pb2.PartitionSnapshotState(end_offset=self.state_end_offset,
                                                    states=states).SerializeToString()

    def watch(self, event: trio.Event) -> None:
        """Set event the next time the high watermark moves."""
        self._watchers.add(event)

    def unwatch(self, event: trio.Event) -> None:
        self._watchers.discard(event)


class PartitionReplica:
    """The produce and fetch side of one partition replica (what Kafka handlers use).

    The ISR rule is partition.state.InSyncReplicas, fed from the leader's Raft progress.
    """

    def __init__(self, topic: Topic, partition: int, group: RaftGroup, machine: PartitionMachine,
                 *, lag_time_s: float, alive: typing.Callable[[int, float], bool],
                 min_insync: typing.Callable[[], int], run_sync: RunSync) -> None:
        self.topic_name = topic.name
        self._run_sync = run_sync  # snapshots at retention boundaries
        self.topic_id = topic.topic_id
        self.partition = partition
        self.group = group
        self.machine = machine
        self.log = machine.log
        self.closed = False
        self._offsets = OffsetAssigner()
        self._view: LeaderView | None = None
        self._view_term = 0
        self._in_order: dict[int, _ProducerOrder] = {}  # producer id -> its transactional produces' turn
        self._min_insync = min_insync  # the topic's current min.insync.replicas (live config)
        self._isr = InSyncReplicas(lag_time_s)
        self.alive = alive

    @property
    def leader_epoch(self) -> int:
        return self.machine.leader_epoch

    @property
    def min_insync(self) -> int:
        return self._min_insync()

    @property
    def high_watermark(self) -> int:
        return self.machine.high_watermark

    @property
    def log_start_offset(self) -> int:
        """The first offset served: the log's first batch, or DeleteRecords' offset above it."""
        return max(self.log.log_start_offset, self.machine.log_start_floor)

    @property
    def is_leader(self) -> bool:
        return self.group.is_leader

    @property
    def isr(self) -> tuple[int, ...]:
        return self._isr.isr

    def update_isr(self, now: float, alive: typing.Callable[[int, float], bool]) -> tuple[int, ...]:
        """Recompute the ISR (leader only, no await: Raft's state cannot move meanwhile).
        alive(node, now) is node-level liveness (the runtime's)."""
        node = self.group.node
        progress = {peer: FollowerProgress(pr.match, alive(peer, now), pr.is_learner)
                    for peer, pr in node.progress().items()}
        return self._isr.update(now, term=node.term, leader=node.id, last_index=node.last_index(),
                                idle=self.group.quiesced, progress=progress)

    async def produce(self, records, headers: list[BatchHeader], acks: int,
                      verify: TxnVerifier | None = None, *, coordinator: bool = False) -> int:
        """Assign offsets, propose one entry per batch; wait per acks (-1: applied, i.e.
        committed; 1: durable in our own log; 0: nothing). Returns the first base offset.
        Idempotent batches are checked against the leader's producer view first: a retried
        batch is answered with its original offsets and not written again. A transactional
        batch that would open a transaction here is first confirmed by verify(producer id,
        epoch) (the coordinator, KIP-890), and appended only if no marker for the producer
        landed meanwhile. coordinator: a group coordinator's own transactional batch
        (TxnOffsetCommit's offsets, without sequence numbers): appended without the
        idempotent producer's duplicate and sequence checks, as Kafka appends it.
        Raises NotLeader, ProposalFailed (retriable), NotEnoughReplicas, ProducerError or
        TxnError."""
        try:
            txn = next((h for h in headers if h.attributes & ATTR_TRANSACTIONAL), None) if verify else None
            if txn is None:
                return await self._produce(records, headers, acks, None, coordinator)
            # A producer's transactional produces here are verified and proposed one at a
            # time, in the order they came: a client pipelines them (the Java client up to
            # five a connection), each one before the transaction opens here asks the
            # coordinator, and the answers come back in any order; appended in that order,
            # a later sequence would go first and the earlier be refused OUT_OF_ORDER.
            # The lock is let go once the batch is proposed, not when it commits.
            order = self._in_order.get(txn.producer_id)
            if order is None:
                order = self._in_order[txn.producer_id] = _ProducerOrder()
            order.users += 1
            released = False

            def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    order.lock.release()
            try:
                await order.lock.acquire()
                try:
                    guard = await self._verify_transaction(headers, verify)
                    return await self._produce(records, headers, acks, guard, coordinator, release)
                finally:
                    release()
            finally:
                order.users -= 1
                if not order.users:
                    del self._in_order[txn.producer_id]
        except ProposalFailed as exc:
            # Dropped while leadership moves (or already moved): send the client to the
            # leader (NOT_LEADER_OR_FOLLOWER); otherwise REQUEST_TIMED_OUT.
            if not self.is_leader or self.group.transfer_pending():
                raise ProposalFailed(str(exc), ErrorCode.not_leader_or_follower) from None
            raise

    async def _verify_transaction(self, headers: list[BatchHeader], verify: TxnVerifier) -> tuple | None:
        """None if no batch opens a transaction here, else the guard _produce checks:
        (term, producer id, epoch, markers seen for it before verifying)."""
        txn = next((h for h in headers if h.attributes & ATTR_TRANSACTIONAL), None)
        if txn is None:
            return None
        async with self.group.lock:
            self.group.check_leader()
            term = self.group.term
            txns = self._leader_view(term).txns
            if not txns.needs_verification(txn.producer_id, txn.producer_epoch):
                return None
            # the previous transaction's marker, if still due here, lands while the coordinator
            # is asked (it answers once that marker is durable): expected, not a reason to refuse
            seen = txns.markers_seen(txn.producer_id) + txns.markers_due(txn.producer_id, txn.producer_epoch)
        error = await verify(txn.producer_id, txn.producer_epoch)
        if error != ErrorCode.none:
            raise TxnRefused(f"{self.topic_name}-{self.partition}: the coordinator answered {error.name} "
                             f"for producer {txn.producer_id} epoch {txn.producer_epoch}", error)
        return term, txn.producer_id, txn.producer_epoch, seen

    async def _produce(self, records, headers: list[BatchHeader], acks: int, guard: tuple | None,
                       coordinator: bool = False, proposed: typing.Callable[[], None] | None = None) -> int:
        """proposed(): called once the batches are proposed (or found duplicates), before
        their commit is waited for."""
        batches = [idempotent_batch(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count,
                                    h.max_timestamp_ms) for h in headers]
        idempotent = any(batch is not None for batch in batches)
        async with self.group.lock:
            self.group.check_leader()
            min_insync = self.min_insync
            if acks == -1 and len(self.update_isr(trio.current_time(), self.alive)) < min_insync:
                raise NotEnoughReplicas(
                    f"{self.topic_name}-{self.partition}: in-sync replicas {list(self.isr)} are fewer "
                    f"than min.insync.replicas={min_insync}")
            term = self.group.term
            view = self._leader_view(term) if idempotent else None
            duplicate = view.producers.check(batches) if view is not None and not coordinator else None
            if duplicate is None:
                if view is not None:
                    view.check_transactions(headers, guard, term)
                bases = self._offsets.reserve(term, self.log.next_offset, [h.record_count for h in headers])
                payloads = [with_offsets(records, h, base, term) for h, base in zip(headers, bases)]
                waiter = self.group.propose_locked_many(payloads)  # all or nothing
                self._offsets.commit_reservation()
                # The view follows every batch this leader appends, not only the checked
                # ones: a caller may append a producer's batch unchecked (the group
                # coordinator's transactional offsets), and its marker must find it.
                view = view or (self._view if self._view_term == term else None)
                if view is not None:
                    view.apply(payloads, waiter.index - len(payloads) + 1)
        if proposed is not None:
            proposed()
        if duplicate is not None:
            log.debug("%s-%d: duplicate of the batch at offset %d (producer sequence %d..%d)",
                      self.topic_name, self.partition, duplicate.first_offset, duplicate.first_seq,
                      duplicate.last_seq)
            await self._wait_durable(duplicate.index, acks, term)
            return duplicate.first_offset
        self.group.wake_runtime()
        if acks == -1 or (acks == 1 and self.group.sole_voter):
            # With no other voter the commit follows the leader's own fsync at once, and
            # Kafka with a one-replica ISR moves the high watermark on the append: so acks=1
            # also waits for it, and a ListOffsets right after sees the records.
            await self.group.wait_applied(waiter)
        elif acks == 1:
            await self.group.wait_persisted(waiter.index)
        return bases[0]

    async def write_txn_marker(self, marker: TxnMarker, timestamp_ms: int) -> None:
        """Write a transaction's commit or abort marker (a control batch) through this
        partition's Raft group; returns once it is committed. Idempotent: with no open
        transaction of the producer here (the marker already written, or nothing written in
        the transaction) nothing is appended; it returns once everything this leader has
        in its log is committed, so an earlier copy of the marker is too.
        Raises NotLeader, ProposalFailed, MarkerEpochFenced or TransactionCoordinatorFenced."""
        try:
            await self._write_txn_marker(marker, timestamp_ms)
        except ProposalFailed as exc:
            if not self.is_leader or self.group.transfer_pending():
                raise ProposalFailed(str(exc), ErrorCode.not_leader_or_follower) from None
            raise

    async def _write_txn_marker(self, marker: TxnMarker, timestamp_ms: int) -> None:
        async with self.group.lock:
            self.group.check_leader()
            term = self.group.term
            view = self._leader_view(term)
            producer = view.producers.producers.get(marker.producer_id)
            view.txns.check_marker(marker, producer.epoch if producer is not None else -1)
            if view.txns.ongoing_start(marker.producer_id) < 0:
                waiter, index = None, self.group.node.last_index()
            else:
                batch = control_batch(marker, timestamp_ms)
                (base,) = self._offsets.reserve(term, self.log.next_offset, [1])
                payload = with_offsets(batch, read_header(batch), base, term)
                waiter = self.group.propose_locked_many([payload])
                self._offsets.commit_reservation()
                view.apply([payload], waiter.index)
        if waiter is None:
            await self._wait_durable(index, -1, term)
            return
        self.group.wake_runtime()
        await self.group.wait_applied(waiter)

    def _leader_view(self, term: int) -> "LeaderView":
        """The leader's producer and transaction view (call with the lock held): the
        applied states plus every entry of this leader's log not applied yet. A leader keeps
        every entry of its log, so they will commit, in this order; the view then grows
        with each proposal."""
        if self._view is None or self._view_term != term:
            txns = self.machine.transactions
            view = LeaderView(self.machine.states[ProducerStateTable.name].copy(),
                              txns.copy() if txns is not None else TransactionState())
            node = self.group.node
            low, high = self.machine.applied_index + 1, node.last_index() + 1
            for entry in (node.entries(low, high) if low < high else ()):
                if entry.data and entry.type == EntryType.NORMAL and \
                        batch_base_offset(entry.data) >= self.machine.state_end_offset:
                    view.apply([entry.data], entry.index)
            self._view, self._view_term = view, term
        return self._view

    async def _wait_durable(self, index: int, acks: int, term: int) -> None:
        """Wait, as a new batch at index would have been waited for, while this node leads
        in term: the answer to a duplicate promises what the original's answer promised."""
        if acks == 0:
            return
        if acks == 1 and not self.group.sole_voter:
            await self.group.wait_persisted(index)
        else:
            while self.machine.applied_index < index and self.is_leader and self.group.term == term:
                event = trio.Event()
                self.machine.watch(event)
                await event.wait()
        if not self.is_leader or self.group.term != term:
            raise ProposalFailed(f"{self.topic_name}-{self.partition}: leadership lost before the "
                                 f"original of a retried batch (entry {index}) was known committed")

    def describe_producers(self) -> list[tuple[ProducerEntry, int, int]]:
        """DescribeProducers: the leader's view of this partition's producers, each with
        its open transaction's first offset (-1: none) and last coordinator epoch."""
        fresh = self._view is not None and self._view_term == self.group.term
        table = self._view.producers if fresh else self.machine.states[ProducerStateTable.name]
        txns = self._view.txns if fresh else (self.machine.transactions or TransactionState())
        out = []
        for entry in table.producers.values():
            txn = txns.producers.get(entry.producer_id)
            out.append((entry, txn.first_offset if txn else -1, txn.coordinator_epoch if txn else -1))
        return out

    @property
    def last_stable_offset(self) -> int:
        return self.machine.last_stable_offset

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """The aborted transactions with records in [start_offset, end_offset)."""
        txns = self.machine.transactions
        return txns.aborted_between(start_offset, end_offset) if txns is not None else []

    def read(self, offset: int, max_bytes: int, *, committed_only: bool = False) -> list[memoryview]:
        """Whole batches from offset, below the high watermark, or with committed_only
        (read_committed) below the last stable offset. Raises OffsetOutOfRange."""
        if offset < self.machine.log_start_floor:
            # below the log start DeleteRecords set: those records are deleted
            raise storage.OffsetOutOfRange(offset, self.log_start_offset, self.high_watermark)
        end = self.last_stable_offset if committed_only else self.high_watermark
        if committed_only and offset >= end and offset <= self.high_watermark:
            return []  # waiting for the open transaction to end, not out of range
        return self.log.read_batches(offset, max_bytes=max_bytes, end_offset=end)

    def watch(self, event: trio.Event) -> None:
        self.machine.watch(event)

    def unwatch(self, event: trio.Event) -> None:
        self.machine.unwatch(event)

    @property
    def log_directory(self):
        return self.group.storage.directory

    async def apply_retention(self, now_ms: int, retention_bytes: int | None,
                              retention_ms: int | None) -> int:
        """Delete whole old segments. First a snapshot at the retention boundary, so that a
        follower still behind it is sent that snapshot (its log then starts where ours
        does) instead of entries that no longer exist. Only applied entries go."""
        async with self.group.lock:
            applied = self.group.node.applied_index
            boundary = self.log.retention_boundary(
                now_ms=now_ms, retention_bytes=retention_bytes, retention_ms=retention_ms,
                keep_from_index=applied + 1)
            deleted = await self._delete_segments_locked(boundary)
        if deleted:
            log.info("retention deleted %d segment(s) of %s-%d; log start offset now %d",
                     deleted, self.topic_name, self.partition, self.log.log_start_offset)
        return deleted

    async def _delete_segments_locked(self, boundary: int) -> int:
        """Snapshot at boundary - 1, then delete the segments wholly below boundary (a
        segment start). With the group's lock held."""
        storage = self.group.storage
        if boundary - 1 <= storage.snapshot_index:
            return 0
        next_offset = self._offset_at(boundary)
        conf_state = self.group.node.status().conf_state
        await self._run_sync(
            storage.create_snapshot, boundary - 1, conf_state,
            partition_snapshot_data(next_offset, self.machine.snapshot_state()))
        deleted = self.log.delete_before(boundary)
        txns = self.machine.transactions
        if deleted and txns is not None:  # the aborted index need not outlive the log
            txns.forget_before(self.log.log_start_offset)
        return deleted

    async def delete_records(self, offset: int) -> int:
        """DeleteRecords on the leader: commit a LOG_START entry moving the log start offset
        to offset (-1: the high watermark); every replica applies it. Returns the log start
        offset once applied here. Raises NotLeader, OffsetOutOfRange (above the high
        watermark) or ProposalFailed."""
        async with self.group.lock:
            self.group.check_leader()
            target = self.high_watermark if offset == -1 else offset
            if not 0 <= target <= self.high_watermark:
                raise storage.OffsetOutOfRange(offset, self.log_start_offset, self.high_watermark)
            if target <= self.log_start_offset:
                return self.log_start_offset
            waiter = self.group.propose_locked_many([LOG_START.pack(target)], EntryType.LOG_START)
        self.group.wake_runtime()
        await self.group.wait_applied(waiter)
        return self.log_start_offset

    async def delete_below_log_start(self) -> int:
        """Delete the segments wholly below the log start offset DeleteRecords set (on
        every replica, after it applied the LOG_START entry); a snapshot first, as retention."""
        async with self.group.lock:
            if self.closed:
                return 0
            floor = self.machine.log_start_floor
            if floor <= self.log.log_start_offset:
                return 0
            try:
                index = self.log.entry_index_for_offset(floor)
            except storage.OffsetOutOfRange:  # at the log's end: every batch goes
                index = self.log.last_index + 1
            boundary = self.log.segment_start(min(index, self.group.node.applied_index + 1))
            deleted = await self._delete_segments_locked(boundary)
        if deleted:
            log.info("DeleteRecords: deleted %d segment(s) of %s-%d below offset %d",
                     deleted, self.topic_name, self.partition, floor)
        return deleted

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (the largest epoch <= epoch in this log, the offset where
        it ended: the start of the next epoch, or the log end offset for the current one).
        (-1, -1) when the log holds no epoch that old. Epochs are Raft terms."""
        runs = [(start, term) for start, term in self.log.term_runs() if term <= epoch]
        if not runs:
            return -1, -1
        found = runs[-1][1]
        later = [start for start, term in self.log.term_runs() if term > found]
        if not later:
            return found, self._leader_end_offset()
        return found, self._offset_at(later[0])

    def _leader_end_offset(self) -> int:
        return self._offsets.end_offset(self.group.term, self.log.next_offset)

    def _offset_at(self, index: int) -> int:
        """The Kafka offset the log continues from at entry index (the end of the last
        batch before it)."""
        low = max(self.group.storage.first_index(), index - SCAN_BACK_ENTRIES_MAX)
        for i in range(index - 1, low - 1, -1):
            (entry,) = self.group.storage.entries(i, i + 1)
            if entry.data and entry.type == EntryType.NORMAL:
                return batch_end_offset(entry.data)
        return self.log.log_start_offset


TxnVerifier = typing.Callable[[int, int], typing.Awaitable[ErrorCode]]


class TxnRefused(InvalidTxnState):
    """The coordinator did not confirm the partition is in the producer's transaction; the
    produce is answered with the coordinator's code."""


class _ProducerOrder:
    """One producer's turn at a partition's transactional produces (PartitionReplica.produce):
    the lock, and how many produces hold or wait for it (the entry goes with the last)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0


class LeaderView:
    """A partition leader's producer table and transaction state: applied, plus its log's
    entries not applied yet (PartitionReplica._leader_view)."""

    def __init__(self, producers: ProducerStateTable, txns: TransactionState) -> None:
        self.producers = producers
        self.txns = txns

    def apply(self, payloads: typing.Sequence[bytes], first_index: int) -> None:
        for i, payload in enumerate(payloads):
            view = memoryview(payload)
            self.producers.apply(view, first_index + i)
            self.txns.apply(view, first_index + i)

    def check_transactions(self, headers: list[BatchHeader], guard: tuple | None, term: int) -> None:
        """Raises InvalidTxnState for a non-transactional batch of a producer in a
        transaction here, or for a verified batch whose transaction a marker ended while
        the coordinator was being asked (KIP-890's guard against hanging transactions)."""
        for h in headers:
            if h.producer_id != NO_PRODUCER_ID:
                self.txns.check_data(h.producer_id, bool(h.attributes & ATTR_TRANSACTIONAL))
        if guard is None:
            return
        guard_term, producer_id, epoch, seen = guard
        if not self.txns.needs_verification(producer_id, epoch):
            return  # another produce opened the transaction meanwhile
        if guard_term != term:
            raise ProposalFailed(f"producer {producer_id}: leadership changed while the partition was "
                                 f"being verified")
        if self.txns.markers_seen(producer_id) != seen:
            raise InvalidTxnState(f"producer {producer_id} epoch {epoch}: a marker ended its transaction "
                                  f"while the partition was being verified (or an earlier one's is missing)")
