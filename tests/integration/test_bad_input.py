"""Bad input against a real `chronik-trio node`, spoken with a raw protocol client.

Each test proves two things: the broker answers the bad request the way the protocol
defines (an error code, or closing that one connection with a log line naming the peer
and the reason) and writes nothing partial; and the node keeps serving everyone else
(a connection opened before the bad one and a fresh one both still produce and fetch).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time

import pytest

from tests.kafka_wire import (
    API_VERSIONS,
    CORRUPT_MESSAGE,
    FETCH,
    INVALID_TOPIC_EXCEPTION,
    LIST_OFFSETS,
    MESSAGE_TOO_LARGE,
    METADATA,
    NONE,
    PRODUCE,
    UNKNOWN_TOPIC_OR_PARTITION,
    UNSUPPORTED_VERSION,
    KafkaWire,
    Record,
    build,
    build_batch,
    corrupt_crc,
    decode,
    encode,
    encode_request,
    frame,
    parse_batches,
    random_topic,
    request_class,
    response_class,
    write_uvarint,
)
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- helpers


def batch_of(n: int, tag: str = "r", size: int = 16) -> bytes:
    return build_batch([Record(f"{tag}-k{i}".encode(), f"{tag}-v{i}-".encode().ljust(size, b"x"),
                               (("h", f"{i}".encode()),)) for i in range(n)])


def log_end(conn: KafkaWire, topic: str, partition: int) -> int:
    err, off = conn.list_offset(topic, partition)
    assert err == NONE, f"ListOffsets {topic}-{partition}: error {err}"
    return off


def produce_ok(conn: KafkaWire, topic: str, partition: int, batch: bytes) -> int:
    r = conn.produce(topic, partition, batch, acks=-1)
    assert r.error_code == NONE, f"produce to {topic}-{partition}: error {r.error_code}"
    return int(r.base_offset)


def assert_round_trip(conn: KafkaWire, topic: str, partition: int = 0, tag: str = "alive") -> None:
    """Produce a batch and read exactly that batch back at the offset we were told."""
    batch = batch_of(3, tag)
    base = produce_ok(conn, topic, partition, batch)
    p = conn.fetch(topic, partition, base)
    assert p.error_code == NONE
    got = [b for b in parse_batches(p.records or b"") if b.base_offset == base]
    assert got, f"batch produced at {base} not fetched back"
    assert got[0].content == batch[16:]
    assert p.high_watermark >= base + 3


def assert_still_serving(broker, topic: str, *old: KafkaWire) -> None:
    """Connections that existed before the bad input, and a fresh one, still work."""
    for i, conn in enumerate(old):
        assert_round_trip(conn, topic, tag=f"old{i}")
    with KafkaWire.connect(broker.port) as fresh:
        assert_round_trip(fresh, topic, tag="fresh")


def peer_pattern(address: str) -> str:
    host, port = address.rsplit(":", 1)
    # "127.0.0.1:5000", "127.0.0.1 5000", or a tuple repr "('127.0.0.1', 5000)"
    return re.escape(host) + r"""['"]?\s*[:, ]\s*""" + port + r"\b"


def wait_log_line(broker, peer: str, reason: str, timeout: float = 5.0) -> str:
    """A line of the broker log naming the peer address and matching the reason regex."""
    pat = re.compile(peer_pattern(peer))
    why = re.compile(reason, re.IGNORECASE)
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in broker.log_text().splitlines() if pat.search(ln)]
        for ln in lines:
            if why.search(ln):
                return ln
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no log line naming peer {peer} with reason /{reason}/; lines naming the "
                f"peer: {lines}\n--- log tail ---\n{broker.log_text()[-3000:]}")
        time.sleep(0.1)


def setup_topic(conn: KafkaWire, partitions: int = 1) -> str:
    topic = random_topic()
    errs = conn.create_topics([topic], partitions=partitions)
    assert errs == {topic: NONE}, errs
    return topic


# --------------------------------------------------------------------------- record-level errors


def test_crc_mismatch_is_corrupt_message_and_writes_nothing(broker):
    with KafkaWire.connect(broker.port) as conn, KafkaWire.connect(broker.port) as other:
        topic = setup_topic(conn, partitions=2)
        good = batch_of(3, "good")
        assert produce_ok(conn, topic, 0, good) == 0
        assert log_end(conn, topic, 0) == 3

        r = conn.produce(topic, 0, corrupt_crc(batch_of(5, "bad")))
        assert r.error_code == CORRUPT_MESSAGE

        # A payload byte flipped after the CRC was computed (the CRC field itself intact).
        flipped = bytearray(batch_of(5, "bad2"))
        flipped[-3] ^= 0x01
        r = conn.produce(topic, 0, bytes(flipped))
        assert r.error_code == CORRUPT_MESSAGE

        # A good batch followed by a bad one in the same partition: all or nothing.
        r = conn.produce(topic, 0, batch_of(2, "ok") + corrupt_crc(batch_of(2, "bad4")))
        assert r.error_code == CORRUPT_MESSAGE
        # A batch cut short (batchLength claims more bytes than the request carries).
        r = conn.produce(topic, 0, batch_of(2, "cut")[:-7])
        assert r.error_code == CORRUPT_MESSAGE

        # One request, two partitions: the bad one fails alone, the good one is written.
        rs = conn.produce_many(topic, {0: corrupt_crc(batch_of(2, "bad3")),
                                       1: batch_of(2, "p1")})
        assert rs[0].error_code == CORRUPT_MESSAGE
        assert rs[1].error_code == NONE and rs[1].base_offset == 0

        # Nothing of the bad batches was written.
        assert log_end(other, topic, 0) == 3
        p = other.fetch(topic, 0, 3)
        assert p.error_code == NONE and p.high_watermark == 3
        assert parse_batches(p.records or b"") == []
        batches = other.fetch_all(topic, 0)
        assert [(b.base_offset, b.content) for b in batches] == [(0, good[16:])]
        assert log_end(other, topic, 1) == 2

        assert_still_serving(broker, topic, conn, other)
        assert log_end(other, topic, 0) == 3 + 3 * 3  # good + old0, old1, fresh


def test_unknown_topic_and_partition(broker_factory):
    broker = broker_factory(extra_args=["--no-auto-create-topics"]).start()
    with KafkaWire.connect(broker.port) as conn, KafkaWire.connect(broker.port) as other:
        missing = random_topic("missing")
        r = conn.produce(missing, 0, batch_of(1))
        assert r.error_code == UNKNOWN_TOPIC_OR_PARTITION

        md = conn.metadata([missing], allow_auto=True)
        assert [(t.name, t.error_code) for t in md.topics] == [
            (missing, UNKNOWN_TOPIC_OR_PARTITION)]
        assert missing not in other.topic_names()

        topic = setup_topic(conn, partitions=2)
        for bad_partition in (2, 99, -1):
            r = conn.produce(topic, bad_partition, batch_of(1))
            assert r.error_code == UNKNOWN_TOPIC_OR_PARTITION, bad_partition
        # The unknown topic was still not created by the produce.
        assert missing not in other.topic_names()
        assert log_end(other, topic, 0) == 0 and log_end(other, topic, 1) == 0

        assert_still_serving(broker, topic, conn, other)


def test_batch_larger_than_message_max_bytes(broker_factory):
    broker = broker_factory(extra_args=["--message-max-bytes", "2048"]).start()
    with KafkaWire.connect(broker.port) as conn, KafkaWire.connect(broker.port) as other:
        topic = setup_topic(conn)
        small = batch_of(2, "small")
        assert len(small) < 2048
        assert produce_ok(conn, topic, 0, small) == 0

        big = batch_of(10, "big", size=500)
        assert len(big) > 4096
        r = conn.produce(topic, 0, big)
        assert r.error_code == MESSAGE_TOO_LARGE

        assert log_end(other, topic, 0) == 2
        assert [b.content for b in other.fetch_all(topic, 0)] == [small[16:]]

        assert_still_serving(broker, topic, conn, other)


def test_invalid_topic_names(broker):
    bad_names = ["bad/name", "..", ".", "a" * 250, "", "has space", "uml\u00e4ut"]
    with KafkaWire.connect(broker.port) as conn, KafkaWire.connect(broker.port) as other:
        valid = random_topic()
        errs = conn.create_topics(bad_names + [valid], partitions=1)
        assert errs == {**{n: INVALID_TOPIC_EXCEPTION for n in bad_names}, valid: NONE}

        # Metadata with auto-creation on must not create an invalid name either.
        md = conn.metadata(["bad/name", ".."], allow_auto=True)
        assert {t.name: t.error_code for t in md.topics} == {
            "bad/name": INVALID_TOPIC_EXCEPTION, "..": INVALID_TOPIC_EXCEPTION}

        names = other.topic_names()
        assert valid in names
        assert not names & set(bad_names), names & set(bad_names)

        assert_still_serving(broker, valid, conn, other)


# --------------------------------------------------------------------------- frame-level errors


def _header_v1(api_key: int, version: int, corr: int, client_id: bytes = b"bad") -> bytes:
    return struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id


def _bad_frames(version_of) -> dict[str, tuple[bytes, bool, str]]:
    """case -> (bytes to send, half-close after, regex the log line's reason must match)."""
    produce_v = version_of(PRODUCE)
    produce_hdr = encode(request_class(PRODUCE, produce_v).__header_schema__(
        request_api_key=PRODUCE, request_api_version=produce_v, correlation_id=5,
        client_id="bad"))
    md_v = version_of(METADATA)
    md_full = encode_request(METADATA, md_v, 6, {"topics": [{"name": "x" * 40}]})
    decode_reason = (r"malformed|decod|pars|invalid|corrupt|underflow|truncat|bad|"
                     r"error|short|incomplete|trailing|unexpected")
    return {
        # Null/short transactional_id, then an impossible array length (either encoding).
        "garbage_body": (frame(produce_hdr + b"\x00\x05" + b"\xff" * 38), False, decode_reason),
        "body_cut_short": (frame(md_full[:-20]), False, decode_reason),
        "truncated_frame": (struct.pack(">i", 100) + b"\x00\x03\x00\x0c\x00\x00\x00\x07\x00\x01",
                            True, r"truncat|eof|incomplete|closed|short|partial|mid|"
                                  r"underflow|premature|before"),
        "oversized_length": (struct.pack(">i", 200 * 1024 * 1024) + b"\x00" * 16, False,
                             r"too large|too big|exceed|max|oversize|limit|size"),
        "unknown_api_key": (frame(_header_v1(1000, 0, 9)), False,
                            r"unknown|unsupported|api.?key|invalid|not supported"),
        "negative_length": (struct.pack(">i", -1) + b"\x00" * 16, False,
                            r"negative|invalid|size|length|bad"),
    }


@pytest.mark.parametrize("case", ["garbage_body", "body_cut_short", "truncated_frame",
                                  "oversized_length", "unknown_api_key", "negative_length"])
def test_bad_frame_closes_only_that_connection(broker, case):
    with KafkaWire.connect(broker.port) as other:
        topic = setup_topic(other)
        assert_round_trip(other, topic, tag="before")
        data, half_close, reason = _bad_frames(other.version_for)[case]

        bad = KafkaWire.connect(broker.port, negotiate=False)
        try:
            peer = bad.local_address
            bad.send_raw(data)
            if half_close:
                bad.sock.shutdown(socket.SHUT_WR)
            leftover = bad.wait_closed(timeout=10)
            # Nothing that looks like a response to the bad frame came back.
            assert leftover == b"", leftover[:100]
        finally:
            bad.close()
        line = wait_log_line(broker, peer, reason)
        assert line

        assert_still_serving(broker, topic, other)
        assert broker.proc.poll() is None


def test_api_versions_unsupported_version_gets_v0_answer(broker):
    with KafkaWire.connect(broker.port, negotiate=False) as conn:
        # What a newer client sends: ApiVersions v99, request header v2, a v3-shaped body.
        hdr = _header_v1(API_VERSIONS, 99, 4242, b"future-client") + b"\x00"
        body = write_uvarint(len(b"fc") + 1) + b"fc" + write_uvarint(len(b"9") + 1) + b"9" + b"\x00"
        conn.send_raw(frame(hdr + body))
        data = conn.recv_frame()
        header, n = decode(ResponseHeaderV0, data)
        assert header.correlation_id == 4242
        resp, m = decode(response_class(API_VERSIONS, 0), data, n)
        assert n + m == len(data)
        assert resp.error_code == UNSUPPORTED_VERSION
        keys = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in resp.api_keys}
        for k in (PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS):
            assert k in keys, f"api {k} missing from {keys}"
        assert keys[API_VERSIONS][0] == 0 and keys[API_VERSIONS][1] >= 3

        # The connection stays usable: the client retries at a version the broker has.
        conn.negotiate()
        assert conn.versions == keys
        topic = setup_topic(conn)
        assert_round_trip(conn, topic)


def _inject_unknown_tag(encoded: bytes) -> bytes:
    """Replace an empty trailing tagged-field section (0x00) with one unknown tag."""
    assert encoded[-1:] == b"\x00", encoded[-8:]
    payload = b"from-the-future"
    return encoded[:-1] + write_uvarint(1) + write_uvarint(4711) + \
        write_uvarint(len(payload)) + payload


def test_unknown_tagged_fields_are_skipped(broker):
    with KafkaWire.connect(broker.port) as conn:
        topic = setup_topic(conn)
        v = conn.version_for(METADATA)
        assert v >= 9, f"broker offers Metadata only up to v{v}: no flexible version"
        cls = request_class(METADATA, v)
        body = encode(build(cls, {"topics": [{"name": topic}],
                                  "allow_auto_topic_creation": False}))
        variants = ["body", "header", "both"]
        for i, where in enumerate(variants):
            corr = 100 + i
            header = encode(cls.__header_schema__(
                request_api_key=METADATA, request_api_version=v, correlation_id=corr,
                client_id="tags"))
            if where in ("header", "both"):
                header = _inject_unknown_tag(header)
            b = _inject_unknown_tag(body) if where in ("body", "both") else body
            conn.send_raw(frame(header + b))
            conn._pending[corr] = (METADATA, v)
            conn._order.append(corr)
            got_corr, resp = conn.recv()
            assert got_corr == corr
            assert [(t.name, t.error_code) for t in resp.topics] == [(topic, NONE)], where
            assert len(resp.topics[0].partitions) == 1
        assert_round_trip(conn, topic)


# --------------------------------------------------------------------------- connection behaviour


def test_pipelined_requests_answered_in_order(broker):
    with KafkaWire.connect(broker.port) as conn:
        topic = setup_topic(conn)
        base = produce_ok(conn, topic, 0, batch_of(2, "first"))
        batch = batch_of(4, "piped")
        corrs = [1000, 7, 555, 3, 99999]
        reqs = [
            # A long poll at the log end first: the later answers must wait for it.
            (FETCH, conn.fetch_request_body(topic, 0, base + 2, max_wait_ms=300, min_bytes=1)),
            (METADATA, {"topics": [{"name": topic}]}),
            (PRODUCE, {"acks": -1, "timeout": 10000, "topic_data": [
                {"name": topic, "partition_data": [{"index": 0, "records": batch}]}]}),
            (LIST_OFFSETS, {"replica_id": -1, "topics": [{"name": topic, "partitions": [
                {"partition_index": 0, "timestamp": -1, "current_leader_epoch": -1}]}]}),
            (API_VERSIONS, {"client_software_name": "p", "client_software_version": "1"}),
        ]
        blob = b""
        for corr, (key, body) in zip(corrs, reqs):
            v = conn.version_for(key)
            blob += frame(encode_request(key, v, corr, body))
            conn._pending[corr] = (key, v)
            conn._order.append(corr)
        conn.send_raw(blob)  # all five in one write, before reading anything

        answers = [conn.recv() for _ in corrs]  # recv() asserts the correlation order
        assert [c for c, _ in answers] == corrs
        fetch_r, md_r, prod_r, lo_r, av_r = (a for _, a in answers)
        assert fetch_r.error_code == NONE
        assert md_r.topics[0].name == topic and md_r.topics[0].error_code == NONE
        pr = prod_r.responses[0].partition_responses[0]
        assert pr.error_code == NONE and pr.base_offset == base + 2
        assert lo_r.topics[0].partitions[0].error_code == NONE
        assert av_r.error_code == NONE
        assert log_end(conn, topic, 0) == base + 6


def test_fetch_long_poll_waits_for_max_wait(broker):
    with KafkaWire.connect(broker.port) as conn:
        topic = setup_topic(conn)
        produce_ok(conn, topic, 0, batch_of(2))
        t0 = time.monotonic()
        p = conn.fetch(topic, 0, 2, max_wait_ms=500, min_bytes=1)
        elapsed = time.monotonic() - t0
        assert p.error_code == NONE and p.high_watermark == 2
        assert parse_batches(p.records or b"") == []
        assert 0.45 <= elapsed < 5.0, f"long poll returned after {elapsed:.3f}s"


def test_fetch_long_poll_returns_early_on_produce(broker):
    with KafkaWire.connect(broker.port) as conn, KafkaWire.connect(broker.port) as producer:
        topic = setup_topic(conn)
        produce_ok(producer, topic, 0, batch_of(2))
        result: dict = {}

        def poll() -> None:
            t0 = time.monotonic()
            try:
                result["part"] = conn.fetch(topic, 0, 2, max_wait_ms=10000, min_bytes=1)
            except BaseException as e:  # reported by the main thread
                result["error"] = e
            result["elapsed"] = time.monotonic() - t0

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        time.sleep(0.7)
        assert th.is_alive(), f"long poll returned before any produce: {result}"
        batch = batch_of(3, "wake")
        assert produce_ok(producer, topic, 0, batch) == 2
        th.join(timeout=15)
        assert not th.is_alive()
        assert "error" not in result, result["error"]
        assert 0.6 <= result["elapsed"] < 5.0, f"returned after {result['elapsed']:.3f}s"
        p = result["part"]
        assert p.error_code == NONE
        got = parse_batches(p.records or b"")
        assert [(b.base_offset, b.content) for b in got] == [(2, batch[16:])]


def test_invalid_acks_and_invalid_records_write_nothing(broker):
    with KafkaWire.connect(broker.port) as conn:
        topic = setup_topic(conn)
        r = conn.produce(topic, 0, batch_of(2, "acks"), acks=2)
        assert r.error_code == 21  # INVALID_REQUIRED_ACKS

        old_magic = bytearray(batch_of(2, "magic"))
        old_magic[16] = 1  # magic is outside the CRC; v0/v1 message sets are not accepted
        assert conn.produce(topic, 0, bytes(old_magic)).error_code == 87  # INVALID_RECORD

        miscounted = bytearray(batch_of(3, "count"))
        struct.pack_into(">i", miscounted, 57, 7)  # recordCount 7, lastOffsetDelta 2
        import crc32c
        struct.pack_into(">I", miscounted, 17, crc32c.crc32c(bytes(miscounted[21:])))
        assert conn.produce(topic, 0, bytes(miscounted)).error_code == 87

        assert log_end(conn, topic, 0) == 0
        assert_round_trip(conn, topic)
