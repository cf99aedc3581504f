"""The size-prefixed framing: any split of the byte stream yields the same frames."""

import struct

import pytest
from hypothesis import given, strategies as st

from chronik_trio.kafka.errors import FrameTooLarge
from chronik_trio.kafka.framing import FrameDecoder


def _framed(payloads):
    return b"".join(struct.pack(">i", len(p)) + p for p in payloads)


@given(payloads=st.lists(st.binary(max_size=300), max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
def test_any_split_of_the_stream_yields_the_same_frames(payloads, cuts):
    stream = _framed(payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder, frames = FrameDecoder(1 << 20), []
    for a, b in zip(points, points[1:]):
        decoder.feed(stream[a:b])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert frames == payloads
    assert decoder.buffered_bytes == 0


def test_a_size_over_the_limit_is_refused_before_the_body_arrives():
    decoder = FrameDecoder(100)
    decoder.feed(struct.pack(">i", 101))
    with pytest.raises(FrameTooLarge, match="101"):
        decoder.next_frame()


def test_a_negative_size_is_refused():
    decoder = FrameDecoder(100)
    decoder.feed(struct.pack(">i", -1))
    with pytest.raises(FrameTooLarge, match="-1"):
        decoder.next_frame()


def test_an_incomplete_frame_waits_for_more_bytes():
    decoder = FrameDecoder(100)
    decoder.feed(struct.pack(">i", 10) + b"12345")
    assert decoder.next_frame() is None
    decoder.feed(b"67890")
    assert decoder.next_frame() == b"1234567890"
