"""The simulated disk: FaultyDisk's bookkeeping and power-loss rules over real files in a
scratch directory, without the real fsync.

Why real files and not memory: the node still reads a few things straight from the file
system beside its Disk (the partition's topic-id file, leftover deleted directories), and the
replica-log reader of `chaos run` reads data directories as files; real files keep every one
of those paths the real one. What makes a disk slow and nondeterministic, fsync, is not
called: durability is FaultyDisk's record of what was fsynced, and power loss
(`power_loss`) cuts every file back to it, optionally keeping a torn prefix of the last
unsynced write (a sector-sized piece of what was in flight). Latency is virtual: the thread
hand-off (world.py) sleeps it on the MockClock before running the fsync work inline.
"""

from __future__ import annotations

import errno
import pathlib
import random

from chronik_trio.storage.disk import Disk, DiskFaults, DiskFile, FaultyDisk
from chronik_trio.storage.errors import DiskError

TORN_PIECE_BYTES = 512
FSYNC_FASTEST_S = 0.0005
FSYNC_SLOWEST_S = 0.010


class _NoSyncDisk(Disk):
    """Disk without the fsync system calls (durability is FaultyDisk's bookkeeping)."""

    def fsync(self, f: DiskFile) -> None:
        pass

    def fsync_dir(self, path: pathlib.Path) -> None:
        pass

    def sync_filesystem(self, root: pathlib.Path) -> None:
        pass  # (a batched sync round's syncfs: FaultyDisk counted its fsyncs already)


class SimDisk(FaultyDisk, _NoSyncDisk):
    """One node's disk. `faults` is flipped by the nemesis; `rng` decides torn writes and
    fsync latency (the hand-off asks `fsync_latency_s()`)."""

    def __init__(self, rng: random.Random, root: pathlib.Path) -> None:
        super().__init__(DiskFaults(), sleep=lambda s: None)
        self.rng = rng
        self.root = root
        self.fsync_calls = 0
        self.skip_fsync = False  # a bug-class test's patch: fsync records nothing
        # How fast this disk syncs, from the seed: a fast SSD (0.5 ms) to a slow disk (10 ms).
        self.fsync_typical_s = rng.uniform(FSYNC_FASTEST_S, FSYNC_SLOWEST_S)
        # True from cut_power() until power_loss() drops what was unsynced: the node's tasks
        # may still run for a while (a fsync round ends under its shield before the
        # cancellation lands), but what they write, sync, rename, cut or unlink no longer
        # reaches the disk (a real machine would have stopped).
        self.power_cut = False

    def cut_power(self) -> None:
        """The power goes now; power_loss() (once the node's tasks have stopped) then drops
        every byte not synced before this moment. Without the cut, a round that ended after
        it could make a later hard state durable over log bytes the loss then dropped."""
        self.power_cut = True

    def pwritev(self, f: DiskFile, buffers, offset: int) -> None:
        if not self.power_cut:
            super().pwritev(f, buffers, offset)

    def truncate(self, f: DiskFile, size: int) -> None:
        if not self.power_cut:
            super().truncate(f, size)

    def rename(self, src: pathlib.Path, dst: pathlib.Path) -> None:
        if not self.power_cut:
            super().rename(src, dst)

    def unlink(self, path: pathlib.Path) -> None:
        if not self.power_cut:
            super().unlink(path)

    def fsync_dir(self, path: pathlib.Path) -> None:
        if not self.power_cut:
            super().fsync_dir(path)

    def sync_filesystem(self, root: pathlib.Path) -> None:
        if not self.power_cut:
            super().sync_filesystem(root)

    def fsync(self, f: DiskFile) -> None:
        self.fsync_calls += 1
        if self.power_cut:
            return
        if self.skip_fsync:
            self._inject(f.path, 0.0, self.faults.fsync_errno, "fsync")
            return
        super().fsync(f)

    def fsync_latency_s(self) -> float:
        return self.fsync_typical_s * self.rng.uniform(0.5, 1.5) + self.faults.fsync_latency_s

    def power_loss(self, *, torn: bool) -> list[str]:
        """Every unsynced byte is gone, except (torn) a random prefix of some files' unsynced
        tail, in TORN_PIECE_BYTES pieces. Returns what was torn, for the trace."""
        notes = []
        if torn:
            with self._lock:
                for path in sorted(self._synced_bytes):
                    synced = self._synced_bytes[path]
                    written = self._written_bytes.get(path, synced)
                    if written > synced and self.rng.random() < 0.5:
                        keep = min(written - synced,
                                   self.rng.randrange(1, 1 + (written - synced) // TORN_PIECE_BYTES + 1)
                                   * TORN_PIECE_BYTES)
                        keep = self.rng.randrange(0, keep + 1)
                        self._synced_bytes[path] = synced + keep
                        notes.append(f"{path.relative_to(self.root)}: kept {keep} of "
                                     f"{written - synced} unsynced bytes")
        self.drop_unsynced()
        self.power_cut = False
        return notes


def error_number(name: str | None) -> int | None:
    return {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC, None: None}[name]


__all__ = ["SimDisk", "DiskError", "error_number"]
