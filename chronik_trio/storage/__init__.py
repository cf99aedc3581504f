"""Durable storage of Raft groups: segment logs of framed entries, hard state, the Disk seam.

May import: the standard library, attrs, crc32c. No trio: the node runs SyncTicket.run in a
worker thread (trio.to_thread.run_sync). All file I/O goes through a Disk.
"""

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
from chronik_trio.storage.frame import EntryType, LogEntry
from chronik_trio.storage.hardstate import HardState, HardStateFile
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
    "InvalidBatchError",
    "LogEntry",
    "OffsetOutOfRange",
    "SegmentLog",
    "StorageError",
    "SyncTicket",
    "UnavailableError",
]
