"""Produce-side checks of Kafka v2 RecordBatches, and ListOffsets' look inside one batch.

The header layout and its reader are chronik_trio.record_batch; batches stay opaque bytes.
Pure: no I/O. Only headers are read, except by first_offset_at_or_after.
"""

from __future__ import annotations

import gzip

from chronik_trio.record_batch import (ATTR_COMPRESSION_MASK, ATTR_CONTROL, COMPRESSION_GZIP,
                                       COMPRESSION_NONE, HEADER_BYTES, LENGTH_PREFIX_BYTES, MAGIC_V2,
                                       BatchHeader, batch_crc, read_header, records_buffer,
                                       scan_records, with_offsets)
from chronik_trio.varint import VarintError, read_varint

from .errors import CorruptRecords, InvalidRecords, RecordsTooLarge

__all__ = ["BatchHeader", "first_offset_at_or_after", "keyless_records", "parse_batches", "with_offsets"]


def parse_batches(records: bytes | memoryview, *, batch_bytes_max: int) -> list[BatchHeader]:
    """Validate every batch of a produce request's records blob; return their headers
    (each with its `start` in the blob).

    Raises CorruptRecords (bad sizes or CRC), InvalidRecords (wrong magic, inconsistent
    counts) or RecordsTooLarge (a batch over batch_bytes_max). Nothing is modified.
    """
    view = memoryview(records)
    headers, pos, total = [], 0, len(view)
    if total == 0:
        raise CorruptRecords("empty records")
    while pos < total:
        if total - pos < HEADER_BYTES:
            raise CorruptRecords(f"{total - pos} bytes at position {pos} are too few for a batch")
        header = read_header(view, pos)
        size = header.size_bytes
        if header.magic != MAGIC_V2:
            raise InvalidRecords(f"batch at position {pos} has magic {header.magic}; only v2 is accepted")
        if header.batch_length < HEADER_BYTES - LENGTH_PREFIX_BYTES or pos + size > total:
            raise CorruptRecords(f"batch at position {pos} claims {size} bytes; {total - pos} remain")
        if size > batch_bytes_max:
            raise RecordsTooLarge(f"batch of {size} bytes exceeds the limit of {batch_bytes_max}")
        if batch_crc(view, pos, size) != header.crc:
            raise CorruptRecords(f"batch at position {pos} fails its CRC-32C check")
        count = header.record_count
        if count <= 0 or header.last_offset_delta != count - 1:
            raise InvalidRecords(
                f"batch at position {pos} has {count} records but lastOffsetDelta {header.last_offset_delta}")
        headers.append(header)
        pos += size
    return headers


def keyless_records(records: bytes | memoryview, headers: list[BatchHeader]) -> list[int]:
    """The positions (counted from the blob's first record) of the records without a key, in
    the data batches of a produce request's records blob (headers from parse_batches), which a
    compacted topic refuses as Kafka does (INVALID_RECORD, KIP-467's record errors naming them).

    Uncompressed and gzip batches are read; a batch compressed otherwise is not (its records
    pass unchecked, see docs/compaction.md). Raises CorruptRecords when records do not parse.
    """
    blob = bytes(records)
    out: list[int] = []
    first = 0
    for header in headers:
        if not header.attributes & ATTR_CONTROL:
            body = records_buffer(blob, header.start + HEADER_BYTES, header.start + header.size_bytes,
                                  header.attributes)
            if body is not None:
                scanned = scan_records(*body, header.record_count, 0)
                if scanned is None:
                    raise CorruptRecords(f"the records of the batch at position {header.start} do not parse")
                out.extend(first + k for k, record in enumerate(scanned) if record[2] is None)
        first += header.record_count
    return out


def first_offset_at_or_after(batch: bytes | memoryview, timestamp_ms: int) -> tuple[int, int] | None:
    """(offset, timestamp) of the batch's first record whose timestamp is >= timestamp_ms
    (Kafka's ListOffsets answer); None when the batch's records cannot be read here (compressed with
    a codec other than gzip), in which case the caller answers with the batch's base offset.

    Decodes this one batch: ListOffsets by time is rare and this is its only per-record work.
    """
    view = memoryview(batch)
    header = read_header(view)
    base_offset, base_ts = header.base_offset, header.base_timestamp_ms
    codec = header.attributes & ATTR_COMPRESSION_MASK
    if codec == COMPRESSION_NONE:
        records = view[HEADER_BYTES:]
    elif codec == COMPRESSION_GZIP:
        records = memoryview(gzip.decompress(view[HEADER_BYTES:]))
    else:
        return None
    pos = 0
    try:
        for _ in range(header.record_count):
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
