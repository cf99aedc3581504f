"""The log cleaner of compacted partition logs (`cleanup.policy=compact`): keeps the latest
record of each key, drops tombstones once they are old enough. See docs/compaction.md.

One pass over a SegmentLog, in three steps:

    plan = plan_clean(log, ...)                          # loop thread: which segments
    result = await to_thread(run_clean, disk, plan, ...) # worker thread: key map, new files
    log.replace_segment(old, new) for each new segment   # loop thread: rename and swap

The worker thread reads only closed segments below what the caller says is committed and
applied (they never change again, except by being deleted: the log keeps their files open
while pinned) and writes each rewritten segment to `<name>.cleaned`, fsyncs it and the
directory; the swap renames it over the segment. A crash leaves the old segment (and a
`.cleaned` file that open() deletes) or the new one, never a mix.

Every entry keeps its Raft index, term and type: a rewritten batch keeps its baseOffset,
lastOffsetDelta, timestamps and producer fields, and the records kept byte for byte; only
the record count, length and CRC change. A batch left without records stays as an empty
batch (61 bytes), so the offsets of every segment and of the log are unchanged and the
compacted log is still the Raft log (followers are sent compacted entries; see
docs/compaction.md). Batches whose records cannot be read here (compressed with snappy,
lz4 or zstd, transactional and control batches) are kept whole; while one is in the range
cleaned, no tombstone is removed (an older value of its key may hide in it).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pathlib
import struct
import time
import typing

import attrs
import crc32c

from chronik_trio.raft.types import EntryType
from chronik_trio.record_batch import (ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TRANSACTIONAL,
                                       COMPRESSION_GZIP, COMPRESSION_NONE, CRC_POSITION, CRC_START,
                                       HEADER_BYTES, LENGTH_PREFIX_BYTES, BatchHeader,
                                       read_header)
from chronik_trio.storage.disk import Disk, DiskFile
from chronik_trio.storage.frame import FRAME_HEADER_BYTES, FRAME_PREFIX, FRAME_TAIL, LogEntry, frame_header
from chronik_trio.storage.segment import Segment
from chronik_trio.varint import VarintError, read_varint

logger = logging.getLogger(__name__)

NORMAL = int(EntryType.NORMAL)
CLEANED_SUFFIX = ".cleaned"
# What one key costs in the key map (a dict of 16-byte BLAKE2b digests to offsets), as
# counted against log.cleaner.dedupe.buffer.size: measured ~110-125 bytes in CPython 3.11.
KEY_MAP_ENTRY_BYTES = 128
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_BATCH_LENGTH_POSITION = 8
_RECORD_COUNT_POSITION = HEADER_BYTES - 4
_ATTRIBUTES_POSITION = CRC_START

# A hook for transactions: given a batch header, True if the batch's records may be cleaned
# (read and filtered by key). The default keeps transactional and control batches whole;
# once an aborted-transaction index exists, the cleaner should drop aborted batches and
# markers no longer needed here (see docs/compaction.md).
BatchFilter = typing.Callable[[BatchHeader], bool]


def plain_data_batch(header: BatchHeader) -> bool:
    return not header.attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL)


class Record(typing.NamedTuple):  # a NamedTuple: the cleaner makes one per record read
    offset_delta: int
    key: bytes | None
    tombstone: bool
    raw: bytes  # the whole record, its length varint included


def decode_records(payload: bytes | memoryview) -> tuple[BatchHeader, list[Record]] | None:
    """The records of a v2 batch, or None when they cannot be read here (a codec other than
    none or gzip, or bytes that do not parse: such a batch is kept whole)."""
    view = memoryview(payload)
    header = read_header(view)
    codec = header.attributes & ATTR_COMPRESSION_MASK
    if codec == COMPRESSION_NONE:
        data = bytes(view[HEADER_BYTES:])  # indexing bytes is faster than a memoryview
    elif codec == COMPRESSION_GZIP:
        try:
            data = gzip.decompress(view[HEADER_BYTES:])
        except (OSError, EOFError, ValueError):
            return None
    else:
        return None
    out: list[Record] = []
    pos = 0
    size = len(data)
    try:
        for _ in range(header.record_count):
            # The varints inline when they are one byte (most are): this loop is the
            # cleaner's cost.
            start = pos
            b = data[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                length, pos = read_varint(data, pos)
            end = pos + length
            if length < 0 or end > size:
                return None
            pos += 1  # attributes
            b = data[pos]
            pos = pos + 1 if b < 0x80 else read_varint(data, pos)[1]  # timestamp delta
            b = data[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                offset_delta, pos = read_varint(data, pos)
            b = data[pos]
            if b < 0x80:
                key_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                key_len, pos = read_varint(data, pos)
            key = data[pos:pos + key_len] if key_len >= 0 else None
            pos += max(key_len, 0)
            if pos >= end:
                return None
            tombstone = data[pos] == 1  # the value length varint: zigzag(-1) is 0x01
            out.append(Record(offset_delta, key, tombstone, data[start:end]))
            pos = end
    except (IndexError, VarintError):
        return None
    return header, out


def rebuild_batch(payload: bytes | memoryview, header: BatchHeader, kept: list[Record]) -> bytes:
    """The batch with only `kept` of its records: baseOffset, lastOffsetDelta, timestamps and
    producer fields unchanged; a gzip batch is compressed again; no records -> an empty,
    uncompressed batch (61 bytes)."""
    codec = header.attributes & ATTR_COMPRESSION_MASK
    body = b"".join(bytes(r.raw) for r in kept)
    attributes = header.attributes
    if not kept:
        attributes &= ~ATTR_COMPRESSION_MASK
    elif codec == COMPRESSION_GZIP:
        body = gzip.compress(body, mtime=0)
    out = bytearray(memoryview(payload)[:HEADER_BYTES])
    out += body
    _I32.pack_into(out, _BATCH_LENGTH_POSITION, len(out) - LENGTH_PREFIX_BYTES)
    struct.pack_into(">h", out, _ATTRIBUTES_POSITION, attributes)
    _I32.pack_into(out, _RECORD_COUNT_POSITION, len(kept))
    _U32.pack_into(out, CRC_POSITION, crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


def key_digest(key: bytes) -> bytes:
    """The key map's key: a key shorter than 16 bytes itself, else its 16-byte BLAKE2b
    digest (so the two kinds never meet)."""
    return key if len(key) < 16 else hashlib.blake2b(key, digest_size=16).digest()


@attrs.frozen
class CleanPlan:
    """Segments to clean (the oldest first, contiguous from the log's first segment)."""

    segments: tuple[Segment, ...]
    dirty_bytes: int
    total_bytes: int
    reason: str


@attrs.frozen
class CleanSettings:
    now_ms: int
    delete_retention_ms: int
    key_map_bytes: int
    io_bytes_per_s: float | None  # None: unthrottled
    index_interval_bytes: int
    cleanable: BatchFilter = plain_data_batch


@attrs.define
class CleanResult:
    """What run_clean produced: new segments (written, fsynced, not yet swapped in) by the
    old one they replace, and where the key map ended (the Kafka offset below which the log
    is now clean)."""

    replacements: list[tuple[Segment, Segment]]
    clean_offset: int
    bytes_read: int = 0
    bytes_written: int = 0
    records_dropped: int = 0
    tombstones_dropped: int = 0
    seconds: float = 0.0
    # The newest-timestamp of the oldest batch holding a tombstone kept (None: none kept):
    # once it is delete.retention.ms old, a pass is due even without new data.
    oldest_tombstone_ms: int | None = None


def plan_clean(segments: typing.Sequence[Segment], *, upto_index: int, clean_offset: int,
               now_ms: int, min_lag_ms: int, max_lag_ms: int, min_dirty_ratio: float,
               tombstones_due: bool = False) -> CleanPlan | None:
    """The closed segments a pass cleans, or None if there is nothing worth cleaning.

    `segments` are the log's (the active one and the last one with batches are never
    cleaned); a segment is cleanable
    when all its entries are < upto_index (committed, applied and durable here) and its
    newest record is at least min_lag_ms old. Offsets below clean_offset were cleaned by an
    earlier pass. A pass runs when the dirty share of the cleanable bytes reaches
    min_dirty_ratio, or when a dirty segment's oldest records are max_lag_ms old, or when
    tombstones kept by the last pass are now past delete.retention.ms (tombstones_due).
    """
    chosen: list[Segment] = []
    # Never the active segment, nor the last one holding batches (as Kafka never cleans its
    # active segment): the log's last batch stays whole, so a consumer always reaches the
    # high watermark with a record (emptied batches are not served).
    with_batches = [k for k, seg in enumerate(segments) if seg.has_batches]
    end = min(len(segments) - 1, with_batches[-1] if with_batches else 0)
    for seg in segments[:end]:
        if seg.last_index >= upto_index or not seg.entry_count:
            break
        if seg.has_batches and seg.max_timestamp_ms > now_ms - min_lag_ms:
            break
        chosen.append(seg)
    dirty = [seg for seg in chosen if seg.has_batches and seg.next_offset > clean_offset]
    dirty_bytes = sum(seg.size_bytes for seg in dirty)
    total_bytes = sum(seg.size_bytes for seg in chosen)
    if not chosen or not (dirty or tombstones_due):
        return None
    if dirty and dirty_bytes / total_bytes >= min_dirty_ratio:
        reason = f"dirty ratio {dirty_bytes / total_bytes:.2f}"
    elif tombstones_due:
        reason = "tombstones past delete.retention.ms"
    elif dirty[0].block_max_timestamps_ms[0] <= now_ms - max_lag_ms:
        reason = "max.compaction.lag.ms"
    else:
        return None
    return CleanPlan(tuple(chosen), dirty_bytes, total_bytes, reason)


class _Throttle:
    def __init__(self, bytes_per_s: float | None) -> None:
        self._rate = bytes_per_s
        self._start = time.monotonic()
        self._bytes = 0

    def charge(self, n: int) -> None:
        if not self._rate:
            return
        self._bytes += n
        ahead = self._bytes / self._rate - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)


def _frames(buf: memoryview) -> typing.Iterator[tuple[int, int, int, int, memoryview]]:
    """(position, index, term, type, payload) of each frame of a segment's bytes (verified
    when they were written or recovered)."""
    pos = 0
    while pos < len(buf):
        (length, _) = FRAME_PREFIX.unpack_from(buf, pos)
        index, term, entry_type = FRAME_TAIL.unpack_from(buf, pos + FRAME_PREFIX.size)
        yield pos, index, term, entry_type, buf[pos + FRAME_HEADER_BYTES:pos + 4 + length]
        pos += 4 + length


def _read_segment(disk: Disk, seg: Segment, size: int, throttle: _Throttle) -> memoryview:
    buf = memoryview(disk.pread(seg.file, size, 0))
    throttle.charge(len(buf))
    return buf


def run_clean(disk: Disk, plan: CleanPlan, settings: CleanSettings) -> CleanResult:
    """Blocking (a worker thread): build the key map over the plan's segments (as far as it
    fits in settings.key_map_bytes), then write a cleaned copy of each segment that changes.
    The plan's segments must stay open meanwhile (SegmentLog.pin).

    Raises DiskError; a `.cleaned` file it leaves is deleted by SegmentLog.open.
    """
    started = time.monotonic()
    throttle = _Throttle(settings.io_bytes_per_s)
    max_keys = max(1, settings.key_map_bytes // KEY_MAP_ENTRY_BYTES)
    key_map: dict[bytes, int] = {}
    opaque_seen = False
    mapped: list[tuple[Segment, int]] = []  # (segment, its size when planned)
    result = CleanResult([], 0)
    full = False
    for seg in plan.segments:
        size = seg.size_bytes
        buf = _read_segment(disk, seg, size, throttle)
        result.bytes_read += len(buf)
        for _, _, _, entry_type, payload in _frames(buf):
            if entry_type != NORMAL or not payload:
                continue
            header = read_header(payload)
            decoded = decode_records(payload) if settings.cleanable(header) else None
            if decoded is None:
                opaque_seen = opaque_seen or header.record_count > 0
                continue
            for record in decoded[1]:
                if record.key is not None:
                    key_map[key_digest(record.key)] = header.base_offset + record.offset_delta
            if len(key_map) >= max_keys:
                full = True
        if full:
            logger.info("key map full (%d keys) in segment %s: cleaning the %d segment(s) "
                        "before it", len(key_map), seg.path.name, len(mapped))
            break
        mapped.append((seg, size))
    if not mapped:
        return result
    result.clean_offset = max((s.next_offset for s, _ in mapped if s.has_batches), default=0)
    horizon_ms = settings.now_ms - settings.delete_retention_ms
    for seg, size in mapped:
        buf = _read_segment(disk, seg, size, throttle)
        new = _clean_segment(disk, seg, buf, key_map, horizon_ms, not opaque_seen, settings, result)
        if new is not None:
            result.replacements.append((seg, new))
            throttle.charge(new.size_bytes)
            result.bytes_written += new.size_bytes
    if opaque_seen:
        result.oldest_tombstone_ms = None  # not removable now: no pass is due for them
    result.seconds = time.monotonic() - started
    return result


def _clean_segment(disk: Disk, seg: Segment, buf: memoryview, key_map: dict[bytes, int],
                   horizon_ms: int, drop_tombstones: bool, settings: CleanSettings,
                   result: CleanResult) -> Segment | None:
    """Write the cleaned copy of seg (from its bytes buf) to `<name>.cleaned`, fsynced, and
    index it; None if nothing in it changes."""
    frames: list[bytes | memoryview] = []
    changed = False
    dropped = tombstones = 0
    for _, index, term, entry_type, payload in _frames(buf):
        if entry_type == NORMAL and payload:
            header = read_header(payload)
            decoded = decode_records(payload) if settings.cleanable(header) else None
            if decoded is not None:
                kept = []
                for record in decoded[1]:
                    if record.key is None:
                        kept.append(record)
                        continue
                    latest = key_map.get(key_digest(record.key))
                    if latest is not None and latest != header.base_offset + record.offset_delta:
                        dropped += 1
                        continue
                    if record.tombstone:
                        if drop_tombstones and header.max_timestamp_ms < horizon_ms:
                            tombstones += 1
                            continue
                        result.oldest_tombstone_ms = min(result.oldest_tombstone_ms or header.max_timestamp_ms,
                                                         header.max_timestamp_ms)
                    kept.append(record)
                if len(kept) != len(decoded[1]):
                    payload = memoryview(rebuild_batch(payload, header, kept))
                    changed = True
        frames.append(frame_header(LogEntry(index, term, entry_type, payload)))
        frames.append(payload)
    if not changed:
        return None
    result.records_dropped += dropped
    result.tombstones_dropped += tombstones
    tmp = seg.path.with_name(seg.path.name + CLEANED_SUFFIX)
    f = disk.open(tmp)
    try:
        disk.truncate(f, 0)
        disk.pwritev(f, frames, 0)
        disk.fsync(f)
        disk.fsync_dir(seg.path.parent)
        return _index_new_segment(disk, f, seg, frames, settings.index_interval_bytes)
    except BaseException:
        disk.close(f)
        raise


def _index_new_segment(disk: Disk, f: DiskFile, old: Segment, frames: list[bytes | memoryview],
                       index_interval_bytes: int) -> Segment:
    new = Segment(path=old.path, file=f, first_index=old.first_index, offset_floor=old.offset_floor)
    pos = 0
    for header_bytes, payload in zip(frames[::2], frames[1::2]):
        new.positions.append(pos)
        entry_type = header_bytes[FRAME_HEADER_BYTES - 1]
        if entry_type == NORMAL and payload:
            new.add_batch(pos, read_header(payload), index_interval_bytes)
        pos += len(header_bytes) + len(payload)
    new.size_bytes = pos
    assert new.entry_count == old.entry_count and new.next_offset == old.next_offset, \
        (old.path, new.entry_count, old.entry_count, new.next_offset, old.next_offset)
    return new


__all__ = ["CLEANED_SUFFIX", "CleanPlan", "CleanResult", "CleanSettings", "Record", "decode_records",
           "plan_clean", "plain_data_batch", "rebuild_batch", "run_clean"]
