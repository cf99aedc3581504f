"""Idempotent producers, the pure part: per producer id, its epoch and its last five batches.

Kafka's rules (ProducerStateManager, KIP-98 and KIP-360), as a function of the partition's
log: every replica applies the same committed batches in the same order, so every replica
holds the same table, and a new leader has it the moment it is elected. The leader checks
a produce against its own view: this table plus the entries it has in its log but not yet
applied (proposed in flight, or left uncommitted by the previous leader; a leader never
drops entries of its own log, so whatever is in it will be committed in that order).

The checks, in Kafka's order, for a batch (producer id, epoch, first and last sequence):
1. producer id -1: not idempotent, nothing is checked or kept;
2. the same epoch, and the same first and last sequence as one of the last five batches:
   a duplicate, answered with that batch's offsets and not appended again;
3. an epoch older than the producer's: InvalidProducerEpoch;
4. a newer epoch (or a producer never seen): accepted only from sequence 0, unless the
   producer is unknown here (no state: never written, or expired), which Kafka 2.5+
   accepts at any sequence (KIP-360);
5. the same epoch: the first sequence must follow the last one (wrapping after 2**31-1),
   else OutOfOrderSequence.

Nothing here touches files, sockets, clocks or trio. Expiry uses the log's own clock: the
largest batch timestamp applied, so it is the same on every replica.
"""

from __future__ import annotations

import typing

import attrs
from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError
from chronik_trio.pb import partition_pb2
from chronik_trio.record_batch import ATTR_CONTROL, NO_PRODUCER_ID, NO_SEQUENCE, read_header

BATCHES_KEPT = 5  # max.in.flight.requests.per.connection's limit for idempotent producers
INT32_MAX = 2**31 - 1
DEFAULT_EXPIRATION_MS = 86_400_000  # Kafka's producer.id.expiration.ms
EXPIRY_CHECK_EVERY = 1024  # batches applied between expiry sweeps



class ProducerError(BrokerError):
    """A produce that breaks the sequence rules; nothing of it is appended."""


class OutOfOrderSequence(ProducerError):
    error_code = ErrorCode.out_of_order_sequence_number


class InvalidProducerEpoch(ProducerError):
    error_code = ErrorCode.invalid_producer_epoch


def next_sequence(sequence: int, increment: int = 1) -> int:
    """The sequence after `sequence` by `increment`, wrapping past 2**31-1 to 0."""
    return (sequence + increment) % (INT32_MAX + 1)


def last_sequence(base_sequence: int, record_count: int) -> int:
    return next_sequence(base_sequence, record_count - 1)


def in_sequence(last_seq: int, first_seq: int) -> bool:
    return first_seq == next_sequence(last_seq) if last_seq != NO_SEQUENCE else first_seq == 0


@attrs.frozen(slots=True)
class BatchMeta:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    index: int  # the Raft entry that holds it: a duplicate waits for it to commit


@attrs.define(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int
    last_timestamp: int
    batches: list[BatchMeta]

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    def duplicate_of(self, epoch: int, first_seq: int, last_seq: int) -> BatchMeta | None:
        if epoch != self.epoch:
            return None
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None

    def clone(self) -> "ProducerEntry":
        return ProducerEntry(self.producer_id, self.epoch, self.last_timestamp, list(self.batches))


@attrs.frozen(slots=True)
class IdempotentBatch:
    """What the rules look at in one batch."""
    producer_id: int
    epoch: int
    first_seq: int
    last_seq: int
    max_timestamp: int


def idempotent_batch(producer_id: int, epoch: int, base_sequence: int, record_count: int,
                     max_timestamp: int) -> IdempotentBatch | None:
    if producer_id == NO_PRODUCER_ID:
        return None
    return IdempotentBatch(producer_id, epoch, base_sequence,
                           last_sequence(base_sequence, record_count), max_timestamp)


class ProducerStateTable:
    """The producer state of one partition. apply() is the replica side (committed batches,
    recorded without checks, as Kafka's replicas do); check() and record() are the leader's."""

    name = "producers"

    def __init__(self, expiration_ms: int = DEFAULT_EXPIRATION_MS) -> None:
        self.expiration_ms = expiration_ms
        self.producers: dict[int, ProducerEntry] = {}
        self.log_time_ms = -1
        self._since_sweep = 0

    # --- the leader's checks -----------------------------------------------------------------

    def check(self, batches: typing.Sequence[IdempotentBatch | None]) -> BatchMeta | None:
        """Check a produce's batches in order. Returns the original of a duplicate (then
        nothing of the request is appended, as Kafka does), else None: all may be appended.
        Raises OutOfOrderSequence or InvalidProducerEpoch."""
        scratch: dict[int, ProducerEntry] = {}  # later batches of one request see earlier ones
        for position, batch in enumerate(batches):
            if batch is None:
                continue
            entry = scratch.get(batch.producer_id) or self.producers.get(batch.producer_id)
            if entry is not None:
                duplicate = entry.duplicate_of(batch.epoch, batch.first_seq, batch.last_seq)
                if duplicate is not None:
                    return duplicate
            self._check_one(entry, batch)
            entry = entry.clone() if entry is not None else ProducerEntry(batch.producer_id, batch.epoch, -1, [])
            _add(entry, batch, BatchMeta(batch.first_seq, batch.last_seq, -1, -1, 0))
            scratch[batch.producer_id] = entry
        return None

    @staticmethod
    def _check_one(entry: ProducerEntry | None, batch: IdempotentBatch) -> None:
        if entry is None:
            return  # no state here: any sequence (KIP-360)
        if batch.epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"producer {batch.producer_id}: epoch {batch.epoch} is older than the current {entry.epoch}")
        if batch.epoch != entry.epoch:
            if batch.first_seq != 0:
                raise OutOfOrderSequence(
                    f"producer {batch.producer_id}: a new epoch {batch.epoch} must start at sequence 0, "
                    f"not {batch.first_seq}")
            return
        if not in_sequence(entry.last_seq, batch.first_seq):
            raise OutOfOrderSequence(
                f"producer {batch.producer_id} epoch {batch.epoch}: sequence {batch.first_seq} does not "
                f"follow {entry.last_seq}")

    def record(self, batch: IdempotentBatch, first_offset: int, last_offset: int, index: int) -> None:
        """A batch appended to the log (the leader after check(), or a replica applying)."""
        entry = self.producers.get(batch.producer_id)
        if entry is None:
            entry = self.producers[batch.producer_id] = ProducerEntry(batch.producer_id, batch.epoch, -1, [])
        _add(entry, batch, BatchMeta(batch.first_seq, batch.last_seq, first_offset, last_offset, index))
        if batch.max_timestamp > self.log_time_ms:
            self.log_time_ms = batch.max_timestamp
        self._since_sweep += 1
        if self._since_sweep >= EXPIRY_CHECK_EVERY:
            self.expire()

    # --- the replica side (partition_group.PartitionMachine's BatchState) --------------------

    def apply(self, data: memoryview, index: int) -> None:
        """A committed v2 batch (an entry's data) at Raft index `index`."""
        h = read_header(data)
        if h.producer_id == NO_PRODUCER_ID:
            return
        if h.attributes & ATTR_CONTROL or h.base_sequence == NO_SEQUENCE:
            # a marker, or a coordinator's batch for the producer (transactional offsets):
            # no sequence to follow, only the epoch
            self._marker(h.producer_id, h.producer_epoch, h.max_timestamp_ms)
            return
        batch = IdempotentBatch(h.producer_id, h.producer_epoch, h.base_sequence,
                                last_sequence(h.base_sequence, h.last_offset_delta + 1), h.max_timestamp_ms)
        self.record(batch, h.base_offset, h.last_offset, index)

    def _marker(self, producer_id: int, epoch: int, timestamp_ms: int) -> None:
        """A transaction marker (control batch): it has no sequence, but a newer epoch in it
        (a coordinator that bumped the epoch, or TV2's epoch per transaction) fences the
        producer's older epoch here and starts its sequence over, as Kafka's markers do."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id, epoch, -1, [])
        elif epoch > entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        entry.last_timestamp = max(entry.last_timestamp, timestamp_ms)

    def expire(self) -> list[int]:
        """Forget producers whose newest batch is older than the expiration by the log's clock."""
        self._since_sweep = 0
        horizon = self.log_time_ms - self.expiration_ms
        gone = [pid for pid, e in self.producers.items() if e.last_timestamp < horizon]
        for pid in gone:
            del self.producers[pid]
        return gone

    def copy(self) -> "ProducerStateTable":
        table = ProducerStateTable(self.expiration_ms)
        table.producers = {pid: e.clone() for pid, e in self.producers.items()}
        table.log_time_ms, table._since_sweep = self.log_time_ms, self._since_sweep
        return table

    def encode(self) -> bytes:
        msg = partition_pb2.ProducerStates(log_time_ms=self.log_time_ms)
        for e in self.producers.values():
            pe = msg.producers.add(producer_id=e.producer_id, epoch=e.epoch, last_timestamp=e.last_timestamp)
            for b in e.batches:
                pe.batches.add(first_seq=b.first_seq, last_seq=b.last_seq, first_offset=b.first_offset,
                               last_offset=b.last_offset, index=b.index)
        return msg.SerializeToString()

    def decode(self, data: bytes) -> None:
        msg = partition_pb2.ProducerStates.FromString(data)
        self.log_time_ms = msg.log_time_ms
        self.producers = {
            pe.producer_id: ProducerEntry(pe.producer_id, pe.epoch, pe.last_timestamp, [
                BatchMeta(b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.index) for b in pe.batches])
            for pe in msg.producers}


def _add(entry: ProducerEntry, batch: IdempotentBatch, meta: BatchMeta) -> None:
    if batch.epoch != entry.epoch:
        entry.epoch = batch.epoch
        entry.batches.clear()  # a new epoch starts the sequence over
    entry.batches.append(meta)
    if len(entry.batches) > BATCHES_KEPT:
        del entry.batches[0]
    if batch.max_timestamp > entry.last_timestamp:
        entry.last_timestamp = batch.max_timestamp
