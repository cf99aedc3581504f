"""Kafka's v2 RecordBatch header: the one place that knows where its fields sit.

A batch is opaque bytes everywhere in the broker: produced, replicated, stored and fetched
as the producer wrote it, except baseOffset and partitionLeaderEpoch, which the leader sets.
What the broker needs of a batch is in its 61-byte header (big-endian):

    baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32 @12, magic i8 @16,
    crc u32 @17, attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27,
    maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53,
    recordCount i32 @57.

batchLength counts the bytes after itself; the CRC-32C covers attributes..end, so
rewriting baseOffset and partitionLeaderEpoch keeps it valid. Reading a header is one
struct.unpack_from per batch; records are never decoded here.

Pure: imports the standard library and crc32c only, so that storage/, partition/, group/
and kafka/ can all read batches through it without importing one another.
"""

from __future__ import annotations

import struct
import typing

import crc32c

# The layout, field by field in wire order; every struct below is derived from it.
_LAYOUT = (
    ("base_offset", "q"), ("batch_length", "i"), ("partition_leader_epoch", "i"),
    ("magic", "b"), ("crc", "I"), ("attributes", "h"), ("last_offset_delta", "i"),
    ("base_timestamp_ms", "q"), ("max_timestamp_ms", "q"), ("producer_id", "q"),
    ("producer_epoch", "h"), ("base_sequence", "i"), ("record_count", "i"),
)
HEADER = struct.Struct(">" + "".join(code for _, code in _LAYOUT))
HEADER_BYTES = HEADER.size  # 61
LENGTH_PREFIX_BYTES = 12  # baseOffset and batchLength precede what batchLength counts
MAGIC_V2 = 2


def _position(field: str) -> int:
    """Where `field` starts in the header."""
    names = [name for name, _ in _LAYOUT]
    return struct.calcsize(">" + "".join(code for _, code in _LAYOUT[:names.index(field)]))


CRC_POSITION = _position("crc")  # 17
CRC_START = _position("attributes")  # 21: the CRC covers attributes..end

ATTR_COMPRESSION_MASK = 0x07
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1


def _narrow(*names: str) -> struct.Struct:
    """A struct that reads only `names` (in layout order) and skips the other fields, for
    the hot paths that need one or two fields of every batch."""
    fmt, skip, wanted = ">", 0, set(names)
    for name, code in _LAYOUT:
        if name in wanted:
            fmt += (f"{skip}x" if skip else "") + code
            skip = 0
            wanted.discard(name)
        else:
            skip += struct.calcsize(code)
        if not wanted:
            return struct.Struct(fmt)
    raise AssertionError(f"not header fields: {sorted(wanted)}")


_BASE_OFFSET = _narrow("base_offset")
_BASE_AND_LAST_DELTA = _narrow("base_offset", "last_offset_delta")
_PREFIX = _narrow("base_offset", "batch_length", "partition_leader_epoch")
_U32 = struct.Struct(">I")


class BatchHeader(typing.NamedTuple):
    """A batch header's fields in wire order, and `start`: where the batch begins in the
    buffer it was read from (a produce request's records blob holds several)."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    start: int = 0

    @property
    def size_bytes(self) -> int:
        """The whole batch's size, as its batchLength claims it."""
        return self.batch_length + LENGTH_PREFIX_BYTES

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def end_offset(self) -> int:
        """The offset after the batch's last record."""
        return self.base_offset + self.last_offset_delta + 1


_new_header = tuple.__new__


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """The header of the batch at buf[pos:]. The caller has checked that HEADER_BYTES are
    there; nothing is validated (magic, sizes and CRC are the caller's to judge)."""
    return _new_header(BatchHeader, HEADER.unpack_from(buf, pos) + (pos,))


def batch_base_offset(batch: bytes | memoryview) -> int:
    return _BASE_OFFSET.unpack_from(batch, 0)[0]


def batch_end_offset(batch: bytes | memoryview) -> int:
    """The offset after a batch's last record."""
    base, last_delta = _BASE_AND_LAST_DELTA.unpack_from(batch, 0)
    return base + last_delta + 1


def batch_crc(buf: bytes | bytearray | memoryview, start: int, size_bytes: int) -> int:
    """The CRC-32C a batch of size_bytes at buf[start:] should carry."""
    return crc32c.crc32c(memoryview(buf)[start + CRC_START:start + size_bytes])


def with_offsets(buf: bytes | memoryview, header: BatchHeader, base_offset: int,
                 leader_epoch: int) -> bytes:
    """A copy of the batch `header` was read from, with baseOffset and partitionLeaderEpoch
    set (the CRC stays valid: it does not cover them)."""
    out = bytearray(memoryview(buf)[header.start:header.start + header.size_bytes])
    _PREFIX.pack_into(out, 0, base_offset, header.batch_length, leader_epoch)
    return bytes(out)


def encode_batch(body: bytes, *, record_count: int, base_timestamp_ms: int,
                 max_timestamp_ms: int, base_offset: int = 0, leader_epoch: int = 0,
                 attributes: int = 0, producer_id: int = NO_PRODUCER_ID,
                 producer_epoch: int = NO_PRODUCER_EPOCH,
                 base_sequence: int = NO_SEQUENCE) -> bytes:
    """A v2 batch of `body` (record_count records, already encoded) with a valid CRC."""
    assert record_count > 0, record_count
    out = bytearray(HEADER.pack(
        base_offset, HEADER_BYTES - LENGTH_PREFIX_BYTES + len(body), leader_epoch, MAGIC_V2, 0,
        attributes, record_count - 1, base_timestamp_ms, max_timestamp_ms, producer_id,
        producer_epoch, base_sequence, record_count))
    out += body
    _U32.pack_into(out, CRC_POSITION, batch_crc(out, 0, len(out)))
    return bytes(out)
