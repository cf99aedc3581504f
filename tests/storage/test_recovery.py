"""Opening a log: torn tails are cut and the log keeps working; damage below the durable
index is an error naming the file and byte offset."""

from __future__ import annotations

import logging
import os

import pytest

from chronik_trio.storage import CorruptLogError, LogEntry
from chronik_trio.storage.frame import FRAME_HEADER_BYTES
from tests.storage.helpers import batch_entries, payload_for, raw_entries

FRAME_BYTES = FRAME_HEADER_BYTES + 50  # raw_entries' default payload size


def write_closed_log(open_log, n=10, **kwargs):
    log = open_log(**kwargs)
    log.append(raw_entries(1, n))
    log.sync()
    path = sorted(log.directory.glob("*.seg"))[-1]
    log.close()
    return path


def assert_log_works(log, last_index):
    assert log.last_index == last_index
    got = log.entries(1, last_index + 1)
    assert [bytes(e.payload) for e in got] == [payload_for(i) for i in range(1, last_index + 1)]
    log.append(raw_entries(last_index + 1, 2, term=2))
    log.sync()
    assert log.term(last_index + 2) == 2


@pytest.mark.parametrize("tail", [
    pytest.param(lambda f, size: os.truncate(f, size - 7), id="cut-mid-frame"),
    pytest.param(lambda f, size: os.truncate(f, size - FRAME_BYTES + 3), id="cut-in-header"),
    pytest.param(lambda f, size: f.open("ab").write(os.urandom(37)), id="garbage"),
    pytest.param(lambda f, size: f.open("ab").write(bytes(4096)), id="zero-filled"),
])
def test_torn_tail_is_cut_and_the_log_keeps_working(open_log, caplog, tail):
    path = write_closed_log(open_log)
    size = path.stat().st_size
    tail(path, size)
    with caplog.at_level(logging.WARNING):
        log = open_log(durable_index=9)
    expected_last = 10 if path.stat().st_size == size else 9
    assert_log_works(log, expected_last)
    assert "torn tail" in caplog.text and str(path) in caplog.text


def test_partially_written_last_frame_is_dropped(open_log, caplog):
    path = write_closed_log(open_log)
    size = path.stat().st_size
    # The last frame's header says 50 payload bytes but only 20 made it.
    os.truncate(path, size - 30)
    with caplog.at_level(logging.WARNING):
        log = open_log(durable_index=9)
    assert_log_works(log, 9)
    assert path.stat().st_size >= size - FRAME_BYTES
    assert f"byte offset {size - FRAME_BYTES}" in caplog.text


def test_bad_crc_past_the_durable_index_is_a_torn_tail(open_log):
    path = write_closed_log(open_log)
    flip_byte(path, 9 * FRAME_BYTES + FRAME_HEADER_BYTES + 5)
    log = open_log(durable_index=9)
    assert_log_works(log, 9)


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where, reason", [
    (FRAME_HEADER_BYTES + 3, "bad CRC"),  # a payload byte of entry 2
    (8 + 7, "bad CRC"),  # the index of entry 2 (covered by the CRC)
    (0, "bad length"),  # the high byte of entry 2's length
])
def test_damage_at_or_below_the_durable_index_raises_naming_file_and_offset(
        open_log, where, reason):
    path = write_closed_log(open_log)
    flip_byte(path, FRAME_BYTES + where)
    with pytest.raises(CorruptLogError) as info:
        open_log(durable_index=2)
    err = info.value
    assert err.path == path and err.byte_offset == FRAME_BYTES
    assert reason in err.reason
    assert str(path) in str(err) and f"byte offset {FRAME_BYTES}" in str(err)


def test_log_shorter_than_the_durable_index_raises(open_log):
    path = write_closed_log(open_log)
    os.truncate(path, 8 * FRAME_BYTES)
    with pytest.raises(CorruptLogError, match="ends at index 8"):
        open_log(durable_index=9)


def test_torn_tail_in_an_early_segment_deletes_later_segments(open_log):
    log = open_log(segment_bytes_max=5 * FRAME_BYTES)
    log.append(raw_entries(1, 20))
    log.sync()
    log.close()
    files = sorted(log.directory.glob("*.seg"))
    assert len(files) == 4
    flip_byte(files[1], 2 * FRAME_BYTES + FRAME_HEADER_BYTES)  # entry 8
    log = open_log(durable_index=7, segment_bytes_max=5 * FRAME_BYTES)
    assert sorted(log.directory.glob("*.seg")) == files[:2]
    assert_log_works(log, 7)


def test_damage_in_an_early_segment_below_durable_raises(open_log):
    log = open_log(segment_bytes_max=5 * FRAME_BYTES)
    log.append(raw_entries(1, 20))
    log.sync()
    log.close()
    files = sorted(log.directory.glob("*.seg"))
    flip_byte(files[1], 2 * FRAME_BYTES + FRAME_HEADER_BYTES)
    with pytest.raises(CorruptLogError) as info:
        open_log(durable_index=15, segment_bytes_max=5 * FRAME_BYTES)
    assert info.value.path == files[1] and info.value.byte_offset == 2 * FRAME_BYTES


def test_missing_middle_segment_is_a_gap(open_log):
    log = open_log(segment_bytes_max=5 * FRAME_BYTES)
    log.append(raw_entries(1, 20))
    log.close()
    files = sorted(log.directory.glob("*.seg"))
    files[1].unlink()
    with pytest.raises(CorruptLogError, match="expected 6"):
        open_log(durable_index=12, segment_bytes_max=5 * FRAME_BYTES)
    log = open_log(durable_index=5, segment_bytes_max=5 * FRAME_BYTES)
    assert not any(f.exists() for f in files[2:])
    assert_log_works(log, 5)


def test_non_contiguous_index_inside_a_segment_is_detected(open_log):
    log = open_log()
    log.append(raw_entries(1, 3))
    log.close()
    path = next(log.directory.glob("*.seg"))
    # Append a well-formed frame for index 9 behind entry 3 by writing it via another log.
    other = open_log("other")
    other.reset_to(8, 1)
    other.append([LogEntry(9, 1, 0, payload_for(9))])
    other.close()
    path.open("ab").write(next(other.directory.glob("*.seg")).read_bytes())
    with pytest.raises(CorruptLogError, match="non-contiguous index 9, expected 4"):
        open_log(durable_index=4)
    assert_log_works(open_log(durable_index=3), 3)


def test_partition_log_recovery_rebuilds_the_kafka_view(open_log):
    log = open_log(kafka=True, segment_bytes_max=1000, index_interval_bytes=300)
    log.append(batch_entries(1, 0, 20))
    log.sync()
    log.close()
    path = sorted(log.directory.glob("*.seg"))[-1]
    os.truncate(path, path.stat().st_size - 10)
    log = open_log(kafka=True, segment_bytes_max=1000, index_interval_bytes=300,
                   durable_index=19)
    assert (log.last_index, log.next_offset, log.log_start_offset) == (19, 57, 0)
    assert len(log.read_batches(0, max_bytes=10**6, end_offset=57)) == 19
