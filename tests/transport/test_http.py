"""/health, /metrics and the request routes over a real HTTP/2 connection."""

from __future__ import annotations

import json

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from chronik_trio.transport import (BATCH_PATH, FRAME_KIND_RAFT_BATCH, FROM_NODE_HEADER,
                                    STREAM_PATH, Transport, TransportFailed, encode_frame,
                                    encode_group_message, encode_raft_batch)
from chronik_trio.transport.serving import H2_FRAME_BYTES_MAX, H2_WINDOW_BYTES

from .helpers import HOST, H2Client, Node, cluster, message, wait_connected, wait_until


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def batch_body(from_node: int, to_node: int, indexes: range, group: str = "g") -> bytes:
    return encode_frame(FRAME_KIND_RAFT_BATCH, encode_raft_batch(
        from_node, to_node, [encode_group_message(group, message(from_node, to_node, i))
                             for i in indexes]))


@pytest.mark.timeout(30)
async def test_health_answers_json_with_peer_states():
    async with cluster(2) as (a, b):
        await wait_connected([a, b])
        async with H2Client.open(a.address) as client:
            response = await client.request("GET", "/health")
    assert response.status == 200
    assert response.headers[b"content-type"] == b"application/json"
    assert json.loads(response.body) == {"status": "ok", "node_id": 1,
                                         "peers": {"2": "connected"}}


@pytest.mark.timeout(30)
async def test_health_includes_what_the_node_adds():
    async with cluster(1, health=lambda: {"meta_leader": 3}) as (a,):
        async with H2Client.open(a.address) as client:
            response = await client.request("GET", "/health")
    assert json.loads(response.body) == {"status": "ok", "node_id": 1, "peers": {},
                                         "meta_leader": 3}


@pytest.mark.timeout(30)
async def test_metrics_show_sent_received_dropped_and_queue_depth():
    async with cluster(2) as (a, b):
        await wait_connected([a, b])
        for index in range(5):
            assert a.transport.send(2, "g", message(1, 2, index))
        await wait_until(lambda: len(b.received()) == 5)
        assert not a.transport.send(3, "g", message(1, 3, 0))  # unknown peer
        async with H2Client.open(b.address) as client:  # a wrong-node batch to b
            await client.request("POST", BATCH_PATH, [(FROM_NODE_HEADER, b"1")],
                                 batch_body(1, 7, range(2)))
        async with H2Client.open(a.address) as client:
            response = await client.request("GET", "/metrics")
            a_samples = samples(response.body.decode())
        async with H2Client.open(b.address) as client:
            b_samples = samples((await client.request("GET", "/metrics")).body.decode())
    assert response.status == 200
    assert response.headers[b"content-type"].startswith(b"text/plain")
    peer2, peer1 = (("peer", "2"),), (("peer", "1"),)
    assert a_samples[("chronik_transport_sent_messages_total", peer2)] == 5
    assert a_samples[("chronik_transport_sent_batches_total", peer2)] >= 1
    assert a_samples[("chronik_transport_queue_depth_messages", peer2)] == 0
    assert a_samples[("chronik_transport_peer_connected", peer2)] == 1
    assert a_samples[("chronik_transport_dropped_total", (("reason", "peer_unknown"),))] == 1
    assert b_samples[("chronik_transport_received_messages_total", peer1)] == 5
    assert b_samples[("chronik_transport_dropped_total", (("reason", "wrong_to_node"),))] == 2


@pytest.mark.timeout(30)
async def test_metrics_show_the_queue_of_a_peer_that_does_not_read():
    silent = await trio.open_tcp_listeners(0, host=HOST)  # accepts, never reads
    a = Node(1)
    async with trio.open_nursery() as nursery:
        a.transport = Transport(1, (HOST, 0), {2: silent[0].socket.getsockname()[:2]},
                                a.on_batch, a.report_unreachable)
        a.address = await nursery.start(a.transport.run)
        with trio.fail_after(5):
            await a.transport.wait_peer_connected(2)
        assert a.transport.send(2, "g", message(1, 2, 0, bytes(2**20)))
        # The sender takes it, writes what the 64 KiB window allows, then waits.
        await wait_until(lambda: a.transport.queue_depth_messages(2) == 0)
        await trio.sleep(0.05)
        for index in range(1, 6):
            assert a.transport.send(2, "g", message(1, 2, index))
        async with H2Client.open(a.address) as client:
            queued = samples((await client.request("GET", "/metrics")).body.decode())
        assert queued[("chronik_transport_queue_depth_messages", (("peer", "2"),))] == 5
        assert queued[("chronik_transport_queue_depth_bytes", (("peer", "2"),))] > 5 * 20
        nursery.cancel_scope.cancel()
    for listener in silent:
        await listener.aclose()


@pytest.mark.timeout(30)
async def test_each_transport_has_its_own_registry():
    async with cluster(2) as (a, b):
        assert a.transport.registry is not b.transport.registry


@pytest.mark.timeout(30)
async def test_per_request_route_delivers_a_body_of_frames():
    async with cluster(1) as (a,):
        async with H2Client.open(a.address) as client:
            response = await client.request("POST", BATCH_PATH, [(FROM_NODE_HEADER, b"5")],
                                            batch_body(5, 1, range(3)) + batch_body(5, 1, range(3, 4)))
        assert response.status == 204
        assert a.received() == [(5, "g", i) for i in range(4)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method,path,headers,status", [
    ("GET", "/nowhere", [], 404),
    ("GET", STREAM_PATH, [], 405),
    ("POST", STREAM_PATH, [], 400),
    ("POST", BATCH_PATH, [(FROM_NODE_HEADER, b"not-a-number")], 400),
    ("POST", BATCH_PATH, [(FROM_NODE_HEADER, b"0")], 400),
])
async def test_bad_requests_are_answered_and_the_server_keeps_serving(method, path, headers,
                                                                      status):
    async with cluster(1) as (a,):
        async with H2Client.open(a.address) as client:
            assert (await client.request(method, path, headers, b"")).status == status
            assert (await client.request("GET", "/health")).status == 200


@pytest.mark.timeout(30)
async def test_body_or_frame_above_the_limit_is_refused_with_413():
    async with cluster(1, frame_bytes_max=4096) as (a,):
        async with H2Client.open(a.address) as client:
            big_frame = encode_frame(FRAME_KIND_RAFT_BATCH, bytes(5000))
            response = await client.request("POST", BATCH_PATH, [(FROM_NODE_HEADER, b"2")],
                                            big_frame)
            assert response.status == 413
            big_body = batch_body(2, 1, range(40)) * 5  # frames within the limit, body not
            assert len(big_body) > 4096
            response = await client.request("POST", BATCH_PATH, [(FROM_NODE_HEADER, b"2")],
                                            big_body)
            assert response.status == 413
            response = await client.request("POST", STREAM_PATH, [(FROM_NODE_HEADER, b"2")],
                                            big_frame)
            assert response.status == 200 and response.body == b"frame too large\n"
            assert (await client.request("GET", "/health")).status == 200
        assert a.batches == []


@pytest.mark.timeout(30)
async def test_server_offers_windows_and_frames_bigger_than_the_protocol_defaults():
    async with cluster(1) as (a,):
        async with H2Client.open(a.address) as client:
            await client.request("GET", "/health")  # the SETTINGS have arrived by now
            settings = client.conn.remote_settings
            assert settings.initial_window_size == H2_WINDOW_BYTES
            assert settings.max_frame_size == H2_FRAME_BYTES_MAX
            assert client.conn.outbound_flow_control_window >= H2_WINDOW_BYTES - 2**16


@pytest.mark.timeout(30)
async def test_exception_in_on_batch_stops_the_transport():
    def on_batch(batch):
        raise RuntimeError("bug in the node")

    transport = Transport(1, (HOST, 0), {}, on_batch, lambda peer, group: None)
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(transport.run)
            async with H2Client.open(address) as client:
                with trio.move_on_after(2):
                    await client.request("POST", BATCH_PATH, [(FROM_NODE_HEADER, b"2")],
                                         batch_body(2, 1, range(1)))
            await trio.sleep(5)
            pytest.fail("the transport kept running")
    failed = info.value.split(TransportFailed)[0]
    assert failed is not None
    cause = failed.exceptions[0]
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    assert isinstance(cause.__cause__, RuntimeError)


@pytest.mark.timeout(30)
async def test_big_frame_right_behind_the_settings_ack_is_accepted():
    """The client acknowledges the server's bigger max frame size and sends a frame above
    the default size in the same write (and the same read on the server, so below the
    server's read size): the server must not take it for an overlong frame."""
    async with cluster(1) as (a,):
        async with H2Client.open(a.address) as client:
            await client.stream.send_all(client.conn.data_to_send())
            with trio.fail_after(5):
                while client.conn.max_outbound_frame_size != H2_FRAME_BYTES_MAX:
                    client.conn.receive_data(await client.stream.receive_some(65536))
            body = batch_body(2, 1, range(1)) + encode_frame(9, bytes(40_000))
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                           (b":authority", b"t"), (b":path", BATCH_PATH.encode()),
                                           (FROM_NODE_HEADER, b"2")])
            client.conn.send_data(sid, body, end_stream=True)  # one frame of 40 KB
            await client.stream.send_all(client.conn.data_to_send())  # with the ACK
            with trio.fail_after(5):
                while not a.batches:
                    data = await client.stream.receive_some(65536)
                    assert data, "the server closed the connection"
                    client.conn.receive_data(data)
        assert a.received() == [(2, "g", 0)]


class _Broken:
    def collect(self):
        raise AttributeError("a collector's bug")


@pytest.mark.timeout(30)
async def test_a_failing_metrics_collector_or_health_is_answered_500_and_the_node_goes_on():
    """/metrics and /health only report on the node: a bug in one (a collector reading an
    attribute that is not there) is logged and answered 500; the transport keeps serving."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_Broken())

    def health() -> dict:
        raise KeyError("a health field's bug")

    async with cluster(2, per_node=lambda n: {"registry": registry, "health": health} if n == 1 else {}) as (a, b):
        await wait_connected([a, b])
        async with H2Client.open(a.address) as client:
            assert (await client.request("GET", "/metrics")).status == 500
            assert (await client.request("GET", "/health")).status == 500
        assert a.transport.send(2, "g", message(1, 2, 0))  # still serving both ways
        await wait_until(lambda: len(b.received()) == 1)
        assert b.transport.send(1, "g", message(2, 1, 0))
        await wait_until(lambda: len(a.received()) == 1)
