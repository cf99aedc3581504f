"""The Storage protocol Raft reads its durable state through, and an in-memory implementation.

Raft only ever *reads* Storage. The application writes to it while handling a Ready:
entries and hard state (`Ready.entries`, `Ready.hard_state`) and snapshots (`Ready.snapshot`)
must be durable before `advance*` / `on_persist_ready` says so.
"""

from __future__ import annotations

from typing import Protocol

from .errors import Compacted, SnapshotOutOfDate, SnapshotTemporarilyUnavailable, Unavailable
from .types import (EMPTY_HARD_STATE, ConfState, Entry, HardState, Snapshot, SnapshotMetadata)


def limit_size(entries: list[Entry], max_size_bytes: int | None) -> list[Entry]:
    """The longest prefix of `entries` whose data fits in `max_size_bytes`, but never fewer
    than one entry, so that a single oversized entry still makes progress."""
    if max_size_bytes is None or len(entries) <= 1:
        return entries
    size = len(entries[0].data)
    for i in range(1, len(entries)):
        size += len(entries[i].data)
        if size > max_size_bytes:
            return entries[:i]
    return entries


def snapshot_for_request(snapshot: Snapshot, request_index: int) -> Snapshot:
    """The Storage.snapshot() rule, shared by every Storage: the held snapshot, unless there
    is none yet or it is older than request_index (SnapshotTemporarilyUnavailable)."""
    if snapshot.metadata.index < max(request_index, 1):
        raise SnapshotTemporarilyUnavailable(
            f"snapshot at {snapshot.metadata.index} < requested {request_index}")
    return snapshot


class Storage(Protocol):
    """Read access to the durable log. Indexes are 1-based; index 0 is "before everything".

    The log a Storage holds is `[first_index(), last_index()]`, preceded by a snapshot (or
    the empty snapshot) at `first_index() - 1` whose term is still known.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The saved HardState and the ConfState of the last applied configuration (at
        restart, that of the last snapshot; later conf-change entries are re-applied)."""
        ...

    def entries(self, lo: int, hi: int, max_size_bytes: int | None = None) -> list[Entry]:
        """Entries with index in [lo, hi). Returns at least one entry when lo < hi, then as
        many more as fit in max_size_bytes (None: no limit).
        Raises Compacted if lo < first_index(); Unavailable if hi > last_index() + 1."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at index, for index in [first_index() - 1, last_index()].
        Raises Compacted below that range and Unavailable above it."""
        ...

    def first_index(self) -> int:
        """Index of the first entry that may be read (the snapshot's index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot's index if the log after it is empty)."""
        ...

    def snapshot(self, request_index: int = 0) -> Snapshot:
        """The most recent snapshot. Raises SnapshotTemporarilyUnavailable if none is ready,
        or if the one available is older than request_index; Raft retries later."""
        ...


class MemoryStorage:
    """Storage in a Python list, for tests, the simulator and the benchmark.

    Invariant: `_entries[0]` is a dummy entry carrying the snapshot's index and term, so
    `_entries[i - offset]` is the entry at index i with `offset = _entries[0].index`.
    """

    __slots__ = ("_hard_state", "_snapshot", "_entries")

    def __init__(self) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    @classmethod
    def with_voters(cls, voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> MemoryStorage:
        """A fresh storage whose initial configuration is the given voters (bootstrap)."""
        s = cls()
        cs = ConfState(voters=tuple(voters), learners=tuple(learners))
        s._snapshot = Snapshot(SnapshotMetadata(index=0, term=0, conf_state=cs))
        return s

    # -- the Storage protocol ---------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_size_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise Compacted(f"lo {lo} <= compacted index {offset}")
        if hi > self.last_index() + 1:
            raise Unavailable(f"hi {hi} > last index {self.last_index()} + 1")
        return limit_size(self._entries[lo - offset:hi - offset], max_size_bytes)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise Compacted(f"index {index} < compacted index {offset}")
        if index - offset >= len(self._entries):
            raise Unavailable(f"index {index} > last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self, request_index: int = 0) -> Snapshot:
        return snapshot_for_request(self._snapshot, request_index)

    # -- writes, made by the application while handling a Ready -----------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by the snapshot. Raises SnapshotOutOfDate if it is older."""
        if snap.metadata.index < self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"{snap.metadata.index} < {self._snapshot.metadata.index}")
        self._snapshot = snap
        self._entries = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at index (<= last_index). Raises
        SnapshotOutOfDate if index is not newer than the current snapshot."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"{index} <= {self._snapshot.metadata.index}")
        assert index <= self.last_index(), (index, self.last_index())
        md = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        self._snapshot = Snapshot(md, data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before compact_index (which stays readable as the dummy entry).
        Raises Compacted if already compacted that far."""
        offset = self._entries[0].index
        if compact_index <= offset:
            raise Compacted(f"{compact_index} <= {offset}")
        assert compact_index <= self.last_index(), (compact_index, self.last_index())
        i = compact_index - offset
        self._entries = [Entry(term=self._entries[i].term, index=compact_index)] + \
            self._entries[i + 1:]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append entries, replacing any existing ones from entries[0].index on. Entries
        already covered by the snapshot are skipped."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index:]
        offset = entries[0].index - self._entries[0].index
        assert offset <= len(self._entries), ("gap", entries[0].index, self.last_index())
        del self._entries[offset:]
        self._entries.extend(entries)
