"""Kafka's framing: every request and response is a big-endian int32 size, then that many bytes.

Sans-I/O: feed received bytes in, take whole frames out. No sockets here.
"""

from __future__ import annotations

import struct

from .errors import FrameTooLarge

SIZE_PREFIX_BYTES = 4


class FrameDecoder:
    """Splits a byte stream into request frames; refuses sizes over `frame_bytes_max`."""

    def __init__(self, frame_bytes_max: int) -> None:
        self.frame_bytes_max = frame_bytes_max
        self._buf = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete frame, or None until more bytes arrive.

        Raises FrameTooLarge as soon as a size prefix is negative or over the limit, before
        the body has been received.
        """
        if len(self._buf) < SIZE_PREFIX_BYTES:
            return None
        (size,) = struct.unpack_from(">i", self._buf, 0)
        if size < 0 or size > self.frame_bytes_max:
            raise FrameTooLarge(f"frame size {size} outside [0, {self.frame_bytes_max}]")
        end = SIZE_PREFIX_BYTES + size
        if len(self._buf) < end:
            return None
        frame = bytes(self._buf[SIZE_PREFIX_BYTES:end])
        del self._buf[:end]
        return frame
