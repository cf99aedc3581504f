"""Typed storage failures. One base class, StorageError; every message names the file."""

from __future__ import annotations

import pathlib

from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError


class StorageError(Exception):
    """Base class of every expected storage failure."""


class CorruptLogError(StorageError):
    """A frame at or below the durable index is damaged: data we promised is gone.

    Never repaired silently; the operator decides (restore the replica from its peers).
    """

    def __init__(self, path: pathlib.Path, byte_offset: int, reason: str) -> None:
        self.path = path
        self.byte_offset = byte_offset
        self.reason = reason
        super().__init__(f"corrupt log file {path} at byte offset {byte_offset}: {reason}")


class CorruptHardStateError(StorageError):
    """The hard-state file exists but is not a valid, CRC-checked hard state."""

    def __init__(self, path: pathlib.Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"corrupt hard-state file {path}: {reason}")


class CompactedError(StorageError):
    """The requested Raft index was removed by compaction or retention (etcd ErrCompacted)."""

    def __init__(self, index: int, first_index: int) -> None:
        self.index = index
        self.first_index = first_index
        super().__init__(f"index {index} is compacted; the log starts at {first_index}")


class UnavailableError(StorageError):
    """The requested Raft index is beyond the last entry (etcd ErrUnavailable)."""

    def __init__(self, index: int, last_index: int) -> None:
        self.index = index
        self.last_index = last_index
        super().__init__(f"index {index} is unavailable; the log ends at {last_index}")


class OffsetOutOfRange(StorageError, BrokerError):
    """A Kafka offset outside [log_start_offset, next_offset]; answered to the client."""

    error_code = ErrorCode.offset_out_of_range

    def __init__(self, offset: int, log_start_offset: int, next_offset: int) -> None:
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.next_offset = next_offset
        super().__init__(
            f"offset {offset} is out of range [{log_start_offset}, {next_offset}]"
        )


class InvalidBatchError(StorageError, BrokerError):
    """A NORMAL entry of a partition log whose payload is not a v2 RecordBatch we can index.

    Raised by append before anything is written.
    """

    error_code = ErrorCode.corrupt_message

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"entry {index}: invalid record batch: {reason}")


class EntryTooLargeError(StorageError):
    """An entry whose frame would exceed FRAME_BYTES_MAX; nothing was written."""

    def __init__(self, index: int, frame_bytes: int, frame_bytes_max: int) -> None:
        self.index = index
        super().__init__(
            f"entry {index}: frame of {frame_bytes} bytes exceeds {frame_bytes_max}"
        )


class DiskError(StorageError):
    """An OSError from the disk (EIO, ENOSPC, ...), with the file it concerned.

    After a failed fsync the page cache state is unknown: the owner should close the log
    and reopen it (recovery re-reads what is really on disk) rather than retry.
    """

    def __init__(self, operation: str, path: pathlib.Path, error: OSError) -> None:
        self.operation = operation
        self.path = path
        self.errno = error.errno
        super().__init__(f"{operation} {path}: {error.strerror or error}")
