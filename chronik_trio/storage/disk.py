"""The Disk seam: every file operation of storage goes through one Disk object.

`Disk` is a thin layer over `os` that turns every OSError into DiskError (naming the file).
`FaultyDisk` adds what the chaos harness needs: latency, EIO/ENOSPC, and power loss
(`drop_unsynced`). With a default `DiskFaults()` it behaves exactly like `Disk`.
Both are thread-safe to the same degree as the OS calls: a worker thread may fsync while
the event-loop thread writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import attrs

from chronik_trio.storage.errors import DiskError

# Linux IOV_MAX; one pwritev call may take at most this many buffers.
IOV_MAX = 1024

# A thread inside Disk.deferred_sync: its fsyncs only count (the block's end syncs them all).
_deferring = threading.local()
_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)  # Linux; elsewhere os.sync()


def _deferred() -> bool:
    noted = getattr(_deferring, "noted", None)
    if noted is None:
        return False
    _deferring.noted = noted + 1
    return True


@attrs.define(eq=False)
class DiskFile:
    """An open file: its descriptor and the path it was opened as (for messages and faults)."""

    path: pathlib.Path
    fd: int


@contextlib.contextmanager
def _wrapped(operation: str, path: pathlib.Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise DiskError(operation, path, e) from e


class Disk:
    """Plain file operations. Every OSError becomes a DiskError naming the file."""

    def open(self, path: pathlib.Path) -> DiskFile:
        """Open `path` read-write, creating it if missing."""
        with _wrapped("open", path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return DiskFile(path, fd)

    def exists(self, path: pathlib.Path) -> bool:
        return os.path.exists(path)

    def file_size(self, path: pathlib.Path) -> int:
        with _wrapped("stat", path):
            return os.stat(path).st_size

    def pwritev(self, f: DiskFile, buffers: Sequence[bytes | memoryview], offset: int) -> None:
        """Write all `buffers` contiguously at `offset` (retrying short writes)."""
        # try/except, not _wrapped: this is the per-append hot path.
        try:
            _pwritev_all(f.fd, buffers, offset)
        except OSError as e:
            raise DiskError("write", f.path, e) from e

    def pread(self, f: DiskFile, size: int, offset: int) -> bytes:
        """Read up to `size` bytes at `offset`; shorter only at end of file."""
        with _wrapped("read", f.path):
            data = os.pread(f.fd, size, offset)
            if len(data) == size or not data:
                return data
            parts = [data]
            got = len(data)
            while got < size:
                more = os.pread(f.fd, size - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            return b"".join(parts)

    def fsync(self, f: DiskFile) -> None:
        if _deferred():
            return
        with _wrapped("fsync", f.path):
            os.fsync(f.fd)

    @contextlib.contextmanager
    def deferred_sync(self, *roots: pathlib.Path) -> Iterator[None]:
        """In this thread, the fsyncs of files and directories inside the block are put off;
        when the block ends (without an exception), one syncfs(2) of each filesystem the roots
        are on makes everything written meanwhile durable at once. For many new small files (partitions
        created in bulk): one flush of the disk instead of several per partition. Only for
        files nothing depends on before the block ends (nothing may be sent, acknowledged or
        renamed over a durable file on the strength of a put-off fsync)."""
        assert getattr(_deferring, "noted", None) is None, "deferred_sync blocks do not nest"
        _deferring.noted = 0
        try:
            yield
        finally:
            noted, _deferring.noted = _deferring.noted, None
        if noted:
            synced: set[int] = set()
            for root in roots:  # syncfs syncs a whole filesystem: each one once
                with _wrapped("stat", root):
                    device = os.stat(root).st_dev
                if device not in synced:
                    synced.add(device)
                    self.sync_filesystem(root)

    def sync_filesystem(self, root: pathlib.Path) -> None:
        """Everything written to root's filesystem is durable when this returns."""
        with _wrapped("sync filesystem", root):
            if _syncfs is None:
                os.sync()
                return
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if _syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)

    def truncate(self, f: DiskFile, size: int) -> None:
        with _wrapped("truncate", f.path):
            os.ftruncate(f.fd, size)

    def size(self, f: DiskFile) -> int:
        with _wrapped("stat", f.path):
            return os.fstat(f.fd).st_size

    def close(self, f: DiskFile) -> None:
        with _wrapped("close", f.path):
            os.close(f.fd)

    def rename(self, src: pathlib.Path, dst: pathlib.Path) -> None:
        with _wrapped("rename", src):
            os.rename(src, dst)

    def fsync_dir(self, path: pathlib.Path) -> None:
        if _deferred():
            return
        with _wrapped("fsync directory", path):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def unlink(self, path: pathlib.Path) -> None:
        with _wrapped("unlink", path):
            os.unlink(path)

    def listdir(self, path: pathlib.Path) -> list[str]:
        with _wrapped("list directory", path):
            return os.listdir(path)

    def mkdir(self, path: pathlib.Path) -> None:
        """Create `path` and its parents; no error if it exists."""
        with _wrapped("mkdir", path):
            os.makedirs(path, exist_ok=True)

    def replace_file(self, path: pathlib.Path, data: bytes | Sequence[bytes]) -> None:
        """Replace `path` atomically and durably: write `path`.tmp, fsync, rename over
        `path`, fsync the directory. Built from the primitives above, so FaultyDisk's faults
        apply to every step.

        Raises:
            DiskError: the old file is still in place (or the new one, if only the last
                directory fsync failed).
        """
        self.replace_file_end(self.replace_file_begin(path, data), path)

    def replace_file_begin(self, path: pathlib.Path, data: bytes | Sequence[bytes]) -> pathlib.Path:
        """replace_file's first half: `path`.tmp written and fsynced; returns it."""
        tmp = path.with_name(path.name + ".tmp")
        f = self.open(tmp)
        try:
            self.truncate(f, 0)
            self.pwritev(f, [data] if isinstance(data, bytes) else list(data), 0)
            self.fsync(f)
        finally:
            self.close(f)
        return tmp

    def replace_file_end(self, tmp: pathlib.Path, path: pathlib.Path) -> None:
        """replace_file's second half: rename tmp (durable) over path, fsync the directory."""
        self.rename(tmp, path)
        self.fsync_dir(path.parent)


def _pwritev_all(fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> None:
    if len(buffers) <= IOV_MAX:
        total = sum(map(len, buffers))
        written = os.pwritev(fd, buffers, offset)
        if written == total:
            return
    else:
        written = 0
    # A short write (or too many buffers): go on from where the kernel stopped.
    pending = [memoryview(b).cast("B") for b in buffers if len(b)]
    offset += written
    while written and pending:
        if written < len(pending[0]):
            pending[0] = pending[0][written:]
            break
        written -= len(pending.pop(0))
    while pending:
        chunk = pending[:IOV_MAX]
        written = os.pwritev(fd, chunk, offset)
        offset += written
        dropped = 0
        for buf in chunk:
            if written < len(buf):
                break
            written -= len(buf)
            dropped += 1
        del pending[:dropped]
        if written:
            pending[0] = pending[0][written:]


@attrs.define
class DiskFaults:
    """What FaultyDisk injects. Mutable so a test or the chaos harness can flip faults live.

    Errors are errno values (errno.EIO, errno.ENOSPC) or None for no fault; they apply only
    to paths under `path_prefix` when it is set. Latencies are added before the operation.
    """

    write_latency_s: float = 0.0
    fsync_latency_s: float = 0.0
    write_errno: int | None = None
    fsync_errno: int | None = None
    path_prefix: pathlib.Path | None = None

    def applies_to(self, path: pathlib.Path) -> bool:
        return self.path_prefix is None or path.is_relative_to(self.path_prefix)


class FaultyDisk(Disk):
    """A Disk that injects DiskFaults and remembers what has not been fsynced.

    `drop_unsynced()` simulates power loss: every file written through this disk is cut
    back to its length at its last fsync, files created since their directory was last
    fsynced are deleted, and files unlinked since then come back (cut to their fsynced
    length). Until its directory is fsynced, an unlinked file waits in a hidden
    TRASH_DIR_NAME directory beside it. Renames are not undone, and a truncation counts as
    durable at once (the conservative choice: bytes cut off never come back).
    """

    TRASH_DIR_NAME = ".faulty-disk-unlinked"

    def __init__(self, faults: DiskFaults | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.faults = faults if faults is not None else DiskFaults()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._synced_bytes: dict[pathlib.Path, int] = {}
        self._written_bytes: dict[pathlib.Path, int] = {}
        self._created: set[pathlib.Path] = set()
        # Unlinked path -> (where it waits, its fsynced length), until a directory fsync.
        self._unlinked: dict[pathlib.Path, tuple[pathlib.Path, int]] = {}
        self._trash_count = 0

    def open(self, path: pathlib.Path) -> DiskFile:
        created = not os.path.exists(path)
        f = super().open(path)
        with self._lock:
            if created:
                self._created.add(path)
            if path not in self._synced_bytes:
                size = 0 if created else os.fstat(f.fd).st_size
                self._synced_bytes[path] = size
                self._written_bytes[path] = size
        return f

    def pwritev(self, f: DiskFile, buffers: Sequence[bytes | memoryview], offset: int) -> None:
        self._inject(f.path, self.faults.write_latency_s, self.faults.write_errno, "write")
        super().pwritev(f, buffers, offset)
        end = offset + sum(len(b) for b in buffers)
        with self._lock:
            self._written_bytes[f.path] = max(self._written_bytes.get(f.path, 0), end)

    def fsync(self, f: DiskFile) -> None:
        self._inject(f.path, self.faults.fsync_latency_s, self.faults.fsync_errno, "fsync")
        with self._lock:
            written = self._written_bytes.get(f.path, 0)
        super().fsync(f)
        with self._lock:
            # Bytes written while the fsync ran may not be covered; a truncation may have cut.
            self._synced_bytes[f.path] = min(written, self._written_bytes.get(f.path, 0))

    def truncate(self, f: DiskFile, size: int) -> None:
        super().truncate(f, size)
        with self._lock:
            self._written_bytes[f.path] = size
            self._synced_bytes[f.path] = min(self._synced_bytes.get(f.path, 0), size)

    def fsync_dir(self, path: pathlib.Path) -> None:
        self._inject(path, self.faults.fsync_latency_s, self.faults.fsync_errno,
                     "fsync directory")
        super().fsync_dir(path)
        with self._lock:
            self._created = {p for p in self._created if p.parent != path}
            for unlinked in [p for p in self._unlinked if p.parent == path]:
                os.unlink(self._unlinked.pop(unlinked)[0])

    def rename(self, src: pathlib.Path, dst: pathlib.Path) -> None:
        replacing = os.path.exists(dst)
        super().rename(src, dst)
        with self._lock:
            for table in (self._synced_bytes, self._written_bytes):
                if src in table:
                    table[dst] = table.pop(src)
            if src in self._created:
                self._created.discard(src)
                # Over a file whose name was durable, the name stays durable (renames are not
                # undone): a power loss before the directory's fsync must not delete it.
                if not replacing:
                    self._created.add(dst)

    def unlink(self, path: pathlib.Path) -> None:
        with self._lock:
            durable_entry = path not in self._created
            synced = self._synced_bytes.get(path)
        if synced is None:  # never opened through this disk: all of it is on disk
            synced = super().file_size(path)
        if not durable_entry:
            super().unlink(path)
        else:
            trash_dir = path.parent / self.TRASH_DIR_NAME
            super().mkdir(trash_dir)
            with self._lock:
                self._trash_count += 1
                trash = trash_dir / f"{path.name}.{self._trash_count}"
            super().rename(path, trash)
            with self._lock:
                self._unlinked[path] = (trash, synced)
        with self._lock:
            self._forget(path)

    def unsynced_bytes(self, path: pathlib.Path) -> int:
        """Bytes written to `path` beyond its last fsynced length."""
        with self._lock:
            return max(0, self._written_bytes.get(path, 0) - self._synced_bytes.get(path, 0))

    def drop_unsynced(self) -> None:
        """Simulate power loss (see the class docstring). Close logs before calling it."""
        with self._lock:
            for path in sorted(self._created):
                if os.path.exists(path):
                    os.unlink(path)
                self._forget(path)
            self._created.clear()
            for path, (trash, synced) in sorted(self._unlinked.items()):
                os.truncate(trash, min(synced, os.path.getsize(trash)))
                os.rename(trash, path)
                self._synced_bytes[path] = self._written_bytes[path] = synced
            self._unlinked.clear()
            for path, synced in self._synced_bytes.items():
                if os.path.exists(path) and os.path.getsize(path) > synced:
                    os.truncate(path, synced)
                self._written_bytes[path] = synced

    def _forget(self, path: pathlib.Path) -> None:
        self._synced_bytes.pop(path, None)
        self._written_bytes.pop(path, None)
        self._created.discard(path)

    def _inject(self, path: pathlib.Path, latency_s: float, error: int | None,
                operation: str) -> None:
        if not self.faults.applies_to(path):
            return
        if latency_s > 0:
            self._sleep(latency_s)
        if error is not None:
            raise DiskError(operation, path, OSError(error, os.strerror(error)))


__all__ = ["Disk", "DiskFaults", "DiskFile", "FaultyDisk", "IOV_MAX"]
