"""Framing of the Raft ingress stream, with no I/O (bytes in, frames out).

A stream (the body of one HTTP/2 request) is a sequence of frames:

    kind: u8 | length: u32 big-endian | payload: `length` bytes

`kind` is FRAME_KIND_RAFT_BATCH (payload: an encoded chronik.transport.RaftBatch) or
FRAME_KIND_SNAPSHOT_CHUNK (a chronik.transport.SnapshotChunk, snapshot.py). Other kinds are
skipped by the decoder's caller (counted as dropped), so kinds can be added later without
breaking older receivers. A length above the receiver's limit cannot be skipped safely (the
bytes might never come), so it ends the stream: FrameTooLarge.

The sender hand-encodes the RaftBatch envelope around GroupMessages it encoded when they were
queued: protobuf concatenates repeated fields, so coalescing needs no re-encoding of Raft
messages (tests check the result parses as the generated RaftBatch).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

import attrs

from ..pb import raft_pb2
from ..varint import write_uvarint

FRAME_HEADER = struct.Struct(">BI")
FRAME_HEADER_BYTES = FRAME_HEADER.size
FRAME_KIND_RAFT_BATCH = 1
FRAME_KIND_SNAPSHOT_CHUNK = 2
# A u32 length field: no frame can claim more, whatever the configured limit.
FRAME_LENGTH_MAX = 2**32 - 1

# Protobuf keys (field number << 3 | wire type) of the fields framing.py writes by hand;
# proto/transport.proto promises they never change.
_KEY_BATCH_FROM_NODE = 0x08  # RaftBatch.from_node, varint
_KEY_BATCH_TO_NODE = 0x10  # RaftBatch.to_node, varint
_KEY_BATCH_MESSAGES = 0x1A  # RaftBatch.messages, length-delimited
_KEY_GROUP_GROUP = 0x0A  # GroupMessage.group, length-delimited
_KEY_GROUP_MESSAGE = 0x12  # GroupMessage.message, length-delimited


class FramingError(Exception):
    """Base of the framing errors: the stream cannot be decoded any further."""


class FrameTooLarge(FramingError):
    def __init__(self, kind: int, length: int, limit: int) -> None:
        super().__init__(f"frame of kind {kind} claims {length} bytes, limit {limit}")
        self.kind = kind
        self.length = length
        self.limit = limit


@attrs.frozen(slots=True)
class FrameReceived:
    """One whole frame, decoded from the stream."""

    kind: int
    payload: bytes


class DecoderState(enum.Enum):
    HEADER = "header"  # waiting for the next FRAME_HEADER_BYTES
    PAYLOAD = "payload"  # waiting for the payload of the header just read
    FAILED = "failed"  # a frame was too large; nothing more is decoded


class FrameDecoder:
    """Turns the chunks of a stream into FrameReceived events.

    `feed(chunk)` returns the frames completed by the chunk, in order. It raises
    FrameTooLarge once a header claims more than `frame_bytes_max`; after that the decoder
    refuses any input. `buffered_bytes` says how much of an unfinished frame is held (at most
    FRAME_HEADER_BYTES + frame_bytes_max).
    """

    def __init__(self, frame_bytes_max: int) -> None:
        assert 0 < frame_bytes_max <= FRAME_LENGTH_MAX, frame_bytes_max
        self.frame_bytes_max = frame_bytes_max
        self.state = DecoderState.HEADER
        self._buffer = bytearray()
        self._kind = 0
        self._length = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[FrameReceived]:
        if self.state is DecoderState.FAILED:
            raise FramingError("decoder failed earlier; the stream must be closed")
        self._buffer += chunk
        frames: list[FrameReceived] = []
        while True:
            if self.state is DecoderState.HEADER:
                if len(self._buffer) < FRAME_HEADER_BYTES:
                    return frames
                self._kind, self._length = FRAME_HEADER.unpack_from(self._buffer)
                if self._length > self.frame_bytes_max:
                    self.state = DecoderState.FAILED
                    self._buffer = bytearray()
                    raise FrameTooLarge(self._kind, self._length, self.frame_bytes_max)
                del self._buffer[:FRAME_HEADER_BYTES]
                self.state = DecoderState.PAYLOAD
            if len(self._buffer) < self._length:
                return frames
            with memoryview(self._buffer) as view:  # one copy of the payload, not two
                payload = bytes(view[:self._length])
            frames.append(FrameReceived(self._kind, payload))
            del self._buffer[:self._length]
            self.state = DecoderState.HEADER


def encode_frame(kind: int, payload: bytes) -> bytes:
    assert 0 <= kind <= 0xFF and len(payload) <= FRAME_LENGTH_MAX, (kind, len(payload))
    return FRAME_HEADER.pack(kind, len(payload)) + payload


def encode_group_message(group: str, message: raft_pb2.Message | bytes) -> bytes:
    """A chronik.transport.GroupMessage; `message` may be an encoded chronik.raft.Message."""
    data = message if isinstance(message, bytes) else message.SerializeToString()
    group_b = group.encode("utf-8")
    return b"".join((bytes((_KEY_GROUP_GROUP,)), write_uvarint(len(group_b)), group_b,
                     bytes((_KEY_GROUP_MESSAGE,)), write_uvarint(len(data)), data))


def group_message_overhead_bytes(encoded: bytes) -> int:
    """Bytes a GroupMessage of this length adds to a RaftBatch (key, length, body)."""
    return 1 + len(write_uvarint(len(encoded))) + len(encoded)


def encode_raft_batch(from_node: int, to_node: int, group_messages: Iterable[bytes]) -> bytes:
    """A chronik.transport.RaftBatch around GroupMessages from encode_group_message."""
    parts = [bytes((_KEY_BATCH_FROM_NODE,)), write_uvarint(from_node),
             bytes((_KEY_BATCH_TO_NODE,)), write_uvarint(to_node)]
    for encoded in group_messages:
        parts += (bytes((_KEY_BATCH_MESSAGES,)), write_uvarint(len(encoded)), encoded)
    return b"".join(parts)


def batch_envelope_bytes_max() -> int:
    """Upper bound of the RaftBatch bytes outside its messages (two u64 varints and keys)."""
    return 2 * (1 + 10)
