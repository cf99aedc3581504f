"""Raft's Storage protocol on disk: a SegmentLog, a hard-state log and a snapshot file.

    directory/
      {first_index:020d}.seg   entries (storage.md); a partition group's also Kafka-indexed
      snapshot                 the latest snapshot (metadata + data), replaced atomically
      hardstate                (data directories of earlier versions) term, vote, commit:
                               read when the hard-state log has no state for the group
      hardstates               a group opened without the node's hard-state log: its own

A node's groups share one HardStateLog (hardstate_log.py): term, vote and commit of every
group, one frame appended and fsynced per sync round however many groups it holds.

The node writes while handling a Ready, under the group's lock: `append`, `set_hard_state`,
`apply_snapshot`; then makes them durable with begin_sync / run_tickets (in a worker
thread) / end_sync, before sending `persisted_messages` and calling advance.

Hard state: the term and vote must be durable before any message that depends on them
leaves (a vote, an append response), so a sync saves the hard state whenever they
changed. The commit index alone only moves forward and can be re-learnt from the leader,
so saving it is left to `checkpoint_commit` (the node calls it at an interval) instead of
costing an fsync on every Ready. What is saved is always consistent with the log: the
commit saved never exceeds the last durable entry.
"""

from __future__ import annotations

import pathlib
import struct
from collections.abc import Sequence

import crc32c

from chronik_trio.pb import raft_pb2
from chronik_trio.raft.convert import snapshot_from_pb, snapshot_to_pb
from chronik_trio.raft.errors import Compacted, SnapshotOutOfDate, Unavailable
from chronik_trio.raft.storage import snapshot_for_request
from chronik_trio.raft.types import (EMPTY_SNAPSHOT, ConfState, Entry, EntryType, HardState,
                                     Snapshot, SnapshotMetadata)

from .disk import Disk
from .errors import CompactedError, StorageError, UnavailableError
from .frame import FRAME_HEADER_BYTES, LogEntry
from .hardstate import HardStateFile
from .hardstate_log import HardStateLog
from .log import SegmentLog, SyncTicket

SNAPSHOT_FILE = "snapshot"
LEGACY_HARD_STATE_FILE = "hardstate"  # one per group, before the hard-state log
HARD_STATE_LOG_FILE = "hardstates"
# A partition group's snapshot data starts with the Kafka offset its log continues from
# (a log reset to a snapshot holds no batch to derive it from); what follows is the
# replica's derived state (node/partition_group.py, proto/partition.proto), opaque here.
PARTITION_SNAPSHOT = struct.Struct(">q")
# The most recently appended entries are kept in memory, up to this many frame bytes per
# group: the Ready pass applies committed entries, and a leader sends followers their
# appends, mostly within a few passes of appending them, and reading them back from the
# segment files (pread, frame parsing, a copy) was 3-4 % of a node's time when producing.
# librdkafka sends batches of up to 1 MB (one entry each), so a few MiB. The runtime
# releases entries once applied here and replicated to every follower
# (`release_recent`), so an idle group holds none.
RECENT_ENTRIES_BYTES_MAX = 8 << 20


def partition_snapshot_data(next_offset: int, state: bytes = b"") -> bytes:
    return PARTITION_SNAPSHOT.pack(next_offset) + state


def partition_snapshot_state(snap: Snapshot) -> bytes:
    return bytes(snap.data[PARTITION_SNAPSHOT.size:])


def partition_snapshot_next_offset(snap: Snapshot) -> int:
    if len(snap.data) < PARTITION_SNAPSHOT.size:
        return 0
    return PARTITION_SNAPSHOT.unpack_from(snap.data)[0]


_SNAPSHOT_MAGIC = b"CTSN"
_SNAPSHOT_HEADER = struct.Struct(">4sII")  # magic, body length, crc32c of body


class CorruptSnapshotError(StorageError):
    def __init__(self, path: pathlib.Path, reason: str) -> None:
        super().__init__(f"corrupt snapshot file {path}: {reason}")
        self.path = path


class SnapshotFile:
    """One group's latest snapshot, replaced atomically (write tmp, fsync, rename, fsync dir)."""

    def __init__(self, disk: Disk, path: pathlib.Path) -> None:
        self._disk = disk
        self.path = path

    def load(self) -> Snapshot:
        if not self._disk.exists(self.path):
            return EMPTY_SNAPSHOT
        f = self._disk.open(self.path)
        try:
            data = self._disk.pread(f, self._disk.size(f), 0)
        finally:
            self._disk.close(f)
        if len(data) < _SNAPSHOT_HEADER.size:
            raise CorruptSnapshotError(self.path, f"{len(data)} bytes is shorter than a header")
        magic, length, crc = _SNAPSHOT_HEADER.unpack_from(data)
        body = data[_SNAPSHOT_HEADER.size:]
        if magic != _SNAPSHOT_MAGIC or length != len(body) or crc32c.crc32c(body) != crc:
            raise CorruptSnapshotError(self.path, "bad magic, length or CRC")
        return snapshot_from_pb(raft_pb2.Snapshot.FromString(body))

    def save(self, snap: Snapshot) -> None:
        body = snapshot_to_pb(snap).SerializeToString()
        header = _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, len(body), crc32c.crc32c(body))
        self._disk.replace_file(self.path, [header, body])


class RaftSyncTicket:
    """What one sync makes durable: the log's ticket and, if due, the hard state."""

    __slots__ = ("log_ticket", "hard_state", "hard_states", "key", "directory", "commit_durable")

    def __init__(self, log_ticket: SyncTicket | None, hard_state: HardState | None,
                 hard_states: HardStateLog, key: str, directory: pathlib.Path,
                 commit_durable: bool) -> None:
        self.log_ticket = log_ticket
        self.hard_state = hard_state
        self.hard_states = hard_states
        self.key = key
        self.directory = directory
        # The hard state's commit is within what was durable before this sync: its record
        # may reach the disk in the same flush as the log's new bytes, in any order.
        self.commit_durable = commit_durable

    def run(self) -> None:
        """Blocking; safe in a worker thread."""
        run_tickets([self])


# From this many groups in one sync round, the round syncs the filesystem once instead of
# fsyncing each group's log files.
BATCHED_SYNC_MIN_TICKETS = 8


def run_tickets(tickets: Sequence[RaftSyncTicket]) -> None:
    """Blocking; safe in a worker thread: one sync round of many groups' tickets.

    The hard states of the round go to their HardStateLog (one per node) as one appended
    frame and one fsync, however many groups changed. The logs' new bytes are made durable
    first (a saved commit must never point past what is on disk): below
    BATCHED_SYNC_MIN_TICKETS tickets by an fsync of each log's files; from there by one sync
    of the filesystem (Disk.deferred_sync), which also covers the hard states' frame when
    none of its commits needs the round's new entries (elections: a term and a vote).
    Everything is durable when this returns (before anything that depends on it is sent).
    Then a hard-state log grown past its bound is compacted."""
    frames: dict[HardStateLog, list[tuple[str, HardState]]] = {}
    early: dict[HardStateLog, bool] = {}
    for ticket in tickets:
        if ticket.hard_state is not None:
            frames.setdefault(ticket.hard_states, []).append((ticket.key, ticket.hard_state))
            early[ticket.hard_states] = early.get(ticket.hard_states, True) and ticket.commit_durable
    if len(tickets) < BATCHED_SYNC_MIN_TICKETS:
        for ticket in tickets:
            if ticket.log_ticket is not None:
                ticket.log_ticket.run()
    else:
        disk = tickets[0].hard_states.disk
        roots = sorted({t.directory.parent for t in tickets} | {h.path.parent for h in frames})
        with disk.deferred_sync(*roots):
            for ticket in tickets:
                if ticket.log_ticket is not None:
                    ticket.log_ticket.run()
            for hard_states, states in list(frames.items()):
                if early[hard_states]:
                    hard_states.append(states)
                    del frames[hard_states]
    for hard_states, states in frames.items():
        hard_states.append(states)
    for hard_states in early:
        if hard_states.compaction_due:
            hard_states.compact()


class DurableRaftStorage:
    """raft.Storage backed by files. Not thread-safe except RaftSyncTicket.run."""

    def __init__(self, disk: Disk, directory: pathlib.Path, *, kafka: bool,
                 segment_bytes: int | None = None, hard_states: HardStateLog | None = None,
                 key: str = "") -> None:
        """hard_states: the node's hard-state log, where this group's is saved under `key`
        (its group id); None: a log of the group's own in its directory (tests, tools)."""
        if not disk.exists(directory):
            disk.mkdir(directory)
        self.directory = directory
        self.kafka = kafka
        self._own_hard_states = hard_states is None
        self._hard_states = HardStateLog(disk, directory / HARD_STATE_LOG_FILE) \
            if hard_states is None else hard_states
        self._key = key
        self._snapshot_file = SnapshotFile(disk, directory / SNAPSHOT_FILE)
        try:
            saved = self._load_hard_state(disk)
            self._snapshot = self._snapshot_file.load()
            sizes = {} if segment_bytes is None else {"segment_bytes_max": segment_bytes}
            next_offset = partition_snapshot_next_offset(self._snapshot) if kafka else 0
            # Entries up to the saved commit were acknowledged: recovery refuses to lose them.
            self.log = SegmentLog.open(disk, directory, kafka=kafka, durable_index=saved.commit,
                                       empty_next_offset=next_offset, **sizes)
        except BaseException:
            self._close_own_hard_states()
            raise
        if self.log.last_index < self._snapshot.index:
            # The snapshot was saved but the log reset after it did not reach the disk.
            self.log.reset_to(self._snapshot.index, self._snapshot.term, next_offset=next_offset)
        self._hard_state = saved
        self._saved_hard_state = self._hard_state
        # Entries _recent_first .. _recent_first + len(_recent) - 1, as last appended.
        self._recent: list[Entry] = []
        self._recent_first = 0
        self._recent_bytes = 0

    def _load_hard_state(self, disk: Disk) -> HardState:
        """The group's state in the hard-state log; if it has none, the per-group file of an
        earlier version's data directory (migration: never written again, the log's record
        wins once there is one); else zeros."""
        saved = self._hard_states.get(self._key)
        if saved is not None:
            return saved
        return HardStateFile(disk, self.directory / LEGACY_HARD_STATE_FILE).load()

    @classmethod
    def bootstrap(cls, disk: Disk, directory: pathlib.Path, *, voters: tuple[int, ...],
                  learners: tuple[int, ...] = (), kafka: bool, segment_bytes: int | None = None,
                  hard_states: HardStateLog | None = None, key: str = "") -> "DurableRaftStorage":
        """A new group's storage whose initial configuration is `voters` (an index-0 snapshot,
        as etcd's bootstrap). Raises StorageError if the group already has state. A state
        the hard-state log still holds for `key` (an earlier replica of the group here,
        since removed) is reset first: the new replica's log starts empty."""
        if hard_states is not None and not disk.exists(directory / SNAPSHOT_FILE):
            # Before opening: the log's recovery must not expect the earlier replica's commit.
            hard_states.reset(key)
        storage = cls(disk, directory, kafka=kafka, segment_bytes=segment_bytes,
                      hard_states=hard_states, key=key)
        if storage._snapshot.metadata.conf_state != ConfState() or storage.last_index() > 0:
            storage.close()
            raise StorageError(f"{directory} already holds a Raft group; not bootstrapping it again")
        snap = Snapshot(SnapshotMetadata(0, 0, ConfState(voters=tuple(voters), learners=tuple(learners))))
        storage._snapshot_file.save(snap)
        storage._snapshot = snap
        return storage

    @property
    def snapshot_index(self) -> int:
        return self._snapshot.index

    @property
    def is_initialized(self) -> bool:
        """Whether this group has a configuration (bootstrapped, or learnt by a snapshot)."""
        cs = self._snapshot.metadata.conf_state
        return bool(cs.voters or cs.learners or self.last_index() > 0)

    # --- the Storage protocol (raft/storage.py states the contracts) --------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return max(self.log.last_index, self._snapshot.index)

    def term(self, index: int) -> int:
        if index == self._snapshot.index:
            return self._snapshot.term
        if index < self._snapshot.index:
            raise Compacted(f"index {index} is below the snapshot at {self._snapshot.index}")
        if index > self.last_index():
            raise Unavailable(f"index {index} > last index {self.last_index()}")
        try:
            return self.log.term(index)
        except CompactedError as exc:
            raise Compacted(str(exc)) from None
        except UnavailableError as exc:
            raise Unavailable(str(exc)) from None

    def entries(self, lo: int, hi: int, max_size_bytes: int | None = None) -> list[Entry]:
        if lo <= self._snapshot.index:
            raise Compacted(f"lo {lo} <= snapshot index {self._snapshot.index}")
        if hi > self.last_index() + 1:
            raise Unavailable(f"hi {hi} > last index {self.last_index()} + 1")
        if lo >= hi:
            return []
        if self._recent and self._recent_first <= lo and lo >= self.log.first_index:
            return self._recent_slice(lo, hi, max_size_bytes)
        try:
            stored = self.log.entries(lo, hi, max_size_bytes)
        except CompactedError as exc:  # retention removed them: the leader sends a snapshot
            raise Compacted(str(exc)) from None
        return [Entry(e.term, e.index, bytes(e.payload), EntryType(e.type)) for e in stored]

    def snapshot(self, request_index: int = 0) -> Snapshot:
        return snapshot_for_request(self._snapshot, request_index)

    # --- writes, while handling a Ready ---------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Append entries, replacing a conflicting suffix; entries the snapshot covers are
        skipped. Written, not yet durable."""
        entries = [e for e in entries if e.index > self._snapshot.index]
        if not entries:
            return
        first = entries[0].index
        assert first <= self.log.last_index + 1, ("gap", first, self.log.last_index)
        if first <= self.log.last_index:
            self.log.truncate_suffix(first)
        self._forget_recent_from(first)
        self.log.append([LogEntry(e.index, e.term, int(e.type), e.data) for e in entries])
        self._remember(entries)

    # --- the recent-entries cache (see RECENT_ENTRIES_BYTES_MAX) ---------------------------------

    def _recent_slice(self, lo: int, hi: int, max_size_bytes: int | None) -> list[Entry]:
        """Entries [lo, hi) from the cache, under the same size rule as SegmentLog.entries:
        at least the first, then as many as keep the frame bytes within max_size_bytes."""
        a, b = lo - self._recent_first, hi - self._recent_first
        assert b <= len(self._recent), (lo, hi, self._recent_first, len(self._recent))
        if max_size_bytes is None:
            return self._recent[a:b]
        budget, end = max_size_bytes, a
        while end < b:
            size = FRAME_HEADER_BYTES + len(self._recent[end].data)
            if size > budget and end > a:
                break
            budget -= size
            end += 1
        return self._recent[a:end]

    def _forget_recent_from(self, index: int) -> None:
        if self._recent and index < self._recent_first + len(self._recent):
            keep = max(0, index - self._recent_first)
            self._recent_bytes -= sum(FRAME_HEADER_BYTES + len(e.data) for e in self._recent[keep:])
            del self._recent[keep:]

    def _remember(self, entries: list[Entry]) -> None:
        if not self._recent:
            self._recent_first = entries[0].index
        assert self._recent_first + len(self._recent) == entries[0].index, \
            (self._recent_first, len(self._recent), entries[0].index)
        for e in entries:
            if not isinstance(e.data, bytes):  # a view could change under us
                e = Entry(e.term, e.index, bytes(e.data), e.type)
            self._recent.append(e)
            self._recent_bytes += FRAME_HEADER_BYTES + len(e.data)
        drop = 0
        while self._recent_bytes > RECENT_ENTRIES_BYTES_MAX and drop < len(self._recent) - 1:
            self._recent_bytes -= FRAME_HEADER_BYTES + len(self._recent[drop].data)
            drop += 1
        if drop:
            del self._recent[:drop]
            self._recent_first += drop

    def release_recent(self, upto: int) -> None:
        """Entries <= upto are no longer needed soon (applied, and held by every follower):
        drop them from memory; they stay in the files."""
        drop = min(upto - self._recent_first + 1, len(self._recent))
        if drop > 0:
            self._recent_bytes -= sum(FRAME_HEADER_BYTES + len(e.data) for e in self._recent[:drop])
            del self._recent[:drop]
            self._recent_first += drop

    def _forget_all_recent(self) -> None:
        self._recent, self._recent_bytes = [], 0

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the log by a snapshot received from the leader (blocking: saves the file).
        Raises SnapshotOutOfDate if it is older than the one held."""
        if snap.index < self._snapshot.index:
            raise SnapshotOutOfDate(f"{snap.index} < {self._snapshot.index}")
        self._snapshot_file.save(snap)
        self._snapshot = snap
        next_offset = partition_snapshot_next_offset(snap) if self.kafka else 0
        self._forget_all_recent()
        self.log.reset_to(snap.index, snap.term, next_offset=next_offset)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record (blocking) a snapshot of the applied state at index <= last_index."""
        if index <= self._snapshot.index:
            raise SnapshotOutOfDate(f"{index} <= {self._snapshot.index}")
        assert index <= self.last_index(), (index, self.last_index())
        snap = Snapshot(SnapshotMetadata(index, self.term(index), conf_state), data)
        self._snapshot_file.save(snap)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> int:
        """Drop whole segments below index (<= the snapshot's index); returns the log's
        new first index."""
        assert index <= self._snapshot.index + 1, (index, self._snapshot.index)
        return self.log.compact_prefix(index)

    # --- durability -------------------------------------------------------------------------------

    def begin_sync(self, *, save_commit: bool = False) -> RaftSyncTicket | None:
        """Capture what the next sync must make durable (on the loop thread)."""
        hs, saved = self._hard_state, self._saved_hard_state
        must_save = (hs.term, hs.vote) != (saved.term, saved.vote) or \
            (save_commit and hs.commit > saved.commit)
        commit_durable = hs.commit <= self.log.durable_index
        log_ticket = self.log.begin_sync()
        if log_ticket is None and not must_save:
            return None
        return RaftSyncTicket(log_ticket, hs if must_save else None, self._hard_states, self._key,
                              self.directory, commit_durable)

    def end_sync(self, ticket: RaftSyncTicket) -> int:
        """After ticket.run(): returns the last durable log index."""
        if ticket.hard_state is not None:
            self._saved_hard_state = ticket.hard_state
        if ticket.log_ticket is not None:
            return self.log.end_sync(ticket.log_ticket)
        return self.log.durable_index

    def sync(self, *, save_commit: bool = True) -> None:
        """begin/run/end in one go (tests, shutdown)."""
        ticket = self.begin_sync(save_commit=save_commit)
        if ticket is not None:
            ticket.run()
            self.end_sync(ticket)

    def forget_hard_state(self) -> None:
        """The group is being deleted from this node: its state leaves the hard-state log."""
        self._hard_states.forget(self._key)

    def close(self) -> None:
        self.log.close()
        self._close_own_hard_states()

    def _close_own_hard_states(self) -> None:
        if self._own_hard_states:
            self._hard_states.close()
