"""Frames of a segment file and the few RecordBatch header fields storage reads.

Frame (big-endian): length u32 | crc32c u32 | index u64 | term u64 | type u8 | payload.
`length` counts the bytes after the length field; the CRC-32C covers index..payload.
"""

from __future__ import annotations

import enum
import struct

import attrs
import crc32c

# length u32, crc u32
FRAME_PREFIX = struct.Struct(">II")
# index u64, term u64, type u8: the part of the header the CRC covers
FRAME_TAIL = struct.Struct(">QQB")
FRAME_HEADER_BYTES = FRAME_PREFIX.size + FRAME_TAIL.size  # 25
# The smallest valid `length` (which counts the CRC): a header and an empty payload.
FRAME_LENGTH_MIN = FRAME_HEADER_BYTES - 4
# Above any batch we accept (Kafka's message.max.bytes is ~1 MiB by default) and small
# enough that a garbage length is recognised as garbage instead of as a short read.
FRAME_BYTES_MAX = 256 << 20

# baseOffset int64 @0, magic int8 @16, lastOffsetDelta int32 @23, maxTimestamp int64 @35.
BATCH_FIELDS = struct.Struct(">q8xb6xi8xq")
# A v2 RecordBatch header is 61 bytes; anything shorter is not a batch.
BATCH_HEADER_BYTES = 61
BATCH_MAGIC = 2


class EntryType(enum.IntEnum):
    """Raft entry types (etcd raftpb.EntryType)."""

    NORMAL = 0
    CONF_CHANGE = 1
    CONF_CHANGE_V2 = 2


ENTRY_TYPES = frozenset(int(t) for t in EntryType)


@attrs.frozen(slots=True)
class LogEntry:
    """One Raft entry. In a partition log a non-empty NORMAL payload is one RecordBatch."""

    index: int
    term: int
    type: int
    payload: bytes | memoryview


@attrs.frozen(slots=True)
class BatchInfo:
    """What the Kafka view needs of a RecordBatch header."""

    base_offset: int
    last_offset: int
    max_timestamp_ms: int


def frame_header(entry: LogEntry) -> bytes:
    """The 25-byte header of `entry`'s frame; the payload follows it unchanged."""
    tail = FRAME_TAIL.pack(entry.index, entry.term, entry.type)
    crc = crc32c.crc32c(entry.payload, crc32c.crc32c(tail))
    return FRAME_PREFIX.pack(FRAME_LENGTH_MIN + len(entry.payload), crc) + tail


def frame_crc(buf: memoryview, start: int, end: int) -> int:
    """CRC-32C of buf[start:end] (the covered part of a frame)."""
    return crc32c.crc32c(buf[start:end])


def batch_info(payload: bytes | memoryview) -> BatchInfo | str:
    """The header fields of a v2 RecordBatch, or a reason why `payload` is not one."""
    if len(payload) < BATCH_HEADER_BYTES:
        return f"{len(payload)} bytes is shorter than a batch header ({BATCH_HEADER_BYTES})"
    base_offset, magic, last_offset_delta, max_timestamp_ms = BATCH_FIELDS.unpack_from(payload)
    if magic != BATCH_MAGIC:
        return f"magic {magic}, expected {BATCH_MAGIC}"
    if base_offset < 0 or last_offset_delta < 0:
        return f"baseOffset {base_offset} lastOffsetDelta {last_offset_delta}"
    return BatchInfo(base_offset, base_offset + last_offset_delta, max_timestamp_ms)


def check_frame(buf: memoryview, pos: int, expected_index: int) -> tuple[str | None, int]:
    """Why the frame at `pos` is bad (or None) and its length field."""
    remaining = len(buf) - pos
    if remaining < FRAME_PREFIX.size:
        return f"short read: {remaining} bytes left, a frame needs {FRAME_HEADER_BYTES}", 0
    length, crc = FRAME_PREFIX.unpack_from(buf, pos)
    if length < FRAME_LENGTH_MIN or length + 4 > FRAME_BYTES_MAX:
        return f"bad length {length}", length
    if remaining - 4 < length:
        return f"short read: frame length {length}, {remaining - 4} bytes left", length
    actual = frame_crc(buf, pos + FRAME_PREFIX.size, pos + 4 + length)
    if actual != crc:
        return f"bad CRC: stored {crc:#010x}, computed {actual:#010x}", length
    index, _, entry_type = FRAME_TAIL.unpack_from(buf, pos + FRAME_PREFIX.size)
    if index != expected_index:
        return f"non-contiguous index {index}, expected {expected_index}", length
    if entry_type not in ENTRY_TYPES:
        return f"unknown entry type {entry_type}", length
    return None, length
