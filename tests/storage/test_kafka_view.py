"""The Kafka view of a partition log: read_batches, timestamps, offsets, retention."""

from __future__ import annotations

import struct

import pytest

from chronik_trio.storage import CompactedError, LogEntry, OffsetOutOfRange
from tests.storage.helpers import batch_entries, make_batch


def bases(batches):
    return [struct.unpack_from(">q", b)[0] for b in batches]


@pytest.fixture
def plog(open_log):
    """A partition log: 40 batches of 3 offsets (0..119), no-op entries every 10th index,
    small segments and a fine sparse index so reads cross blocks and segments."""
    log = open_log(kafka=True, segment_bytes_max=1500, index_interval_bytes=250)
    index, offset = 1, 0
    for chunk in range(4):
        log.append([LogEntry(index, 1, 0, b"")])
        index += 1
        log.append(batch_entries(index, offset, 10, timestamp_ms=1_000 + 100 * chunk))
        index += 10
        offset += 30
    assert (log.log_start_offset, log.next_offset, log.last_index) == (0, 120, 44)
    assert log.segment_count > 3
    return log


def test_new_partition_log_has_offsets_zero(open_log):
    log = open_log(kafka=True)
    assert (log.log_start_offset, log.next_offset) == (0, 0)
    assert log.read_batches(0, max_bytes=100, end_offset=0) == []
    with pytest.raises(OffsetOutOfRange):
        log.read_batches(1, max_bytes=100, end_offset=10)


def test_empty_payloads_and_conf_changes_carry_no_offsets(open_log):
    log = open_log(kafka=True)
    log.append([LogEntry(1, 1, 0, b""), LogEntry(2, 1, 1, b"conf-change-bytes")])
    assert log.next_offset == 0
    log.append(batch_entries(3, 0, 1))
    assert log.next_offset == 3


@pytest.mark.parametrize("start", [0, 1, 2, 3, 44, 59, 60, 61, 100, 119])
def test_read_batches_starts_at_the_batch_holding_start_offset(plog, start):
    got = bases(plog.read_batches(start, max_bytes=10**6, end_offset=120))
    assert got == list(range(start - start % 3, 120, 3))


def test_read_batches_respects_max_bytes_in_whole_batches(plog):
    assert bases(plog.read_batches(0, max_bytes=300, end_offset=120)) == [0, 3, 6]
    assert bases(plog.read_batches(0, max_bytes=299, end_offset=120)) == [0, 3]
    assert bases(plog.read_batches(31, max_bytes=250, end_offset=120)) == [30, 33]


def test_read_batches_returns_the_first_batch_even_if_too_large(open_log):
    log = open_log(kafka=True)
    log.append([LogEntry(1, 1, 0, make_batch(0, 5, size=10_000)),
                LogEntry(2, 1, 0, make_batch(5, 1, size=100))])
    got = log.read_batches(2, max_bytes=1, end_offset=6)
    assert bases(got) == [0] and len(got[0]) == 10_000
    assert bases(log.read_batches(5, max_bytes=1, end_offset=6)) == [5]


def test_read_batches_stops_before_end_offset(plog):
    assert bases(plog.read_batches(0, max_bytes=10**6, end_offset=9)) == [0, 3, 6]
    assert bases(plog.read_batches(0, max_bytes=10**6, end_offset=10)) == [0, 3, 6, 9]
    assert plog.read_batches(9, max_bytes=10**6, end_offset=9) == []


def test_read_batches_at_next_offset_is_empty_and_beyond_raises(plog):
    assert plog.read_batches(120, max_bytes=100, end_offset=120) == []
    with pytest.raises(OffsetOutOfRange) as info:
        plog.read_batches(121, max_bytes=100, end_offset=200)
    assert info.value.error_code == 1


def test_read_batches_payloads_are_the_appended_bytes(plog):
    expected = [bytes(e.payload) for e in plog.entries(1, 45) if e.payload]
    assert [bytes(b) for b in plog.read_batches(0, max_bytes=10**6, end_offset=120)] == expected


def test_offset_for_timestamp_finds_the_first_batch_at_or_after(plog):
    assert plog.offset_for_timestamp(0) == (0, 1_000)
    assert plog.offset_for_timestamp(1_005) == (15, 1_005)
    assert plog.offset_for_timestamp(1_100) == (30, 1_100)
    assert plog.offset_for_timestamp(1_010) == (30, 1_100)
    assert plog.offset_for_timestamp(1_309) == (117, 1_309)
    assert plog.offset_for_timestamp(1_310) is None


def test_offset_for_timestamp_with_out_of_order_timestamps(open_log):
    log = open_log(kafka=True, index_interval_bytes=150)
    stamps = [50, 10, 70, 20, 90, 30]
    log.append([LogEntry(i + 1, 1, 0, make_batch(i, 1, max_timestamp_ms=t))
                for i, t in enumerate(stamps)])
    assert log.offset_for_timestamp(60) == (2, 70)
    assert log.offset_for_timestamp(80) == (4, 90)
    assert log.offset_for_timestamp(5) == (0, 50)


def test_entry_index_for_offset(plog):
    assert plog.entry_index_for_offset(0) == 2
    assert plog.entry_index_for_offset(29) == 11
    assert plog.entry_index_for_offset(30) == 13
    assert plog.entry_index_for_offset(119) == 44
    with pytest.raises(OffsetOutOfRange):
        plog.entry_index_for_offset(120)


def test_truncate_suffix_rewinds_next_offset(plog):
    plog.truncate_suffix(13)  # drops the no-op at 12 stays; batch at 13 (offset 30) goes
    assert (plog.last_index, plog.next_offset) == (12, 30)
    assert bases(plog.read_batches(27, max_bytes=10**6, end_offset=200)) == [27]
    assert plog.offset_for_timestamp(1_100) is None
    plog.append(batch_entries(13, 30, 2, term=2, timestamp_ms=5_000))
    assert plog.next_offset == 36 and plog.offset_for_timestamp(1_100) == (30, 5_000)


def test_truncate_suffix_within_a_sparse_block_rebuilds_its_timestamps(open_log):
    log = open_log(kafka=True, index_interval_bytes=10_000)
    log.append([LogEntry(1, 1, 0, make_batch(0, 1, max_timestamp_ms=10)),
                LogEntry(2, 1, 0, make_batch(1, 1, max_timestamp_ms=99))])
    log.truncate_suffix(2)
    assert log.offset_for_timestamp(50) is None
    assert log.next_offset == 1


def test_retention_by_size_deletes_oldest_closed_segments(plog):
    segments = plog.segment_count
    total = plog.size_bytes
    deleted = plog.apply_retention(now_ms=0, retention_bytes=total - 1, retention_ms=None)
    assert deleted == 1 and plog.segment_count == segments - 1
    assert plog.first_index > 1 and plog.log_start_offset > 0
    assert bases(plog.read_batches(plog.log_start_offset, max_bytes=100,
                                   end_offset=120))[0] == plog.log_start_offset
    with pytest.raises(OffsetOutOfRange):
        plog.read_batches(0, max_bytes=100, end_offset=120)
    # Never the active segment, however small the bound.
    plog.apply_retention(now_ms=0, retention_bytes=0, retention_ms=None)
    assert plog.segment_count == 1 and plog.last_index == 44 and plog.next_offset == 120


def test_retention_by_time_deletes_segments_whose_newest_batch_is_old(plog):
    deleted = plog.apply_retention(now_ms=1_250, retention_ms=100, retention_bytes=None)
    assert deleted >= 1
    # Every remaining closed segment, and the first remaining batch, is new enough.
    first = plog.read_batches(plog.log_start_offset, max_bytes=1, end_offset=120)[0]
    assert struct.unpack_from(">q", first, 35)[0] >= 1_150 - 100
    assert plog.apply_retention(now_ms=1_250, retention_ms=100, retention_bytes=None) == 0
    assert plog.apply_retention(now_ms=0, retention_ms=10**9, retention_bytes=None) == 0


def test_retention_keeps_segments_at_or_after_keep_from_index(plog):
    assert plog.apply_retention(now_ms=0, retention_bytes=0, retention_ms=None,
                                keep_from_index=1) == 0


def test_retention_survives_reopen(plog, open_log):
    plog.apply_retention(now_ms=0, retention_bytes=plog.size_bytes // 2, retention_ms=None)
    start, first = plog.log_start_offset, plog.first_index
    plog.sync()
    plog.close()
    log = open_log(kafka=True, segment_bytes_max=1500, index_interval_bytes=250,
                   durable_index=44)
    assert (log.log_start_offset, log.first_index, log.next_offset) == (start, first, 120)
    with pytest.raises(CompactedError):
        log.term(first - 1)  # the term before a reopened log is the snapshot's to know
