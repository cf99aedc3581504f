"""kio glue: decode request frames, build and encode responses of any version.

Pure: bytes in, objects out and back. Framing (the 4-byte size prefix) is in framing.py.
Schema classes are looked up once per (api_key, version) (kio's lookup costs ~3 us).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import struct
import sys
import types
import typing
import uuid

import attrs
import kio.index
import kio.serial
from kio.schema.errors import ErrorCode
from kio.serial.errors import BufferUnderflow, DecodeError
from kio.serial._introspect import EntityField, EntityTupleField, classify_field, get_field_tag, is_optional

from .errors import MalformedRequest, UnsupportedApi
from .tagged import strip_unknown_tags

REQUEST_HEADER_PEEK_BYTES = 8  # api_key i16, api_version i16, correlation_id i32
# kio signals bad bytes with these (kio.md): truncation, corruption, and unknown tags (KeyError).
_KIO_DECODE_ERRORS = (BufferUnderflow, DecodeError, ValueError, KeyError, struct.error,
                      IndexError, UnicodeDecodeError)


@attrs.frozen(slots=True)
class Request:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: typing.Any
    frame_bytes: int
    trailing_bytes: int  # after the body; Kafka ignores them and librdkafka sends some


def peek_header(frame: bytes | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) from the fixed start of every request header."""
    if len(frame) < REQUEST_HEADER_PEEK_BYTES:
        raise MalformedRequest(f"request of {len(frame)} bytes is shorter than a header")
    return struct.unpack_from(">hhi", frame, 0)


@functools.cache
def request_schema(api_key: int, api_version: int) -> type:
    try:
        return kio.index.load_request_schema(api_key, api_version)
    except kio.index.KioIndexError:
        raise UnsupportedApi(f"api_key {api_key} version {api_version} is unknown") from None


@functools.cache
def response_schema(api_key: int, api_version: int) -> type:
    return kio.index.load_response_schema(api_key, api_version)


def _read(cls: type, frame, offset: int, *, is_header: bool = False):
    try:
        return kio.serial.entity_reader(cls)(frame, offset)
    except KeyError:
        pass  # an unknown tagged field: kio refuses it, the protocol says skip it
    except _KIO_DECODE_ERRORS as exc:
        raise MalformedRequest(f"{cls.__name__} does not decode: {type(exc).__name__}: {exc}") from None
    clean, consumed = strip_unknown_tags(cls, frame, offset, is_header=is_header)
    try:
        value, _ = kio.serial.entity_reader(cls)(clean, 0)
    except _KIO_DECODE_ERRORS as exc:
        raise MalformedRequest(f"{cls.__name__} does not decode: {type(exc).__name__}: {exc}") from None
    return value, consumed


# --- lengths checked before kio reads them ------------------------------------------------------

_FIXED_BYTES = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4,
                "uint64": 8, "float64": 8, "bool": 1, "uuid": 16, "error_code": 2,
                "timedelta_i32": 4, "timedelta_i64": 8, "datetime_i64": 8}
_VARINT_BYTES_MAX = 5


@functools.cache
def _wire_plan(cls: type) -> tuple[tuple[str, str, str | None, type | None], ...]:
    """(name, kind, kafka_type, nested) of cls's untagged fields, in wire order."""
    plans = []
    for plan, field in zip(_plan(cls), dataclasses.fields(cls)):
        if get_field_tag(field) is None:
            plans.append((plan.name, plan.kind, plan.kafka_type, plan.nested))
    return tuple(plans)


def _uvarint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(_VARINT_BYTES_MAX):
        if pos + i >= len(buf):
            raise MalformedRequest("truncated in a varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise MalformedRequest("varint longer than 5 bytes")


def _length(buf, pos: int, flexible: bool, size_format: str) -> tuple[int, int]:
    """(length, position after it); -1 for null. size_format: ">h" or ">i" when not flexible."""
    if flexible:
        n_plus_one, pos = _uvarint(buf, pos)
        return n_plus_one - 1, pos
    width = struct.calcsize(size_format)
    if pos + width > len(buf):
        raise MalformedRequest("truncated in a length")
    return struct.unpack_from(size_format, buf, pos)[0], pos + width


def _skip_primitive(kafka_type: str, flexible: bool, buf, pos: int, legacy_string: bool) -> int:
    if kafka_type in _FIXED_BYTES:
        return pos + _FIXED_BYTES[kafka_type]
    if kafka_type == "string":
        n, pos = _length(buf, pos, flexible and not legacy_string, ">h")
    elif kafka_type in ("bytes", "records"):
        n, pos = _length(buf, pos, flexible, ">i")
    else:
        raise MalformedRequest(f"no wire size known for kafka type {kafka_type!r}")
    if n > len(buf) - pos:
        raise MalformedRequest(f"a {kafka_type} claims {n} bytes, {len(buf) - pos} are left")
    return pos + max(n, 0)


def check_lengths(cls: type, buf, pos: int, *, is_header: bool = False) -> int:
    """Walk the encoding of cls at buf[pos:] and refuse (MalformedRequest) any array, string
    or bytes length larger than the bytes left; returns the end position.

    kio's native reader reserves memory for an array's claimed length before reading it: a
    request claiming 2^31 entries made it allocate 264 GB and abort the process. After this
    check a claim is bounded by the frame, which the node's request_max_bytes bounds."""
    flexible = cls.__flexible__
    for name, kind, kafka_type, nested in _wire_plan(cls):
        if kind == "primitive":
            pos = _skip_primitive(kafka_type, flexible, buf, pos, is_header and name == "client_id")
        elif kind == "entity":
            pos = check_lengths(nested, buf, pos)
        else:
            n, pos = _length(buf, pos, flexible, ">i")
            if n > len(buf) - pos:
                raise MalformedRequest(f"{cls.__name__}.{name} claims {n} entries, {len(buf) - pos} bytes are left")
            if kind == "tuple" and kafka_type in _FIXED_BYTES:
                pos += max(n, 0) * _FIXED_BYTES[kafka_type]
            else:
                for _ in range(n):
                    pos = (_skip_primitive(kafka_type, flexible, buf, pos, False) if kind == "tuple"
                           else check_lengths(nested, buf, pos))
        if pos > len(buf):
            raise MalformedRequest(f"truncated in {cls.__name__}.{name}")
    if flexible:
        count, pos = _uvarint(buf, pos)
        if count > len(buf) - pos:
            raise MalformedRequest(f"{cls.__name__} claims {count} tagged fields, {len(buf) - pos} bytes are left")
        for _ in range(count):
            _, pos = _uvarint(buf, pos)
            size, pos = _uvarint(buf, pos)
            pos += size
            if pos > len(buf):
                raise MalformedRequest(f"truncated in a tagged field of {cls.__name__}")
    return pos


def decode_request(frame: bytes | memoryview) -> Request:
    """Decode one request frame (without its size prefix).

    Raises UnsupportedApi for an unknown (api_key, version) and MalformedRequest for bytes that
    do not follow the schema. Bytes after the body are counted, not refused: Kafka's own
    parser ignores them, and librdkafka's admin Metadata v12 request carries three.
    """
    api_key, api_version, correlation_id = peek_header(frame)
    cls = request_schema(api_key, api_version)
    try:
        check_lengths(cls, frame, check_lengths(cls.__header_schema__, frame, 0, is_header=True))
    except MalformedRequest as exc:
        raise MalformedRequest(f"{cls.__name__} v{api_version} does not decode: {exc}") from None
    header, header_bytes = _read(cls.__header_schema__, frame, 0, is_header=True)
    body, body_bytes = _read(cls, frame, header_bytes)
    trailing = len(frame) - header_bytes - body_bytes
    return Request(api_key, api_version, correlation_id, header.client_id, body, len(frame), trailing)


class RecordChunks:
    """A records value made of several buffers (whole batches as they lie in the log), written
    one after the other by encode_response: a Fetch answer never joins them into one copy
    (joining 10 MB per partition cost 14-17 % of a node serving a consumer, by py-spy)."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.size


class _ChunkSink:
    """kio writers call write(bytes); keep the chunks instead of joining big record blobs."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = [b""]
        self.size = 0

    def write(self, data) -> None:
        if type(data) is RecordChunks:
            self.chunks.extend(data.parts)
        else:
            self.chunks.append(data)
        self.size += len(data)


def encode_response(correlation_id: int, body) -> list[bytes | memoryview]:
    """The size-prefixed response frame as a list of chunks (record data is not copied)."""
    cls = type(body)
    header_cls = cls.__header_schema__
    sink = _ChunkSink()
    kio.serial.entity_writer(header_cls)(sink, header_cls(correlation_id=correlation_id))
    kio.serial.entity_writer(cls)(sink, body)
    sink.chunks[0] = struct.pack(">i", sink.size)
    return sink.chunks


# --- building responses of any version from plain values -------------------------------------

_INT_TYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


def _default_for(kafka_type: str | None, optional: bool, kind: str):
    if optional:
        return None
    if kind in ("tuple", "entity_tuple"):
        return ()
    return {
        "string": "", "bytes": b"", "records": b"", "bool": False, "float64": 0.0,
        "uuid": uuid.UUID(int=0), "error_code": ErrorCode.none,
        "timedelta_i32": datetime.timedelta(0), "timedelta_i64": datetime.timedelta(0),
        "datetime_i64": datetime.datetime.fromtimestamp(0, datetime.timezone.utc),
    }.get(kafka_type, 0)


@attrs.frozen(slots=True)
class _FieldPlan:
    name: str
    kafka_type: str | None
    kind: str  # "primitive" | "tuple" | "entity" | "entity_tuple"
    nested: type | None
    default: typing.Any  # dataclasses.MISSING when the schema has none


@functools.cache
def _plan(cls: type) -> tuple[_FieldPlan, ...]:
    plans = []
    for field in dataclasses.fields(cls):
        fc = classify_field(field)
        kind = {EntityField: "entity", EntityTupleField: "entity_tuple"}.get(
            type(fc), "tuple" if fc.is_array else "primitive")
        nested = fc.type_ if kind in ("entity", "entity_tuple") else None
        if field.default is not dataclasses.MISSING:
            default = field.default
        else:
            default = _default_for(field.metadata.get("kafka_type"),
                                   kind != "entity" and is_optional(field), kind)
        plans.append(_FieldPlan(field.name, field.metadata.get("kafka_type"), kind, nested, default))
    return tuple(plans)


def _convert(plan: _FieldPlan, value):
    if plan.kind == "entity_tuple":
        if value is None:
            return None
        return tuple(v if dataclasses.is_dataclass(v) else build(plan.nested, v) for v in value)
    if plan.kind == "entity":
        return value if value is None or dataclasses.is_dataclass(value) else build(plan.nested, value)
    if plan.kind == "tuple":
        return None if value is None else tuple(value)
    kafka_type = plan.kafka_type
    if kafka_type in ("timedelta_i32", "timedelta_i64") and isinstance(value, int):
        return datetime.timedelta(milliseconds=value)
    if kafka_type == "error_code" and not isinstance(value, ErrorCode):
        return ErrorCode(int(value))
    return value


def build(cls: type, values: dict[str, typing.Any] | None = None, /, **kwargs):
    """An instance of kio schema class cls from plain values.

    Fields the version does not have are ignored, fields not given get the schema default (or
    0 / "" / () / None), ints become timedeltas or ErrorCodes where the schema wants them, and
    nested entities may be given as dicts. This is what lets one handler answer every version.
    """
    if values:
        kwargs = {**values, **kwargs}
    args = {}
    for plan in _plan(cls):
        if plan.name in kwargs:
            args[plan.name] = _convert(plan, kwargs[plan.name])
        elif plan.kind == "entity" and plan.default is dataclasses.MISSING:
            args[plan.name] = build(plan.nested, {})
        else:
            args[plan.name] = plan.default
    return cls(**args)


def nested_class(cls: type, field_name: str) -> type:
    """The entity class of a nested field of cls (each version module has its own)."""
    for plan in _plan(cls):
        if plan.name == field_name:
            assert plan.nested is not None, (cls, field_name)
            return plan.nested
    raise AssertionError(f"{cls.__name__} has no field {field_name}")


def has_field(cls: type, field_name: str) -> bool:
    return any(p.name == field_name for p in _plan(cls))


def module_of(cls: type):
    return sys.modules[cls.__module__]


# --- nulls where the schema has no null ------------------------------------------------------

def _nullable(field: dataclasses.Field) -> bool:
    """Whether the schema lets this field be null (`X | None`); an array of nullable items
    (`tuple[X | None, ...]`) is not itself nullable."""
    return typing.get_origin(field.type) in (typing.Union, types.UnionType) and \
        type(None) in typing.get_args(field.type)


@functools.cache
def _null_plan(cls: type) -> tuple[tuple[str, bool, str, type | None], ...]:
    """(name, nullable, kind, nested entity class) of each field of cls."""
    return tuple((p.name, _nullable(f), p.kind, p.nested)
                 for p, f in zip(_plan(cls), dataclasses.fields(cls)))


def null_field(obj) -> str | None:
    """The path of the first field of a decoded request that is null where its schema says
    it never is, or None. kio reads a length of -1 as null whatever the schema says; Kafka
    refuses such a request ("non-nullable field ... was serialized as null")."""
    for name, nullable, kind, nested in _null_plan(type(obj)):
        value = getattr(obj, name)
        if value is None:
            if not nullable:
                return name
            continue
        if kind == "entity":
            inner = null_field(value)
            if inner is not None:
                return f"{name}.{inner}"
        elif kind == "entity_tuple":
            for i, item in enumerate(value):
                inner = null_field(item)
                if inner is not None:
                    return f"{name}[{i}].{inner}"
    return None


# --- the answer to a request whose handler failed ----------------------------------------------

# A request element's field that names the same thing as a response element's field, where the
# two schemas spell it differently (Fetch asks for "partition", answers "partition_index").
_MIRROR_ALIASES = {"partition_index": ("partition", "index"), "index": ("partition_index",),
                   "partition": ("partition_index",), "name": ("topic",), "topic": ("name",)}
_KEY_FIELDS = ("name", "topic", "topic_id", "partition_index", "partition", "index", "group_id",
               "key", "resource_type", "resource_name", "partition_id")


_INDEX_KEYS = ("partition_index", "partition", "index", "partition_id")


def _array_fields(cls: type, *, primitives_too: bool) -> list[_FieldPlan]:
    return [p for p in _plan(cls) if p.kind == "entity_tuple" or (primitives_too and p.kind == "tuple")]


@functools.cache
def _has_error_code(cls: type) -> bool:
    return any(p.kafka_type == "error_code" or (p.nested is not None and _has_error_code(p.nested))
               for p in _plan(cls))


def _mirror(resp_cls: type, request_obj, error_code: ErrorCode) -> dict:
    """Values for resp_cls: every error_code field set, and the response's list of topics,
    partitions, groups or resources mirroring the request's list with the keys copied."""
    values: dict[str, typing.Any] = {}
    for plan in _plan(resp_cls):
        if plan.kafka_type == "error_code":  # error_code, or e.g. AddPartitionsToTxn's partition_error_code
            values[plan.name] = error_code
        elif plan.name == "error_message" and plan.default is None:
            values["error_message"] = "unexpected server error (logged by the broker)"
    if isinstance(request_obj, (str, int)):  # an element of an array of names or partitions
        is_name = isinstance(request_obj, str)
        first = next((p.name for p in _plan(resp_cls)
                      if (p.kafka_type == "string" if is_name else p.name in _INDEX_KEYS)), None)
        if first is not None:
            values[first] = request_obj
        return values
    if request_obj is None:
        return values
    req_plans = {p.name: p for p in _plan(type(request_obj))}
    for plan in _plan(resp_cls):
        if plan.kind != "primitive" or plan.name not in _KEY_FIELDS:
            continue
        for source in (plan.name, *_MIRROR_ALIASES.get(plan.name, ())):
            if source in req_plans and req_plans[source].kind == "primitive":
                values[plan.name] = getattr(request_obj, source)
                break
    # The response's list that carries error codes (not node_endpoints, KIP-951's side list).
    resp_arrays = [p for p in _array_fields(resp_cls, primitives_too=False) if _has_error_code(p.nested)]
    req_arrays = _array_fields(type(request_obj), primitives_too=True)
    if resp_arrays and req_arrays:
        items = getattr(request_obj, req_arrays[0].name) or ()
        values[resp_arrays[0].name] = [
            _mirror(resp_arrays[0].nested, item, error_code) for item in items]
    return values


def error_response(api_key: int, api_version: int, request_body, error_code: ErrorCode):
    """The answer Kafka gives a request that failed as a whole: the top-level error_code where
    the version has one, and each topic/partition/group/resource of the request answered with
    error_code where the error lives in the entries (Produce, ListOffsets, CreateTopics, ...).
    Keys the request does not carry (a Fetch v13 topic id...) are copied when present."""
    cls = response_schema(api_key, api_version)
    return build(cls, _mirror(cls, request_body, error_code))


# --- the client side: one request out, its response back (tools/admin.py, a joining node) ---

API_VERSIONS_API_KEY = 18


def encode_client_request(api_key: int, version: int, body, correlation_id: int, client_id: str) -> bytes:
    """A whole request frame (size prefix included); body is a kio request entity or a dict
    of its fields (nested entities as dicts)."""
    request_cls = kio.index.load_request_schema(api_key, version)
    if isinstance(body, dict):
        body = build(request_cls, body)
    header = request_cls.__header_schema__(request_api_key=api_key, request_api_version=version,
                                           correlation_id=correlation_id, client_id=client_id)
    sink = _BytesSink()
    kio.serial.entity_writer(type(header))(sink, header)
    kio.serial.entity_writer(request_cls)(sink, body)
    payload = b"".join(sink.parts)
    return struct.pack(">i", len(payload)) + payload


def decode_client_response(api_key: int, version: int, frame: bytes, correlation_id: int):
    """The response body of a frame (without its size prefix). Raises ValueError when the
    correlation id is not ours, or kio's errors for a frame that does not parse."""
    response_cls = kio.index.load_response_schema(api_key, version)
    # ApiVersions answers always carry response header v0 (KIP-511).
    header_cls = (kio.index.load_response_schema(api_key, 0).__header_schema__
                  if api_key == API_VERSIONS_API_KEY else response_cls.__header_schema__)
    response_header, offset = kio.serial.entity_reader(header_cls)(frame, 0)
    if response_header.correlation_id != correlation_id:
        raise ValueError(f"the answer carries correlation id {response_header.correlation_id}")
    response, _ = kio.serial.entity_reader(response_cls)(frame, offset)
    return response


class _BytesSink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)
