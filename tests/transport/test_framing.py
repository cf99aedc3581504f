"""The pure framing of the Raft ingress stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronik_trio.pb import transport_pb2
from chronik_trio.transport.framing import (FRAME_HEADER_BYTES, FRAME_KIND_RAFT_BATCH,
                                            DecoderState, FrameDecoder, FrameReceived,
                                            FramingError, FrameTooLarge, encode_frame,
                                            encode_group_message, encode_raft_batch)
from chronik_trio.varint import write_uvarint

from .helpers import message

pytestmark = pytest.mark.timeout(30)

node_ids = st.integers(min_value=0, max_value=2**64 - 1)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_matches_protobuf(value):
    batch = transport_pb2.RaftBatch(from_node=value)
    assert batch.SerializeToString() == (b"\x08" + write_uvarint(value) if value else b"")


@settings(max_examples=50, deadline=None)
@given(from_node=node_ids, to_node=node_ids,
       items=st.lists(st.tuples(st.text(max_size=20), st.integers(0, 2**40),
                                st.binary(max_size=300)), max_size=8))
def test_hand_encoded_batch_parses_as_the_generated_raft_batch(from_node, to_node, items):
    messages = [(group, message(1, 2, index, data)) for group, index, data in items]
    encoded = encode_raft_batch(from_node, to_node,
                                [encode_group_message(g, m) for g, m in messages])
    parsed = transport_pb2.RaftBatch.FromString(encoded)
    expected = transport_pb2.RaftBatch(
        from_node=from_node, to_node=to_node,
        messages=[transport_pb2.GroupMessage(group=g, message=m) for g, m in messages])
    assert parsed == expected


def test_group_message_accepts_an_encoded_raft_message():
    m = message(1, 2, 7, b"x")
    assert (encode_group_message("g", m.SerializeToString())
            == encode_group_message("g", m)
            == transport_pb2.GroupMessage(group="g", message=m).SerializeToString())


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=200)), max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_decoder_yields_the_frames_whatever_the_chunking(payloads, cuts):
    stream = b"".join(encode_frame(kind, payload) for kind, payload in payloads)
    decoder = FrameDecoder(frame_bytes_max=1000)
    frames: list[FrameReceived] = []
    start = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        frames += decoder.feed(stream[start:cut])
        start = max(start, cut)
    assert [(f.kind, f.payload) for f in frames] == payloads
    assert decoder.buffered_bytes == 0 and decoder.state is DecoderState.HEADER


def test_decoder_holds_a_partial_frame_until_it_completes():
    frame = encode_frame(FRAME_KIND_RAFT_BATCH, b"abcdef")
    decoder = FrameDecoder(frame_bytes_max=100)
    assert decoder.feed(frame[:FRAME_HEADER_BYTES + 2]) == []
    assert decoder.buffered_bytes == 2 and decoder.state is DecoderState.PAYLOAD
    assert decoder.feed(frame[FRAME_HEADER_BYTES + 2:]) == [FrameReceived(1, b"abcdef")]


def test_decoder_refuses_a_frame_above_the_limit_and_everything_after():
    decoder = FrameDecoder(frame_bytes_max=10)
    ok = encode_frame(FRAME_KIND_RAFT_BATCH, b"0123456789")
    assert decoder.feed(ok) == [FrameReceived(1, b"0123456789")]
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(encode_frame(FRAME_KIND_RAFT_BATCH, b"01234567890"))
    assert (info.value.length, info.value.limit) == (11, 10)
    assert decoder.state is DecoderState.FAILED and decoder.buffered_bytes == 0
    with pytest.raises(FramingError):
        decoder.feed(ok)


def test_decoder_fails_on_the_header_alone_without_waiting_for_the_payload():
    decoder = FrameDecoder(frame_bytes_max=10)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\x01\xff\xff\xff\xff")

