"""The Raft view of SegmentLog: append, read, terms, rolling, truncation, compaction."""

from __future__ import annotations

import pytest

from chronik_trio.storage import (
    CompactedError,
    Disk,
    EntryTooLargeError,
    EntryType,
    InvalidBatchError,
    LogEntry,
    UnavailableError,
)
from chronik_trio.storage.frame import FRAME_BYTES_MAX, FRAME_HEADER_BYTES
from tests.storage.helpers import batch_entries, make_batch, payload_for, raw_entries


def seg_files(log):
    return sorted(p.name for p in log.directory.iterdir() if p.suffix == ".seg")


def test_new_log_is_empty_with_one_segment(open_log):
    log = open_log()
    assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
    assert log.entries(1, 1) == []
    assert log.term(0) == 0
    assert seg_files(log) == [f"{1:020d}.seg"]


def test_append_then_read_round_trips_every_field(open_log):
    log = open_log()
    entries = raw_entries(1, 5, term=3) + [
        LogEntry(6, 4, EntryType.CONF_CHANGE, b"conf"),
        LogEntry(7, 4, EntryType.CONF_CHANGE_V2, b""),
    ]
    log.append(entries)
    got = log.entries(1, 8)
    assert [(e.index, e.term, e.type, bytes(e.payload)) for e in got] == \
        [(e.index, e.term, e.type, bytes(e.payload)) for e in entries]
    assert (log.last_index, log.last_term) == (7, 4)
    assert [log.term(i) for i in range(1, 8)] == [3] * 5 + [4, 4]


def test_term_outside_the_log_raises_named_errors(open_log):
    log = open_log(segment_bytes_max=2000)
    log.append(raw_entries(1, 3))
    with pytest.raises(UnavailableError):
        log.term(4)
    log.append(raw_entries(4, 100, size=200))
    log.compact_prefix(50)
    assert log.first_index > 1
    with pytest.raises(CompactedError):
        log.term(1)
    with pytest.raises(CompactedError):
        log.entries(1, 3)
    with pytest.raises(UnavailableError):
        log.entries(log.first_index, log.last_index + 2)


def test_entries_max_bytes_returns_at_least_one(open_log):
    log = open_log()
    log.append(raw_entries(1, 10, size=100))
    frame = FRAME_HEADER_BYTES + 100
    assert [e.index for e in log.entries(1, 11, max_bytes=1)] == [1]
    assert [e.index for e in log.entries(3, 11, max_bytes=3 * frame)] == [3, 4, 5]
    assert [e.index for e in log.entries(3, 11, max_bytes=3 * frame - 1)] == [3, 4]
    assert len(log.entries(1, 11)) == 10


def test_appends_roll_segments_at_the_size_bound(open_log):
    log = open_log(segment_bytes_max=1000)
    frame = FRAME_HEADER_BYTES + 100
    log.append(raw_entries(1, 25, size=100))
    per_segment = 1000 // frame
    assert log.segment_count == -(-25 // per_segment)
    names = seg_files(log)
    assert names[1] == f"{per_segment + 1:020d}.seg"
    assert all((log.directory / n).stat().st_size <= 1000 for n in names)
    got = log.entries(1, 26)
    assert [bytes(e.payload) for e in got] == [payload_for(i, 100) for i in range(1, 26)]


def test_an_entry_larger_than_a_segment_gets_a_segment_of_its_own(open_log):
    log = open_log(segment_bytes_max=500)
    log.append(raw_entries(1, 2, size=100))
    log.append([LogEntry(3, 1, 0, b"x" * 2000)])
    log.append(raw_entries(4, 1, size=100))
    assert log.segment_count == 3
    assert len(log.entries(3, 4)[0].payload) == 2000
    assert bytes(log.entries(4, 5)[0].payload) == payload_for(4, 100)


def test_reopen_recovers_exactly(open_log):
    log = open_log(segment_bytes_max=700)
    log.append(raw_entries(1, 20, term=1, size=60))
    log.append(raw_entries(21, 10, term=2, size=60))
    before = [(e.index, e.term, bytes(e.payload)) for e in log.entries(1, 31)]
    log.sync()
    log.close()
    log = open_log(segment_bytes_max=700, durable_index=30)
    assert (log.first_index, log.last_index, log.last_term) == (1, 30, 2)
    assert [(e.index, e.term, bytes(e.payload)) for e in log.entries(1, 31)] == before
    log.append(raw_entries(31, 1, term=3))
    assert log.term(31) == 3


def test_truncate_suffix_across_segments(open_log):
    log = open_log(segment_bytes_max=500)
    log.append(raw_entries(1, 30, size=100))
    assert log.segment_count > 3
    log.truncate_suffix(7)
    assert log.last_index == 6
    assert log.segment_count == 2
    log.append(raw_entries(7, 3, term=5))
    assert [e.term for e in log.entries(5, 10)] == [1, 1, 5, 5, 5]
    log.sync()
    log.close()
    log = open_log(segment_bytes_max=500, durable_index=9)
    assert (log.last_index, log.last_term) == (9, 5)
    assert bytes(log.entries(9, 10)[0].payload) == payload_for(9)


def test_truncate_suffix_at_a_segment_boundary_and_to_empty(open_log):
    log = open_log(segment_bytes_max=500)
    log.append(raw_entries(1, 12, size=100))
    second_first = int(seg_files(log)[1][:20])
    log.truncate_suffix(second_first)
    assert log.last_index == second_first - 1
    assert log.segment_count == 1
    log.truncate_suffix(1)
    assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
    log.append(raw_entries(1, 2, term=7))
    assert log.last_term == 7


def test_compact_prefix_deletes_whole_old_segments_only(open_log):
    log = open_log(segment_bytes_max=500)
    log.append(raw_entries(1, 30, term=2, size=100))
    firsts = [int(n[:20]) for n in seg_files(log)]
    assert log.compact_prefix(firsts[2] + 1) == firsts[2]
    assert seg_files(log)[0] == f"{firsts[2]:020d}.seg"
    assert log.term(firsts[2] - 1) == 2
    # The active segment is never deleted.
    assert log.compact_prefix(10_000) == firsts[-1]
    assert log.last_index == 30
    log.close()
    log = open_log(segment_bytes_max=500, durable_index=30)
    assert (log.first_index, log.last_index) == (firsts[-1], 30)


def test_reset_to_restarts_the_log_after_a_snapshot(open_log):
    log = open_log()
    log.append(raw_entries(1, 5))
    log.reset_to(100, 9)
    assert (log.first_index, log.last_index, log.last_term) == (101, 100, 9)
    assert log.term(100) == 9
    log.append(raw_entries(101, 2, term=10))
    log.sync()
    log.close()
    log = open_log(durable_index=102)
    assert (log.first_index, log.last_index, log.last_term) == (101, 102, 10)


def test_partition_log_rejects_non_batches_before_writing(open_log):
    log = open_log(kafka=True)
    with pytest.raises(InvalidBatchError):
        log.append([LogEntry(1, 1, 0, b"short")])
    bad_magic = bytearray(make_batch(0))
    bad_magic[16] = 1
    with pytest.raises(InvalidBatchError):
        log.append([LogEntry(1, 1, 0, bytes(bad_magic))])
    log.append(batch_entries(1, 10, 1))
    with pytest.raises(InvalidBatchError):  # offsets go backwards
        log.append(batch_entries(2, 0, 1))
    assert log.last_index == 1 and log.size_bytes == FRAME_HEADER_BYTES + 100


def test_oversized_entry_is_refused(open_log):
    log = open_log()

    class Huge(bytes):
        def __len__(self):
            return FRAME_BYTES_MAX

    log2 = open_log("rolling", segment_bytes_max=200)
    for lg in (log, log2):
        with pytest.raises(EntryTooLargeError):
            lg.append(raw_entries(1, 5, size=100) + [LogEntry(6, 1, 0, Huge())])
        assert lg.last_index == 0 and lg.size_bytes == 0 and lg.segment_count == 1


def test_reset_partition_log_reports_the_snapshot_next_offset(open_log):
    log = open_log(kafka=True)
    log.append(batch_entries(1, 0, 3))
    log.reset_to(50, 4, next_offset=200)
    assert (log.log_start_offset, log.next_offset) == (200, 200)
    log.sync()
    log.close()
    log = open_log(kafka=True, durable_index=50, empty_next_offset=200)
    assert (log.first_index, log.last_index, log.next_offset) == (51, 50, 200)
    log.append(batch_entries(51, 200, 1))
    assert (log.log_start_offset, log.next_offset) == (200, 203)


class CountingDisk(Disk):
    def __init__(self) -> None:
        self.pwritev_calls = 0

    def pwritev(self, f, buffers, offset):
        self.pwritev_calls += 1
        super().pwritev(f, buffers, offset)


def test_one_write_per_append_per_segment(open_log):
    disk = CountingDisk()
    log = open_log(disk=disk, segment_bytes_max=1000)
    log.append(raw_entries(1, 5, size=100))
    assert disk.pwritev_calls == 1
    log.append(raw_entries(6, 10, size=100))  # fills the first segment, rolls once
    assert disk.pwritev_calls == 3 and log.segment_count == 2


def test_entries_read_from_one_log_append_to_another(open_log):
    leader = open_log("leader", kafka=True)
    leader.append(batch_entries(1, 0, 5))
    follower = open_log("follower", kafka=True)
    follower.append(leader.entries(1, 6))  # memoryview payloads, as replication passes them
    assert [bytes(b) for b in follower.read_batches(0, max_bytes=10**6, end_offset=15)] == \
        [bytes(b) for b in leader.read_batches(0, max_bytes=10**6, end_offset=15)]
