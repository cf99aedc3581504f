"""The transaction coordinator's pure state machine (chronik_trio/txn/): the transition
table, fencing by epoch, TV2's epoch bump, timeouts, records and the derived store."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from kio.schema.errors import ErrorCode

from chronik_trio.group import GroupStore, OffsetRecord
from chronik_trio.group.store import offsets_batch
from chronik_trio.partition.transactions import TxnMarker, control_batch
from chronik_trio.txn import TxnState, TxnStore, txn_batch
from chronik_trio.txn import state as ts

pytestmark = pytest.mark.timeout(120)

MAX_TIMEOUT = 900_000
S = TxnState
TP = [("a", 0), ("a", 1), ("b", 0)]


def _init(current, *, expected=(-1, -1), now=0, new_pid=7, timeout=60_000):
    return ts.init_producer_id(current, "t", timeout, expected_producer_id=expected[0], expected_epoch=expected[1],
                               now_ms=now, new_producer_id=new_pid, max_timeout_ms=MAX_TIMEOUT)


def test_the_table_is_kafkas():
    assert ts.is_valid_transition(S.ONGOING, S.PREPARE_COMMIT)
    assert not ts.is_valid_transition(S.EMPTY, S.PREPARE_COMMIT)
    assert not ts.is_valid_transition(S.PREPARE_COMMIT, S.COMPLETE_ABORT)
    assert not ts.is_valid_transition(S.ONGOING, S.DEAD)
    assert ts.is_valid_transition(S.PREPARE_EPOCH_FENCE, S.PREPARE_ABORT)
    with pytest.raises(ts.IllegalTransition):
        ts.complete(_init(None).write, 0)  # Empty -> CompleteAbort


def test_a_committed_transaction():
    meta = _init(None).write
    assert (meta.producer_id, meta.producer_epoch, meta.state) == (7, 0, S.EMPTY)
    added = ts.add_partitions(meta, 7, 0, frozenset(TP[:2]), 100)
    assert added.error == ErrorCode.none and added.write.state == S.ONGOING and added.write.start_ms == 100
    again = ts.add_partitions(added.write, 7, 0, frozenset(TP[:1]), 150)
    assert again.error == ErrorCode.none and again.write is None  # nothing new to write
    ended = ts.end_txn(added.write, 7, 0, True, 200)
    assert ended.write.state == S.PREPARE_COMMIT and ended.markers == ts.Marker(7, 0, True, frozenset(TP[:2]))
    # EndTxn is answered once the prepare is durable; until the markers are written and the
    # transaction completed, the id's next requests wait (CONCURRENT_TRANSACTIONS), an abort
    # of the decided commit too: it is refused only once the outcome is complete.
    assert ts.end_txn(ended.write, 7, 0, True, 210).error == ErrorCode.concurrent_transactions
    assert ts.end_txn(ended.write, 7, 0, False, 210).error == ErrorCode.concurrent_transactions
    assert ts.add_partitions(ended.write, 7, 0, frozenset(TP), 210).error == ErrorCode.concurrent_transactions
    assert _init(ended.write, expected=(7, 0)).error == ErrorCode.concurrent_transactions
    done = ts.complete(ended.write, 220)
    assert done.state == S.COMPLETE_COMMIT and not done.partitions
    assert ts.end_txn(done, 7, 0, True, 230).error == ErrorCode.none  # retry after completion
    assert ts.end_txn(done, 7, 0, False, 230).error == ErrorCode.invalid_txn_state


def test_bad_input():
    meta = _init(None).write
    assert _init(None, timeout=MAX_TIMEOUT + 1).error == ErrorCode.invalid_transaction_timeout
    assert _init(None, timeout=0).error == ErrorCode.invalid_transaction_timeout
    assert ts.end_txn(meta, 7, 0, True, 0).error == ErrorCode.invalid_txn_state  # nothing to commit
    assert ts.end_txn(None, 7, 0, True, 0).error == ErrorCode.invalid_producer_id_mapping
    assert ts.add_partitions(None, 7, 0, frozenset(TP), 0).error == ErrorCode.invalid_producer_id_mapping
    assert ts.add_partitions(meta, 8, 0, frozenset(TP), 0).error == ErrorCode.invalid_producer_id_mapping
    bumped = _init(meta).write
    assert bumped.producer_epoch == 1
    assert ts.add_partitions(bumped, 7, 0, frozenset(TP), 0).error == ErrorCode.producer_fenced
    assert ts.verify_partition(bumped, 7, 1, TP[0]) == ErrorCode.invalid_txn_state
    ongoing = ts.add_partitions(bumped, 7, 1, frozenset(TP[:1]), 0).write
    assert ts.verify_partition(ongoing, 7, 1, TP[0]) == ErrorCode.none
    assert ts.verify_partition(ongoing, 7, 1, TP[1]) == ErrorCode.invalid_txn_state
    assert ts.verify_partition(ongoing, 7, 0, TP[0]) == ErrorCode.producer_fenced


def test_a_new_holder_fences_an_ongoing_transaction():
    ongoing = ts.add_partitions(_init(None).write, 7, 0, frozenset(TP), 10).write
    fenced = _init(ongoing, now=20)
    assert fenced.error == ErrorCode.concurrent_transactions
    assert fenced.write.state == S.PREPARE_ABORT and fenced.write.producer_epoch == 1
    assert fenced.markers == ts.Marker(7, 1, False, frozenset(TP))
    assert _init(fenced.write).error == ErrorCode.concurrent_transactions  # until the abort is complete
    done = ts.complete(fenced.write, 30)
    again = _init(done, now=40)
    assert again.error == ErrorCode.none and (again.producer_id, again.producer_epoch) == (7, 2)
    assert ts.end_txn(again.write, 7, 0, False, 50).error == ErrorCode.producer_fenced  # the old holder


def test_expected_epoch_and_retries():
    meta = _init(None).write
    bumped = _init(meta, expected=(7, 0))
    assert (bumped.producer_epoch, bumped.write.last_producer_epoch) == (1, 0)
    retry = _init(bumped.write, expected=(7, 0))
    assert retry.error == ErrorCode.none and retry.write is None and retry.producer_epoch == 1
    assert _init(bumped.write, expected=(7, 5)).error == ErrorCode.producer_fenced


def test_epoch_exhaustion_takes_a_new_producer_id():
    meta = ts.TxnMetadata("t", 7, ts.EPOCH_MAX - 1, 1000, S.COMPLETE_COMMIT)
    assert ts.needs_new_producer_id(meta)
    fresh = _init(meta, new_pid=99)
    assert (fresh.producer_id, fresh.producer_epoch) == (99, 0)


def test_tv2_bumps_the_epoch_per_end_txn():
    ongoing = ts.add_partitions(_init(None).write, 7, 0, frozenset(TP), 10, tv2=True).write
    ended = ts.end_txn(ongoing, 7, 0, True, 20, tv2=True)
    assert (ended.producer_id, ended.producer_epoch) == (7, 1) and ended.markers.producer_epoch == 1
    assert ts.end_txn(ended.write, 7, 0, True, 25, tv2=True).error == ErrorCode.concurrent_transactions
    done = ts.complete(ended.write, 30)
    retry = ts.end_txn(done, 7, 0, True, 40, tv2=True)  # the retry carries the epoch before the bump
    assert retry.error == ErrorCode.none and retry.producer_epoch == 1
    # the next transaction runs at epoch 1; an abort of an empty one still bumps
    empty_abort = ts.end_txn(done, 7, 1, False, 50, tv2=True)
    assert empty_abort.write.state == S.PREPARE_ABORT and empty_abort.producer_epoch == 2
    assert not empty_abort.markers.partitions
    assert ts.add_partitions(done, 7, 0, frozenset(TP), 60).error == ErrorCode.producer_fenced


def test_tv2_epoch_overflow_moves_to_a_new_producer_id():
    """KIP-890: at an exhausted epoch a TV2 EndTxn writes its markers with Short.MAX_VALUE
    and answers a new producer id at epoch 0; that id waits (CONCURRENT_TRANSACTIONS) until
    the markers are written, then owns the transactional id; a retry of the EndTxn is
    answered the new pair."""
    at_limit = ts.TxnMetadata("t", 7, ts.EPOCH_MAX - 1, 1000, S.ONGOING, frozenset(TP), start_ms=5, tv2=True)
    assert ts.end_txn_needs_new_producer_id(at_limit, True) and not ts.end_txn_needs_new_producer_id(at_limit, False)
    assert ts.end_txn(at_limit, 7, ts.EPOCH_MAX - 1, True, 10, tv2=True).error == ErrorCode.producer_fenced
    ended = ts.end_txn(at_limit, 7, ts.EPOCH_MAX - 1, True, 10, tv2=True, new_producer_id=99)
    assert ended.error == ErrorCode.none and (ended.producer_id, ended.producer_epoch) == (99, 0)
    assert (ended.markers.producer_id, ended.markers.producer_epoch) == (7, ts.EPOCH_MAX)
    prepared = ended.write
    assert ts.add_partitions(prepared, 99, 0, frozenset(TP), 15, tv2=True).error == ErrorCode.concurrent_transactions
    assert ts.end_txn(prepared, 99, 0, False, 15, tv2=True).error == ErrorCode.concurrent_transactions
    done = ts.complete(prepared, 20)
    assert (done.producer_id, done.producer_epoch, done.next_producer_id) == (99, 0, ts.NO_PRODUCER_ID)
    retry = ts.end_txn(done, 7, ts.EPOCH_MAX - 1, True, 25, tv2=True)
    assert retry.error == ErrorCode.none and (retry.producer_id, retry.producer_epoch) == (99, 0)
    assert ts.add_partitions(done, 99, 0, frozenset(TP), 30, tv2=True).write.state == S.ONGOING
    assert ts.add_partitions(done, 7, ts.EPOCH_MAX, frozenset(TP), 30).error == ErrorCode.invalid_producer_id_mapping
    restored = TxnStore()
    restored.apply(memoryview(txn_batch("t", prepared, 10)), 1)
    assert restored.get("t") == prepared  # the next id survives a coordinator failover


def test_timeouts_and_expiry():
    ongoing = ts.add_partitions(_init(None).write, 7, 0, frozenset(TP), 1000).write
    assert not ts.timed_out(ongoing, 1000 + 59_999) and ts.timed_out(ongoing, 1000 + 60_000)
    aborted = ts.fence_and_abort(ongoing, 61_000)
    assert aborted.write.state == S.PREPARE_ABORT and aborted.markers.producer_epoch == 1
    done = ts.complete(aborted.write, 61_500)
    assert not ts.expired(ongoing, 10**12, 1000)  # never while a transaction is in flight
    assert ts.expired(done, 61_500 + 1000, 1000) and ts.dead(done, 62_500).state == S.DEAD


# --- properties: any sequence of client calls --------------------------------------------------

OPS = st.lists(st.tuples(
    st.sampled_from(["init", "init_expected", "add", "commit", "abort", "complete", "timeout", "expire"]),
    st.integers(0, 3),  # epoch offset / partition pick
    st.booleans(),  # tv2
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_no_client_call_breaks_the_table_and_epochs_never_go_back(ops):
    """Whatever clients send, every decision is a legal transition (or an error), epochs of
    one producer id never decrease, a fenced epoch is refused, and the store derived from the
    written batches equals the coordinator's latest state."""
    meta = None
    store = TxnStore()
    now, next_pid, index = 0, 100, 0
    for op, n, tv2 in ops:
        now += 1000
        decision = None
        if op in ("init", "init_expected"):
            expected = (meta.producer_id, meta.producer_epoch - n % 2) if meta is not None and op == "init_expected" \
                else (-1, -1)
            decision = _init(meta, expected=expected, now=now, new_pid=next_pid)
            next_pid += 1
        elif op == "add" and meta is not None:
            decision = ts.add_partitions(meta, meta.producer_id, meta.producer_epoch - (n == 3),
                                         frozenset([TP[n % 3]]), now, tv2=tv2)
        elif op in ("commit", "abort") and meta is not None:
            decision = ts.end_txn(meta, meta.producer_id, meta.producer_epoch - (n == 3), op == "commit", now,
                                  tv2=tv2 and meta.tv2, new_producer_id=next_pid)
            next_pid += 1
        elif op == "complete" and meta is not None and meta.state in ts.PREPARED:
            decision = ts.Decision(ErrorCode.none, ts.complete(meta, now))
        elif op == "timeout" and meta is not None and ts.timed_out(meta, now + 10**9):
            decision = ts.fence_and_abort(meta, now)
        elif op == "expire" and meta is not None and ts.expired(meta, now, 0):
            meta = None
            index += 1
            store.apply(memoryview(txn_batch("t", None, now)), index)
            continue
        if decision is None:
            continue
        if meta is not None and n == 3 and op in ("add", "commit", "abort") and meta.producer_epoch > 0 \
                and decision.error == ErrorCode.none:
            # an old epoch only passes as a TV2 retry of a finished EndTxn
            assert op in ("commit", "abort") and meta.tv2 and decision.write is None
        if decision.write is not None:
            new = decision.write
            if meta is not None:
                assert ts.is_valid_transition(meta.state, new.state) or meta.state == S.ONGOING
                if new.producer_id == meta.producer_id:
                    assert new.producer_epoch >= meta.producer_epoch
            if decision.markers is not None:
                assert new.state in ts.PREPARED
                assert decision.markers.partitions == new.partitions
                assert decision.markers.producer_epoch == new.producer_epoch
            meta = new
            index += 1
            store.apply(memoryview(txn_batch("t", meta, now)), index)
        assert store.get("t") == meta
    restored = TxnStore()
    restored.decode(store.encode())
    assert restored.txns == store.txns


def test_the_store_skips_what_it_cannot_read():
    store = TxnStore()
    store.apply(memoryview(b"\x00" * 10), 1)
    assert store.skipped_records == 1 and not store.txns


def test_offsets_in_a_transaction_count_only_once_it_commits():
    """GroupStore (group/store.py): TxnOffsetCommit's transactional batch is pending until
    its producer's commit marker; an abort marker drops it; pending offsets survive a
    snapshot."""
    store = GroupStore()

    def txn_commit(pid, offset, index):
        batch = offsets_batch("g", [("t", 0, OffsetRecord(offset, -1, None, 1))], 1, producer=(pid, 0))
        store.apply(memoryview(batch), index)

    def marker(pid, commit, index):
        store.apply(memoryview(control_batch(TxnMarker(pid, 0, commit, 1, [("__consumer_offsets", 0)]), 1)), index)

    txn_commit(5, 10, 1)
    txn_commit(6, 99, 2)  # another producer's transaction, to be aborted
    assert store.committed("g") == {} and store.unstable("g") == {("t", 0)}
    restored = GroupStore()
    restored.decode(store.encode())
    assert restored.pending == store.pending
    marker(5, True, 3)
    assert store.committed("g")[("t", 0)].offset == 10
    marker(6, False, 4)
    assert store.committed("g")[("t", 0)].offset == 10 and store.unstable("g") == set()
    marker(5, True, 5)  # a repeated marker changes nothing
    assert store.committed("g")[("t", 0)].offset == 10 and store.skipped_records == 0


def test_a_complete_record_and_the_next_ongoing_one_in_one_batch():
    """The coordinator writes a transaction's Complete record and the next transaction's
    Ongoing record (an add that waited for the completion) as one batch: every replica's
    store applies them in order and keeps the Ongoing one."""
    meta = _init(None).write
    prepared = ts.end_txn(ts.add_partitions(meta, 7, 0, frozenset(TP[:1]), 10).write, 7, 0, True, 20).write
    completed = ts.complete(prepared, 30)
    ongoing = ts.add_partitions(completed, 7, 0, frozenset(TP[1:]), 30).write
    assert ongoing.state == S.ONGOING and ongoing.partitions == frozenset(TP[1:]) and ongoing.start_ms == 30
    store = TxnStore()
    store.apply(memoryview(txn_batch("t", prepared, 20)), 1)
    store.apply(memoryview(txn_batch("t", completed, 30, ongoing)), 2)
    assert store.get("t") == ongoing
