"""Snapshots in chunks, with no I/O: splitting a MSG_SNAPSHOT, and putting it back together.

A MSG_SNAPSHOT can carry far more than one frame may hold, so the sender cuts
`message.snapshot.data` into SnapshotChunks (proto/transport.proto) and the receiver rebuilds
the message from the chunks of one stream, which arrive in order. Anything that does not fit
that order (a gap, a chunk for a snapshot that was never started, sizes that disagree, more
than the limit) is refused with SnapshotRefused, and the half-built snapshot is forgotten:
the leader sends a new one after it is told the old one failed.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ..pb import raft_pb2, transport_pb2

# Bytes of snapshot data per chunk: big enough that the per-chunk cost is small next to the
# copy, small enough that batches on the same stream wait at most ~10 ms behind a chunk.
SNAPSHOT_CHUNK_BYTES = 2**20


class SnapshotRefused(Exception):
    """A chunk that cannot be part of a well-formed snapshot; the assembly is dropped."""


def snapshot_meta(message: raft_pb2.Message) -> raft_pb2.Message:
    """The message without its snapshot data (which the chunks carry)."""
    meta = raft_pb2.Message()
    meta.CopyFrom(message)
    meta.snapshot.data = b""
    return meta


def split_snapshot(from_node: int, to_node: int, group: str, message: raft_pb2.Message,
                   chunk_bytes: int = SNAPSHOT_CHUNK_BYTES
                   ) -> Iterator[transport_pb2.SnapshotChunk]:
    """The chunks of a MSG_SNAPSHOT, lazily (one chunk's copy of the data at a time)."""
    assert message.type == raft_pb2.MSG_SNAPSHOT and chunk_bytes > 0, (message.type, chunk_bytes)
    data = message.snapshot.data
    meta = snapshot_meta(message)
    offset = 0
    while True:
        piece = data[offset:offset + chunk_bytes]
        last = offset + len(piece) == len(data)
        yield transport_pb2.SnapshotChunk(
            from_node=from_node, to_node=to_node, group=group, message=meta,
            total_bytes=len(data), offset=offset, data=piece, last=last)
        if last:
            return
        offset += len(piece)


@attrs.define
class _Assembly:
    message: raft_pb2.Message
    total_bytes: int
    data: bytearray


class SnapshotAssembler:
    """Rebuilds snapshots from the chunks of one stream.

    Args:
        snapshot_bytes_max: the largest snapshot data accepted.
        assemblies_max: how many groups may have a snapshot half-received at once.
    """

    def __init__(self, snapshot_bytes_max: int, assemblies_max: int) -> None:
        self.snapshot_bytes_max = snapshot_bytes_max
        self.assemblies_max = assemblies_max
        self._assemblies: dict[str, _Assembly] = {}

    @property
    def buffered_bytes(self) -> int:
        return sum(len(a.data) for a in self._assemblies.values())

    def add(self, chunk: transport_pb2.SnapshotChunk) -> raft_pb2.Message | None:
        """Takes the next chunk; returns the whole MSG_SNAPSHOT once its last chunk is in.

        Raises:
            SnapshotRefused: the chunk does not continue a well-formed snapshot.
        """
        group = chunk.group
        if chunk.offset == 0:
            self._assemblies.pop(group, None)  # a new snapshot replaces an unfinished one
            self._start(chunk)
        assembly = self._assemblies.get(group)
        if assembly is None:
            raise SnapshotRefused(f"group {group!r}: chunk at offset {chunk.offset} of a "
                                  "snapshot that was not started")
        if chunk.offset != len(assembly.data) or chunk.total_bytes != assembly.total_bytes:
            del self._assemblies[group]
            raise SnapshotRefused(
                f"group {group!r}: chunk at {chunk.offset} of {chunk.total_bytes} bytes, "
                f"expected {len(assembly.data)} of {assembly.total_bytes}")
        end = chunk.offset + len(chunk.data)
        if end > assembly.total_bytes or chunk.last != (end == assembly.total_bytes):
            del self._assemblies[group]
            raise SnapshotRefused(f"group {group!r}: chunk ends at {end} of "
                                  f"{assembly.total_bytes} bytes, last={chunk.last}")
        assembly.data += chunk.data
        if not chunk.last:
            return None
        del self._assemblies[group]
        message = assembly.message
        message.snapshot.data = bytes(assembly.data)
        return message

    def _start(self, chunk: transport_pb2.SnapshotChunk) -> None:
        if chunk.message.type != raft_pb2.MSG_SNAPSHOT:
            raise SnapshotRefused(f"group {chunk.group!r}: chunk of a message of type "
                                  f"{chunk.message.type}")
        if chunk.total_bytes > self.snapshot_bytes_max:
            raise SnapshotRefused(f"group {chunk.group!r}: snapshot of {chunk.total_bytes} "
                                  f"bytes, limit {self.snapshot_bytes_max}")
        if len(self._assemblies) >= self.assemblies_max:
            raise SnapshotRefused(f"group {chunk.group!r}: already {self.assemblies_max} "
                                  "snapshots half-received on this stream")
        message = raft_pb2.Message()
        message.CopyFrom(chunk.message)
        self._assemblies[chunk.group] = _Assembly(message, chunk.total_bytes, bytearray())
