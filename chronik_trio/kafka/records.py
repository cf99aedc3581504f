"""Kafka v2 RecordBatch headers: validate, assign offsets. Batches stay opaque bytes.

Layout of the 61-byte header (big-endian): baseOffset i64 @0, batchLength i32 @8,
partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17, attributes i16 @21,
lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43,
producerEpoch i16 @51, baseSequence i32 @53, recordCount i32 @57. The CRC-32C covers
attributes..end, so rewriting baseOffset and partitionLeaderEpoch keeps it valid.
Pure: no I/O. Only header fields are read; records are never decoded here.
"""

from __future__ import annotations

import struct

import attrs
import crc32c

from chronik_trio.varint import VarintError, read_varint

from .errors import CorruptRecords, InvalidRecords, RecordsTooLarge

BATCH_HEADER_BYTES = 61
BATCH_OVERHEAD_BYTES = 12  # baseOffset + batchLength precede what batchLength counts
MAGIC_V2 = 2
CRC_START = 21
_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
ATTR_COMPRESSION_MASK = 0x07
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20


@attrs.frozen(slots=True)
class BatchHeader:
    """The fields of one batch's header that the broker uses."""

    start: int  # byte position in the produce request's records blob
    size_bytes: int
    attributes: int
    last_offset_delta: int
    base_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int


def parse_batches(records: bytes | memoryview, *, batch_bytes_max: int) -> list[BatchHeader]:
    """Validate every batch of a produce request's records blob; return their headers.

    Raises CorruptRecords (bad sizes or CRC), InvalidRecords (wrong magic, inconsistent
    counts) or RecordsTooLarge (a batch over batch_bytes_max). Nothing is modified.
    """
    view = memoryview(records)
    headers, pos, total = [], 0, len(view)
    if total == 0:
        raise CorruptRecords("empty records")
    while pos < total:
        if total - pos < BATCH_HEADER_BYTES:
            raise CorruptRecords(f"{total - pos} bytes at position {pos} are too few for a batch")
        (_, batch_length, _, magic, crc, attributes, last_offset_delta, base_ts, max_ts,
         producer_id, producer_epoch, base_sequence, count) = _HEADER.unpack_from(view, pos)
        size = batch_length + BATCH_OVERHEAD_BYTES
        if magic != MAGIC_V2:
            raise InvalidRecords(f"batch at position {pos} has magic {magic}; only v2 is accepted")
        if batch_length < BATCH_HEADER_BYTES - BATCH_OVERHEAD_BYTES or pos + size > total:
            raise CorruptRecords(f"batch at position {pos} claims {size} bytes; {total - pos} remain")
        if size > batch_bytes_max:
            raise RecordsTooLarge(f"batch of {size} bytes exceeds the limit of {batch_bytes_max}")
        if crc32c.crc32c(view[pos + CRC_START:pos + size]) != crc:
            raise CorruptRecords(f"batch at position {pos} fails its CRC-32C check")
        if count <= 0 or last_offset_delta != count - 1:
            raise InvalidRecords(
                f"batch at position {pos} has {count} records but lastOffsetDelta {last_offset_delta}")
        headers.append(BatchHeader(pos, size, attributes, last_offset_delta, base_ts, max_ts,
                                   producer_id, producer_epoch, base_sequence, count))
        pos += size
    return headers


def with_offsets(records: bytes | memoryview, header: BatchHeader, base_offset: int,
                 leader_epoch: int) -> bytes:
    """A copy of one batch with baseOffset and partitionLeaderEpoch set (CRC stays valid)."""
    view = memoryview(records)[header.start:header.start + header.size_bytes]
    out = bytearray(view)
    _PREFIX.pack_into(out, 0, base_offset, header.size_bytes - BATCH_OVERHEAD_BYTES, leader_epoch)
    return bytes(out)


COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1


def first_offset_at_or_after(batch: bytes | memoryview, timestamp_ms: int) -> tuple[int, int] | None:
    """(offset, timestamp) of the batch's first record whose timestamp is >= timestamp_ms
    (Kafka's ListOffsets answer); None when the batch's records cannot be read here (compressed with
    a codec other than gzip), in which case the caller answers with the batch's base offset.

    Decodes this one batch: ListOffsets by time is rare and this is its only per-record work.
    """
    view = memoryview(batch)
    (base_offset, _, _, _, _, attributes, _, base_ts, _, _, _, _, count) = _HEADER.unpack_from(view, 0)
    codec = attributes & ATTR_COMPRESSION_MASK
    if codec == COMPRESSION_NONE:
        records = view[BATCH_HEADER_BYTES:]
    elif codec == COMPRESSION_GZIP:
        import gzip
        records = memoryview(gzip.decompress(view[BATCH_HEADER_BYTES:]))
    else:
        return None
    pos = 0
    try:
        for _ in range(count):
            length, pos = read_varint(records, pos)
            end = pos + length
            pos += 1  # record attributes
            ts_delta, pos = read_varint(records, pos)
            offset_delta, pos = read_varint(records, pos)
            if base_ts + ts_delta >= timestamp_ms:
                return base_offset + offset_delta, base_ts + ts_delta
            pos = end
    except (IndexError, VarintError):
        raise CorruptRecords("record data ends inside a record") from None
    return None
