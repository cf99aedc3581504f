"""kio glue: requests decode (unknown tags skipped), responses encode for every version."""

import io
import struct
import uuid

import kio.index
import kio.serial
import pytest
from hypothesis import given, strategies as st

from chronik_trio.kafka import codec
from chronik_trio.kafka.errors import MalformedRequest, UnsupportedApi
from chronik_trio.kafka.handlers import registry
from chronik_trio.kafka.tagged import write_uvarint
from chronik_trio.node.kafka_server import COALESCE_RUN_BYTES_MAX, _coalesce

ALL_VERSIONS = [(key, v) for key, ((lo, hi), _) in registry.HANDLERS.items() for v in range(lo, hi + 1)]


def _request_bytes(api_key, version, body, correlation_id=42):
    cls = kio.index.load_request_schema(api_key, version)
    header_cls = cls.__header_schema__
    sink = io.BytesIO()
    kio.serial.entity_writer(header_cls)(sink, codec.build(
        header_cls, request_api_key=api_key, request_api_version=version,
        correlation_id=correlation_id, client_id="test"))
    kio.serial.entity_writer(cls)(sink, body)
    return sink.getvalue()


@pytest.mark.parametrize("api_key,version", ALL_VERSIONS)
def test_every_advertised_version_decodes_a_request_and_encodes_a_response(api_key, version):
    req_cls = codec.request_schema(api_key, version)
    frame = _request_bytes(api_key, version, codec.build(req_cls))
    request = codec.decode_request(frame)
    assert (request.api_key, request.api_version, request.correlation_id) == (api_key, version, 42)
    resp_cls = codec.response_schema(api_key, version)
    chunks = codec.encode_response(42, codec.build(resp_cls))
    data = b"".join(chunks)
    assert struct.unpack_from(">i", data)[0] == len(data) - 4
    header, n = kio.serial.entity_reader(resp_cls.__header_schema__)(data, 4)
    assert header.correlation_id == 42
    body, m = kio.serial.entity_reader(resp_cls)(data, 4 + n)
    assert 4 + n + m == len(data)


def test_build_converts_plain_values_and_nested_dicts():
    cls = codec.response_schema(1, 12)
    resp = codec.build(cls, throttle_time=5, responses=[{"topic": "t", "partitions": [
        {"partition_index": 2, "error_code": 1, "records": memoryview(b"xy")}]}])
    assert resp.throttle_time.total_seconds() == 0.005
    part = resp.responses[0].partitions[0]
    assert part.error_code.name == "offset_out_of_range" and bytes(part.records) == b"xy"
    assert part.last_stable_offset == -1  # the schema's default, not 0


def test_trailing_bytes_after_the_body_are_counted_and_ignored_as_kafka_does():
    # librdkafka 2.16's admin client sends exactly this all-topics Metadata v12 request.
    frame = bytes.fromhex("0003000c00000003000772646b61666b610000000000010000")
    request = codec.decode_request(frame)
    assert request.body.topics is None and request.trailing_bytes == 3


def test_an_unknown_api_is_unsupported():
    with pytest.raises(UnsupportedApi):
        codec.decode_request(struct.pack(">hhi", 9999, 0, 1) + b"\x00\x00")


def test_a_short_frame_is_malformed():
    with pytest.raises(MalformedRequest):
        codec.decode_request(b"\x00\x03")


@given(garbage=st.binary(max_size=200))
def test_garbage_after_a_valid_header_prefix_never_escapes_as_anything_but_malformed(garbage):
    frame = struct.pack(">hhi", 3, 12, 7) + garbage
    try:
        codec.decode_request(frame)
    except MalformedRequest:
        pass


def _with_unknown_tag(frame: bytes, tag: int, data: bytes) -> bytes:
    # A flexible body ends with its tagged-field count; this test's bodies have none (0x00).
    assert frame[-1] == 0
    return frame[:-1] + write_uvarint(1) + write_uvarint(tag) + write_uvarint(len(data)) + data


def test_an_unknown_top_level_tag_is_skipped():
    body = codec.build(codec.request_schema(3, 12), topics=[{"name": "a"}, {"name": "b"}],
                       allow_auto_topic_creation=False)
    frame = _with_unknown_tag(_request_bytes(3, 12, body), 77, b"\x01\x02\x03")
    request = codec.decode_request(frame)
    assert [t.name for t in request.body.topics] == ["a", "b"]
    assert request.body.allow_auto_topic_creation is False


def test_an_unknown_tag_in_a_nested_entity_is_skipped():
    body = codec.build(codec.request_schema(3, 12), topics=[{"name": "abc"}])
    frame = bytearray(_request_bytes(3, 12, body))
    # The topic entry is: uuid(16) + compact string "abc" (0x04 a b c) + tag count 0x00.
    at = frame.index(b"\x04abc") + 4
    assert frame[at] == 0
    frame[at:at + 1] = write_uvarint(1) + write_uvarint(9) + write_uvarint(2) + b"zz"
    request = codec.decode_request(bytes(frame))
    assert request.body.topics[0].name == "abc"


def test_a_known_tag_survives_the_skipping_of_an_unknown_one():
    cls = codec.request_schema(1, 16)
    body = codec.build(cls, cluster_id="c1", max_wait=100, topics=[])
    frame = _request_bytes(1, 16, body)
    # FetchRequest v16 body ends with: rack_id "" (0x01), then tags: count 1, tag 0 "c1".
    tail = write_uvarint(1) + write_uvarint(0) + write_uvarint(3) + write_uvarint(3) + b"c1"
    assert frame.endswith(tail)
    frame = frame[: -len(tail)] + write_uvarint(2) + tail[1:] + write_uvarint(5) + write_uvarint(1) + b"q"
    request = codec.decode_request(frame)
    assert request.body.cluster_id == "c1"


@pytest.mark.parametrize("api_key,version", ALL_VERSIONS)
def test_every_version_has_an_unknown_server_error_answer_that_encodes(api_key, version):
    """What the connection sends when a handler fails (node/kafka_server.py)."""
    from kio.schema.errors import ErrorCode

    from tests.kafka import conformance

    target = conformance.Target("t", __import__("uuid").uuid4(), b"")
    body = conformance.request_for(api_key, version, target)
    answer = codec.error_response(api_key, version, body, ErrorCode.unknown_server_error)
    data = b"".join(codec.encode_response(1, answer))
    resp_cls = codec.response_schema(api_key, version)
    _, n = kio.serial.entity_reader(resp_cls.__header_schema__)(data, 4)
    decoded, _ = kio.serial.entity_reader(resp_cls)(data, 4 + n)
    codes = [c for _, c in conformance.error_codes(decoded)]
    if api_key != registry.API_VERSIONS_KEY:
        assert codes and set(codes) == {-1}, decoded  # every error field says it, and there is one


def test_a_length_past_the_frame_is_refused_before_kio_reads_it():
    frame = _request_bytes(3, 4, codec.build(codec.request_schema(3, 4), topics=[]))
    bad = frame[:-5] + struct.pack(">i", 2**31 - 1) + frame[-1:]
    with pytest.raises(MalformedRequest, match="claims 2147483647 entries"):
        codec.decode_request(bad)


def test_a_null_where_the_schema_has_none_is_found():
    body = codec.build(codec.request_schema(1, 8), topics=None)
    assert codec.null_field(body) == "topics"
    assert codec.null_field(codec.build(codec.request_schema(3, 9), topics=None)) is None  # nullable


@pytest.mark.parametrize("version", [4, 12, 17])
@given(parts=st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
       sizes=st.lists(st.integers(0, 200_000), max_size=8))
def test_record_chunks_encode_as_their_join_and_are_sent_in_bounded_pieces(version, parts, sizes):
    """A Fetch answer's records as RecordChunks encode to the same bytes as one joined blob;
    the connection's coalescing sends every byte once, in order, in runs of bounded size."""
    cls = codec.response_schema(1, version)
    topic = {"topic_id": uuid.UUID(int=1)} if version >= 13 else {"topic": "t"}

    def answer(records):
        return codec.build(cls, responses=[{**topic, "partitions": [{"partition_index": 0, "records": records}]}])
    joined = b"".join(codec.encode_response(7, answer(b"".join(parts))))
    chunked = codec.encode_response(7, answer(codec.RecordChunks([memoryview(p) for p in parts])))
    assert b"".join(bytes(c) for c in chunked) == joined
    blobs = [b"x" * n for n in sizes]
    sent = list(_coalesce(blobs))
    assert b"".join(bytes(c) for c in sent) == b"".join(blobs)
    assert all(len(c) < COALESCE_RUN_BYTES_MAX + (64 << 10) or len(c) in sizes for c in sent)
