"""A partition replica on this node: its log, its offsets, produce waiters and fetch watchers.

Today a node is the only voter of each partition (term 1, itself the leader); the
entry/commit vocabulary is already Raft's so that replication slots in under the same API.
"""

from __future__ import annotations

import collections
import logging
import pathlib

import trio

from chronik_trio.cluster.meta import Topic
from chronik_trio import storage
from chronik_trio.kafka.errors import OffsetOutOfRange
from chronik_trio.kafka.records import BatchHeader, with_offsets
from chronik_trio.partition.state import PartitionState
from chronik_trio.storage import LogEntry

from .single_voter import SINGLE_VOTER_TERM, SingleVoterLog

log = logging.getLogger(__name__)

ENTRY_NORMAL = 0


class PartitionReplica(SingleVoterLog):
    def __init__(self, topic: Topic, partition: int, directory: pathlib.Path, disk, committer,
                 *, node_id: int, fsync_always: bool, segment_bytes: int) -> None:
        super().__init__(directory, disk, node_id=node_id, kafka=True, segment_bytes=segment_bytes)
        self.topic_name = topic.name
        self.topic_id = topic.topic_id
        self.partition = partition
        self.committer = committer
        self.fsync_always = fsync_always
        self.state = PartitionState(log_start_offset=self.log.log_start_offset,
                                    next_offset=self.log.next_offset,
                                    leader_epoch=SINGLE_VOTER_TERM)
        self._waiters: collections.deque[tuple[int, trio.Event]] = collections.deque()
        self._watchers: set[trio.Event] = set()

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    def append(self, records, headers: list[BatchHeader]) -> tuple[int, int]:
        """Assign offsets to already-validated batches and write them. No await: the offsets
        are handed out and written in one step, so log order is offset order.

        Returns (base offset of the first batch, entry index of the last one).
        """
        assert not self.closed, (self.topic_name, self.partition)
        first_index = self.log.last_index + 1
        entries, ends, first_base = [], [], None
        for i, header in enumerate(headers):
            base = self.state.assign(header.record_count)
            if first_base is None:
                first_base = base
            payload = with_offsets(records, header, base, self.state.leader_epoch)
            entries.append(LogEntry(first_index + i, SINGLE_VOTER_TERM, ENTRY_NORMAL, payload))
            ends.append(base + header.record_count)
        self.log.append(entries)
        for entry, end in zip(entries, ends):
            self.state.appended(entry.index, end)
        self.committer.mark_dirty(self)
        last_index = entries[-1].index
        if not self.fsync_always:
            self._commit(last_index)
        return first_base, last_index

    async def wait_durable(self, index: int) -> None:
        if index <= self.durable_index:
            return
        event = trio.Event()
        self._waiters.append((index, event))
        await event.wait()

    def on_durable(self, index: int) -> None:
        self.durable_index = max(self.durable_index, index)
        while self._waiters and self._waiters[0][0] <= index:
            self._waiters.popleft()[1].set()
        if self.fsync_always:
            self._commit(index)

    def _commit(self, index: int) -> None:
        if self.state.committed(index):
            for watcher in self._watchers:
                watcher.set()
            self._watchers.clear()

    def watch(self, event: trio.Event) -> None:
        """Set event the next time the high watermark moves."""
        self._watchers.add(event)

    def unwatch(self, event: trio.Event) -> None:
        self._watchers.discard(event)

    def read(self, offset: int, max_bytes: int) -> list[memoryview]:
        """Whole batches from offset, below the high watermark (raises OffsetOutOfRange)."""
        try:
            return self.log.read_batches(offset, max_bytes=max_bytes, end_offset=self.state.high_watermark)
        except storage.OffsetOutOfRange as exc:
            raise OffsetOutOfRange(str(exc)) from None

    def apply_retention(self, now_ms: int, retention_bytes: int | None, retention_ms: int | None) -> int:
        deleted = self.log.apply_retention(now_ms=now_ms, retention_bytes=retention_bytes,
                                           retention_ms=retention_ms)
        if deleted:
            self.state.log_start_moved(self.log.log_start_offset)
            log.info("retention deleted %d segment(s) of %s-%d; log start offset now %d",
                     deleted, self.topic_name, self.partition, self.log.log_start_offset)
        return deleted
