"""Frames of a segment file, and the check a partition log makes of each batch it stores.

Frame (big-endian): length u32 | crc32c u32 | index u64 | term u64 | type u8 | payload.
`length` counts the bytes after the length field; the CRC-32C covers index..payload.
"""

from __future__ import annotations

import struct

import attrs
import crc32c

from chronik_trio.raft.types import EntryType
from chronik_trio.record_batch import HEADER_BYTES, MAGIC_V2, BatchHeader, read_header

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

ENTRY_TYPES = frozenset(int(t) for t in EntryType)


@attrs.frozen(slots=True)
class LogEntry:
    """One Raft entry. In a partition log a non-empty NORMAL payload is one RecordBatch."""

    index: int
    term: int
    type: int
    payload: bytes | memoryview


def frame_header(entry: LogEntry) -> bytes:
    """The 25-byte header of `entry`'s frame; the payload follows it unchanged."""
    tail = FRAME_TAIL.pack(entry.index, entry.term, entry.type)
    crc = crc32c.crc32c(entry.payload, crc32c.crc32c(tail))
    return FRAME_PREFIX.pack(FRAME_LENGTH_MIN + len(entry.payload), crc) + tail


def frame_crc(buf: memoryview, start: int, end: int) -> int:
    """CRC-32C of buf[start:end] (the covered part of a frame)."""
    return crc32c.crc32c(buf[start:end])


def batch_info(payload: bytes | memoryview) -> BatchHeader | str:
    """The header of a v2 RecordBatch, or a reason why `payload` is not one that a partition
    log can index (base_offset, last_offset and max_timestamp_ms are what it uses)."""
    if len(payload) < HEADER_BYTES:
        return f"{len(payload)} bytes is shorter than a batch header ({HEADER_BYTES})"
    header = read_header(payload)
    if header.magic != MAGIC_V2:
        return f"magic {header.magic}, expected {MAGIC_V2}"
    if header.base_offset < 0 or header.last_offset_delta < 0:
        return f"baseOffset {header.base_offset} lastOffsetDelta {header.last_offset_delta}"
    return header


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
