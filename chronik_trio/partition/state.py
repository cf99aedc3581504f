"""Kafka offsets over a partition's log of entries.

The leader assigns each record batch a contiguous range of Kafka offsets when it appends the
entry; the high watermark moves to the end of the last *committed* data entry (for a single
voter: the last durable one). Nothing at or above the high watermark is served to consumers.
Pure: the node tells it what was appended and what was committed.
"""

from __future__ import annotations

import collections

PENDING_ENTRIES_MAX = 1 << 20  # a guard: more in-flight entries than this is a runaway producer


class PartitionState:
    def __init__(self, *, log_start_offset: int, next_offset: int, leader_epoch: int) -> None:
        assert 0 <= log_start_offset <= next_offset, (log_start_offset, next_offset)
        self.log_start_offset = log_start_offset
        self.next_offset = next_offset  # the next offset to hand out (includes in-flight entries)
        self.high_watermark = next_offset  # recovered logs hold only committed entries
        self.leader_epoch = leader_epoch
        # (entry index, end offset) of appended but not yet committed data entries, in order
        self._pending: collections.deque[tuple[int, int]] = collections.deque()

    def assign(self, record_count: int) -> int:
        """Reserve offsets for a batch of record_count records; return its base offset."""
        assert record_count > 0, record_count
        base = self.next_offset
        self.next_offset += record_count
        return base

    def appended(self, entry_index: int, end_offset: int) -> None:
        """The data entry at entry_index (offsets up to end_offset, exclusive) is in the log."""
        assert not self._pending or self._pending[-1][0] < entry_index, (self._pending[-1], entry_index)
        assert len(self._pending) < PENDING_ENTRIES_MAX, len(self._pending)
        self._pending.append((entry_index, end_offset))

    def committed(self, commit_index: int) -> bool:
        """Entries up to commit_index are committed; return whether the high watermark moved."""
        moved = False
        while self._pending and self._pending[0][0] <= commit_index:
            _, self.high_watermark = self._pending.popleft()
            moved = True
        return moved

    def log_start_moved(self, log_start_offset: int) -> None:
        assert log_start_offset >= self.log_start_offset, (log_start_offset, self.log_start_offset)
        self.log_start_offset = log_start_offset
