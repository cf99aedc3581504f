"""Durable storage of Raft groups: segment logs of framed entries with a sparse Kafka-offset
index (log.py, segment.py, frame.py), the node's hard-state log of every group's term,
vote and commit (hardstate_log.py; hardstate.py reads the per-group files of earlier
versions), snapshots and Raft's Storage on disk (raft_storage.py), and the Disk seam all
file I/O goes through
(disk.py; FaultyDisk adds the chaos harness's faults), and the log cleaner of compacted
topics (cleaner.py). bench.py is its micro-benchmark.

May import: the standard library, attrs, crc32c, chronik_trio.raft (its types, errors and
Storage contract), chronik_trio.record_batch, chronik_trio.varint and chronik_trio.pb. No trio: the I/O here
blocks, so the node runs SyncTicket.run in a worker thread (trio.to_thread.run_sync).
"""

from chronik_trio.raft.types import EntryType, HardState
from chronik_trio.storage.disk import Disk, DiskFaults, DiskFile, FaultyDisk
from chronik_trio.storage.errors import (
    CompactedError,
    CorruptHardStateError,
    CorruptLogError,
    DiskError,
    EntryTooLargeError,
    InvalidBatchError,
    OffsetOutOfRange,
    StorageError,
    UnavailableError,
)
from chronik_trio.storage.frame import LogEntry
from chronik_trio.storage.hardstate import HardStateFile
from chronik_trio.storage.hardstate_log import HardStateLog
from chronik_trio.storage.log import SegmentLog, SyncTicket

__all__ = [
    "CompactedError",
    "CorruptHardStateError",
    "CorruptLogError",
    "Disk",
    "DiskError",
    "DiskFaults",
    "DiskFile",
    "EntryTooLargeError",
    "EntryType",
    "FaultyDisk",
    "HardState",
    "HardStateFile",
    "HardStateLog",
    "InvalidBatchError",
    "LogEntry",
    "OffsetOutOfRange",
    "SegmentLog",
    "StorageError",
    "SyncTicket",
    "UnavailableError",
]
