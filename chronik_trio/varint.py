"""Base-128 varints, as Kafka's flexible versions and records and protobuf write them.

Pure (stdlib only); shared by kafka/ (tagged fields, records) and transport/ (framing).
"""

from __future__ import annotations

VARINT_BITS_MAX = 64


class VarintError(ValueError):
    """A varint that is truncated or longer than 64 bits."""


def write_uvarint(value: int) -> bytes:
    assert value >= 0, value
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the unsigned varint at pos."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise VarintError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= VARINT_BITS_MAX:
            raise VarintError("varint longer than 64 bits")


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the zigzag-encoded signed varint at pos."""
    raw, pos = read_uvarint(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos
