"""The per-group hard-state file of earlier versions: (term, vote, commit), replaced atomically.

A node now keeps every group's hard state in its HardStateLog (hardstate_log.py); this file
is still read, for a group the log has no state for (a data directory of an earlier
version), and never written by the node again. `save` writes one as those versions did.

Format (big-endian, 34 bytes): magic b"CTHS" | version u16 | term u64 | vote u64 |
commit u64 | crc32c u32 over everything before it.
"""

from __future__ import annotations

import pathlib
import struct

import crc32c

from chronik_trio.raft.types import HardState
from chronik_trio.storage.disk import Disk
from chronik_trio.storage.errors import CorruptHardStateError

MAGIC = b"CTHS"
VERSION = 1
_BODY = struct.Struct(">4sHQQQ")
_CRC = struct.Struct(">I")
HARD_STATE_BYTES = _BODY.size + _CRC.size


def encode_hard_state(hs: HardState) -> bytes:
    body = _BODY.pack(MAGIC, VERSION, hs.term, hs.vote, hs.commit)
    return body + _CRC.pack(crc32c.crc32c(body))


def decode_hard_state(data: bytes, path: pathlib.Path) -> HardState:
    """Raises CorruptHardStateError naming `path` if `data` is not a valid hard state."""
    if len(data) != HARD_STATE_BYTES:
        raise CorruptHardStateError(path, f"{len(data)} bytes, expected {HARD_STATE_BYTES}")
    magic, version, term, vote, commit = _BODY.unpack_from(data)
    if magic != MAGIC:
        raise CorruptHardStateError(path, f"bad magic {magic!r}")
    (crc,) = _CRC.unpack_from(data, _BODY.size)
    if crc != crc32c.crc32c(data[:_BODY.size]):
        raise CorruptHardStateError(path, "bad CRC")
    if version != VERSION:
        raise CorruptHardStateError(path, f"unknown version {version}")
    return HardState(term, vote, commit)


class HardStateFile:
    """Loads and atomically saves one group's HardState at `path`."""

    def __init__(self, disk: Disk, path: pathlib.Path) -> None:
        self._disk = disk
        self.path = path

    def load(self) -> HardState:
        """The saved state; all zeros if the file does not exist.

        Raises:
            CorruptHardStateError: the file exists but is not a valid hard state.
        """
        if not self._disk.exists(self.path):
            return HardState()
        f = self._disk.open(self.path)
        try:
            data = self._disk.pread(f, HARD_STATE_BYTES + 1, 0)
        finally:
            self._disk.close(f)
        return decode_hard_state(data, self.path)

    def save(self, hs: HardState) -> None:
        """Replace the file atomically: write a temporary file, fsync, rename, fsync dir.

        Raises:
            DiskError: the old state is still in place (or the new one, if only the last
                directory fsync failed).
        """
        self._disk.mkdir(self.path.parent)
        self._disk.replace_file(self.path, encode_hard_state(hs))
