"""The Raft log: durable entries in Storage followed by not-yet-persisted (unstable) ones."""

from __future__ import annotations

from .errors import Compacted, Unavailable
from .storage import Storage, limit_size
from .types import Entry, Snapshot


class Unstable:
    """Entries and a snapshot not yet known to be durable.

    `entries[i]` has index `offset + i`. Entries from `offset_in_progress` on have not been
    handed to the application in a Ready yet; those between `offset` and it are being
    persisted. `snapshot`, if any, precedes `offset` (its index is `offset - 1`).
    """

    __slots__ = ("snapshot", "entries", "offset", "offset_in_progress", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_in_progress = offset
        self.snapshot_in_progress = False

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        end = self.offset + len(self.entries)
        if after == end:
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces everything unstable (and the storage's entries from `after` on).
            self.offset = after
            self.offset_in_progress = after
            self.entries = list(ents)
        else:
            assert after < end, (after, end)
            del self.entries[after - self.offset:]
            self.entries.extend(ents)
            self.offset_in_progress = min(self.offset_in_progress, after)

    def stable_to(self, index: int, term: int) -> bool:
        """Entries up to index (if still of that term) are durable. Returns whether any
        unstable entry became stable."""
        if index < self.offset or index >= self.offset + len(self.entries):
            return False
        if self.entries[index - self.offset].term != term:
            return False  # overwritten since the Ready that carried it
        del self.entries[:index + 1 - self.offset]
        self.offset = index + 1
        self.offset_in_progress = max(self.offset_in_progress, self.offset)
        return True

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snap
        self.snapshot_in_progress = False


class RaftLog:
    """Storage + Unstable, with the commit, applying and applied indexes.

    Invariants: applied <= applying <= committed <= last_index(); committed entries are
    never overwritten (maybe_append asserts it).
    """

    __slots__ = ("storage", "unstable", "committed", "applying", "applied",
                 "max_applying_size_bytes")

    def __init__(self, storage: Storage, max_applying_size_bytes: int | None) -> None:
        self.storage = storage
        first, last = storage.first_index(), storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1
        self.max_applying_size_bytes = max_applying_size_bytes

    def first_index(self) -> int:
        snap = self.unstable.snapshot
        return snap.index + 1 if snap is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.index
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def persisted_index(self) -> int:
        """Highest index known durable and still part of this log."""
        if self.unstable.snapshot is not None:
            return 0  # the whole log is being replaced; nothing of it is durable yet
        return min(self.unstable.offset - 1, self.storage.last_index())

    def term(self, index: int) -> int:
        """Raises Compacted / Unavailable outside [first_index() - 1, last_index()]."""
        u = self.unstable
        if u.entries and index >= u.offset:
            i = index - u.offset
            if i >= len(u.entries):
                raise Unavailable(f"index {index} > last index {self.last_index()}")
            return u.entries[i].term
        if u.snapshot is not None:
            if index == u.snapshot.index:
                return u.snapshot.term
            if index < u.snapshot.index:
                raise Compacted(f"index {index} < snapshot {u.snapshot.index}")
            raise Unavailable(f"index {index} > snapshot {u.snapshot.index}")
        if index >= u.offset:
            raise Unavailable(f"index {index} > last index {self.last_index()}")
        return self.storage.term(index)

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as ours
        (Raft paper 5.4.1)."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry that conflicts with (or extends) the log, 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term: the leader may skip
        every entry after it when probing (the "fast backup" of the thesis, 5.3)."""
        first = self.first_index()
        while index >= first - 1:
            try:
                t = self.term(index)
            except (Compacted, Unavailable):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return index, 0

    def maybe_append(self, index: int, log_term: int, commit: int,
                     ents: tuple[Entry, ...]) -> int | None:
        """Append ents after (index, log_term) if our log has that entry; returns the index
        of the last new entry, or None if the consistency check failed."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            assert ci > self.committed, f"conflict at {ci} <= committed {self.committed}"
            self.append(list(ents[ci - index - 1:]))
        self.commit_to(min(commit, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if ents:
            assert ents[0].index > self.committed, (ents[0].index, self.committed)
            self.unstable.truncate_and_append(ents)
        return self.last_index()

    def commit_to(self, commit: int) -> None:
        if commit > self.committed:
            assert commit <= self.last_index(), (commit, self.last_index())
            self.committed = commit

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit index if it is beyond the commit index and of term (only entries of the
        current term commit by counting: Raft paper 5.4.2, Figure 8)."""
        if index > self.committed and self.match_term(index, term):
            self.commit_to(index)
            return True
        return False

    def slice(self, lo: int, hi: int, max_size_bytes: int | None) -> list[Entry]:
        """Entries in [lo, hi), at least one, limited to max_size_bytes."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise Compacted(f"lo {lo} < first index {self.first_index()}")
        assert hi <= self.last_index() + 1, (hi, self.last_index())
        u = self.unstable
        ents: list[Entry] = []
        if lo < u.offset:
            ents = self.storage.entries(lo, min(hi, u.offset), max_size_bytes)
            if len(ents) < min(hi, u.offset) - lo:
                return ents  # the size limit stopped us inside the storage
        if hi > u.offset:
            ents = ents + u.entries[max(lo, u.offset) - u.offset:hi - u.offset]
        return limit_size(ents, max_size_bytes)

    def entries_from(self, index: int, max_size_bytes: int | None) -> list[Entry]:
        if index > self.last_index():
            return []
        return self.slice(index, self.last_index() + 1, max_size_bytes)

    # -- Ready support ----------------------------------------------------------------------

    def has_unstable_to_persist(self) -> bool:
        u = self.unstable
        return u.offset_in_progress < u.offset + len(u.entries) or \
            (u.snapshot is not None and not u.snapshot_in_progress)

    def take_unstable_to_persist(self) -> tuple[list[Entry], Snapshot | None]:
        """Entries (and snapshot) not yet handed out; marks them as in progress."""
        u = self.unstable
        ents = u.entries[u.offset_in_progress - u.offset:]
        u.offset_in_progress = u.offset + len(u.entries)
        snap = None
        if u.snapshot is not None and not u.snapshot_in_progress:
            snap = u.snapshot
            u.snapshot_in_progress = True
        return ents, snap

    def stable_snap_to(self, index: int) -> None:
        u = self.unstable
        if u.snapshot is not None and u.snapshot.index == index:
            u.snapshot = None
            u.snapshot_in_progress = False
            self.applying = max(self.applying, index)
            self.applied = max(self.applied, index)

    def has_next_committed(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        return self.applying < min(self.committed, self.persisted_index())

    def take_next_committed(self) -> list[Entry]:
        """Committed, durable entries not yet handed out for applying; marks them applying.
        Only durable entries are applied, so a crash never un-applies an entry."""
        if not self.has_next_committed():
            return []
        hi = min(self.committed, self.persisted_index()) + 1
        ents = self.slice(self.applying + 1, hi, self.max_applying_size_bytes)
        if ents:
            self.applying = ents[-1].index
        return ents

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.applying, (self.applied, index, self.applying)
        self.applied = index

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.index
        self.unstable.restore(snap)
