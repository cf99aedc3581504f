"""The one RecordBatch header reader (chronik_trio/record_batch.py) against Kafka's layout."""

from __future__ import annotations

import struct

import crc32c
import pytest

from chronik_trio.record_batch import (HEADER_BYTES, BatchHeader, batch_base_offset, batch_end_offset,
                                       encode_batch, read_header, with_offsets)

pytestmark = pytest.mark.timeout(30)

# Kafka's v2 header, written out independently of the module under test.
KAFKA_HEADER = struct.Struct(">qiibIhiqqqhii")


def test_read_header_reads_every_field_at_kafkas_positions():
    fields = (1000, 49 + 7, 3, 2, 0xDEADBEEF, 0x13, 4, 111, 222, 77, 5, 9, 5)
    buf = b"pad" + KAFKA_HEADER.pack(*fields) + bytes(7)
    header = read_header(buf, 3)
    assert header == BatchHeader(*fields, start=3)
    assert (header.size_bytes, header.last_offset, header.end_offset) == (68, 1004, 1005)
    assert HEADER_BYTES == KAFKA_HEADER.size == 61


def test_the_narrow_readers_agree_with_the_header():
    batch = encode_batch(b"records", record_count=3, base_timestamp_ms=1, max_timestamp_ms=2,
                         base_offset=40)
    header = read_header(batch)
    assert batch_base_offset(batch) == header.base_offset == 40
    assert batch_end_offset(batch) == header.end_offset == 43


def test_encode_batch_writes_a_valid_crc_and_with_offsets_keeps_it_valid():
    batch = encode_batch(b"body", record_count=2, base_timestamp_ms=5, max_timestamp_ms=6,
                         producer_id=8, producer_epoch=1, base_sequence=10)
    header = read_header(batch)
    assert header.size_bytes == len(batch) and header.magic == 2
    assert header.crc == crc32c.crc32c(batch[21:])
    moved = with_offsets(b"xx" + batch, read_header(b"xx" + batch, 2), base_offset=500, leader_epoch=9)
    assert moved[8:] != batch[8:] and moved[16:] == batch[16:]
    assert (read_header(moved).base_offset, read_header(moved).partition_leader_epoch) == (500, 9)
    assert read_header(moved).crc == crc32c.crc32c(moved[21:])
