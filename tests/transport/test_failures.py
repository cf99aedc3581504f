"""A peer that is down, goes away, comes back; a full queue. Drops are reported, never waited."""

from __future__ import annotations

import functools

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio

from chronik_trio.transport import (PEER_QUEUE_MESSAGES_MAX, PING_INTERVAL_S, PING_TIMEOUT_S,
                                    RECONNECT_BACKOFF_MAX_S,
                                    PeerState, Transport)
from chronik_trio.transport.metrics import DropReason

from .helpers import HOST, Node, listen, message, wait_until


def dropped(node: Node, reason: DropReason) -> float:
    value = node.transport.registry.get_sample_value(
        "chronik_transport_dropped_total", {"reason": reason.value})
    return value or 0.0


async def free_port() -> int:
    listeners = await listen()
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    return port


async def start_b(nursery: trio.Nursery, b: Node, port: int) -> trio.CancelScope:
    """Runs node 2's transport on `port` under its own cancel scope (to stop it alone)."""
    b.transport = Transport(2, (HOST, port), {}, b.on_batch, b.report_unreachable)
    scope = trio.CancelScope()

    async def scoped(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await b.transport.run(task_status=task_status)

    await nursery.start(scoped)
    return scope


@pytest.mark.timeout(30)
async def test_down_peer_is_reported_and_delivery_resumes_when_it_comes_back():
    port = await free_port()
    a = Node(1)
    async with trio.open_nursery() as nursery:
        a.transport = Transport(1, (HOST, 0), {2: (HOST, port)}, a.on_batch,
                                a.report_unreachable)
        await nursery.start(a.transport.run)
        await wait_until(lambda: a.transport.peer_state(2) is PeerState.BACKOFF)
        for index in range(100):  # send() returns at once: no connection, nothing queued
            assert not a.transport.send(2, f"g{index % 2}", message(1, 2, index))
        assert a.unreachable == [(2, f"g{i % 2}") for i in range(100)]
        assert dropped(a, DropReason.PEER_DISCONNECTED) == 100
        assert a.transport.queue_depth_messages(2) == 0

        b = Node(2)
        await start_b(nursery, b, port)
        with trio.fail_after(RECONNECT_BACKOFF_MAX_S + 5):
            await a.transport.wait_peer_connected(2)
        assert a.transport.send(2, "g0", message(1, 2, 100))
        await wait_until(lambda: b.received() == [(1, "g0", 100)])
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_peer_that_goes_away_is_reported_then_reached_again_after_it_restarts():
    port = await free_port()
    a, b = Node(1), Node(2)
    async with trio.open_nursery() as nursery:
        a.transport = Transport(1, (HOST, 0), {2: (HOST, port)}, a.on_batch,
                                a.report_unreachable)
        await nursery.start(a.transport.run)
        b_scope = await start_b(nursery, b, port)
        with trio.fail_after(5):
            await a.transport.wait_peer_connected(2)
        assert a.transport.send(2, "g", message(1, 2, 0))
        await wait_until(lambda: len(b.received()) == 1)

        b_scope.cancel()  # the peer's process is gone
        await wait_until(lambda: a.transport.peer_state(2) is not PeerState.CONNECTED)
        assert not a.transport.send(2, "g", message(1, 2, 1))
        assert (2, "g") in a.unreachable

        b2 = Node(2)
        await start_b(nursery, b2, port)
        with trio.fail_after(RECONNECT_BACKOFF_MAX_S + 5):
            await a.transport.wait_peer_connected(2)
        assert a.transport.send(2, "g", message(1, 2, 2))
        await wait_until(lambda: b2.received() == [(1, "g", 2)])
        connects = a.transport.registry.get_sample_value(
            "chronik_transport_connect_attempts_total", {"peer": "2"})
        assert connects >= 2
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_full_queue_drops_and_reports_and_the_queued_messages_still_arrive():
    port = await free_port()
    a, b = Node(1), Node(2)
    async with trio.open_nursery() as nursery:
        await start_b(nursery, b, port)
        a.transport = Transport(1, (HOST, 0), {2: (HOST, port)}, a.on_batch,
                                a.report_unreachable)
        await nursery.start(a.transport.run)
        with trio.fail_after(5):
            await a.transport.wait_peer_connected(2)
        # No checkpoint between the sends: the sender task cannot drain the queue meanwhile.
        results = [a.transport.send(2, "g", message(1, 2, i))
                   for i in range(PEER_QUEUE_MESSAGES_MAX + 3)]
        assert results == [True] * PEER_QUEUE_MESSAGES_MAX + [False] * 3
        assert a.unreachable == [(2, "g")] * 3
        assert dropped(a, DropReason.QUEUE_FULL) == 3
        assert a.transport.queue_depth_messages(2) == PEER_QUEUE_MESSAGES_MAX
        await wait_until(lambda: len(b.received()) == PEER_QUEUE_MESSAGES_MAX)
        assert [i for _, _, i in b.received()] == list(range(PEER_QUEUE_MESSAGES_MAX))
        assert a.transport.queue_depth_messages(2) == 0
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_peer_that_stops_answering_is_given_up_and_what_was_unsent_reported():
    silent = await trio.open_tcp_listeners(0, host=HOST)  # accepts, never reads or answers
    a = Node(1)
    async with trio.open_nursery() as nursery:
        a.transport = Transport(1, (HOST, 0), {2: silent[0].socket.getsockname()[:2]},
                                a.on_batch, a.report_unreachable)
        await nursery.start(a.transport.run)
        with trio.fail_after(5):
            await a.transport.wait_peer_connected(2)
        assert a.transport.send(2, "big", message(1, 2, 0, bytes(2**20)))  # stuck mid-write
        await trio.sleep(0.1)
        for index in range(1, 4):
            assert a.transport.send(2, f"g{index}", message(1, 2, index))
        with trio.fail_after(PING_INTERVAL_S + PING_TIMEOUT_S + 2):
            await wait_until(lambda: a.transport.peer_state(2) is not PeerState.CONNECTED,
                             timeout_s=PING_INTERVAL_S + PING_TIMEOUT_S + 2)
        assert sorted(a.unreachable) == [(2, "big"), (2, "g1"), (2, "g2"), (2, "g3")]
        assert dropped(a, DropReason.CONNECTION_LOST) == 4
        assert a.transport.queue_depth_messages(2) == 0
        nursery.cancel_scope.cancel()
    for listener in silent:
        await listener.aclose()


async def _stalling_h2_server(stream: trio.SocketStream) -> None:
    """Opens huge windows, accepts the Raft stream, then never reads again."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1,
                          h2.settings.SettingCodes.MAX_FRAME_SIZE: 2**20})
    conn.increment_flow_control_window(2**31 - 1 - 65535)
    await stream.send_all(conn.data_to_send())
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                conn.send_headers(event.stream_id, [(b":status", b"200")])
                await stream.send_all(conn.data_to_send())
                await trio.sleep_forever()
        await stream.send_all(conn.data_to_send())


@pytest.mark.timeout(30)
async def test_peer_that_stops_reading_with_open_windows_is_given_up():
    a = Node(1)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, _stalling_h2_server, 0, host=HOST))
        a.transport = Transport(1, (HOST, 0), {2: listeners[0].socket.getsockname()[:2]},
                                a.on_batch, a.report_unreachable)
        await nursery.start(a.transport.run)
        with trio.fail_after(5):
            await a.transport.wait_peer_connected(2)
        # More than both sockets' buffers hold: the writer then blocks inside send_all.
        for index in range(64):
            a.transport.send(2, "g", message(1, 2, index, bytes(2**20)))
            await trio.sleep(0)
        await wait_until(lambda: a.transport.peer_state(2) is not PeerState.CONNECTED,
                         timeout_s=PING_INTERVAL_S + PING_TIMEOUT_S + 2)
        assert (2, "g") in a.unreachable
        nursery.cancel_scope.cancel()
