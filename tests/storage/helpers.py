"""Builders for storage tests: v2 RecordBatch payloads and entries."""

from __future__ import annotations

import struct

import crc32c

from chronik_trio.storage import LogEntry

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordsCount
_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == 61


def make_batch(base_offset: int, count: int = 1, *, max_timestamp_ms: int = 1_000,
               size: int = 100, epoch: int = 1) -> bytes:
    """A v2 RecordBatch of `size` bytes (at least the header) with a correct CRC."""
    body_bytes = max(size, _HEADER.size) - _HEADER.size
    records = bytes((base_offset + i) % 251 for i in range(body_bytes))
    header = _HEADER.pack(base_offset, _HEADER.size + body_bytes - 12, epoch, 2, 0, 0,
                          count - 1, max_timestamp_ms - 10, max_timestamp_ms, -1, -1, -1,
                          count)
    batch = bytearray(header + records)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


def batch_entries(first_index: int, first_offset: int, n: int, *, term: int = 1,
                  records: int = 3, size: int = 100, timestamp_ms: int = 1_000,
                  ) -> list[LogEntry]:
    """n data entries, each one batch of `records` offsets, contiguous offsets."""
    out = []
    for k in range(n):
        base = first_offset + k * records
        out.append(LogEntry(first_index + k, term, 0,
                            make_batch(base, records, max_timestamp_ms=timestamp_ms + k,
                                       size=size)))
    return out


def raw_entries(first_index: int, n: int, *, term: int = 1, size: int = 50) -> list[LogEntry]:
    """n opaque entries (for non-partition logs) whose payload encodes the index."""
    return [LogEntry(i, term, 0, payload_for(i, size)) for i in range(first_index, first_index + n)]


def payload_for(index: int, size: int = 50) -> bytes:
    return (f"{index}:".encode() * size)[:size]
