"""The log cleaner of compacted partition logs (`cleanup.policy=compact`): keeps the latest
record of each key, drops tombstones once they are old enough. See docs/compaction.md.

One pass over a SegmentLog, in three steps:

    plan = plan_clean(log, ...)                          # loop thread: which segments
    result = await to_thread(run_clean, disk, plan, ...) # worker thread: key map, new files
    log.replace_segment(old, new) for each new segment   # loop thread: rename and swap

The worker thread reads only closed segments below what the caller says is committed and
applied (they never change again, except by being deleted: the log keeps their files open
while pinned) and writes each rewritten segment to `<name>.cleaned` and fsyncs it; the swap
renames it over the segment (durable at the log's next sync, which fsyncs the directory).
A crash leaves the old segment (and a `.cleaned` file that open() deletes) or the new one,
never a mix.

Every entry keeps its Raft index, term and type: a rewritten batch keeps its baseOffset,
lastOffsetDelta, timestamps and producer fields, and the records kept byte for byte; only
the record count, length and CRC change. A batch left without records stays as an empty
batch (61 bytes), so the offsets of every segment and of the log are unchanged and the
compacted log is still the Raft log (followers are sent compacted entries; see
docs/compaction.md). Batches whose records cannot be read here (compressed with snappy,
lz4 or zstd) and transactional batches of a transaction not decided yet are kept whole;
while one is in the range cleaned, no tombstone is removed (an older value of its key may
hide in it). The records of aborted transactions are all removed, those of committed ones
cleaned by key (CleanSettings.transactional); a commit or abort marker goes once no record
of its transaction is left and its delete horizon has passed (_marker_changes).
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import logging
import struct
import time
import typing
from array import array

import attrs
import crc32c

from chronik_trio.raft.types import EntryType
from chronik_trio.record_batch import (ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_DELETE_HORIZON,
                                       ATTR_TRANSACTIONAL, BASE_TIMESTAMP_POSITION,
                                       COMPRESSION_GZIP, CRC_POSITION, CRC_START,
                                       HEADER_BYTES, LENGTH_PREFIX_BYTES, BatchHeader,
                                       ScannedRecord, narrow_header, read_header, records_buffer,
                                       scan_records)
from chronik_trio.storage.disk import Disk, DiskFile
from chronik_trio.storage.frame import FRAME_HEADER_BYTES, FRAME_LENGTH_MIN, FRAME_PREFIX
from chronik_trio.storage.segment import Segment
from chronik_trio.varint import read_uvarint, read_varint, write_uvarint

logger = logging.getLogger(__name__)

NORMAL = int(EntryType.NORMAL)
CLEANED_SUFFIX = ".cleaned"
# What one key costs in the key map (a dict of 16-byte BLAKE2b digests to offsets), as
# counted against log.cleaner.dedupe.buffer.size: measured ~110-125 bytes in CPython 3.11.
KEY_MAP_ENTRY_BYTES = 128
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")
# A frame's length (the bytes after it) and its entry type (the header's last byte).
_FRAME_LENGTH_TYPE = struct.Struct(">I%dxB" % (FRAME_HEADER_BYTES - 5))
_BATCH_FIELDS = narrow_header("base_offset", "attributes", "last_offset_delta", "record_count")
# What the second read needs of every batch (the rest of the header only for the few it changes).
_COPY_FIELDS = narrow_header("base_offset", "attributes", "last_offset_delta", "max_timestamp_ms",
                             "record_count")


class _Indexed(typing.NamedTuple):
    """What Segment.add_batch reads of a batch (a BatchHeader has the same fields)."""

    base_offset: int
    last_offset: int
    max_timestamp_ms: int
_TXN_OR_CONTROL = ATTR_TRANSACTIONAL | ATTR_CONTROL
# The worker thread does not give up the GIL by itself (time.sleep(0) costs ~70 us with
# Linux's timer slack, more than a whole 1-record batch): the node lowers the interpreter's
# switch interval while a pass runs instead (node/compaction.py, docs/compaction.md).
# Copies are written and made durable this much at a time (see _SyncGroups).
WRITE_SYNC_BYTES = 1 << 20
# A rewritten gzip batch is compressed at zlib's default level (gzip.compress's default, 9,
# costs several times more for a few percent).
GZIP_LEVEL = 6
_BATCH_LENGTH_POSITION = 8
_RECORD_COUNT_POSITION = HEADER_BYTES - 4
_ATTRIBUTES_POSITION = CRC_START

# What the cleaner does with a transactional data batch, as the caller's rule
# (CleanSettings.transactional) says from the partition's transactions:
KEEP = "keep"  # whole, unread (its transaction is not decided here): no tombstone goes either
CLEAN = "clean"  # a committed transaction's: its records are cleaned by key like any other
ABORTED = "aborted"  # an aborted transaction's: every record goes, none enters the key map
TxnRule = typing.Callable[[BatchHeader], str]
# Transaction markers (transactional control batches) go as Kafka's go (LogCleaner,
# KIP-98 and KIP-534): once no record of the marker's transaction is left in the log, the
# pass that sees it sets the marker's delete horizon (attributes bit 6, baseTimestamp = now
# + delete.retention.ms, the record's timestamp kept); a later pass past that horizon
# empties it. An empty batch (never written by producers) neither opens nor ends a
# transaction when a replica replays the log (partition/transactions.py), so a removed
# marker leaves no transaction open behind it (docs/compaction.md).
# What the first read notes of each transactional batch, for the markers (_TxnEvent.kind):
_RECORDS_MAYBE = 0  # a committed transaction's batch: records stay if the key map keeps any
_RECORDS_STAY = 1  # kept whole (open transaction, or records that cannot be read)
_RECORDS_GONE = 2  # an aborted transaction's: every record goes in this pass
_MARKER = 3  # a commit or abort marker


class _TxnEvent(typing.NamedTuple):
    kind: int
    first: int  # offsets
    last: int
    producer_id: int
    horizon_ms: int | None = None  # a marker's delete horizon, once set


def keep_transactional(header: BatchHeader) -> str:
    return KEEP


class Record(typing.NamedTuple):  # a NamedTuple: the cleaner makes one per record read
    offset_delta: int
    key: bytes | None
    tombstone: bool
    raw: bytes  # the whole record, its length varint included


def decode_records(payload: bytes | memoryview) -> tuple[BatchHeader, list[Record]] | None:
    """The records of a v2 batch, or None when they cannot be read here (a codec other than
    none or gzip, or bytes that do not parse: such a batch is kept whole)."""
    payload = bytes(payload)
    header = read_header(payload)
    body = records_buffer(payload, HEADER_BYTES, len(payload), header.attributes)
    if body is None:
        return None
    data, start, end = body
    scanned = scan_records(data, start, end, header.record_count, header.base_offset)
    if scanned is None:
        return None
    records = []
    for start, stop, _, offset, tombstone in scanned:
        raw = data[start:stop]
        records.append(Record(offset - header.base_offset, _raw_key(raw), tombstone, raw))
    return header, records


def _raw_key(raw: bytes) -> bytes | None:
    """The key of one record (its bytes from the length varint on)."""
    pos = read_uvarint(raw, 0)[1] + 1  # length, attributes
    pos = read_uvarint(raw, read_uvarint(raw, pos)[1])[1]  # timestamp and offset deltas
    key_len, pos = read_varint(raw, pos)
    return raw[pos:pos + key_len] if key_len >= 0 else None


def rebuild_batch(payload: bytes | memoryview, header: BatchHeader, kept: list[Record]) -> bytes:
    """The batch with only `kept` of its records (see _rebuilt)."""
    return _rebuilt(bytes(payload), 0, header.attributes, [bytes(r.raw) for r in kept])


def _rebuilt(buf: bytes, pos: int, attributes: int, kept: list[bytes]) -> bytes:
    """The batch at buf[pos:] with only the records `kept` (their bytes): baseOffset,
    lastOffsetDelta, timestamps and producer fields unchanged; a gzip batch is compressed
    again; no records -> an empty, uncompressed batch (61 bytes)."""
    body = b"".join(kept)
    if not kept:
        attributes &= ~ATTR_COMPRESSION_MASK
    elif attributes & ATTR_COMPRESSION_MASK == COMPRESSION_GZIP:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    out = bytearray(buf[pos:pos + HEADER_BYTES])
    out += body
    _I32.pack_into(out, _BATCH_LENGTH_POSITION, len(out) - LENGTH_PREFIX_BYTES)
    _I16.pack_into(out, _ATTRIBUTES_POSITION, attributes)
    _I32.pack_into(out, _RECORD_COUNT_POSITION, len(kept))
    _U32.pack_into(out, CRC_POSITION, crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


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
    transactional: TxnRule = keep_transactional


@attrs.define
class CleanResult:
    """What run_clean produced: new segments (written, fsynced, not yet swapped in) by the
    old one they replace, and where the key map ended (the Kafka offset below which the log
    is now clean)."""

    replacements: list[tuple[Segment, Segment]]
    clean_offset: int
    bytes_read: int = 0  # both reads (key map, copies)
    bytes_cleaned: int = 0  # the size of the segments the pass went over: "MB of log cleaned"
    bytes_written: int = 0
    records_dropped: int = 0
    tombstones_dropped: int = 0
    aborted_dropped: int = 0  # records of aborted transactions
    seconds: float = 0.0
    # The newest-timestamp of the oldest batch holding a tombstone kept (None: none kept):
    # once it is delete.retention.ms old, a pass is due even without new data.
    oldest_tombstone_ms: int | None = None
    markers_horizoned: int = 0  # markers given their delete horizon in this pass
    markers_dropped: int = 0  # markers emptied (past their horizon)
    # The earliest delete horizon of a marker left waiting for it: a pass is due then.
    marker_horizon_ms: int | None = None
    # (producer id, offset) of each abort marker emptied, by the first index of the segment
    # whose copy no longer holds it: once that copy is swapped in, the replica's aborted
    # index must forget the transaction (TransactionState.forget_aborted).
    aborts_removed: dict[int, list[tuple[int, int]]] = attrs.Factory(dict)


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
    tombstones kept by the last pass are now past delete.retention.ms, or a marker past its
    delete horizon (tombstones_due).
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
        reason = "tombstones or markers past delete.retention.ms"
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


def _read_segment(disk: Disk, seg: Segment, size: int, throttle: _Throttle) -> bytes:
    buf = disk.pread(seg.file, size, 0)
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
    key_map = _KeyMap()
    mapped: list[tuple[Segment, int, int, bool]] = []  # (segment, size planned, records, complete)
    result = CleanResult([], 0)
    for seg in plan.segments:
        size = seg.size_bytes
        if seg.holds_records is False:  # every batch in it emptied: nothing to map or change
            mapped.append((seg, size, 0, True))
            continue
        buf = _read_segment(disk, seg, size, throttle)
        result.bytes_read += len(buf)
        records, complete, live = _map_segment(buf, key_map, settings.transactional)
        if not live:
            seg.holds_records = False
        if len(key_map.latest) >= max_keys:
            logger.info("key map full (%d keys) in segment %s: cleaning the %d segment(s) "
                        "before it", len(key_map.latest), seg.path.name, len(mapped))
            break
        mapped.append((seg, size, records, complete))
    if not mapped:
        return result
    result.clean_offset = max((s.next_offset for s, _, _, _ in mapped if s.has_batches), default=0)
    kept = _Kept.of(key_map)
    horizon_ms = settings.now_ms - settings.delete_retention_ms
    markers, result.marker_horizon_ms = _marker_changes(key_map.txn_events, kept, settings.now_ms,
                                                        settings.now_ms + settings.delete_retention_ms)
    syncs = _SyncGroups(disk)
    try:
        for seg, size, records, complete in mapped:
            result.bytes_cleaned += size
            first, last = seg.offset_lo, seg.next_offset - 1
            if complete and not kept.tombstones_in(first, last) and kept.records_in(first, last) == records \
                    and not _any_between(markers, first, last):
                continue  # every record in it stays, no tombstone, no marker changes: not read again
            buf = _read_segment(disk, seg, size, throttle)
            result.bytes_read += len(buf)
            new = _clean_segment(disk, seg, buf, key_map, kept, markers, horizon_ms, settings, result, syncs)
            if new is not None:
                result.replacements.append((seg, new))
                throttle.charge(new.size_bytes)
                result.bytes_written += new.size_bytes
        syncs.end()
    except BaseException:
        syncs.abandon()
        for _, new in result.replacements:  # their .cleaned files are deleted by SegmentLog.open
            disk.close(new.file)
        raise
    # Each copy is durable (_SyncGroups) before the swap renames it over its segment; the
    # rename is made durable by the log's next sync (its directory's fsync), as a rename over
    # a file whose data was synced needs: no directory fsync here.
    if key_map.opaque:
        result.oldest_tombstone_ms = None  # not removable now: no pass is due for them
    result.seconds = time.monotonic() - started
    return result


def _marker_changes(events: list[_TxnEvent], kept: _Kept, now_ms: int,
                    new_horizon_ms: int) -> tuple[list[int], int | None]:
    """(the offsets of the markers this pass changes, sorted; the earliest delete horizon of
    a marker left waiting for it). A marker may go once no record of its transaction is
    left after this pass (Kafka's CleanedTransactionMetadata: the records of an aborted
    transaction all go, a committed transaction's batch keeps records while the key map
    keeps any of its offsets; a tombstone going in this same pass still counts, so the
    marker waits for the next): without a delete horizon yet it gets one now, past it it
    is emptied (so a pass that sets horizons is due again at new_horizon_ms). The events are
    in log order, from the log's first segment."""
    with_records: set[int] = set()  # producers whose transaction so far has records left
    changes: list[int] = []
    waiting: int | None = None
    for kind, first, last, producer_id, marker_horizon in events:
        if kind == _MARKER:
            if producer_id in with_records:
                with_records.discard(producer_id)
            elif marker_horizon is not None and marker_horizon <= now_ms:
                changes.append(first)
            else:
                if marker_horizon is None:
                    changes.append(first)
                    marker_horizon = new_horizon_ms
                if waiting is None or marker_horizon < waiting:
                    waiting = marker_horizon
        elif kind == _RECORDS_STAY or (kind == _RECORDS_MAYBE and kept.records_in(first, last)):
            with_records.add(producer_id)
    return changes, waiting


def _any_between(offsets: list[int], first: int, last: int) -> bool:
    k = bisect.bisect_left(offsets, first)
    return k < len(offsets) and offsets[k] <= last


def _marker_record(buf: bytes, start: int, pos: int, header: BatchHeader) -> tuple[bytes, bool] | None:
    """(the record, whether it is an abort) of the transaction marker at buf[start:pos] (a
    control batch with one uncompressed record whose key says commit or abort), or None if
    it is not one."""
    if header.record_count != 1 or header.attributes & ATTR_COMPRESSION_MASK:
        return None
    scanned = scan_records(buf, start + HEADER_BYTES, pos, 1, header.base_offset)
    if scanned is None:
        return None
    record_start, record_stop, key, _, _ = scanned[0]
    if key is None or len(key) < 4 or key[2:4] not in (b"\x00\x00", b"\x00\x01"):
        return None  # a control record of another type (e.g. Kafka's leader change)
    return buf[record_start:record_stop], key[2:4] == b"\x00\x00"


def _with_delete_horizon(buf: bytes, start: int, header: BatchHeader, record: bytes, horizon_ms: int) -> bytes:
    """The marker batch at buf[start:] with its delete horizon set as Kafka sets it (KIP-534):
    attributes bit 6, baseTimestamp = the horizon, the record's timestamp delta rewritten so
    its timestamp is unchanged (maxTimestamp unchanged too)."""
    length, pos = read_varint(record, 0)
    ts_delta, after = read_varint(record, pos + 1)  # attributes, timestamp delta
    delta = header.base_timestamp_ms + ts_delta - horizon_ms
    body = record[pos:pos + 1] + write_uvarint((delta << 1) ^ (delta >> 63)) + record[after:]
    new_record = write_uvarint(len(body) << 1) + body
    out = bytearray(_rebuilt(buf, start, header.attributes | ATTR_DELETE_HORIZON, [new_record]))
    _I64.pack_into(out, BASE_TIMESTAMP_POSITION, horizon_ms)
    _U32.pack_into(out, CRC_POSITION, crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


class _SyncGroups:
    """The fsyncs of a pass's copies, made in groups: the fsyncs of the pieces written since
    the group began are put off (Disk.deferred_sync) until about WRITE_SYNC_BYTES are
    written, then one syncfs(2) of the filesystem makes them all durable. A pass over small
    segments rewrites several copies of a few hundred KiB each: one flush of the disk
    for them instead of one fsync each (measured on this machine: 5 files of 200 KB, 18.5 ms
    of fsyncs against 10.7 ms for one syncfs, load ~28); the copies never have much more
    than WRITE_SYNC_BYTES unsynced for the produce path's own fsyncs to queue behind on the
    same disk. Nothing depends on a copy before the pass ends (the swaps come after). A
    group of one file (a whole 1 MiB piece of a big segment's copy, or a pass's only copy)
    gets a plain fsync: syncfs would also flush whatever else the filesystem holds."""

    def __init__(self, disk: Disk) -> None:
        self._disk = disk
        self._block: typing.ContextManager[None] | None = None
        self._files: dict[int, DiskFile] = {}
        self._pending = 0

    def fsync(self, f: DiskFile, written: int) -> None:
        if self._block is None and written >= WRITE_SYNC_BYTES:
            self._disk.fsync(f)  # a whole piece on its own
            return
        if self._block is None:
            self._block = self._disk.deferred_sync(f.path.parent)
            self._block.__enter__()
        self._disk.fsync(f)  # put off until the group ends
        self._files[f.fd] = f
        self._pending += written
        if self._pending >= WRITE_SYNC_BYTES:
            self.end()

    def end(self) -> None:
        """The group's syncfs, or its one file's fsync (raises DiskError)."""
        block, files = self._block, list(self._files.values())
        self._block, self._files, self._pending = None, {}, 0
        if block is None:
            return
        if len(files) > 1:
            block.__exit__(None, None, None)
            return
        _quit(block)
        self._disk.fsync(files[0])

    def abandon(self) -> None:
        """After an error: no sync (the copies are left for SegmentLog.open to delete)."""
        block, self._block, self._files = self._block, None, {}
        if block is not None:
            _quit(block)


def _quit(block: typing.ContextManager[None]) -> None:
    """Leave a Disk.deferred_sync block without its syncfs."""
    error = RuntimeError("no syncfs for this group")
    block.__exit__(RuntimeError, error, None)


def _write_synced(disk: Disk, f: DiskFile, chunks: list[bytes | memoryview], syncs: _SyncGroups) -> None:
    """Write the chunks from offset 0, WRITE_SYNC_BYTES at a time, each piece joined (one
    small copy, rather than a vector of thousands of buffers when many 1-record batches
    were emptied) and fsynced through `syncs`: the copies never have much more unwritten
    bytes than that for the produce path's own fsyncs to queue behind on the same disk."""
    offset = pending = 0
    group: list[bytes | memoryview] = []
    for chunk in chunks:
        if pending + len(chunk) < WRITE_SYNC_BYTES:
            group.append(chunk)
            pending += len(chunk)
            continue
        view = memoryview(chunk)
        while pending + len(view) >= WRITE_SYNC_BYTES:
            cut = WRITE_SYNC_BYTES - pending
            group.append(view[:cut])
            view = view[cut:]
            disk.pwritev(f, [b"".join(group)], offset)
            syncs.fsync(f, WRITE_SYNC_BYTES)
            offset, pending, group = offset + WRITE_SYNC_BYTES, 0, []
        if view:
            group.append(view)
            pending += len(view)
    if group:
        disk.pwritev(f, [b"".join(group)], offset)
    syncs.fsync(f, pending)


@attrs.define
class _KeyMap:
    """What the first read of a pass learns: each key's latest offset, and what the second
    read needs to leave whole batches alone without reading their records again."""

    latest: dict[bytes, int] = attrs.Factory(dict)
    keyless: list[int] = attrs.Factory(list)  # offsets of keyless records (always kept)
    tombstones: list[tuple[bytes, int]] = attrs.Factory(list)  # (key, offset) of each tombstone
    unreadable: set[int] = attrs.Factory(set)  # baseOffsets of batches whose records are unknown
    txn_events: list[_TxnEvent] = attrs.Factory(list)  # transactional batches and markers, in log order
    opaque: bool = False  # a batch holding records of unknown keys was seen: no tombstone goes


@attrs.frozen
class _Kept:
    """The offsets of the records a pass keeps by key (each key's latest, and keyless ones),
    sorted, and those of them that are tombstones: how many of a batch's records stay is two
    bisections, so a batch that keeps all or none of its records is never scanned again."""

    offsets: list[int]
    tombstones: list[int]

    @classmethod
    def of(cls, key_map: _KeyMap) -> _Kept:
        latest = key_map.latest
        offsets = sorted(itertools.chain(latest.values(), key_map.keyless))
        tombstones = sorted(offset for key, offset in key_map.tombstones if latest[key] == offset)
        return cls(offsets, tombstones)

    def records_in(self, first: int, last: int) -> int:
        return bisect.bisect_right(self.offsets, last) - bisect.bisect_left(self.offsets, first)

    def tombstones_in(self, first: int, last: int) -> bool:
        k = bisect.bisect_left(self.tombstones, first)
        return k < len(self.tombstones) and self.tombstones[k] <= last


def _scan(buf: bytes, start: int, pos: int, attributes: int, count: int, base_offset: int,
          last_offset: int) -> tuple[bytes, list[ScannedRecord]] | None:
    """(the records' buffer, the records) of the batch at buf[start:pos], or None if they
    cannot be read here (a codec other than none or gzip, bytes that do not parse, or offsets
    outside the batch's range)."""
    body = records_buffer(buf, start + HEADER_BYTES, pos, attributes)
    scanned = None if body is None else scan_records(*body, count, base_offset)
    if scanned is None or scanned[-1][3] > last_offset:
        return None
    return body[0], scanned  # type: ignore[index]


def _map_segment(buf: bytes, key_map: _KeyMap, transactional: TxnRule) -> tuple[int, bool, int]:
    """Map each key of the segment's bytes `buf` to its latest offset (in key_map). Returns
    how many records were mapped, whether the segment is `complete` (no batch in it that
    the second read changes other than by key: an aborted transaction's) and how many of
    its batches hold records at all (any kind).

    The frames are walked inline (each frame's length and entry type, as verified when they
    were written or recovered; not by a generator) and an uncompressed batch's records are
    scanned in place: with one record a batch this loop runs once per record."""
    records, complete, live = 0, True, 0
    latest, keyless, tombstones = key_map.latest, key_map.keyless, key_map.tombstones
    txn_events = key_map.txn_events
    frame_fields, batch_fields = _FRAME_LENGTH_TYPE.unpack_from, _BATCH_FIELDS.unpack_from
    pos, size = 0, len(buf)
    while pos < size:
        length, entry_type = frame_fields(buf, pos)
        start, pos = pos + FRAME_HEADER_BYTES, pos + 4 + length
        if entry_type != NORMAL or start == pos:
            continue
        base_offset, attributes, last_delta, count = batch_fields(buf, start)
        if not count:
            continue
        live += 1
        txn_producer = None
        if attributes & _TXN_OR_CONTROL:
            header = read_header(buf, start)
            if attributes & ATTR_CONTROL:  # no key of the topic's
                if attributes & ATTR_TRANSACTIONAL:  # a marker
                    horizon = header.base_timestamp_ms if attributes & ATTR_DELETE_HORIZON else None
                    txn_events.append(_TxnEvent(_MARKER, base_offset, base_offset, header.producer_id, horizon))
                continue
            rule = transactional(header)
            if rule == KEEP:
                key_map.opaque = True
            if rule != CLEAN:
                complete = complete and rule == KEEP
                txn_events.append(_TxnEvent(_RECORDS_STAY if rule == KEEP else _RECORDS_GONE, base_offset,
                                            base_offset + last_delta, header.producer_id))
                continue
            txn_producer = header.producer_id
        if attributes & ATTR_COMPRESSION_MASK:
            scan = _scan(buf, start, pos, attributes, count, base_offset, base_offset + last_delta)
            scanned = None if scan is None else scan[1]
        else:
            scanned = scan_records(buf, start + HEADER_BYTES, pos, count, base_offset)
            if scanned is not None and scanned[-1][3] > base_offset + last_delta:
                scanned = None
        if txn_producer is not None:
            txn_events.append(_TxnEvent(_RECORDS_MAYBE if scanned is not None else _RECORDS_STAY, base_offset,
                                        base_offset + last_delta, txn_producer))
        if scanned is None:
            key_map.opaque = True
            key_map.unreadable.add(base_offset)
            continue
        records += count
        for _, _, key, offset, tombstone in scanned:
            if key is None:
                keyless.append(offset)
            else:
                latest[key] = offset
                if tombstone:
                    tombstones.append((key, offset))
    return records, complete, live


def _clean_segment(disk: Disk, seg: Segment, buf: bytes, key_map: _KeyMap, kept: _Kept, markers: list[int],
                   horizon_ms: int, settings: CleanSettings, result: CleanResult,
                   syncs: _SyncGroups) -> Segment | None:
    """Write the cleaned copy of seg (from its bytes buf) to `<name>.cleaned`, fsynced, and
    index it; None if nothing in it changes.

    The copy is the old bytes, in runs, with each batch that loses records replaced: a run
    of unchanged frames is one slice of `buf`, never decoded again or re-encoded. How many
    of a batch's records stay comes from `kept` first: only a batch that keeps some of its
    records (or a tombstone that may go) is scanned again.
    """
    view = memoryview(buf)
    chunks: list[bytes | memoryview] = []
    positions = array("Q")
    batches: list[tuple[int, _Indexed]] = []  # (position in the copy, what the index needs)
    run_start = shift = 0  # where the current run of unchanged bytes starts; copy - old
    dropped = tombstones = aborted = 0
    oldest_tombstone_ms = result.oldest_tombstone_ms
    drop_tombstones = not key_map.opaque
    km_get = key_map.latest.get
    unreadable = key_map.unreadable
    offsets, tombstones_in = kept.offsets, kept.tombstones_in
    bisect_left, bisect_right = bisect.bisect_left, bisect.bisect_right
    frame_fields, transactional = _FRAME_LENGTH_TYPE.unpack_from, settings.transactional
    copy_fields = _COPY_FIELDS.unpack_from
    frame_pos, size = 0, len(buf)
    while frame_pos < size:  # the frames, walked inline as in _map_segment
        length, entry_type = frame_fields(buf, frame_pos)
        start, pos = frame_pos + FRAME_HEADER_BYTES, frame_pos + 4 + length
        at = frame_pos + shift  # where the frame starts in the copy
        positions.append(at)
        if entry_type != NORMAL or start == pos:
            frame_pos = pos
            continue
        first, attributes, last_delta, max_ts, count = copy_fields(buf, start)
        last = first + last_delta
        # The index needs baseOffset, lastOffsetDelta and maxTimestamp: a rewrite keeps them.
        batches.append((at, _Indexed(first, last, max_ts)))
        rule = CLEAN
        if attributes & _TXN_OR_CONTROL and count:
            header = read_header(buf, start)
            rule = KEEP if attributes & ATTR_CONTROL else transactional(header)
        if rule == KEEP and attributes & ATTR_CONTROL and _any_between(markers, first, first):
            marker = _marker_record(buf, start, pos, header)
            if marker is None:
                frame_pos = pos
                continue
            record, abort = marker
            if attributes & ATTR_DELETE_HORIZON:  # past it (_marker_changes): the marker goes
                payload = _rebuilt(buf, start, attributes, [])
                result.markers_dropped += 1
                if abort:
                    result.aborts_removed.setdefault(seg.first_index, []).append(
                        (header.producer_id, header.base_offset))
            else:
                payload = _with_delete_horizon(buf, start, header, record,
                                               settings.now_ms + settings.delete_retention_ms)
                result.markers_horizoned += 1
        elif not count or rule == KEEP or first in unreadable:
            frame_pos = pos
            continue
        elif rule == ABORTED:
            payload = _rebuilt(buf, start, attributes, [])
            aborted += count
        else:
            staying = bisect_right(offsets, last) - bisect_left(offsets, first)
            if staying == count:  # all stay, unless a tombstone among them goes now
                if not tombstones_in(first, last):
                    frame_pos = pos
                    continue
                if not (drop_tombstones and max_ts < horizon_ms):
                    if oldest_tombstone_ms is None or max_ts < oldest_tombstone_ms:
                        oldest_tombstone_ms = max_ts
                    frame_pos = pos
                    continue
            if staying == 0:  # none stays: each has a later record of its key
                payload = _rebuilt(buf, start, attributes, [])
                dropped += count
            else:
                scan = _scan(buf, start, pos, attributes, count, first, last)
                assert scan is not None, (seg.path, first)  # it was read by the first pass
                data, scanned = scan
                records = []
                for record in scanned:
                    key = record[2]
                    if key is not None:
                        if km_get(key) != record[3]:
                            dropped += 1
                            continue
                        if record[4]:  # a tombstone
                            if drop_tombstones and max_ts < horizon_ms:
                                tombstones += 1
                                continue
                            if oldest_tombstone_ms is None or max_ts < oldest_tombstone_ms:
                                oldest_tombstone_ms = max_ts
                    records.append(record)
                if len(records) == count:
                    frame_pos = pos
                    continue
                payload = _rebuilt(buf, start, attributes, [data[r[0]:r[1]] for r in records])
        tail = view[frame_pos + FRAME_PREFIX.size:start]  # index, term, type: unchanged
        frame = FRAME_PREFIX.pack(FRAME_LENGTH_MIN + len(payload), crc32c.crc32c(payload, crc32c.crc32c(tail)))
        if run_start < frame_pos:
            chunks.append(view[run_start:frame_pos])
        chunks += (frame, tail, payload)
        run_start = pos
        shift += FRAME_HEADER_BYTES + len(payload) - length - 4
        frame_pos = pos
    result.oldest_tombstone_ms = oldest_tombstone_ms
    if not chunks:
        return None
    if run_start < size:
        chunks.append(view[run_start:])
    result.records_dropped += dropped
    result.tombstones_dropped += tombstones
    result.aborted_dropped += aborted
    size = len(buf) + shift
    tmp = seg.path.with_name(seg.path.name + CLEANED_SUFFIX)
    f = disk.open(tmp)
    try:
        disk.truncate(f, 0)
        _write_synced(disk, f, chunks, syncs)
    except BaseException:
        disk.close(f)
        raise
    new = Segment(path=seg.path, file=f, first_index=seg.first_index, offset_floor=seg.offset_floor)
    new.positions = positions
    for position, header in batches:
        new.add_batch(position, header, settings.index_interval_bytes)
    new.size_bytes = size
    assert new.entry_count == seg.entry_count and new.next_offset == seg.next_offset, \
        (seg.path, new.entry_count, seg.entry_count, new.next_offset, seg.next_offset)
    return new


__all__ = ["ABORTED", "CLEAN", "CLEANED_SUFFIX", "KEEP", "CleanPlan", "CleanResult", "CleanSettings", "Record", "decode_records",
           "keep_transactional", "plan_clean", "rebuild_batch", "run_clean"]
