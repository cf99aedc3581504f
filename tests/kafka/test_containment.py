"""A handler's unexpected exception is contained to its request; fail-stop errors are not.

The connection loop (node/kafka_server.py) is driven through trio's in-memory streams with a
broker context whose replica lookup fails the way a handler bug or a dying disk would: the
request is answered with UNKNOWN_SERVER_ERROR at its own version, logged at ERROR with the
API, version, client id and traceback, counted, and the connection keeps serving; a DiskError
(the node's data in doubt) goes on up and stops the node, as design.md's fail-stop says.
"""

from __future__ import annotations

import logging
import pathlib
import struct
import types

import pytest
import trio
import trio.testing

from chronik_trio.kafka.handlers import registry
from chronik_trio.node.kafka_server import RequestErrors, serve_connection
from chronik_trio.storage.errors import DiskError
from tests.kafka_wire import (API_VERSIONS, FETCH, LIST_OFFSETS, PRODUCE, decode, encode_request, frame,
                              response_class, response_header_class)

UNKNOWN_SERVER_ERROR = -1


class _Ctx:
    """What the handlers under test touch of a node, with a replica lookup that fails."""

    def __init__(self, failure: BaseException) -> None:
        self.config = types.SimpleNamespace(request_max_bytes=1 << 20, authorizer_enabled=False)
        self.requests_inflight = 0
        self.request_errors = RequestErrors()
        self.meta = types.SimpleNamespace(topics={}, topics_by_id={}, brokers={})
        self.failure = failure

    def replica(self, topic: str, partition: int):
        raise self.failure


async def _receive_frame(stream) -> bytes:
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack_from(">i", buf)[0]:
        chunk = await stream.receive_some(1 << 16)
        assert chunk, f"connection closed after {len(buf)} bytes"
        buf += chunk
    return buf[4:]


def _answer(api_key: int, version: int, data: bytes):
    header, n = decode(response_header_class(api_key, version), data)
    body, m = decode(response_class(api_key, version), data, n)
    assert n + m == len(data)
    return header.correlation_id, body


def _list_offsets(version: int) -> bytes:
    return frame(encode_request(LIST_OFFSETS, version, 5, {
        "replica_id": -1, "topics": [{"name": "t", "partitions": [{"partition_index": 3, "timestamp": -1}]}]}))


@pytest.mark.parametrize("version", [1, registry.HANDLERS[LIST_OFFSETS][0][1]])
async def test_a_handler_exception_is_answered_with_unknown_server_error_and_the_connection_serves_on(
        version, caplog):
    ctx = _Ctx(RuntimeError("a handler bug"))
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, ctx, "127.0.0.1:5555")
        with caplog.at_level(logging.ERROR, logger="chronik_trio.node.kafka_server"):
            await client.send_all(_list_offsets(version))
            correlation_id, body = _answer(LIST_OFFSETS, version, await _receive_frame(client))
        assert correlation_id == 5
        (topic,) = body.topics
        (partition,) = topic.partitions
        assert (topic.name, partition.partition_index, partition.error_code) == ("t", 3, UNKNOWN_SERVER_ERROR)
        assert ctx.request_errors.counts == {(LIST_OFFSETS, version): 1}
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        message = record.getMessage()
        assert f"ListOffsetsRequest v{version}" in message and "'kafka-wire-test'" in message
        assert "a handler bug" in caplog.text and record.exc_info is not None  # the traceback
        # The same connection still answers.
        await client.send_all(frame(encode_request(API_VERSIONS, 0, 6, {})))
        assert _answer(API_VERSIONS, 0, await _receive_frame(client))[0] == 6
        await client.aclose()


async def test_a_fetch_without_a_top_level_error_code_gets_it_per_partition():
    ctx = _Ctx(RuntimeError("a handler bug"))
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, ctx, "127.0.0.1:5555")
        await client.send_all(frame(encode_request(FETCH, 4, 9, {
            "max_wait": 0, "max_bytes": 1000, "topics": [{"topic": "t", "partitions": [
                {"partition": 1, "partition_max_bytes": 1000}]}]})))
        _, body = _answer(FETCH, 4, await _receive_frame(client))
        (partition,) = body.responses[0].partitions
        assert (body.responses[0].topic, partition.partition_index, partition.error_code) == ("t", 1, -1)
        await client.aclose()


async def test_a_failed_acks_0_produce_closes_its_connection():
    """acks=0 gets no answer, so failure is told the way Kafka tells it: by closing."""
    ctx = _Ctx(RuntimeError("a handler bug"))
    ctx.meta.topics["t"] = types.SimpleNamespace(name="t", config=lambda key: "1000000")
    ctx.config.message_max_bytes = 1 << 20
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, ctx, "127.0.0.1:5555")
        await client.send_all(frame(encode_request(PRODUCE, 9, 3, {
            "acks": 0, "timeout": 1000, "topic_data": [{"name": "t", "partition_data": [
                {"index": 0, "records": b""}]}]})))
        assert await client.receive_some(100) == b""
        assert sum(ctx.request_errors.counts.values()) == 1


async def test_a_disk_error_in_a_handler_is_not_contained():
    """A DiskError means the node's data is in doubt: it stops the node (fail-stop)."""
    ctx = _Ctx(DiskError("read", pathlib.Path("segment"), OSError(5, "Input/output error")))
    client, server = trio.testing.memory_stream_pair()
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_connection, server, ctx, "127.0.0.1:5555")
            await client.send_all(_list_offsets(5))
            await trio.sleep_forever()
    assert caught.value.subgroup(DiskError) is not None
    assert not ctx.request_errors.counts
