"""The partition's transaction state (partition/transactions.py): markers in Kafka's wire
format, ongoing transactions, the last stable offset, the aborted index, snapshots; and, by
Hypothesis over random logs, that the LSO never moves backwards, that it never passes the
first record of an unfinished transaction, and that restoring a snapshot then applying the
rest gives the state of applying everything."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronik_trio.partition.transactions import (AbortedTxn, MalformedControlBatch, MarkerEpochFenced,
                                                 TransactionCoordinatorFenced, TransactionState, TxnMarker,
                                                 control_batch, read_control)
from chronik_trio.record_batch import ATTR_CONTROL, ATTR_TRANSACTIONAL, read_header
from chronik_trio.storage.cleaner import rebuild_batch
from tests.kafka_wire import Record, build_batch, parse_batches

pytestmark = pytest.mark.timeout(60)


def data(offset: int, pid: int, *, count: int = 1, epoch: int = 0, transactional: bool = True,
         ts: int = 1_000) -> bytes:
    return build_batch([Record(None, b"x")] * count, base_offset=offset, producer_id=pid, producer_epoch=epoch,
                       base_sequence=0, attributes=ATTR_TRANSACTIONAL if transactional else 0, base_timestamp_ms=ts)


def marker(offset: int, pid: int, commit: bool, *, epoch: int = 0, coordinator_epoch: int = 0,
           ts: int = 1_000) -> bytes:
    batch = bytearray(control_batch(TxnMarker(pid, epoch, commit, coordinator_epoch, []), ts))
    batch[:8] = offset.to_bytes(8, "big", signed=True)
    return bytes(batch)


class Log:
    """A partition's committed log applied to a TransactionState, with its high watermark."""

    def __init__(self) -> None:
        self.state = TransactionState()
        self.hw = 0
        self.index = 0

    def append(self, batch: bytes) -> None:
        self.index += 1
        self.state.apply(memoryview(batch), self.index)
        self.hw = read_header(batch).last_offset + 1

    @property
    def lso(self) -> int:
        return self.state.last_stable_offset(self.hw)


def test_a_marker_is_kafkas_control_batch_and_reads_back():
    batch = control_batch(TxnMarker(7, 3, True, 11, [("t", 0)]), 1_000)
    h = read_header(batch)
    assert h.attributes == ATTR_TRANSACTIONAL | ATTR_CONTROL
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.record_count) == (7, 3, -1, 1)
    (parsed,) = parse_batches(batch)
    assert parsed.crc_ok
    (record,) = parsed.records
    assert record.key == b"\x00\x00\x00\x01"  # version 0, type 1 (commit)
    assert record.value == b"\x00\x00\x00\x00\x00\x0b"  # version 0, coordinator epoch 11
    m = read_control(batch)
    assert (m.producer_id, m.producer_epoch, m.commit, m.coordinator_epoch) == (7, 3, True, 11)
    assert read_control(control_batch(TxnMarker(7, 3, False, 0, []), 1)).commit is False


def test_a_truncated_control_record_is_refused_not_crashed_on():
    batch = control_batch(TxnMarker(7, 3, True, 11, []), 1_000)
    with pytest.raises(MalformedControlBatch):
        read_control(batch[:-8])


def test_lso_holds_at_an_open_transaction_and_moves_with_its_marker():
    log = Log()
    log.append(data(0, 1, transactional=False))
    assert log.lso == 1
    log.append(data(1, 5, count=2))  # pid 5 opens at 1
    log.append(data(3, 6))  # pid 6 opens at 3
    log.append(data(4, 5))  # pid 5 continues
    assert (log.hw, log.lso) == (5, 1)
    assert log.state.ongoing_start(5) == 1
    log.append(marker(5, 5, commit=True))
    assert log.lso == 3  # pid 6 still open
    log.append(marker(6, 6, commit=False))
    assert (log.hw, log.lso) == (7, 7)
    assert log.state.aborted == [AbortedTxn(6, 3, 6)]
    assert log.state.first_unstable_offset() is None


def test_aborted_between_answers_overlapping_transactions_only():
    log = Log()
    log.append(data(0, 1))
    log.append(marker(1, 1, commit=False))  # aborted [0, 1]
    log.append(data(2, 2, count=3))
    log.append(data(5, 3))
    log.append(marker(6, 3, commit=False))  # aborted [5, 6]
    log.append(marker(7, 2, commit=False))  # aborted [2, 7]
    assert log.state.aborted_between(0, 2) == [AbortedTxn(1, 0, 1)]
    assert log.state.aborted_between(2, 5) == [AbortedTxn(2, 2, 7)]
    assert log.state.aborted_between(5, 8) == [AbortedTxn(3, 5, 6), AbortedTxn(2, 2, 7)]
    assert log.state.aborted_between(8, 9) == []
    log.state.forget_before(2)
    assert log.state.aborted_between(0, 9) == [AbortedTxn(3, 5, 6), AbortedTxn(2, 2, 7)]


def test_a_marker_without_an_open_transaction_changes_no_offsets():
    log = Log()
    log.append(marker(0, 9, commit=False, epoch=2, coordinator_epoch=4))
    assert (log.lso, log.state.aborted) == (1, [])
    assert log.state.producers[9].coordinator_epoch == 4


def test_stale_markers_are_refused():
    log = Log()
    log.append(data(0, 5, epoch=3))
    log.append(marker(1, 5, commit=True, epoch=3, coordinator_epoch=2))
    with pytest.raises(MarkerEpochFenced):
        log.state.check_marker(TxnMarker(5, 2, True, 2, []), producer_epoch=3)
    with pytest.raises(TransactionCoordinatorFenced):
        log.state.check_marker(TxnMarker(5, 3, True, 1, []), producer_epoch=3)
    log.state.check_marker(TxnMarker(5, 4, False, 2, []), producer_epoch=3)  # a bumped epoch (TV2) is fine


def test_a_non_transactional_batch_during_a_transaction_is_refused_and_verification_is_asked_once():
    log = Log()
    assert log.state.needs_verification(5, 0)
    log.append(data(0, 5))
    assert not log.state.needs_verification(5, 0)
    assert log.state.needs_verification(5, 1)  # another epoch: another transaction
    with pytest.raises(Exception) as refused:
        log.state.check_data(5, transactional=False)
    assert refused.value.error_code == 48  # INVALID_TXN_STATE
    log.state.check_data(5, transactional=True)
    seen = log.state.markers_seen(5)
    log.append(marker(1, 5, commit=True))
    assert log.state.markers_seen(5) == seen + 1 and log.state.needs_verification(5, 0)


def test_producers_without_an_open_transaction_expire_by_the_logs_clock():
    state = TransactionState(expiration_ms=1_000)
    for i, batch in enumerate([data(0, 1, ts=0), marker(1, 1, commit=True, ts=0), data(2, 2, ts=0),
                               data(3, 3, ts=5_000)]):
        state.apply(memoryview(batch), i + 1)
    assert state.expire() == [1]  # 2 is old too, but its transaction is open
    assert sorted(state.producers) == [2, 3] and state.first_unstable_offset() == 2
    restored = TransactionState(expiration_ms=1_000)
    restored.decode(state.encode())
    assert restored.log_time_ms == 5_000 and restored.expire() == []


# --- random logs -----------------------------------------------------------------------------

# A step: (producer id, kind) with kind "data", "plain" (non-transactional), "commit", "abort".
steps = st.lists(st.tuples(st.integers(1, 4), st.sampled_from(["data", "data", "plain", "commit", "abort"]),
                           st.integers(1, 3)), max_size=60)


def build_log(plan) -> list[bytes]:
    batches, offset, open_ = [], 0, set()
    for pid, kind, count in plan:
        if kind == "plain" and pid in open_:
            continue  # the leader refuses it (check_data)
        if kind in ("data", "plain"):
            batches.append(data(offset, pid, count=count, transactional=kind == "data"))
            offset += count
            if kind == "data":
                open_.add(pid)
        else:
            batches.append(marker(offset, pid, commit=kind == "commit"))
            offset += 1
            open_.discard(pid)
    return batches


@settings(max_examples=150, deadline=None)
@given(steps)
def test_lso_never_moves_backwards_nor_past_an_open_transaction(plan):
    log, previous, opened = Log(), 0, {}
    for batch in build_log(plan):
        h = read_header(batch)
        log.append(batch)
        if h.attributes & ATTR_CONTROL:
            opened.pop(h.producer_id, None)
        elif h.attributes & ATTR_TRANSACTIONAL:
            opened.setdefault(h.producer_id, h.base_offset)
        assert log.lso >= previous, (previous, log.lso)
        assert log.lso == min([log.hw, *opened.values()])
        previous = log.lso


@settings(max_examples=100, deadline=None)
@given(steps, st.integers(0, 60))
def test_snapshot_then_the_rest_equals_applying_everything(plan, cut):
    batches = build_log(plan)
    cut = min(cut, len(batches))
    whole = TransactionState()
    for i, b in enumerate(batches):
        whole.apply(memoryview(b), i + 1)
    first = TransactionState()
    for i, b in enumerate(batches[:cut]):
        first.apply(memoryview(b), i + 1)
    restored = TransactionState()
    restored.decode(first.encode())
    for i, b in enumerate(batches[cut:], start=cut):
        restored.apply(memoryview(b), i + 1)
    assert restored.aborted == whole.aborted
    assert {p: (e.epoch, e.first_offset, e.coordinator_epoch) for p, e in restored.producers.items()} == \
           {p: (e.epoch, e.first_offset, e.coordinator_epoch) for p, e in whole.producers.items()}
    assert restored.aborted_between(0, 10**9) == whole.aborted_between(0, 10**9)
    assert restored.open == whole.open and restored.first_unstable_offset() == whole.first_unstable_offset()


def test_the_previous_transactions_marker_is_due_before_a_newer_epoch_opens_one():
    """Transaction version 2: EndTxn is answered before its markers, so a producer's next
    transaction (its epoch one higher) may be verified here while the previous one is still
    open: exactly one marker, that one, is then due; none otherwise."""
    log = Log()
    assert log.state.markers_due(5, 0) == 0  # unknown producer
    log.append(data(0, 5, epoch=3))  # transaction at epoch 3 opens
    assert (log.state.markers_due(5, 4), log.state.markers_due(5, 3)) == (1, 0)
    seen = log.state.markers_seen(5)
    log.append(marker(1, 5, True, epoch=4))  # its marker, with the TV2 bumped epoch
    assert log.state.markers_seen(5) == seen + 1 and log.state.markers_due(5, 4) == 0
    assert log.state.needs_verification(5, 4)  # the next transaction opens after verification


def test_empty_batches_left_by_the_cleaner_neither_open_nor_end_a_transaction():
    """The log cleaner empties the batches of a transaction whose records are all gone and,
    past its delete horizon, its marker (docs/compaction.md); replaying such a log opens no
    transaction that nothing closes, hides nothing, and keeps the marker's producer epoch."""
    log = Log()
    log.append(rebuild_batch(data(0, 7), read_header(data(0, 7)), []))  # an aborted txn's, emptied
    log.append(rebuild_batch(marker(1, 7, False, epoch=4), read_header(marker(1, 7, False)), []))
    assert log.state.open == {} and log.lso == 2 and log.state.aborted_between(0, 2) == []
    assert log.state.producers[7].epoch == 4
    log.append(rebuild_batch(data(2, 8), read_header(data(2, 8)), []))  # a committed txn's, emptied
    log.append(data(3, 8))  # its second batch, still holding a record: the transaction starts here
    assert log.state.open == {8: 3} and log.lso == 3
    log.append(marker(4, 8, True))
    assert log.state.open == {} and log.lso == 5


def test_the_aborted_entry_of_a_removed_abort_marker_is_forgotten():
    log = Log()
    for batch in (data(0, 7), marker(1, 7, False), data(2, 8), marker(3, 8, False), data(4, 7), marker(5, 7, False)):
        log.append(batch)
    log.state.forget_aborted(7, 1)
    log.state.forget_aborted(8, 1)  # not this producer's marker: nothing
    assert log.state.aborted_between(0, 6) == [AbortedTxn(8, 2, 3), AbortedTxn(7, 4, 5)]
