"""Read a stopped replica's partition log from its data dir, as an outsider reads files.

The format is the one docs/storage.md documents: segment files `<20-digit index>.seg` of
frames `length u32 | crc32c u32 | index u64 | term u64 | type u8 | payload` (big-endian);
in a partition log a NORMAL entry with a payload is one Kafka v2 RecordBatch. Recovery
truncates a torn tail, so reading stops at the first frame that does not fit (a node that
was killed mid-write); its CRC is not checked here (the node checks it when it opens).
Only uncompressed batches are decoded (the workload sends with compression.type none).
"""

from __future__ import annotations

import pathlib
import struct

FRAME = struct.Struct(">IIQQB")
NORMAL = 0
# baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc u32,
# attributes int16, lastOffsetDelta int32, firstTimestamp, maxTimestamp int64,
# producerId int64, producerEpoch int16, baseSequence int32, records int32
BATCH = struct.Struct(">qiibIhiqqqhii")
COMPRESSION_MASK = 0x07
CONTROL_BIT = 0x20


class ReplicaLogError(Exception):
    """A log the reader cannot decode (e.g. compressed batches)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return (result >> 1) ^ -(result & 1), pos


def decode_batch(payload: bytes, headers: list | None = None) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record in one v2 RecordBatch (none for a control batch).
    With `headers` (a list), each record's [(key, value)] headers are appended to it."""
    (base_offset, _, _, magic, _, attributes, _, _, _, _, _, _, count) = BATCH.unpack_from(payload)
    if magic != 2:
        raise ReplicaLogError(f"batch at offset {base_offset}: magic {magic}, not 2")
    if attributes & CONTROL_BIT:
        return []
    if attributes & COMPRESSION_MASK:
        raise ReplicaLogError(f"batch at offset {base_offset} is compressed; the reader "
                              "decodes only uncompressed batches")
    pos = BATCH.size
    records = []
    for _ in range(count):
        length, pos = _varint(payload, pos)
        end = pos + length
        pos += 1  # attributes
        _, pos = _varint(payload, pos)  # timestamp delta
        offset_delta, pos = _varint(payload, pos)
        key_len, pos = _varint(payload, pos)
        key = payload[pos:pos + key_len] if key_len >= 0 else None
        pos += max(key_len, 0)
        value_len, pos = _varint(payload, pos)
        value = payload[pos:pos + value_len] if value_len >= 0 else None
        records.append((base_offset + offset_delta, key, value))
        if headers is not None:
            pos += max(value_len, 0)
            count_h, pos = _varint(payload, pos)
            pairs = []
            for _ in range(count_h):
                n, pos = _varint(payload, pos)
                hk = payload[pos:pos + n].decode(errors="replace")
                pos += n
                n, pos = _varint(payload, pos)
                pairs.append((hk, payload[pos:pos + n] if n >= 0 else None))
                pos += max(n, 0)
            headers.append(pairs)
        pos = end
    return records


def read_entries(directory: pathlib.Path) -> list[tuple[int, int, int, bytes]]:
    """(index, term, type, payload) of every whole frame, segment by segment in index order."""
    segments = sorted(p for p in directory.glob("*.seg") if p.stem.isdigit())
    entries = []
    for seg in segments:
        data = seg.read_bytes()
        pos = 0
        while pos + FRAME.size <= len(data):
            length, _, index, term, kind = FRAME.unpack_from(data, pos)
            end = pos + 4 + length
            if length < FRAME.size - 4 or end > len(data):
                break  # a torn tail
            entries.append((index, term, kind, data[pos + FRAME.size:end]))
            pos = end
    return entries


def read_partition(directory: pathlib.Path) -> dict[int, str]:
    """offset -> value (decoded as UTF-8) of a partition replica's log.

    A later entry at an offset replaces an earlier one: what a node keeps after it truncates
    a conflicting suffix is the later frame in its files."""
    records: dict[int, str] = {}
    by_index: dict[int, bytes] = {}
    for index, _, kind, payload in read_entries(directory):
        if kind == NORMAL and payload:
            by_index[index] = payload
    for index in sorted(by_index):
        headers: list = []
        for (offset, _, value), pairs in zip(decode_batch(by_index[index], headers), headers):
            if value is None:  # a tombstone: the workload's id rides in a header
                value = next((v for k, v in pairs if k == "chaos-id" and v is not None), b"")
            records[offset] = value.decode(errors="replace")
    return records


def chronik_partition_dir(data_dir: pathlib.Path, topic: str, partition: int) -> pathlib.Path:
    return data_dir / "partitions" / f"{topic}-{partition}"


def record_replica_logs(topics, data_dirs: dict[int, pathlib.Path], high_watermarks: dict,
                        record, partition_dir=chronik_partition_dir, read=read_partition) -> None:
    """After a run: record each replica's log below its partition's final high watermark, as
    a history event ("replica-log", or "replica-log-failed" with the error), for the checker.
    topics: the scenario's (name, partitions); data_dirs: node id -> its data directory;
    partition_dir and read: where a replica keeps a partition and how to read it (another
    broker's layout: apache_kafka.py)."""
    for topic in topics:
        for p in range(topic.partitions):
            high = high_watermarks.get((topic.name, p))
            if high is None:
                continue
            for n, data_dir in data_dirs.items():
                directory = partition_dir(data_dir, topic.name, p)
                if not directory.is_dir():
                    continue
                try:
                    records = read(directory)
                except (ReplicaLogError, OSError, IndexError) as exc:
                    record({"type": "replica-log-failed", "node": n, "topic": topic.name,
                            "partition": p, "error": repr(exc)})
                    continue
                record({"type": "replica-log", "node": n, "topic": topic.name, "partition": p,
                        "records": sorted((o, v) for o, v in records.items() if o < high)})
