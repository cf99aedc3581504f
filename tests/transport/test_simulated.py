"""The transport over an in-memory network, under trio's MockClock (virtual time).

The node takes its network from its caller (design.md, "Seams kept open"): here the
listeners and `connect` are in memory, nothing touches a socket, and time is virtual, so
backoff and keepalive schedules are checked to the exact virtual second.
"""

from __future__ import annotations

import errno

import attrs
import pytest
import trio
import trio.testing

from chronik_trio.transport import (PING_INTERVAL_S, PING_TIMEOUT_S,
                                    RECONNECT_BACKOFF_INITIAL_S, RECONNECT_BACKOFF_MAX_S,
                                    PeerState, Transport)

from .helpers import Node, message, wait_until

STREAM_QUEUE_MAX = 16


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self) -> None:
        self.send_channel, self._receive_channel = trio.open_memory_channel[trio.abc.Stream](
            STREAM_QUEUE_MAX)

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive_channel.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        await self._receive_channel.aclose()
        await trio.lowlevel.checkpoint()


@attrs.define
class MemoryNetwork:
    """Addresses -> listeners; `connect` hands the listener one end of a stream pair."""

    listeners: dict[tuple[str, int], MemoryListener] = attrs.Factory(dict)
    mute: set[tuple[str, int]] = attrs.Factory(set)  # accept, never answer
    opened: list[tuple[trio.abc.Stream, trio.abc.Stream]] = attrs.Factory(list)

    def listen(self, address: tuple[str, int]) -> list[MemoryListener]:
        self.listeners[address] = MemoryListener()
        return [self.listeners[address]]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if (host, port) in self.mute:
            client, server = trio.testing.memory_stream_pair()
            self.opened.append((client, server))  # the server end is never read
            return client
        listener = self.listeners.get((host, port))
        if listener is None:
            raise OSError(errno.ECONNREFUSED, "connection refused (simulated)")
        client, server = trio.testing.memory_stream_pair()
        try:
            listener.send_channel.send_nowait(server)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise OSError(errno.ECONNREFUSED, "connection refused (simulated)") from None
        return client


ADDRESSES = {1: ("sim-1", 7001), 2: ("sim-2", 7002)}


def transport(network: MemoryNetwork, node: Node, peers: dict[int, tuple[str, int]]
              ) -> Transport:
    return Transport(node.node_id, network.listen(ADDRESSES[node.node_id]), peers,
                     node.on_batch, node.report_unreachable, connect=network.connect)


@pytest.mark.timeout(30)
async def test_two_transports_exchange_over_an_in_memory_network(autojump_clock):
    network = MemoryNetwork()
    a, b = Node(1), Node(2)
    async with trio.open_nursery() as nursery:
        a.transport = transport(network, a, {2: ADDRESSES[2]})
        b.transport = transport(network, b, {1: ADDRESSES[1]})
        assert await nursery.start(a.transport.run) is None  # no socket, no address
        await nursery.start(b.transport.run)
        with trio.fail_after(1):
            await a.transport.wait_peer_connected(2)
            await b.transport.wait_peer_connected(1)
        for index in range(100):
            assert a.transport.send(2, "g", message(1, 2, index))
            assert b.transport.send(1, "h", message(2, 1, index))
        await wait_until(lambda: len(a.received()) == len(b.received()) == 100)
        assert b.received() == [(1, "g", i) for i in range(100)]
        assert a.received() == [(2, "h", i) for i in range(100)]
        await trio.sleep(60)  # a virtual minute of pings: still connected
        assert a.transport.peer_state(2) is PeerState.CONNECTED
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_reconnect_attempts_follow_the_capped_backoff_in_virtual_time(autojump_clock):
    network = MemoryNetwork()  # nobody listens at node 2's address
    a = Node(1)
    async with trio.open_nursery() as nursery:
        a.transport = transport(network, a, {2: ADDRESSES[2]})
        start = trio.current_time()
        await nursery.start(a.transport.run)
        attempts = []
        while len(attempts) < 8:
            await wait_until(lambda: a.transport.registry.get_sample_value(
                "chronik_transport_connect_attempts_total", {"peer": "2"}) > len(attempts))
            attempts.append(trio.current_time() - start)
        gaps = [round(later - earlier, 6) for earlier, later in zip(attempts, attempts[1:])]
        expected = [min(RECONNECT_BACKOFF_INITIAL_S * 2**i, RECONNECT_BACKOFF_MAX_S)
                    for i in range(7)]
        # wait_until polls every 10 ms of virtual time: each gap is exact to that step.
        assert all(abs(g - e) <= 0.011 for g, e in zip(gaps, expected)), (gaps, expected)
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_silent_peer_is_given_up_after_one_ping_interval_and_timeout(autojump_clock):
    network = MemoryNetwork(mute={ADDRESSES[2]})
    a = Node(1)
    async with trio.open_nursery() as nursery:
        a.transport = transport(network, a, {2: ADDRESSES[2]})
        await nursery.start(a.transport.run)
        with trio.fail_after(1):
            await a.transport.wait_peer_connected(2)
        connected_at = trio.current_time()
        assert a.transport.send(2, "g", message(1, 2, 0))
        await wait_until(lambda: a.transport.peer_state(2) is not PeerState.CONNECTED,
                         timeout_s=60)
        given_up_s = trio.current_time() - connected_at
        assert abs(given_up_s - (PING_INTERVAL_S + PING_TIMEOUT_S)) <= 0.011, given_up_s
        assert a.unreachable == []  # written in full before: sent, as far as we can know
        assert not a.transport.send(2, "g", message(1, 2, 1))
        assert a.unreachable == [(2, "g")]
        nursery.cancel_scope.cancel()
