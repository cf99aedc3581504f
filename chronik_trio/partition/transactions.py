"""Transactions, the partition's pure part: ongoing transactions, the last stable offset and
the aborted-transactions index, derived from the partition's committed batches.

Kafka's rules (KIP-98, ProducerStateManager and TransactionIndex), as a function of the log,
so every replica applying the same committed batches holds the same state:

- a transactional data batch (attributes bit 4) of a producer id with no ongoing
  transaction here starts one at the batch's base offset;
- an empty batch (no records: only the log cleaner makes them, from a batch whose records
  it removed or a marker it removed) neither starts nor ends one;
- a control batch (attributes bits 4 and 5: a commit or abort marker, one record whose key
  is version int16 + type int16, 0 abort / 1 commit, and whose value is version int16 +
  coordinator epoch int32) ends the producer's ongoing transaction; an abort adds
  (producer id, first offset, marker offset) to the aborted index, in marker order;
- the last stable offset (LSO) is the smallest first offset of the ongoing transactions,
  else the high watermark. A transaction starts at the offset the high watermark has just
  reached, so the LSO never moves backwards (tests/partition/test_transactions.py).

What a leader checks before it writes (node/partition_group.py does the writing):
- a marker whose producer epoch is older than the producer's is refused
  (InvalidProducerEpoch), one whose coordinator epoch is older than the last marker's
  (TransactionCoordinatorFenced);
- a non-transactional batch from a producer with an ongoing transaction is refused
  (InvalidTxnState).

Nothing here touches files, sockets, clocks or trio.
"""

from __future__ import annotations

import bisect
import struct
import typing

import attrs
from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError
from chronik_trio.pb import partition_pb2
from chronik_trio.record_batch import (ATTR_CONTROL, ATTR_TRANSACTIONAL, HEADER_BYTES, NO_PRODUCER_ID, NO_SEQUENCE,
                                       encode_batch, read_header)
from chronik_trio.varint import VarintError, read_varint, write_uvarint

CONTROL_ABORT, CONTROL_COMMIT = 0, 1  # Kafka's ControlRecordType
CONTROL_KEY = struct.Struct(">hh")  # version, type
MARKER_VALUE = struct.Struct(">hi")  # version, coordinator epoch (EndTransactionMarker v0)
CONTROL_VERSION = 0
NO_COORDINATOR_EPOCH = -1
EXPIRY_CHECK_EVERY = 1024  # transactional batches and markers applied between expiry sweeps


class TxnError(BrokerError):
    """A transactional write or marker refused by the partition's rules; nothing written."""


class InvalidTxnState(TxnError):
    error_code = ErrorCode.invalid_txn_state


class TransactionCoordinatorFenced(TxnError):
    error_code = ErrorCode.transaction_coordinator_fenced


class MarkerEpochFenced(TxnError):
    error_code = ErrorCode.invalid_producer_epoch


class MalformedControlBatch(TxnError):
    error_code = ErrorCode.invalid_record


def _tuple_of_pairs(partitions: typing.Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    return tuple((str(topic), int(partition)) for topic, partition in partitions)


@attrs.frozen(slots=True)
class TxnMarker:
    """A transaction's end, to be written to each of `partitions` by its leader
    (Node.write_txn_markers): commit or abort, with the coordinator's epoch."""

    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int
    partitions: tuple[tuple[str, int], ...] = attrs.field(converter=_tuple_of_pairs)


@attrs.frozen(slots=True)
class AbortedTxn:
    """One entry of the aborted index: the producer's records from first_offset up to the
    abort marker at last_offset are not to be served to read_committed consumers."""

    producer_id: int
    first_offset: int
    last_offset: int


@attrs.frozen(slots=True)
class ControlMarker:
    """What a control batch says."""

    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int


def is_control(attributes: int) -> bool:
    return bool(attributes & ATTR_CONTROL)


def _zigzag(n: int) -> bytes:
    return write_uvarint((n << 1) ^ (n >> 63))


def control_batch(marker: TxnMarker, timestamp_ms: int) -> bytes:
    """The control batch of a marker, as Kafka writes it: attributes transactional +
    control, the producer id and epoch, no sequence, one record (key: version + type;
    value: version + coordinator epoch). baseOffset is the leader's to set."""
    key = CONTROL_KEY.pack(CONTROL_VERSION, CONTROL_COMMIT if marker.commit else CONTROL_ABORT)
    value = MARKER_VALUE.pack(CONTROL_VERSION, marker.coordinator_epoch)
    body = b"\x00" + _zigzag(0) + _zigzag(0) + _zigzag(len(key)) + key + _zigzag(len(value)) + value + _zigzag(0)
    record = _zigzag(len(body)) + body
    return encode_batch(record, record_count=1, base_timestamp_ms=timestamp_ms, max_timestamp_ms=timestamp_ms,
                        attributes=ATTR_TRANSACTIONAL | ATTR_CONTROL, producer_id=marker.producer_id,
                        producer_epoch=marker.producer_epoch, base_sequence=NO_SEQUENCE)


def read_control(data: bytes | memoryview) -> ControlMarker | None:
    """The marker a control batch carries; None for a control batch of another type (Kafka
    has others, e.g. leader change, which say nothing about transactions).
    Raises MalformedControlBatch for bytes that do not parse."""
    view = memoryview(data)
    h = read_header(view)
    try:
        _, pos = read_varint(view, HEADER_BYTES)  # record length
        pos += 1  # record attributes
        _, pos = read_varint(view, pos)  # timestamp delta
        _, pos = read_varint(view, pos)  # offset delta
        key_len, pos = read_varint(view, pos)
        if key_len < CONTROL_KEY.size:
            raise MalformedControlBatch(f"control record key of {key_len} bytes")
        _, kind = CONTROL_KEY.unpack_from(view, pos)
        pos += key_len
        if kind not in (CONTROL_ABORT, CONTROL_COMMIT):
            return None
        value_len, pos = read_varint(view, pos)
        if value_len < MARKER_VALUE.size:
            raise MalformedControlBatch(f"transaction marker value of {value_len} bytes")
        _, coordinator_epoch = MARKER_VALUE.unpack_from(view, pos)
    except (VarintError, struct.error, IndexError) as exc:
        raise MalformedControlBatch(f"control batch does not parse: {exc}") from None
    return ControlMarker(h.producer_id, h.producer_epoch, kind == CONTROL_COMMIT, coordinator_epoch)


@attrs.define(slots=True)
class TxnProducer:
    """A producer's transactional state on this partition."""

    producer_id: int
    epoch: int
    first_offset: int = -1  # of its ongoing transaction; -1: none
    coordinator_epoch: int = NO_COORDINATOR_EPOCH  # of the last marker written for it
    last_timestamp: int = -1  # the newest batch's max timestamp: for expiry, by the log's clock
    # Markers applied for it in this (leader) view: a produce verified with the coordinator
    # is appended only if no marker came in between (KIP-890's verification guard).
    markers_seen: int = 0

    def clone(self) -> "TxnProducer":
        return TxnProducer(self.producer_id, self.epoch, self.first_offset, self.coordinator_epoch,
                           self.last_timestamp, self.markers_seen)


class TransactionState:
    """The transactions of one partition (a BatchState, partition/state.py): apply() is
    every replica's, the check_* methods are the leader's (on its view: a copy of the
    applied state with its log's unapplied entries applied too)."""

    name = "transactions"

    def __init__(self, expiration_ms: int = 86_400_000) -> None:
        """expiration_ms: a producer with no open transaction is forgotten this long (by
        the log's clock: the largest batch timestamp applied) after its last batch, as
        Kafka's producer.id.expiration.ms forgets producer state."""
        self.expiration_ms = expiration_ms
        self.log_time_ms = -1
        self._since_sweep = 0
        self.producers: dict[int, TxnProducer] = {}
        self.open: dict[int, int] = {}  # producer id -> first offset, the open transactions only
        self.aborted: list[AbortedTxn] = []  # by last offset (markers come in log order)
        self._aborted_last: list[int] = []  # their last offsets, for bisect

    # --- every replica -----------------------------------------------------------------------

    def apply(self, data: memoryview, index: int) -> None:
        h = read_header(data)
        if not h.attributes & ATTR_TRANSACTIONAL or h.producer_id == NO_PRODUCER_ID:
            return
        self._tick(h.max_timestamp_ms)
        if not h.record_count:
            # Only the log cleaner writes empty batches (produce refuses them): a batch whose
            # records it removed, or a marker it removed once no record of its transaction
            # was left (docs/compaction.md). Neither opens nor ends a transaction (there is
            # nothing left to serve or hide); their producer epoch and time still count.
            entry = self.producers.get(h.producer_id)
            if entry is None:
                entry = self.producers[h.producer_id] = TxnProducer(h.producer_id, h.producer_epoch)
            entry.epoch = max(entry.epoch, h.producer_epoch)
            entry.last_timestamp = max(entry.last_timestamp, h.max_timestamp_ms)
            return
        if h.attributes & ATTR_CONTROL:
            marker = read_control(data)
            if marker is not None:
                entry = self._end(marker, h.base_offset)
                entry.last_timestamp = max(entry.last_timestamp, h.max_timestamp_ms)
            return
        entry = self.producers.get(h.producer_id)
        if entry is None:
            entry = self.producers[h.producer_id] = TxnProducer(h.producer_id, h.producer_epoch)
        entry.last_timestamp = max(entry.last_timestamp, h.max_timestamp_ms)
        entry.epoch = max(entry.epoch, h.producer_epoch)
        if entry.first_offset < 0:
            entry.first_offset = self.open[h.producer_id] = h.base_offset

    def _tick(self, timestamp_ms: int) -> None:
        self.log_time_ms = max(self.log_time_ms, timestamp_ms)
        self._since_sweep += 1
        if self._since_sweep >= EXPIRY_CHECK_EVERY:
            self.expire()

    def expire(self) -> list[int]:
        """Forget the producers without an open transaction whose last batch is older
        than the expiration by the log's clock (the same on every replica)."""
        self._since_sweep = 0
        horizon = self.log_time_ms - self.expiration_ms
        gone = [pid for pid, e in self.producers.items() if e.first_offset < 0 and e.last_timestamp < horizon]
        for pid in gone:
            del self.producers[pid]
        return gone

    def _end(self, marker: ControlMarker, offset: int) -> TxnProducer:
        entry = self.producers.get(marker.producer_id)
        if entry is None:
            entry = self.producers[marker.producer_id] = TxnProducer(marker.producer_id, marker.producer_epoch)
        if entry.first_offset >= 0 and not marker.commit:
            self.aborted.append(AbortedTxn(marker.producer_id, entry.first_offset, offset))
            self._aborted_last.append(offset)
        entry.first_offset = -1
        self.open.pop(marker.producer_id, None)
        entry.epoch = max(entry.epoch, marker.producer_epoch)
        entry.coordinator_epoch = max(entry.coordinator_epoch, marker.coordinator_epoch)
        entry.markers_seen += 1
        return entry

    # --- what readers ask --------------------------------------------------------------------

    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest ongoing transaction, or None."""
        return min(self.open.values()) if self.open else None

    def last_stable_offset(self, high_watermark: int) -> int:
        first = self.first_unstable_offset()
        return high_watermark if first is None else min(first, high_watermark)

    def ongoing_start(self, producer_id: int) -> int:
        """The first offset of the producer's ongoing transaction, or -1."""
        entry = self.producers.get(producer_id)
        return entry.first_offset if entry is not None else -1

    def aborted_between(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """The aborted transactions with records in [start_offset, end_offset): what a
        read_committed fetch of that range must be told."""
        i = bisect.bisect_left(self._aborted_last, start_offset)
        return [a for a in self.aborted[i:] if a.first_offset < end_offset]

    def forget_aborted(self, producer_id: int, marker_offset: int) -> None:
        """Drop the aborted entry whose abort marker at marker_offset the log cleaner removed
        (its records went before it): a read_committed consumer told of an aborted
        transaction skips the producer's batches until it reads that marker, so an entry
        without its marker would hide the producer's later transactions. A replica replaying
        the cleaned log never adds it (partition/transactions.py, empty batches)."""
        i = bisect.bisect_left(self._aborted_last, marker_offset)
        while i < len(self.aborted) and self._aborted_last[i] == marker_offset:
            if self.aborted[i].producer_id == producer_id:
                del self.aborted[i], self._aborted_last[i]
                return
            i += 1

    def forget_before(self, offset: int) -> None:
        """Drop aborted entries wholly below offset (the log no longer holds them)."""
        i = bisect.bisect_left(self._aborted_last, offset)
        if i:
            del self.aborted[:i], self._aborted_last[:i]

    # --- the leader's checks -----------------------------------------------------------------

    def check_data(self, producer_id: int, transactional: bool) -> None:
        """A data batch of producer_id; raises InvalidTxnState for a non-transactional
        batch while the producer has a transaction ongoing here."""
        if not transactional and self.ongoing_start(producer_id) >= 0:
            raise InvalidTxnState(f"producer {producer_id} has a transaction ongoing here and sent a "
                                  f"non-transactional batch")

    def needs_verification(self, producer_id: int, epoch: int) -> bool:
        """A transactional batch that would start a transaction here (KIP-890 part 1: the
        coordinator must confirm the partition is in the producer's transaction)."""
        entry = self.producers.get(producer_id)
        return entry is None or entry.first_offset < 0 or entry.epoch != epoch

    def markers_seen(self, producer_id: int) -> int:
        entry = self.producers.get(producer_id)
        return entry.markers_seen if entry is not None else 0

    def markers_due(self, producer_id: int, epoch: int) -> int:
        """Markers that must land before a transactional batch of `epoch` can open a
        transaction here: 1 while the producer's previous transaction, of an older epoch, is
        still open here (transaction version 2: EndTxn is answered before its markers, and
        the coordinator confirms the next transaction's first batch here once they are
        durable), else 0. The verification guard expects exactly these."""
        entry = self.producers.get(producer_id)
        return 1 if entry is not None and entry.first_offset >= 0 and entry.epoch < epoch else 0

    def check_marker(self, marker: TxnMarker, producer_epoch: int) -> None:
        """A marker to write; producer_epoch is the producer's current epoch here (-1:
        unknown). Raises MarkerEpochFenced or TransactionCoordinatorFenced."""
        entry = self.producers.get(marker.producer_id)
        current = max(producer_epoch, entry.epoch if entry is not None else -1)
        if marker.producer_epoch < current:
            raise MarkerEpochFenced(f"marker for producer {marker.producer_id} with epoch "
                                    f"{marker.producer_epoch}, older than its epoch {current}")
        if entry is not None and marker.coordinator_epoch < entry.coordinator_epoch:
            raise TransactionCoordinatorFenced(
                f"marker for producer {marker.producer_id} from coordinator epoch {marker.coordinator_epoch}, "
                f"older than {entry.coordinator_epoch}")

    # --- snapshots and the leader's view -----------------------------------------------------

    def copy(self) -> "TransactionState":
        state = TransactionState(self.expiration_ms)
        state.log_time_ms, state._since_sweep = self.log_time_ms, self._since_sweep
        state.producers = {pid: e.clone() for pid, e in self.producers.items()}
        state.open = dict(self.open)
        state.aborted, state._aborted_last = list(self.aborted), list(self._aborted_last)
        return state

    def encode(self) -> bytes:
        msg = partition_pb2.TransactionStates(log_time_ms=self.log_time_ms)
        for e in self.producers.values():
            msg.producers.add(producer_id=e.producer_id, epoch=e.epoch, first_offset=e.first_offset,
                              coordinator_epoch=e.coordinator_epoch, last_timestamp=e.last_timestamp)
        for a in self.aborted:
            msg.aborted.add(producer_id=a.producer_id, first_offset=a.first_offset, last_offset=a.last_offset)
        return msg.SerializeToString()

    def decode(self, data: bytes) -> None:
        msg = partition_pb2.TransactionStates.FromString(data)
        self.log_time_ms = msg.log_time_ms
        self.producers = {p.producer_id: TxnProducer(p.producer_id, p.epoch, p.first_offset, p.coordinator_epoch,
                                                     p.last_timestamp) for p in msg.producers}
        self.open = {p.producer_id: p.first_offset for p in msg.producers if p.first_offset >= 0}
        self.aborted = [AbortedTxn(a.producer_id, a.first_offset, a.last_offset) for a in msg.aborted]
        self._aborted_last = [a.last_offset for a in self.aborted]
