"""The records a group coordinator writes to `__consumer_offsets`, and the v2 record batches
that carry them.

Keys follow Kafka's own layout (so a tool reading keys of Kafka's topic reads ours):
  offset commit:   version i16 = 1, group string, topic string, partition i32
  group metadata:  version i16 = 2, group string
(strings are i16 length + UTF-8). Values are UTF-8 JSON objects with a "v" version field,
not Kafka's binary value schemas: they are read only by this broker, JSON keeps them
inspectable with any tool, and a value schema change is a new "v". A null value is a
tombstone: the offset, or the group, is deleted.

Batches are uncompressed magic-v2 batches, one per coordinator write (a commit of N
partitions is one batch of N records: applied together or not at all), without producer
ids except TxnOffsetCommit's: a transactional batch of the transaction's producer id and
epoch, whose offsets count once the partition's commit marker (a control batch: key
version i16, type i16 with 0 abort and 1 commit) for that producer follows it.
"""

from __future__ import annotations

import struct
import typing

from chronik_trio.record_batch import (ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TRANSACTIONAL, HEADER_BYTES,
                                       encode_batch, read_header)
from chronik_trio.varint import VarintError, read_varint, write_uvarint

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class RecordError(ValueError):
    """A record on __consumer_offsets that this broker cannot read (skipped when applying)."""


def _string(text: str) -> bytes:
    raw = text.encode()
    return _I16.pack(len(raw)) + raw


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(buf):
        raise RecordError("key ends inside a string length")
    (n,) = _I16.unpack_from(buf, pos)
    pos += 2
    if n < 0 or pos + n > len(buf):
        raise RecordError(f"key string of {n} bytes does not fit")
    return buf[pos:pos + n].decode(), pos + n


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return _I16.pack(OFFSET_KEY_VERSION) + _string(group_id) + _string(topic) + _I32.pack(partition)


def group_key(group_id: str) -> bytes:
    return _I16.pack(GROUP_KEY_VERSION) + _string(group_id)


def parse_key(key: bytes) -> tuple[str, str, str | None, int | None]:
    """("offset", group, topic, partition) or ("group", group, None, None)."""
    if len(key) < 2:
        raise RecordError(f"key of {len(key)} bytes")
    (version,) = _I16.unpack_from(key, 0)
    group_id, pos = _read_string(key, 2)
    if version in (0, OFFSET_KEY_VERSION):
        topic, pos = _read_string(key, pos)
        if pos + 4 > len(key):
            raise RecordError("offset key ends before its partition")
        return "offset", group_id, topic, _I32.unpack_from(key, pos)[0]
    if version == GROUP_KEY_VERSION:
        return "group", group_id, None, None
    raise RecordError(f"unknown key version {version}")


def _record(offset_delta: int, key: bytes, value: bytes | None) -> bytes:
    body = bytearray(b"\x00")  # attributes
    body += _zigzag(0)  # timestamp delta: every record has the batch's timestamp
    body += _zigzag(offset_delta)
    body += _zigzag(len(key)) + key
    body += _zigzag(-1) if value is None else _zigzag(len(value)) + value
    body += _zigzag(0)  # no headers
    return _zigzag(len(body)) + bytes(body)


def _zigzag(n: int) -> bytes:
    return write_uvarint((n << 1) ^ (n >> 63))


def build_batch(records: typing.Sequence[tuple[bytes, bytes | None]], timestamp_ms: int, *,
                producer: tuple[int, int] | None = None) -> bytes:
    """An uncompressed v2 batch of (key, value) records; value None is a tombstone.
    baseOffset and partitionLeaderEpoch are 0 here: the partition leader assigns them.
    producer: (producer id, epoch) of a transactional batch (TxnOffsetCommit's offsets),
    which has no sequence (Kafka writes it so too: the coordinator's, not a producer's)."""
    assert records, "a batch needs at least one record"
    body = b"".join(_record(i, key, value) for i, (key, value) in enumerate(records))
    if producer is None:
        return encode_batch(body, record_count=len(records), base_timestamp_ms=timestamp_ms,
                            max_timestamp_ms=timestamp_ms)
    return encode_batch(body, record_count=len(records), base_timestamp_ms=timestamp_ms,
                        max_timestamp_ms=timestamp_ms, attributes=ATTR_TRANSACTIONAL,
                        producer_id=producer[0], producer_epoch=producer[1])


def batch_records(batch: bytes | memoryview) -> list[tuple[bytes, bytes | None]]:
    """The (key, value) records of one v2 batch. Raises RecordError for compressed and
    control batches (markers are read by partition/transactions.read_control), and for
    bytes that do not parse (the coordinators never write those)."""
    view = memoryview(batch)
    if len(view) < HEADER_BYTES:
        raise RecordError(f"batch of {len(view)} bytes")
    header = read_header(view)
    attributes, count = header.attributes, header.record_count
    if attributes & (ATTR_COMPRESSION_MASK | ATTR_CONTROL):
        raise RecordError(f"batch attributes {attributes:#x}: compressed or control")
    data = bytes(view[HEADER_BYTES:])
    out, pos = [], 0
    try:
        for _ in range(count):
            length, pos = read_varint(data, pos)
            end = pos + length
            pos += 1  # attributes
            _, pos = read_varint(data, pos)  # timestamp delta
            _, pos = read_varint(data, pos)  # offset delta
            key_len, pos = read_varint(data, pos)
            key = data[pos:pos + key_len] if key_len >= 0 else b""
            pos += max(key_len, 0)
            value_len, pos = read_varint(data, pos)
            value = data[pos:pos + value_len] if value_len >= 0 else None
            if end > len(data):
                raise RecordError("record runs past the batch")
            out.append((key, value))
            pos = end
    except (IndexError, VarintError) as exc:
        raise RecordError(f"record does not parse: {exc}") from None
    return out
