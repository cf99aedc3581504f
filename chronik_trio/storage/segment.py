"""One segment file's in-memory index: entry positions and the sparse Kafka index.

Pure bookkeeping; the file I/O is done by SegmentLog through the Disk seam.
"""

from __future__ import annotations

import bisect
import pathlib
from array import array

import attrs

from chronik_trio.record_batch import BatchHeader
from chronik_trio.storage.disk import Disk, DiskFile
from chronik_trio.storage.frame import FRAME_HEADER_BYTES, FRAME_PREFIX

SEGMENT_SUFFIX = ".seg"
# Smallest pread when scanning forward for batches: fewer syscalls for small fetches,
# while a read never overshoots what it needs by more than this.
READ_CHUNK_BYTES_MIN = 64 << 10
# Segment names are the first index zero-padded to 20 digits: they sort like the indexes.
SEGMENT_NAME_DIGITS = 20


def segment_name(first_index: int) -> str:
    return f"{first_index:0{SEGMENT_NAME_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The first index a segment file name encodes, or None if it is not a segment name."""
    stem, dot, suffix = name.partition(".")
    if dot + suffix != SEGMENT_SUFFIX or len(stem) != SEGMENT_NAME_DIGITS or not stem.isdigit():
        return None
    return int(stem)


@attrs.define(eq=False)
class Segment:
    """A segment file and what is known of its contents.

    Invariants: `positions[i]` is the file position of entry `first_index + i`'s frame and
    positions are increasing; `size_bytes` is the end of the last whole frame. In a
    partition log, blocks are the sparse Kafka index: block k starts at the frame at
    `block_positions[k]`, whose batch has base offset `block_offsets[k]`; a new block starts
    at the first batch at least `index_interval_bytes` past the previous block's start.
    `block_max_timestamps_ms[k]` is the running maximum of maxTimestamp over blocks 0..k,
    so it is sorted and bisectable.
    """

    path: pathlib.Path
    file: DiskFile
    first_index: int
    # The log's next Kafka offset when this segment began: orders segments without batches.
    offset_floor: int = 0
    size_bytes: int = 0
    positions: array = attrs.Factory(lambda: array("Q"))
    first_offset: int = -1
    next_offset: int = -1
    block_offsets: array = attrs.Factory(lambda: array("q"))
    block_positions: array = attrs.Factory(lambda: array("q"))
    block_max_timestamps_ms: array = attrs.Factory(lambda: array("q"))
    # False once the log cleaner has read this (closed, so unchanging) segment and found no
    # batch with a record left (all emptied): later passes need not read it (None: unknown).
    holds_records: bool | None = None

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.positions) - 1

    @property
    def entry_count(self) -> int:
        return len(self.positions)

    @property
    def has_batches(self) -> bool:
        return self.first_offset >= 0

    @property
    def offset_lo(self) -> int:
        """The lowest Kafka offset this segment can hold; non-decreasing along the log."""
        return self.first_offset if self.has_batches else self.offset_floor

    @property
    def max_timestamp_ms(self) -> int:
        """Newest maxTimestamp of its batches; -1 without batches."""
        return self.block_max_timestamps_ms[-1] if self.block_max_timestamps_ms else -1

    def end_of(self, local: int) -> int:
        """File position just past entry number `local` (0-based within the segment)."""
        if local + 1 < len(self.positions):
            return self.positions[local + 1]
        return self.size_bytes

    def add_batch(self, position: int, info: BatchHeader, index_interval_bytes: int) -> None:
        """Index a batch whose frame starts at `position`. O(1)."""
        if not self.has_batches:
            self.first_offset = info.base_offset
        self.next_offset = info.last_offset + 1
        blocks = self.block_positions
        if not blocks or position - blocks[-1] >= index_interval_bytes:
            running = max(self.max_timestamp_ms, info.max_timestamp_ms)
            self.block_offsets.append(info.base_offset)
            blocks.append(position)
            self.block_max_timestamps_ms.append(running)
        elif info.max_timestamp_ms > self.block_max_timestamps_ms[-1]:
            self.block_max_timestamps_ms[-1] = info.max_timestamp_ms

    def block_for_offset(self, offset: int) -> int:
        """The block where a scan for `offset` starts (the last one starting at or before it)."""
        return max(0, bisect.bisect_right(self.block_offsets, offset) - 1)

    def block_for_timestamp(self, timestamp_ms: int) -> int | None:
        """The first block holding a batch with maxTimestamp >= timestamp_ms, if any."""
        k = bisect.bisect_left(self.block_max_timestamps_ms, timestamp_ms)
        return k if k < len(self.block_max_timestamps_ms) else None

    def block_end(self, k: int) -> int:
        if k + 1 < len(self.block_positions):
            return self.block_positions[k + 1]
        return self.size_bytes

    def cut(self, entry_count: int) -> int:
        """Forget entries from local number `entry_count` on; returns the new file size.

        Blocks starting at or after the cut are dropped. The Kafka fields of the last kept
        block (next_offset, its running max timestamp) are left for the caller to rebuild
        with `reset_tail_block`, since that needs the file.
        """
        cut_position = self.positions[entry_count] if entry_count < len(self.positions) \
            else self.size_bytes
        del self.positions[entry_count:]
        self.size_bytes = cut_position
        k = bisect.bisect_left(self.block_positions, cut_position)
        del self.block_offsets[k:]
        del self.block_positions[k:]
        del self.block_max_timestamps_ms[k:]
        if not self.block_positions:
            self.first_offset = -1
            self.next_offset = -1
        return cut_position

    def reset_tail_block(self, batches: list[tuple[int, BatchHeader]], index_interval_bytes: int
                         ) -> None:
        """Re-index the last block from its batches (as rescanned after a cut)."""
        assert self.block_positions, "reset_tail_block needs a block"
        del self.block_offsets[-1:]
        del self.block_positions[-1:]
        del self.block_max_timestamps_ms[-1:]
        if not self.block_positions:
            self.first_offset = -1
            self.next_offset = -1
        for position, info in batches:
            self.add_batch(position, info, index_interval_bytes)


class FrameCursor:
    """Walks the frames of one segment from a position, reading ahead with few preads.

    The first pread covers `read_ahead_bytes` (at least READ_CHUNK_BYTES_MIN); later ones
    READ_CHUNK_BYTES_MIN or the frame at hand. Frames were verified when written or
    recovered, so headers are trusted.
    """

    def __init__(self, disk: Disk, seg: Segment, pos: int, read_ahead_bytes: int) -> None:
        self._disk = disk
        self._seg = seg
        self.pos = pos
        self._buf = memoryview(b"")
        self._buf_pos = pos
        self._read_ahead_bytes = max(read_ahead_bytes, READ_CHUNK_BYTES_MIN)
        self._length = 0

    def at_end(self) -> bool:
        return self.pos >= self._seg.size_bytes

    def header(self) -> tuple[int, int]:
        """(entry type, payload bytes) of the frame at pos."""
        rel = self._ensure(FRAME_HEADER_BYTES)
        self._length = FRAME_PREFIX.unpack_from(self._buf, rel)[0]
        return self._buf[rel + FRAME_HEADER_BYTES - 1], self._length + 4 - FRAME_HEADER_BYTES

    def payload(self) -> memoryview:
        """The payload of the frame whose header() was just read."""
        rel = self._ensure(4 + self._length)
        return self._buf[rel + FRAME_HEADER_BYTES: rel + 4 + self._length]

    def advance(self) -> None:
        """Move past the frame whose header() was just read."""
        self.pos += 4 + self._length

    def _ensure(self, size: int) -> int:
        """Make [pos, pos + size) buffered; returns pos relative to the buffer."""
        rel = self.pos - self._buf_pos
        if len(self._buf) - rel >= size:
            return rel
        want = min(max(size, self._read_ahead_bytes), self._seg.size_bytes - self.pos)
        self._buf = memoryview(self._disk.pread(self._seg.file, want, self.pos))
        self._buf_pos = self.pos
        self._read_ahead_bytes = READ_CHUNK_BYTES_MIN
        return 0
