"""Drop unknown tagged fields from a flexible-version request before kio decodes it.

The Kafka protocol says a receiver must skip tagged fields it does not know (that is how newer
clients add fields without a version bump). kio raises KeyError on them instead, so on that
path only (rare, never the hot path) we walk the request by its schema, copy every byte, and
rebuild each tagged-field section with the tags the schema knows. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import dataclasses
import functools
import struct

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
)

from chronik_trio import varint

from .errors import MalformedRequest

_FIXED_SIZES_BYTES = {
    "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4,
    "uint64": 8, "float64": 8, "bool": 1, "uuid": 16, "error_code": 2,
    "timedelta_i32": 4, "timedelta_i64": 8, "datetime_i64": 8,
}


def read_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Return (value, new position) of an unsigned varint at pos."""
    try:
        return varint.read_uvarint(buf, pos)
    except varint.VarintError as exc:
        raise MalformedRequest(str(exc)) from None


write_uvarint = varint.write_uvarint


@functools.cache
def _plan(cls: type) -> tuple[list[tuple[str, object, str | None]], frozenset[int]]:
    """(ordered non-tagged fields as (name, field class, kafka_type), known tags) of a schema."""
    fields, tags = [], set()
    for field in dataclasses.fields(cls):
        tag = get_field_tag(field)
        if tag is not None:
            tags.add(int(tag))
            continue
        fields.append((field.name, classify_field(field), field.metadata.get("kafka_type")))
    return fields, frozenset(tags)


def _skip_primitive(kafka_type: str, flexible: bool, buf, pos: int, is_client_id: bool) -> int:
    if kafka_type in _FIXED_SIZES_BYTES:
        return pos + _FIXED_SIZES_BYTES[kafka_type]
    if kafka_type == "string" and (is_client_id or not flexible):
        (length,) = struct.unpack_from(">h", buf, pos)
        return pos + 2 + max(length, 0)
    if kafka_type in ("bytes", "records") and not flexible:
        (length,) = struct.unpack_from(">i", buf, pos)
        return pos + 4 + max(length, 0)
    if kafka_type in ("string", "bytes", "records"):
        length_plus_one, pos = read_uvarint(buf, pos)
        return pos + max(length_plus_one - 1, 0)
    raise MalformedRequest(f"cannot skip field of kafka type {kafka_type!r}")


def _array_length(flexible: bool, buf, pos: int) -> tuple[int, int]:
    if flexible:
        n_plus_one, pos = read_uvarint(buf, pos)
        return n_plus_one - 1, pos
    (n,) = struct.unpack_from(">i", buf, pos)
    return n, pos + 4


def _copy_entity(cls: type, buf, pos: int, out: bytearray, is_header: bool = False) -> int:
    """Append cls's encoding at pos to out, minus unknown tags; return the end position."""
    fields, known_tags = _plan(cls)
    flexible = cls.__flexible__
    for name, field_class, kafka_type in fields:
        start = pos
        if isinstance(field_class, PrimitiveField):
            pos = _skip_primitive(kafka_type, flexible, buf, pos, is_header and name == "client_id")
            out += buf[start:pos]
        elif isinstance(field_class, PrimitiveTupleField):
            n, pos = _array_length(flexible, buf, pos)
            for _ in range(max(n, 0)):
                pos = _skip_primitive(kafka_type, flexible, buf, pos, False)
            out += buf[start:pos]
        elif isinstance(field_class, EntityTupleField):
            n, pos = _array_length(flexible, buf, pos)
            out += buf[start:pos]
            for _ in range(max(n, 0)):
                pos = _copy_entity(field_class.type_, buf, pos, out)
        elif isinstance(field_class, EntityField):
            pos = _copy_entity(field_class.type_, buf, pos, out)
        if pos > len(buf):
            raise MalformedRequest(f"truncated in field {cls.__name__}.{name}")
    if flexible:
        pos = _copy_known_tags(known_tags, buf, pos, out)
    return pos


def _copy_known_tags(known_tags: frozenset[int], buf, pos: int, out: bytearray) -> int:
    count, pos = read_uvarint(buf, pos)
    kept = []
    for _ in range(count):
        tag_start = pos
        tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise MalformedRequest("truncated tagged field")
        if tag in known_tags:
            kept.append(bytes(buf[tag_start:pos]))
    out += write_uvarint(len(kept))
    for chunk in kept:
        out += chunk
    return pos


def strip_unknown_tags(cls: type, buf: bytes | memoryview, offset: int,
                       *, is_header: bool = False) -> tuple[bytes, int]:
    """Re-encode the entity of type cls at buf[offset:] without unknown tagged fields.

    Returns (clean bytes, bytes consumed from buf). Raises MalformedRequest when the bytes do
    not follow the schema.
    """
    out = bytearray()
    try:
        end = _copy_entity(cls, buf, offset, out, is_header=is_header)
    except (struct.error, IndexError) as exc:
        raise MalformedRequest(f"truncated {cls.__name__}: {exc}") from None
    return bytes(out), end - offset
