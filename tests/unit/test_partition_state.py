"""The pure partition logic: high watermark, offset reservations, the ISR rule."""

import struct

from chronik_trio.partition.state import (FollowerProgress, HighWatermark, InSyncReplicas,
                                          OffsetAssigner, batch_end_offset)
from tests.kafka_wire import Record, build_batch


def _batch(base, count):
    return build_batch([Record(None, b"v")] * count, base_offset=base)


def test_the_high_watermark_is_the_end_of_the_last_applied_batch():
    hw = HighWatermark(log_start_offset=5)
    assert hw.offset == 5
    assert hw.apply([_batch(5, 3), b"", _batch(8, 2)]) == [8, None, 10]
    assert hw.offset == 10 and batch_end_offset(_batch(8, 2)) == 10
    assert hw.apply([b""]) == [None] and hw.offset == 10  # a leader's no-op moves nothing
    hw.restore(7)
    assert hw.offset == 10  # never backwards
    hw.restore(50)
    assert hw.offset == 50


def test_offsets_continue_from_the_log_end_in_a_new_term_and_from_reservations_within_one():
    assigner = OffsetAssigner()
    assert assigner.reserve(term=3, log_next_offset=100, record_counts=[2, 5]) == [100, 102]
    assigner.commit_reservation()
    assert assigner.end_offset(3, log_next_offset=100) == 107
    # Not yet persisted: the log still says 100, the leader continues at 107.
    assert assigner.reserve(term=3, log_next_offset=100, record_counts=[1]) == [107]
    # A dropped proposal (no commit_reservation) hands the same offsets out again.
    assert assigner.reserve(term=3, log_next_offset=100, record_counts=[1]) == [107]
    # A new term starts from the log's end.
    assert assigner.reserve(term=4, log_next_offset=104, record_counts=[1]) == [104]


def _progress(**matches):
    return {int(k[1:]): FollowerProgress(v[0], v[1], False) for k, v in matches.items()}


def test_a_follower_leaves_the_isr_after_the_lag_time_and_returns_when_caught_up():
    isr = InSyncReplicas(lag_time_s=10)
    kw = dict(term=1, leader=1, idle=False)
    assert isr.update(0, last_index=10, progress=_progress(n1=(10, True), n2=(10, True), n3=(10, True)), **kw) == (1, 2, 3)
    # Node 3 stops at 10. At t=5 it still has all the leader had at t=0 (10): caught up then.
    assert isr.update(5, last_index=20, progress=_progress(n1=(20, True), n2=(20, True), n3=(10, True)), **kw) == (1, 2, 3)
    assert isr.update(14, last_index=30, progress=_progress(n1=(30, True), n2=(30, True), n3=(12, True)), **kw) == (1, 2, 3)
    # More than the lag time since it was last caught up (t=5): out.
    assert isr.update(16, last_index=31, progress=_progress(n1=(31, True), n2=(31, True), n3=(12, True)), **kw) == (1, 2)
    # It catches up with what the leader had at the previous check (31): back in.
    assert isr.update(17, last_index=32, progress=_progress(n1=(32, True), n2=(32, True), n3=(31, True)), **kw) == (1, 2, 3)


def test_an_inactive_follower_is_out_at_once_and_a_new_term_starts_with_everyone():
    isr = InSyncReplicas(lag_time_s=10)
    progress = _progress(n1=(5, True), n2=(5, True), n3=(5, False))
    assert isr.update(0, term=1, leader=1, last_index=5, idle=False, progress=progress) == (1, 2)
    progress = _progress(n1=(5, True), n2=(5, True), n3=(0, True))
    assert isr.update(100, term=2, leader=2, last_index=5, idle=False, progress=progress) == (1, 2, 3)
