"""Offsets are contiguous; the high watermark only moves to committed entry ends."""

from chronik_trio.partition.state import PartitionState


def test_offsets_are_contiguous_and_the_high_watermark_follows_commits():
    s = PartitionState(log_start_offset=0, next_offset=10, leader_epoch=1)
    assert s.high_watermark == 10
    b1 = s.assign(5); s.appended(3, b1 + 5)
    b2 = s.assign(2); s.appended(4, b2 + 2)
    assert (b1, b2, s.next_offset) == (10, 15, 17)
    assert s.high_watermark == 10
    assert s.committed(3) and s.high_watermark == 15
    assert not s.committed(3)
    assert s.committed(10) and s.high_watermark == 17


def test_non_data_entries_between_batches_do_not_move_the_high_watermark():
    s = PartitionState(log_start_offset=0, next_offset=0, leader_epoch=1)
    s.appended(2, s.assign(1) + 1)
    assert not s.committed(1)  # index 1 was e.g. a leader's empty entry
    assert s.committed(2) and s.high_watermark == 1
