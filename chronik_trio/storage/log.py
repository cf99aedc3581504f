"""SegmentLog: a Raft group's durable log as a directory of segment files.

Writes happen on the event-loop thread (append never fsyncs); durability is made in a
worker thread through SyncTicket, so the loop keeps appending while the disk flushes:

    ticket = log.begin_sync()          # loop thread
    await trio.to_thread.run_sync(ticket.run)
    durable_index = log.end_sync(ticket)   # loop thread

A partition log (`kafka=True`) also answers Kafka reads from a sparse in-memory index.
"""

from __future__ import annotations

import bisect
import logging
import pathlib
from collections.abc import Iterator, Sequence

import attrs

from chronik_trio.raft.types import EntryType
from chronik_trio.record_batch import BatchHeader, read_header
from chronik_trio.storage.disk import Disk, DiskFile
from chronik_trio.storage.errors import (
    CompactedError,
    CorruptLogError,
    DiskError,
    EntryTooLargeError,
    InvalidBatchError,
    OffsetOutOfRange,
    UnavailableError,
)
from chronik_trio.storage.frame import (
    ENTRY_TYPES,
    FRAME_BYTES_MAX,
    FRAME_HEADER_BYTES,
    FRAME_PREFIX,
    FRAME_TAIL,
    LogEntry,
    batch_info,
    check_frame,
    frame_header,
)
from chronik_trio.storage.cleaner import CLEANED_SUFFIX
from chronik_trio.storage.segment import (
    SEGMENT_SUFFIX,
    FrameCursor,
    Segment,
    parse_segment_name,
    segment_name,
)

logger = logging.getLogger(__name__)

SEGMENT_BYTES_MAX_DEFAULT = 64 << 20
INDEX_INTERVAL_BYTES_DEFAULT = 4096
NORMAL = int(EntryType.NORMAL)


@attrs.define(eq=False)
class SyncTicket:
    """Files to fsync (and whether the directory changed), captured by begin_sync.

    `run()` may be called from any thread. Raises DiskError if an fsync fails; then the
    log's durability is unknown and its owner should close and reopen it.
    """

    disk: Disk
    files: list[DiskFile]
    directory: pathlib.Path | None
    last_index: int
    # Lowered by truncate_suffix / reset_to while the ticket is out: those entries changed.
    durable_cap: int

    def run(self) -> None:
        # The directory first: unlinks of truncated segments become durable before any
        # entry that replaces them.
        if self.directory is not None:
            self.disk.fsync_dir(self.directory)
        for f in self.files:
            self.disk.fsync(f)


class SegmentLog:
    """A Raft log in segment files; see the package docs for the frame format.

    Invariants: segments are contiguous (each starts at the previous one's last index + 1),
    there is always at least one segment (the last one is active: appends go there), and
    every entry in memory is whole on disk (possibly not yet fsynced).
    """

    def __init__(self, disk: Disk, directory: pathlib.Path, *, kafka: bool,
                 segment_bytes_max: int, index_interval_bytes: int) -> None:
        assert segment_bytes_max > 0 and index_interval_bytes > 0, \
            (segment_bytes_max, index_interval_bytes)
        self._disk = disk
        self.directory = directory
        self.kafka = kafka
        self._segment_bytes_max = segment_bytes_max
        self._index_interval_bytes = index_interval_bytes
        self._segments: list[Segment] = []
        # Term runs: entries from _run_starts[k] on have term _run_terms[k].
        self._run_starts: list[int] = []
        self._run_terms: list[int] = []
        # Term of entry first_index - 1 when known (after compaction or reset_to).
        self._prev_term: int | None = None
        # Next Kafka offset when the log holds no batch (after retention, reset_to).
        self._offset_floor = 0
        self._dirty: dict[int, Segment] = {}
        self._directory_dirty = False
        self._ticket: SyncTicket | None = None
        self._closing: list[DiskFile] = []
        self._durable_index = 0
        self._closed = False
        # The cleaner reads closed segments in a worker thread: while pinned, retired
        # segments' files stay open (as for a sync ticket).
        self._pins = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, disk: Disk, directory: pathlib.Path, *, kafka: bool, durable_index: int = 0,
             segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
             index_interval_bytes: int = INDEX_INTERVAL_BYTES_DEFAULT,
             empty_next_offset: int = 0) -> SegmentLog:
        """Open (creating if needed) the log in `directory` and recover it.

        Every frame is checked (length, CRC-32C, index contiguity, and in a partition log
        the batch header). The first bad frame past `durable_index` starts a torn tail: the
        file is cut there, later segment files are deleted, and a warning is logged.
        `empty_next_offset` is the next_offset of a partition log that holds no batch
        (after reset_to, the snapshot knows it; it is not stored in the log).

        Raises:
            CorruptLogError: a bad frame at an index <= durable_index, or the log ends
                before durable_index.
            DiskError: the disk failed.
        """
        log = cls(disk, directory, kafka=kafka, segment_bytes_max=segment_bytes_max,
                  index_interval_bytes=index_interval_bytes)
        disk.mkdir(directory)
        try:
            log._recover(durable_index, empty_next_offset)
        except BaseException:
            log._close_files()
            raise
        return log

    def _segment_files(self) -> list[tuple[int, pathlib.Path]]:
        found = []
        for name in self._disk.listdir(self.directory):
            first = parse_segment_name(name)
            if first is not None:
                found.append((first, self.directory / name))
        return sorted(found)

    def _recover(self, durable_index: int, empty_next_offset: int) -> None:
        for name in self._disk.listdir(self.directory):
            if name.endswith(SEGMENT_SUFFIX + CLEANED_SUFFIX):
                # A cleaner's copy that was never swapped in: the segment it copies is whole.
                logger.info("removing %s left by an interrupted clean", name)
                self._disk.unlink(self.directory / name)
                self._directory_dirty = True
        files = self._segment_files()
        expected = files[0][0] if files else 1
        for k, (first, path) in enumerate(files):
            if first != expected:
                reason = f"segment starts at index {first}, expected {expected}"
                self._torn_tail(durable_index, expected, path, 0, reason, files[k:])
                break
            seg = self._load_segment(path, first)
            end, reason = self._scan_frames(seg)
            expected = seg.last_index + 1
            if reason is not None:
                self._segments.append(seg)
                self._torn_tail(durable_index, expected, path, end, reason, files[k + 1:])
                break
            # An empty segment followed by another is a gap, caught on the next turn.
            self._segments.append(seg)
        if not self._segments:
            self._segments.append(self._create_segment(expected))
        self._check_durable(durable_index)
        # What we read may be only in the page cache (a crashed process, not a crashed
        # machine): make it durable before anyone counts on it.
        self._dirty = {id(seg): seg for seg in self._segments}
        self._directory_dirty = True
        self._offset_floor = self.log_start_offset if self.kafka else 0
        if self.kafka and not any(seg.has_batches for seg in self._segments):
            self._offset_floor = empty_next_offset
        self.sync()
        self._durable_index = self.last_index

    def _check_durable(self, durable_index: int) -> None:
        if self.last_index < durable_index:
            seg = self._segments[-1]
            raise CorruptLogError(
                seg.path, seg.size_bytes,
                f"log ends at index {self.last_index} but index {durable_index} is durable")

    def _load_segment(self, path: pathlib.Path, first: int) -> Segment:
        f = self._disk.open(path)
        return Segment(path=path, file=f, first_index=first, offset_floor=self.next_offset
                       if self.kafka else 0)

    def _scan_frames(self, seg: Segment) -> tuple[int, str | None]:
        """Index every good frame of `seg`'s file; returns (end of good frames, why it ended)."""
        size = self._disk.size(seg.file)
        buf = memoryview(self._disk.pread(seg.file, size, 0))
        size = len(buf)
        pos = 0
        while pos < size:
            expected = seg.first_index + seg.entry_count
            reason, length = check_frame(buf, pos, expected)
            if reason is None and self.kafka:
                reason = self._check_batch(buf, pos, length)
            if reason is not None:
                return pos, reason
            index, term, entry_type = FRAME_TAIL.unpack_from(buf, pos + FRAME_PREFIX.size)
            payload = buf[pos + FRAME_HEADER_BYTES: pos + 4 + length]
            self._index_entry(seg, pos, term, entry_type, payload)
            pos += 4 + length
            seg.size_bytes = pos
        return pos, None

    def _check_batch(self, buf: memoryview, pos: int, length: int) -> str | None:
        entry_type = buf[pos + FRAME_HEADER_BYTES - 1]
        payload = buf[pos + FRAME_HEADER_BYTES: pos + 4 + length]
        if entry_type != NORMAL or not payload:
            return None
        info = batch_info(payload)
        return f"invalid record batch: {info}" if isinstance(info, str) else None

    def _torn_tail(self, durable_index: int, index: int, path: pathlib.Path, byte_offset: int,
                   reason: str, later: list[tuple[int, pathlib.Path]]) -> None:
        """Cut the log at a bad frame for entry `index`, or raise if that entry was durable."""
        if index <= durable_index:
            raise CorruptLogError(path, byte_offset, f"{reason} (entry {index}, durable "
                                  f"through {durable_index})")
        dropped = 0
        if self._segments and self._segments[-1].path == path:
            seg = self._segments[-1]
            dropped += self._disk.size(seg.file) - byte_offset
            self._disk.truncate(seg.file, byte_offset)
            self._dirty[id(seg)] = seg
        for _, later_path in later:
            dropped += self._disk.file_size(later_path)
            self._disk.unlink(later_path)
            self._directory_dirty = True
        logger.warning("torn tail in %s at byte offset %d (%s): dropped %d bytes "
                       "(%d segment files deleted)", path, byte_offset, reason, dropped,
                       len(later))

    # ------------------------------------------------------------------ Raft view

    @property
    def first_index(self) -> int:
        """First entry present; last_index + 1 when the log is empty."""
        return self._segments[0].first_index

    @property
    def last_index(self) -> int:
        """Last entry present; first_index - 1 when empty (0 for a new log)."""
        return self._segments[-1].last_index

    @property
    def last_term(self) -> int:
        """Term of last_index (0 for a new log)."""
        if self._run_terms and self.last_index >= self.first_index:
            return self._run_terms[-1]
        return self._prev_term or 0

    @property
    def durable_index(self) -> int:
        """The last index known fsynced (set by open, sync and end_sync)."""
        return self._durable_index

    @property
    def size_bytes(self) -> int:
        return sum(seg.size_bytes for seg in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def term(self, index: int) -> int:
        """Term of entry `index`.

        Raises:
            CompactedError: index < first_index (except first_index - 1 when its term is
                known from compaction or reset_to; index 0 has term 0).
            UnavailableError: index > last_index.
        """
        if index > self.last_index:
            raise UnavailableError(index, self.last_index)
        if index < self.first_index:
            if index == self.first_index - 1 and self._prev_term is not None:
                return self._prev_term
            if index == 0:
                return 0
            raise CompactedError(index, self.first_index)
        return self._run_terms[bisect.bisect_right(self._run_starts, index) - 1]

    def _index_entry(self, seg: Segment, position: int, term: int, entry_type: int,
                     payload: bytes | memoryview, info: BatchHeader | None = None) -> None:
        index = seg.first_index + seg.entry_count
        seg.positions.append(position)
        if not self._run_terms or self._run_terms[-1] != term:
            self._run_starts.append(index)
            self._run_terms.append(term)
        if self.kafka and entry_type == NORMAL and payload:
            if info is None:
                info = batch_info(payload)
                assert isinstance(info, BatchHeader), info
            seg.add_batch(position, info, self._index_interval_bytes)

    # ------------------------------------------------------------------ appending

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Write `entries` (starting at last_index + 1, contiguous) to the active segment.

        Rolls to a new segment when a frame would take the active one past
        segment_bytes_max. One pwritev per segment touched; no fsync. In a partition log,
        every non-empty NORMAL payload must be a v2 RecordBatch with baseOffset >=
        next_offset; that is checked before anything is written.

        Raises:
            InvalidBatchError, EntryTooLargeError: nothing was written.
            DiskError: a write failed. Entries written before it (one segment's worth per
                write) stay appended, so last_index says how far the append got; the bytes of
                the failed write are cut off (best effort).
        """
        assert not self._closed, "append on a closed log"
        if not entries:
            return
        assert entries[0].index == self.last_index + 1, (entries[0].index, self.last_index)
        infos = self._batch_infos(entries) if self.kafka else None
        headers = [frame_header(e) for e in entries]
        for header, e in zip(headers, entries):
            if len(header) + len(e.payload) > FRAME_BYTES_MAX:
                raise EntryTooLargeError(e.index, len(header) + len(e.payload), FRAME_BYTES_MAX)
        start = 0
        while start < len(entries):
            seg = self._segments[-1]
            end, frames_bytes = self._fit(seg, headers, entries, start)
            if end == start:
                seg = self._roll()
                end, frames_bytes = self._fit(seg, headers, entries, start)
            self._write(seg, headers, entries, infos, start, end, frames_bytes)
            start = end

    def _batch_infos(self, entries: Sequence[LogEntry]) -> list[BatchHeader | None]:
        infos: list[BatchHeader | None] = []
        next_offset = self.next_offset
        for e in entries:
            assert e.type in ENTRY_TYPES, e.type
            if e.type != NORMAL or not e.payload:
                infos.append(None)
                continue
            info = batch_info(e.payload)
            if isinstance(info, str):
                raise InvalidBatchError(e.index, info)
            if info.base_offset < next_offset:
                raise InvalidBatchError(
                    e.index, f"baseOffset {info.base_offset} < next offset {next_offset}")
            next_offset = info.last_offset + 1
            infos.append(info)
        return infos

    def _fit(self, seg: Segment, headers: list[bytes], entries: Sequence[LogEntry],
             start: int) -> tuple[int, int]:
        """How many entries from `start` fit in `seg`: (end, their frame bytes).

        An empty segment always takes at least one entry, however large.
        """
        total = 0
        end = start
        room = self._segment_bytes_max - seg.size_bytes
        while end < len(entries):
            frame_bytes = len(headers[end]) + len(entries[end].payload)
            if total + frame_bytes > room and (seg.size_bytes or end > start):
                break
            total += frame_bytes
            end += 1
        return end, total

    def _write(self, seg: Segment, headers: list[bytes], entries: Sequence[LogEntry],
               infos: list[BatchHeader | None] | None, start: int, end: int,
               frames_bytes: int) -> None:
        buffers: list[bytes | memoryview] = []
        for k in range(start, end):
            buffers.append(headers[k])
            buffers.append(entries[k].payload)
        try:
            self._disk.pwritev(seg.file, buffers, seg.size_bytes)
        except DiskError:
            self._cut_after_failed_write(seg)
            raise
        position = seg.size_bytes
        for k in range(start, end):
            e = entries[k]
            self._index_entry(seg, position, e.term, e.type, e.payload,
                              infos[k] if infos is not None else None)
            position += len(headers[k]) + len(e.payload)
        assert position == seg.size_bytes + frames_bytes, (position, seg.size_bytes, frames_bytes)
        seg.size_bytes = position
        self._dirty[id(seg)] = seg

    def _cut_after_failed_write(self, seg: Segment) -> None:
        try:
            self._disk.truncate(seg.file, seg.size_bytes)
        except DiskError as e:
            # Recovery treats those bytes as a torn tail, so this only costs disk space.
            logger.warning("could not cut a failed write off %s: %s", seg.path, e)

    def _roll(self) -> Segment:
        seg = self._create_segment(self.last_index + 1)
        self._segments.append(seg)
        return seg

    def _create_segment(self, first_index: int) -> Segment:
        path = self.directory / segment_name(first_index)
        if self._disk.exists(path):
            # Left over from a segment deleted while its unlink was not yet durable.
            self._disk.unlink(path)
        seg = Segment(path=path, file=self._disk.open(path), first_index=first_index,
                      offset_floor=self.next_offset if self.kafka and self._segments
                      else self._offset_floor)
        self._directory_dirty = True
        self._dirty[id(seg)] = seg
        return seg

    # ------------------------------------------------------------------ durability

    def begin_sync(self) -> SyncTicket | None:
        """Capture what to fsync (files written since the last sync, and the directory if
        segments were created or deleted) and the last index written. None if nothing is
        dirty. At most one ticket may be outstanding; its files stay open until end_sync.
        """
        assert self._ticket is None, "a sync ticket is already outstanding"
        if not self._dirty and not self._directory_dirty:
            return None
        ticket = SyncTicket(
            disk=self._disk, files=[seg.file for seg in self._dirty.values()],
            directory=self.directory if self._directory_dirty else None,
            last_index=self.last_index, durable_cap=self.last_index)
        self._dirty = {}
        self._directory_dirty = False
        self._ticket = ticket
        return ticket

    def end_sync(self, ticket: SyncTicket) -> int:
        """Finish a ticket whose run() returned; returns the durable last index.

        If run() raised, do not call end_sync: close the log (close() releases the ticket)
        and reopen it.
        """
        assert ticket is self._ticket, "end_sync with a ticket this log did not issue"
        self._ticket = None
        self._release_closing()
        self._durable_index = min(ticket.last_index, ticket.durable_cap, self.last_index)
        return self._durable_index

    def sync(self) -> int:
        """begin_sync, run and end_sync in one go; returns the durable last index."""
        ticket = self.begin_sync()
        if ticket is None:
            return self._durable_index
        try:
            ticket.run()
        except BaseException:
            self._ticket = None
            raise
        return self.end_sync(ticket)

    def _retire(self, seg: Segment, *, unlink: bool) -> None:
        """Forget `seg`; its file closes now, or at end_sync if a ticket may fsync it."""
        self._dirty.pop(id(seg), None)
        if unlink:
            self._disk.unlink(seg.path)
            self._directory_dirty = True
        if self._ticket is not None or self._pins:
            self._closing.append(seg.file)
        else:
            self._disk.close(seg.file)

    def _release_closing(self) -> None:
        if self._pins:
            return  # unpin() releases them
        closing, self._closing = self._closing, []
        for f in closing:
            self._disk.close(f)

    def close(self) -> None:
        """Close every file. Does not fsync; call sync() first for a clean shutdown.

        Must not be called while a SyncTicket.run() is in progress (its files would close
        under it); after a run() that raised, close() releases the ticket.
        """
        if self._closed:
            return
        self._closed = True
        self._ticket = None
        self._close_files()

    def _close_files(self) -> None:
        if self._pins:  # the cleaner still reads some: unpin() closes them
            self._closing.extend(seg.file for seg in self._segments)
            self._segments = []
            return
        self._release_closing()
        for seg in self._segments:
            self._disk.close(seg.file)
        self._segments = []


    # ------------------------------------------------------------------ reading entries

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[LogEntry]:
        """Entries [lo, hi): at least the first one, then as many as keep the total frame
        bytes within max_bytes (no limit if None). One pread per segment touched.

        Raises:
            CompactedError: lo < first_index.
            UnavailableError: hi > last_index + 1.
        """
        assert lo <= hi, (lo, hi)
        if lo < self.first_index:
            raise CompactedError(lo, self.first_index)
        if hi > self.last_index + 1:
            raise UnavailableError(hi - 1, self.last_index)
        out: list[LogEntry] = []
        budget = max_bytes
        k = self._segment_for_index(lo) if lo < hi else len(self._segments)
        while lo < hi and k < len(self._segments):
            seg = self._segments[k]
            a = lo - seg.first_index
            b, budget = _entries_within(seg, a, min(hi, seg.last_index + 1) - seg.first_index,
                                        budget, first=not out)
            if b == a:
                break
            out.extend(self._read_entries(seg, a, b))
            if seg.first_index + b <= seg.last_index:
                break  # the byte budget ran out inside this segment
            lo = seg.first_index + b
            k += 1
        return out

    def _segment_for_index(self, index: int) -> int:
        return bisect.bisect_right(self._segments, index, key=lambda s: s.first_index) - 1

    def _read_entries(self, seg: Segment, a: int, b: int) -> list[LogEntry]:
        base = seg.positions[a]
        buf = memoryview(self._disk.pread(seg.file, seg.end_of(b - 1) - base, base))
        out = []
        for local in range(a, b):
            start = seg.positions[local] - base
            end = seg.end_of(local) - base
            index, term, entry_type = FRAME_TAIL.unpack_from(buf, start + FRAME_PREFIX.size)
            assert index == seg.first_index + local, (seg.path, index, local)
            out.append(LogEntry(index, term, entry_type, buf[start + FRAME_HEADER_BYTES:end]))
        return out

    # ------------------------------------------------------------------ removing entries

    def truncate_suffix(self, index: int) -> None:
        """Remove entries >= index (a Raft conflict). No-op if index > last_index.

        Removes whole later segments and cuts the one holding `index`; the change becomes
        durable at the next sync. A ticket outstanding now will not report removed entries
        as durable.
        """
        assert index >= self.first_index, ("cannot truncate compacted entries",
                                           index, self.first_index)
        if index > self.last_index:
            return
        if self._ticket is not None:
            self._ticket.durable_cap = min(self._ticket.durable_cap, index - 1)
        self._durable_index = min(self._durable_index, index - 1)
        k = self._segment_for_index(index)
        if index == self._segments[k].first_index and k > 0:
            k -= 1
        for seg in self._segments[k + 1:]:
            self._retire(seg, unlink=True)
        del self._segments[k + 1:]
        self._cut_segment(self._segments[k], index)
        while self._run_starts and self._run_starts[-1] >= index:
            self._run_starts.pop()
            self._run_terms.pop()

    def _cut_segment(self, seg: Segment, index: int) -> None:
        local = min(index - seg.first_index, seg.entry_count)
        cut_position = seg.cut(local)
        self._disk.truncate(seg.file, cut_position)
        self._dirty[id(seg)] = seg
        if self.kafka and seg.block_positions:
            self._rescan_tail_block(seg)

    def _rescan_tail_block(self, seg: Segment) -> None:
        start = seg.block_positions[-1]
        batches = [(pos, _batch_at(payload))
                   for pos, entry_type, payload in self._frames_from(seg, start, 0)
                   if entry_type == NORMAL and payload]
        seg.reset_tail_block(batches, self._index_interval_bytes)

    def compact_prefix(self, index: int) -> int:
        """Delete whole segments all of whose entries are < index, never the active one.

        Returns the new first_index. The term of first_index - 1 stays known.
        """
        deleted = 0
        while deleted + 1 < len(self._segments) and \
                self._segments[deleted].last_index < index:
            deleted += 1
        self._delete_prefix(deleted)
        return self.first_index

    def _delete_prefix(self, count: int) -> None:
        if count == 0:
            return
        last_deleted = self._segments[count - 1]
        if last_deleted.entry_count:
            self._prev_term = self.term(last_deleted.last_index)
        for seg in self._segments[:count]:
            if seg.has_batches:
                self._offset_floor = max(self._offset_floor, seg.next_offset)
            self._retire(seg, unlink=True)
        del self._segments[:count]

    def reset_to(self, index: int, term: int, *, next_offset: int = 0) -> None:
        """Drop every entry and restart the log after a snapshot at (index, term).

        Afterwards first_index = index + 1, last_index = index, term(index) = term, and a
        partition log's next_offset = next_offset. Durable at the next sync (the new empty
        segment file records index + 1 in its name; the term is the snapshot's to keep).
        """
        if self._ticket is not None:
            self._ticket.durable_cap = min(self._ticket.durable_cap, index)
        for seg in self._segments:
            self._retire(seg, unlink=True)
        self._segments = []
        self._run_starts, self._run_terms = [], []
        self._prev_term = term
        self._offset_floor = next_offset
        self._segments.append(self._create_segment(index + 1))
        self._durable_index = min(self._durable_index, index)


    # ------------------------------------------------------------------ Kafka view

    @property
    def next_offset(self) -> int:
        """The offset the next batch gets: last batch's last offset + 1 (0 for a new log)."""
        for seg in reversed(self._segments):
            if seg.has_batches:
                return seg.next_offset
        return self._offset_floor

    @property
    def log_start_offset(self) -> int:
        """First Kafka offset present (== next_offset when the log holds no batch)."""
        for seg in self._segments:
            if seg.has_batches:
                return seg.first_offset
        return self.next_offset

    def _check_offset(self, offset: int) -> None:
        assert self.kafka, "Kafka view of a non-partition log"
        if not self.log_start_offset <= offset <= self.next_offset:
            raise OffsetOutOfRange(offset, self.log_start_offset, self.next_offset)

    def _segment_for_offset(self, offset: int) -> int:
        k = bisect.bisect_right(self._segments, offset, key=lambda s: s.offset_lo) - 1
        return max(k, 0)

    def read_batches(self, start_offset: int, *, max_bytes: int, end_offset: int
                     ) -> list[memoryview]:
        """Whole batches (payloads) with lastOffset >= start_offset and baseOffset <
        end_offset, in order. A batch is added only while the total stays within
        max_bytes, except the first, which is always returned (KIP-74).

        Raises:
            OffsetOutOfRange: start_offset < log_start_offset or > next_offset.
        """
        self._check_offset(start_offset)
        out: list[memoryview] = []
        if start_offset >= min(end_offset, self.next_offset):
            return out
        total = 0
        k = self._segment_for_offset(start_offset)
        for seg in self._segments[k:]:
            if not seg.has_batches or seg.next_offset <= start_offset:
                continue
            block = seg.block_for_offset(start_offset)
            pos = seg.block_positions[block]
            read_ahead = seg.block_end(block) - pos + max(max_bytes - total, 0)
            cursor = FrameCursor(self._disk, seg, pos, read_ahead)
            while not cursor.at_end():
                entry_type, payload_bytes = cursor.header()
                if entry_type != NORMAL or not payload_bytes:
                    cursor.advance()
                    continue
                if out and total + payload_bytes > max_bytes:
                    return out  # decided from the header: the payload is never read
                payload = cursor.payload()
                header = read_header(payload)
                if header.base_offset >= end_offset:
                    return out
                if header.last_offset >= start_offset and header.record_count:
                    # (a batch the cleaner emptied keeps its offsets in the log, unserved)
                    out.append(payload)
                    total += payload_bytes
                    if total >= max_bytes:
                        return out
                cursor.advance()
        return out

    @property
    def max_timestamp_ms(self) -> int:
        """The largest maxTimestamp of the log's batches; -1 without batches."""
        return max((seg.max_timestamp_ms for seg in self._segments), default=-1)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(baseOffset, maxTimestamp) of the first batch whose maxTimestamp >= timestamp_ms."""
        assert self.kafka, "Kafka view of a non-partition log"
        for seg in self._segments:
            block = seg.block_for_timestamp(timestamp_ms) if seg.has_batches else None
            if block is None:
                continue
            pos = seg.block_positions[block]
            for _, entry_type, payload in self._frames_from(seg, pos, seg.block_end(block) - pos):
                if entry_type != NORMAL or not payload:
                    continue
                header = read_header(payload)
                if header.max_timestamp_ms >= timestamp_ms:
                    return header.base_offset, header.max_timestamp_ms
        return None

    def term_runs(self) -> list[tuple[int, int]]:
        """[(first index, term)] of each run of entries with one term, oldest first."""
        return list(zip(self._run_starts, self._run_terms))

    def entry_index_for_offset(self, offset: int) -> int:
        """Raft index of the entry whose batch holds Kafka offset `offset`.

        Raises:
            OffsetOutOfRange: offset < log_start_offset or >= next_offset.
        """
        self._check_offset(offset)
        if offset == self.next_offset:
            raise OffsetOutOfRange(offset, self.log_start_offset, self.next_offset)
        for seg in self._segments[self._segment_for_offset(offset):]:
            if not seg.has_batches or seg.next_offset <= offset:
                continue
            pos = seg.block_positions[seg.block_for_offset(offset)]
            for frame_pos, entry_type, payload in self._frames_from(seg, pos, 0):
                if entry_type != NORMAL or not payload:
                    continue
                if read_header(payload).last_offset >= offset:
                    local = bisect.bisect_left(seg.positions, frame_pos)
                    return seg.first_index + local
        raise OffsetOutOfRange(offset, self.log_start_offset, self.next_offset)

    def _frames_from(self, seg: Segment, pos: int, read_ahead_bytes: int
                     ) -> Iterator[tuple[int, int, memoryview]]:
        """(position, type, payload) of each frame of `seg` from `pos` on."""
        cursor = FrameCursor(self._disk, seg, pos, read_ahead_bytes)
        while not cursor.at_end():
            entry_type, _ = cursor.header()
            yield cursor.pos, entry_type, cursor.payload()
            cursor.advance()

    def retention_boundary(self, *, now_ms: int, retention_bytes: int | None,
                           retention_ms: int | None, keep_from_index: int | None = None) -> int:
        """The first entry index that retention would keep (first_index if nothing goes).

        Whole closed segments go from the oldest while the log is over retention_bytes or
        the segment's newest maxTimestamp is older than now_ms - retention_ms (a segment
        without batches counts as expired by time); never the active segment, nor one
        holding an entry >= keep_from_index (e.g. not yet applied). A Raft group snapshots
        at boundary - 1 before deleting, so followers behind it are sent the snapshot.
        """
        assert self.kafka, "retention applies to partition logs"
        size_bytes = self.size_bytes
        deleted = 0
        while deleted + 1 < len(self._segments):
            seg = self._segments[deleted]
            if keep_from_index is not None and seg.last_index >= keep_from_index:
                break
            over_size = retention_bytes is not None and size_bytes > retention_bytes
            expired = retention_ms is not None and \
                seg.max_timestamp_ms < now_ms - retention_ms
            if not (over_size or expired):
                break
            size_bytes -= seg.size_bytes
            deleted += 1
        return self._segments[deleted].first_index if deleted else self.first_index

    def apply_retention(self, *, now_ms: int, retention_bytes: int | None,
                        retention_ms: int | None, keep_from_index: int | None = None) -> int:
        """Delete the segments retention_boundary() says go. Returns how many."""
        boundary = self.retention_boundary(now_ms=now_ms, retention_bytes=retention_bytes,
                                           retention_ms=retention_ms, keep_from_index=keep_from_index)
        return self.delete_before(boundary)

    @property
    def segment_bytes_max(self) -> int:
        return self._segment_bytes_max

    @segment_bytes_max.setter
    def segment_bytes_max(self, value: int) -> None:
        """A new size limit (a live segment.bytes change): the active segment rolls at the
        next append that would take it past the limit."""
        assert value > 0, value
        self._segment_bytes_max = value

    # ------------------------------------------------------------------ compaction

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments, oldest first (the last is the active one). For the cleaner's plan."""
        return tuple(self._segments)

    def pin(self) -> None:
        """Keep the files of segments retired from now on open until unpin() (the cleaner
        reads them in a worker thread)."""
        self._pins += 1

    def unpin(self) -> None:
        assert self._pins > 0
        self._pins -= 1
        if not self._pins and (self._ticket is None or self._closed):
            self._release_closing()

    def replace_segment(self, old: Segment, new: Segment) -> bool:
        """Swap in the cleaner's copy of `old` (written to `<name>.cleaned` and fsynced,
        open as new.file): rename it over the segment and index it. False,
        and the copy deleted, when `old` is no longer in the log (deleted by retention,
        truncated, or dropped by a snapshot meanwhile). The rename becomes durable at the
        next sync; until then a power loss leaves either file, both whole."""
        tmp = old.path.with_name(old.path.name + CLEANED_SUFFIX)
        self._disk.close(new.file)
        k = next((i for i, seg in enumerate(self._segments) if seg is old), None)
        if self._closed or k is None or k == len(self._segments) - 1 or \
                old.entry_count != new.entry_count:
            try:
                self._disk.unlink(tmp)
            except DiskError as e:  # e.g. the directory was removed with its topic
                logger.info("could not remove the cleaner's copy %s: %s", tmp, e)
            return False
        self._disk.rename(tmp, old.path)
        new.file = self._disk.open(old.path)
        self._segments[k] = new
        self._retire(old, unlink=False)
        self._directory_dirty = True
        return True

    def roll_if_older(self, now_ms: int, segment_ms: int) -> bool:
        """segment.ms: roll the active segment when its oldest batches are at least
        segment_ms old (the newest maxTimestamp of its first index block, so no read is
        needed); a segment without batches never rolls. Returns whether it rolled."""
        seg = self._segments[-1]
        if not seg.has_batches or seg.block_max_timestamps_ms[0] > now_ms - segment_ms:
            return False
        self._roll()
        return True

    def segment_start(self, index: int) -> int:
        """The first index of the segment holding entry `index` (of the active segment if
        index is past the end): delete_before() of it keeps that segment."""
        if index > self.last_index:
            return self._segments[-1].first_index
        return self._segments[self._segment_for_index(index)].first_index

    def delete_before(self, index: int) -> int:
        """Delete the whole segments whose entries are all below index; returns how many."""
        deleted = 0
        while deleted + 1 < len(self._segments) and self._segments[deleted].last_index < index:
            deleted += 1
        self._delete_prefix(deleted)
        return deleted


def _entries_within(seg: Segment, a: int, b: int, budget: int | None, *, first: bool
                    ) -> tuple[int, int | None]:
    """How far from local entry `a` (up to `b`) fits in `budget` frame bytes."""
    if budget is None:
        return b, None
    end = a
    while end < b:
        size = seg.end_of(end) - seg.positions[end]
        if size > budget and not (first and end == a):
            break
        budget -= size
        end += 1
    return end, max(budget, 0)


def _batch_at(payload: memoryview) -> BatchHeader:
    info = batch_info(payload)
    assert isinstance(info, BatchHeader), info
    return info

