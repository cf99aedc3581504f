"""The hard-state log: the (term, vote, commit) of every Raft group of a node in one file.

Why one file: an election over thousands of groups changes the term and vote of each. Saved
one file per group (write a temporary file, rename it over the old one), a sync round of N
elections cost N file creations and renames, each a metadata operation of milliseconds on a
busy disk: rounds longer than the election timeout, so the elections began again (issue 20,
docs/bench.md). Here a round appends one frame holding every changed hard state of the
round and fsyncs one file, as etcd's WAL holds every group's state in one log.

File (big-endian):

    header   b"CTHL" | version u16
    frame    length u32 | crc32c u32 | records      (length counts the records' bytes)
    record   key length u16 | key (UTF-8) | term u64 | vote u64 | commit u64

One frame per write (`append`, and the whole file after `compact`), so a torn write can
only damage the last frame. On open a group's hard state is its last record; a record of
all zeros means "none" (a group forgotten, or a new replica of a group reset). A bad frame
at the end (short, or a CRC that does not match, with no valid frame after it) is a torn
tail: it is cut off and ignored. A bad frame followed by a valid one cannot come from a
torn write (each frame is fsynced before the next is written, and a torn tail is cut off
before anything is appended after it): that is corruption, and open raises
CorruptHardStateError naming the file and byte offset rather than use any record after it.

Compaction: when the file grows past `compact_bytes_min` and COMPACT_RATIO times the size
of the live states, `compact` writes every live state as one frame of a new file, fsyncs
it, renames it over the log and fsyncs the directory (Disk.replace_file). A crash leaves
either the old file or the new one, both whole; a leftover temporary file is removed on
open.

Thread safety: `append`, `reset`, `compact` and `close` serialise on one lock, held over
their I/O (the node's fsync thread appends while a worker thread may open new partitions);
the in-memory table has a lock of its own, never held over I/O, so `get` and `forget` may
be called from the event loop at any time without waiting for a disk.
"""

from __future__ import annotations

import pathlib
import struct
import threading
from collections.abc import Iterable, Sequence

import crc32c

from chronik_trio.raft.types import HardState
from chronik_trio.storage.disk import Disk
from chronik_trio.storage.errors import CorruptHardStateError

MAGIC = b"CTHL"
VERSION = 1
_HEADER = struct.Struct(">4sH")
HEADER = _HEADER.pack(MAGIC, VERSION)
_FRAME = struct.Struct(">II")  # length, crc32c of the records
_KEY_LENGTH = struct.Struct(">H")
_STATE = struct.Struct(">QQQ")  # term, vote, commit
RECORD_FIXED_BYTES = _KEY_LENGTH.size + _STATE.size
# Group ids are a topic id's 32 hex digits and a partition number, or "__meta".
KEY_BYTES_MAX = 255
# A frame holds one round's records (at most one per group of the node) or, after
# compaction, all of them: 100,000 groups are about 6 MB. Larger lengths are garbage.
FRAME_BYTES_MAX = 64 << 20
# Compaction when the file is past this (and COMPACT_RATIO times the live states): a round
# of 10,000 elections appends about 0.6 MB, so a few such rounds between compactions.
COMPACT_BYTES_MIN = 4 << 20
COMPACT_RATIO = 4
_ZERO = HardState()


def encode_frame(records: Iterable[tuple[str, HardState]]) -> bytes:
    parts = []
    for key, hs in records:
        raw = key.encode()
        assert len(raw) <= KEY_BYTES_MAX, key
        parts += [_KEY_LENGTH.pack(len(raw)), raw, _STATE.pack(hs.term, hs.vote, hs.commit)]
    body = b"".join(parts)
    assert len(body) <= FRAME_BYTES_MAX - _FRAME.size, len(body)
    return _FRAME.pack(len(body), crc32c.crc32c(body)) + body


def _record_bytes(key: str) -> int:
    return RECORD_FIXED_BYTES + len(key.encode())


def _bad_frame(view: memoryview, pos: int) -> tuple[str | None, int]:
    """Why the frame at `pos` is not valid (or None), and its end if its length is plausible
    (else -1)."""
    remaining = len(view) - pos
    if remaining < _FRAME.size:
        return f"{remaining} bytes, shorter than a frame header", -1
    length, crc = _FRAME.unpack_from(view, pos)
    if not RECORD_FIXED_BYTES <= length <= FRAME_BYTES_MAX:  # no frame is empty (zeros are not frames)
        return f"bad length {length}", -1
    end = pos + _FRAME.size + length
    if end > len(view):
        return f"short frame: length {length}, {remaining - _FRAME.size} bytes left", -1
    if crc32c.crc32c(view[pos + _FRAME.size:end]) != crc:
        return "bad CRC", end
    return None, end


def _records(view: memoryview, start: int, end: int, path: pathlib.Path) -> list[tuple[str, HardState]]:
    out = []
    pos = start
    while pos < end:
        if end - pos < RECORD_FIXED_BYTES:
            raise CorruptHardStateError(path, f"a record at byte {pos} runs past its frame")
        (key_length,) = _KEY_LENGTH.unpack_from(view, pos)
        key_end = pos + _KEY_LENGTH.size + key_length
        if key_end + _STATE.size > end:
            raise CorruptHardStateError(path, f"a record at byte {pos} runs past its frame")
        try:
            key = bytes(view[pos + _KEY_LENGTH.size:key_end]).decode()
        except UnicodeDecodeError:
            raise CorruptHardStateError(path, f"a record at byte {pos} has a key that is not UTF-8") from None
        out.append((key, HardState(*_STATE.unpack_from(view, key_end))))
        pos = key_end + _STATE.size
    return out


class HardStateLog:
    """Every group's hard state of one node, keyed by group id (see the module docstring).

    Raises (on open):
        CorruptHardStateError: a bad header, or a bad frame with valid frames after it.
        DiskError: the file could not be read or its torn tail not cut off.
    """

    def __init__(self, disk: Disk, path: pathlib.Path, *,
                 compact_bytes_min: int = COMPACT_BYTES_MIN) -> None:
        self._disk = disk
        self.path = path
        self.compact_bytes_min = compact_bytes_min
        self._lock = threading.Lock()  # writers: append, reset, compact, close
        self._table_lock = threading.Lock()  # _states, _live_bytes, _forgotten
        self._states: dict[str, HardState] = {}
        self._live_bytes = 0
        self._forgotten: set[str] = set()  # keys whose zero record is still to be written
        self.appends = 0  # frames written (tests count them)
        self.compactions = 0
        disk.mkdir(path.parent)
        tmp = path.with_name(path.name + ".tmp")
        if disk.exists(tmp):  # a compaction (or the creation) that did not finish
            disk.unlink(tmp)
        if not disk.exists(path):
            disk.replace_file(path, HEADER)
        self._file = disk.open(path)
        try:
            self._end = self._load()
        except BaseException:
            disk.close(self._file)
            raise

    def _load(self) -> int:
        data = self._disk.pread(self._file, self._disk.size(self._file), 0)
        if len(data) < _HEADER.size or _HEADER.unpack_from(data) != (MAGIC, VERSION):
            raise CorruptHardStateError(self.path, f"bad header {bytes(data[:_HEADER.size])!r}")
        view = memoryview(data)
        pos = _HEADER.size
        while pos < len(view):
            reason, end = _bad_frame(view, pos)
            if reason is not None:
                if end != -1 and end < len(view) and _bad_frame(view, end)[0] is None:
                    raise CorruptHardStateError(
                        self.path, f"frame at byte {pos}: {reason}, and a valid frame after it")
                # A torn tail: the write of the last round did not finish. Cut it off, so
                # the next frame follows the last good one.
                self._disk.truncate(self._file, pos)
                self._disk.fsync(self._file)
                break
            for key, hs in _records(view, pos + _FRAME.size, end, self.path):
                self._set(key, hs)
            pos = end
        return pos

    def _set(self, key: str, hs: HardState) -> None:
        """Under _table_lock (or before anyone else sees this object)."""
        old = self._states.pop(key, None)
        if old is not None:
            self._live_bytes -= _record_bytes(key)
        if hs != _ZERO:
            self._states[key] = hs
            self._live_bytes += _record_bytes(key)

    # --- reading -------------------------------------------------------------------------------

    def get(self, key: str) -> HardState | None:
        """The group's last saved hard state; None if it has none (never saved, forgotten or
        reset)."""
        return self._states.get(key)

    @property
    def group_count(self) -> int:
        """Groups with a state (not __len__: an empty log is still a log)."""
        return len(self._states)

    @property
    def disk(self) -> Disk:
        return self._disk

    @property
    def size_bytes(self) -> int:
        return self._end

    # --- writing -------------------------------------------------------------------------------

    def append(self, states: Sequence[tuple[str, HardState]]) -> None:
        """Blocking: write `states` (and the zero records of forgotten groups) as one frame
        at the end of the file and fsync it (a put-off fsync inside Disk.deferred_sync).

        Raises:
            DiskError: nothing in memory changed; the next append writes over what this one
                may have left.
        """
        with self._lock:
            self._append_locked(list(states))

    def _append_locked(self, states: list[tuple[str, HardState]]) -> None:
        with self._table_lock:
            forgotten = sorted(self._forgotten)
        if not forgotten and not states:
            return
        # Zero records first: a state of the same group in this frame, later, wins.
        frame = encode_frame([(key, _ZERO) for key in forgotten] + states)
        self._disk.pwritev(self._file, [frame], self._end)
        self._disk.fsync(self._file)
        self._end += len(frame)
        self.appends += 1
        with self._table_lock:
            self._forgotten.difference_update(forgotten)
            for key, hs in states:
                self._set(key, hs)

    def forget(self, key: str) -> None:
        """The group is gone from this node: drop its state now; its zero record goes out
        with the next append (compaction leaves it out either way). Not durable by itself:
        `reset` makes sure a new replica of the group never starts from it."""
        with self._table_lock:
            if key in self._states:
                self._set(key, _ZERO)
                self._forgotten.add(key)

    def reset(self, key: str) -> None:
        """Blocking: a new replica of `key` starts from nothing. If a state of an earlier
        replica of the group here may be on disk, a zero record for it is written and
        fsynced (put off inside Disk.deferred_sync) before this returns."""
        with self._lock:
            with self._table_lock:
                stale = key in self._states or key in self._forgotten
            if stale:
                self._append_locked([(key, _ZERO)])

    @property
    def compaction_due(self) -> bool:
        live = _HEADER.size + _FRAME.size + self._live_bytes  # a read of one int: no lock
        return self._end > max(self.compact_bytes_min, COMPACT_RATIO * live)

    def compact(self) -> None:
        """Blocking: replace the file by one holding every live state once (see the module
        docstring). Not inside Disk.deferred_sync: the rename must follow a real fsync.

        Raises:
            DiskError: the old file is still in place (or the new one, if only the last
                directory fsync failed); either holds every state.
        """
        with self._lock:
            with self._table_lock:
                states = sorted(self._states.items())
                forgotten = set(self._forgotten)
            frame = encode_frame(states) if states else b""
            self._disk.replace_file(self.path, [HEADER, frame])
            self._disk.close(self._file)
            self._file = self._disk.open(self.path)
            self._end = len(HEADER) + len(frame)
            with self._table_lock:
                self._forgotten -= forgotten  # left out of the new file
            self.compactions += 1

    def close(self) -> None:
        with self._lock:
            self._disk.close(self._file)
