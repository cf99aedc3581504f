"""A small raw Kafka protocol client and a v2 RecordBatch builder/parser, for tests only.

Everything here speaks bytes over one blocking socket to 127.0.0.1, so tests can send
exactly what they mean (including garbage) and see exactly what the broker answers.
Request and response bodies are encoded and decoded with kio; framing, the request
header and the record batch format are written out by hand.

    with KafkaWire.connect(port) as conn:
        conn.create_topics(["t"], partitions=3)
        r = conn.produce("t", 0, build_batch([Record(b"k", b"v")]), acks=-1)
        part = conn.fetch("t", 0, offset=0)
        batches = parse_batches(part.records)
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import socket
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import crc32c
import kio.index
from kio.schema.errors import ErrorCode
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import EntityField, EntityTupleField, classify_field

# --------------------------------------------------------------------------- api keys

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
INIT_PRODUCER_ID = 22
DESCRIBE_CONFIGS = 32
DESCRIBE_CLUSTER = 60

# Error codes the tests look at.
NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2

# The highest version of each API this client builds requests for. Produce/Fetch v13+
# address topics by id, which this client does not do.
MAX_VERSION = {
    PRODUCE: 12,
    FETCH: 12,
    LIST_OFFSETS: 11,
    METADATA: 12,
    API_VERSIONS: 3,
    CREATE_TOPICS: 7,
    DELETE_TOPICS: 5,
    INIT_PRODUCER_ID: 5,
    DESCRIBE_CONFIGS: 4,
    DESCRIBE_CLUSTER: 1,
    44: 1,  # IncrementalAlterConfigs
}

_schema_cache: dict[tuple[int, int, str], type] = {}


def request_class(api_key: int, version: int) -> type:
    k = (api_key, version, "req")
    if k not in _schema_cache:
        _schema_cache[k] = kio.index.load_request_schema(api_key, version)
    return _schema_cache[k]


def response_class(api_key: int, version: int) -> type:
    k = (api_key, version, "resp")
    if k not in _schema_cache:
        _schema_cache[k] = kio.index.load_response_schema(api_key, version)
    return _schema_cache[k]


def response_header_class(api_key: int, version: int) -> type:
    # ApiVersions responses always carry response header v0 (KIP-511).
    if api_key == API_VERSIONS:
        return ResponseHeaderV0
    return response_class(api_key, version).__header_schema__


# --------------------------------------------------------------------------- building entities


def _default_for(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # pragma: no cover - kio uses defaults
        return f.default_factory()
    c = classify_field(f)
    if c.is_array:
        return ()
    kt = f.metadata.get("kafka_type", "")
    if kt == "bool":
        return False
    if kt == "error_code":
        return ErrorCode(0)
    if kt.startswith(("int", "uint")):
        return 0
    if kt.startswith("timedelta"):
        return datetime.timedelta(0)
    if kt == "uuid":
        return None
    if kt in ("string", "records", "bytes"):
        return None if "None" in str(f.type) else ("" if kt == "string" else b"")
    raise TypeError(f"no default for field {f.name} ({kt})")


def build(cls: type, values: dict[str, Any] | None = None) -> Any:
    """Build a kio entity from a plain dict, recursively.

    Keys that the version does not have are ignored; fields not given get their schema
    default (or a zero value), so one dict shape serves many versions of an API.
    Nested entities and arrays of them may be given as dicts / lists of dicts; a
    millisecond int for a timedelta field is converted.
    """
    values = values or {}
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            kwargs[f.name] = _default_for(f)
            continue
        v = values[f.name]
        c = classify_field(f)
        if isinstance(c, EntityTupleField) and v is not None:
            v = tuple(x if dataclasses.is_dataclass(x) else build(c.type_, x) for x in v)
        elif isinstance(c, EntityField) and isinstance(v, dict):
            v = build(c.type_, v)
        elif f.metadata.get("kafka_type", "").startswith("timedelta") and isinstance(v, int):
            v = datetime.timedelta(milliseconds=v)
        elif f.metadata.get("kafka_type") == "error_code" and not isinstance(v, ErrorCode):
            v = ErrorCode(v)
        elif c.is_array and v is not None:
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def encode(obj: Any) -> bytes:
    sink = io.BytesIO()
    entity_writer(type(obj))(sink, obj)
    return sink.getvalue()


def decode(cls: type, buf: bytes | memoryview, offset: int = 0) -> tuple[Any, int]:
    obj, consumed = entity_reader(cls)(buf, offset)
    return obj, consumed


def encode_request(api_key: int, version: int, correlation_id: int, body: Any,
                   client_id: str | None = "kafka-wire-test") -> bytes:
    """Header + body, without the size prefix. `body` is a kio entity or a dict."""
    cls = request_class(api_key, version)
    if not dataclasses.is_dataclass(body):
        body = build(cls, body)
    header = cls.__header_schema__(request_api_key=api_key, request_api_version=version,
                                   correlation_id=correlation_id, client_id=client_id)
    return encode(header) + encode(body)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


# --------------------------------------------------------------------------- connection


class ConnectionClosed(Exception):
    """The broker closed the connection (EOF or reset) before a full response arrived."""


class KafkaWire:
    """One blocking TCP connection speaking the Kafka protocol."""

    def __init__(self, sock: socket.socket, *, timeout: float = 15.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self._next_corr = 1
        self._pending: dict[int, tuple[int, int]] = {}  # correlation id -> (key, version)
        self._order: list[int] = []
        self.versions: dict[int, tuple[int, int]] | None = None

    @classmethod
    def connect(cls, port: int, *, timeout: float = 15.0, negotiate: bool = True) -> "KafkaWire":
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(sock, timeout=timeout)
        if negotiate:
            conn.negotiate()
        return conn

    def __enter__(self) -> "KafkaWire":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def local_address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    # ----- raw bytes

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        chunks = []
        got = 0
        while got < n:
            try:
                chunk = self.sock.recv(min(n - got, 1 << 20))
            except (ConnectionResetError, BrokenPipeError) as e:
                raise ConnectionClosed(str(e)) from e
            if not chunk:
                raise ConnectionClosed(f"EOF after {got} of {n} bytes")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        assert 0 <= size < (1 << 30), f"bad response size {size}"
        return self.recv_exact(size)

    def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Wait until the peer closes the connection; return any bytes it sent first.

        Raises AssertionError if the connection is still open after `timeout`.
        """
        deadline = time.monotonic() + timeout
        received = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout}s "
                                     f"(received {received[:64]!r})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return received
            except socket.timeout:
                continue
            if not chunk:
                return received
            received += chunk

    # ----- requests

    def next_correlation_id(self) -> int:
        c = self._next_corr
        self._next_corr += 1
        return c

    def send(self, api_key: int, version: int, body: Any, *,
             correlation_id: int | None = None) -> int:
        corr = self.next_correlation_id() if correlation_id is None else correlation_id
        self.send_raw(frame(encode_request(api_key, version, corr, body)))
        self._pending[corr] = (api_key, version)
        self._order.append(corr)
        return corr

    def send_no_response(self, api_key: int, version: int, body: Any) -> int:
        """For acks=0 produce: the broker sends nothing back."""
        corr = self.next_correlation_id()
        self.send_raw(frame(encode_request(api_key, version, corr, body)))
        return corr

    def recv(self) -> tuple[int, Any]:
        """Read the next response; it must answer the oldest outstanding request."""
        data = self.recv_frame()
        expected = self._order.pop(0)
        api_key, version = self._pending.pop(expected)
        header, n = decode(response_header_class(api_key, version), data, 0)
        assert header.correlation_id == expected, (
            f"response correlation id {header.correlation_id}, expected {expected}")
        body, m = decode(response_class(api_key, version), data, n)
        assert n + m == len(data), f"response has {len(data) - n - m} trailing bytes"
        return header.correlation_id, body

    def request(self, api_key: int, body: Any, version: int | None = None) -> Any:
        v = self.version_for(api_key) if version is None else version
        self.send(api_key, v, body)
        return self.recv()[1]

    # ----- versions

    def negotiate(self) -> None:
        r = self.request(API_VERSIONS, {"client_software_name": "kafka-wire",
                                        "client_software_version": "0.1"}, version=3)
        if r.error_code == UNSUPPORTED_VERSION:
            r = self.request(API_VERSIONS, {}, version=0)
        assert r.error_code == NONE, f"ApiVersions failed: {r.error_code}"
        self.versions = {int(a.api_key): (int(a.min_version), int(a.max_version))
                         for a in r.api_keys}

    def version_for(self, api_key: int) -> int:
        cap = MAX_VERSION[api_key]
        if self.versions is None:
            return cap
        if api_key not in self.versions:
            raise AssertionError(f"broker does not offer api key {api_key}: {self.versions}")
        lo, hi = self.versions[api_key]
        v = min(cap, hi)
        while v >= lo:
            try:
                request_class(api_key, v)
                return v
            except kio.index.KioIndexError:
                v -= 1
        raise AssertionError(f"no usable version of api {api_key} in broker range {lo}-{hi}")

    # ----- convenience wrappers (single topic/partition unless noted)

    def metadata(self, topics: Sequence[str] | None, *, allow_auto: bool = False) -> Any:
        return self.request(METADATA, {
            "topics": None if topics is None else [{"name": t} for t in topics],
            "allow_auto_topic_creation": allow_auto})

    def topic_names(self) -> set[str]:
        return {t.name for t in self.metadata(None).topics if t.error_code == NONE}

    def create_topics(self, names: Iterable[str], *, partitions: int = 1,
                      timeout_ms: int = 10000) -> dict[str, int]:
        r = self.request(CREATE_TOPICS, {
            "topics": [{"name": n, "num_partitions": partitions, "replication_factor": -1}
                       for n in names],
            "timeout": timeout_ms})
        return {t.name: int(t.error_code) for t in r.topics}

    def produce_many(self, topic: str, batches: dict[int, bytes], *, acks: int = -1,
                     timeout_ms: int = 10000) -> dict[int, Any]:
        """Produce one batch to each of several partitions in one request."""
        r = self.request(PRODUCE, {
            "acks": acks, "timeout": timeout_ms,
            "topic_data": [{"name": topic, "partition_data": [
                {"index": p, "records": b} for p, b in batches.items()]}]})
        out = {}
        for t in r.responses:
            assert t.name == topic, t
            for p in t.partition_responses:
                out[int(p.index)] = p
        return out

    def produce(self, topic: str, partition: int, batch: bytes, *, acks: int = -1,
                timeout_ms: int = 10000) -> Any:
        """Returns the PartitionProduceResponse (error_code, base_offset, ...)."""
        return self.produce_many(topic, {partition: batch}, acks=acks,
                                 timeout_ms=timeout_ms)[partition]

    def fetch_request_body(self, topic: str, partition: int, offset: int, *,
                           max_wait_ms: int = 0, min_bytes: int = 0,
                           max_bytes: int = 50 << 20,
                           partition_max_bytes: int = 10 << 20) -> dict:
        return {"max_wait": max_wait_ms, "min_bytes": min_bytes, "max_bytes": max_bytes,
                "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                "topics": [{"topic": topic, "partitions": [
                    {"partition": partition, "fetch_offset": offset,
                     "partition_max_bytes": partition_max_bytes}]}],
                "forgotten_topics_data": []}

    def fetch(self, topic: str, partition: int, offset: int, **kw: Any) -> Any:
        """Returns the partition's PartitionData (error_code, high_watermark, records)."""
        r = self.request(FETCH, self.fetch_request_body(topic, partition, offset, **kw))
        assert r.error_code == NONE, f"fetch top-level error {r.error_code}"
        parts = [p for t in r.responses if t.topic == topic for p in t.partitions
                 if p.partition_index == partition]
        assert len(parts) == 1, r
        return parts[0]

    def list_offset(self, topic: str, partition: int,
                    timestamp: int = LATEST_TIMESTAMP) -> tuple[int, int]:
        """Returns (error_code, offset)."""
        r = self.request(LIST_OFFSETS, {
            "replica_id": -1, "isolation_level": 0, "timeout": 10000,
            "topics": [{"name": topic, "partitions": [
                {"partition_index": partition, "timestamp": timestamp,
                 "current_leader_epoch": -1}]}]})
        parts = [p for t in r.topics if t.name == topic for p in t.partitions
                 if p.partition_index == partition]
        assert len(parts) == 1, r
        return int(parts[0].error_code), int(parts[0].offset)

    def fetch_all(self, topic: str, partition: int, *, start: int = 0,
                  deadline_s: float = 30.0) -> list["Batch"]:
        """Every batch from `start` up to the high watermark, in order."""
        out: list[Batch] = []
        offset = start
        deadline = time.monotonic() + deadline_s
        for _ in range(100000):
            assert time.monotonic() < deadline, f"fetch_all did not finish: at {offset}"
            p = self.fetch(topic, partition, offset)
            assert p.error_code == NONE, f"fetch {topic}-{partition}@{offset}: {p.error_code}"
            batches = [b for b in parse_batches(p.records or b"") if b.last_offset >= offset]
            if not batches:
                assert offset >= p.high_watermark, (
                    f"no data at {offset} below high watermark {p.high_watermark}")
                return out
            out.extend(batches)
            offset = batches[-1].last_offset + 1
        raise AssertionError("fetch_all: too many rounds")


# --------------------------------------------------------------------------- record batches


def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def write_varint(n: int) -> bytes:
    """Signed (zigzag) varint / varlong, as record fields use."""
    return write_uvarint(zigzag(n) & 0xFFFFFFFFFFFFFFFF)


def write_uvarint(u: int) -> bytes:
    out = bytearray()
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    u = 0
    while True:
        b = buf[pos]
        pos += 1
        u |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
    return (u >> 1) ^ -(u & 1), pos


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_delta: int = 0
    offset_delta: int | None = None  # filled when parsed


def _encode_record(r: Record, offset_delta: int) -> bytes:
    body = bytearray()
    body.append(0)  # attributes
    body += write_varint(r.timestamp_delta)
    body += write_varint(offset_delta)
    for blob in (r.key, r.value):
        if blob is None:
            body += write_varint(-1)
        else:
            body += write_varint(len(blob)) + blob
    body += write_varint(len(r.headers))
    for hk, hv in r.headers:
        k = hk.encode()
        body += write_varint(len(k)) + k
        body += write_varint(-1) if hv is None else write_varint(len(hv)) + hv
    return write_varint(len(body)) + bytes(body)


def build_batch(records: Sequence[Record], *, base_offset: int = 0,
                base_timestamp_ms: int | None = None, producer_id: int = -1,
                producer_epoch: int = -1, base_sequence: int = -1,
                partition_leader_epoch: int = -1, attributes: int = 0) -> bytes:
    """An uncompressed magic-2 RecordBatch with a correct CRC-32C."""
    assert records, "a batch needs at least one record"
    ts = int(time.time() * 1000) if base_timestamp_ms is None else base_timestamp_ms
    recs = b"".join(_encode_record(r, i) for i, r in enumerate(records))
    max_ts = ts + max(r.timestamp_delta for r in records)
    after_crc = struct.pack(">hiqqqhii", attributes, len(records) - 1, ts, max_ts,
                            producer_id, producer_epoch, base_sequence, len(records)) + recs
    crc = crc32c.crc32c(after_crc)
    tail = struct.pack(">ibI", partition_leader_epoch, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(tail)) + tail


def corrupt_crc(batch: bytes) -> bytes:
    """The same batch with its CRC field flipped (bytes 17..21)."""
    b = bytearray(batch)
    b[17] ^= 0xFF
    return bytes(b)


@dataclass
class Batch:
    base_offset: int
    partition_leader_epoch: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    raw: bytes
    records: list[Record] = field(default_factory=list)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def crc_ok(self) -> bool:
        return crc32c.crc32c(self.raw[21:]) == self.crc

    @property
    def content(self) -> bytes:
        """The bytes a broker must keep as the producer sent them (magic onward)."""
        return self.raw[16:]


def parse_batches(data: bytes, *, parse_records: bool = True) -> list[Batch]:
    """Split a records blob into batches; a trailing partial batch is ignored."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if length < 49 or end > len(data):
            break
        raw = bytes(data[pos:end])
        (ple, magic, crc, attrs, lod, bts, mts, pid, pep, bseq,
         count) = struct.unpack_from(">ibIhiqqqhii", raw, 12)
        assert magic == 2, f"magic {magic} at {pos}"
        b = Batch(base_offset, ple, crc, attrs, lod, bts, mts, pid, pep, bseq, raw)
        if parse_records and attrs & 0x07 == 0:
            b.records = _parse_records(raw, 61, count)
        out.append(b)
        pos = end
    return out


def _parse_records(raw: bytes, pos: int, count: int) -> list[Record]:
    recs = []
    for _ in range(count):
        length, pos = read_varint(raw, pos)
        end = pos + length
        pos += 1  # attributes
        ts_delta, pos = read_varint(raw, pos)
        off_delta, pos = read_varint(raw, pos)
        blobs = []
        for _ in range(2):
            n, pos = read_varint(raw, pos)
            if n < 0:
                blobs.append(None)
            else:
                blobs.append(raw[pos:pos + n])
                pos += n
        nh, pos = read_varint(raw, pos)
        headers = []
        for _ in range(nh):
            n, pos = read_varint(raw, pos)
            hk = raw[pos:pos + n].decode()
            pos += n
            n, pos = read_varint(raw, pos)
            if n < 0:
                hv = None
            else:
                hv = raw[pos:pos + n]
                pos += n
            headers.append((hk, hv))
        assert pos == end, f"record length mismatch: {pos} != {end}"
        recs.append(Record(blobs[0], blobs[1], tuple(headers), ts_delta, off_delta))
    return recs


def random_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
