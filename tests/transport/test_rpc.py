"""The request/response route between nodes (transport/rpc.py): a call reaches the peer's
handler and returns its answer; an unknown call, a refused body, a missing caller header
and an unreachable peer fail the call, never the server."""

from __future__ import annotations

import pytest
import trio

from chronik_trio.transport.rpc import RPC_PATH_PREFIX, RpcFailed, RpcRefused
from chronik_trio.transport.transport import Transport

from .helpers import H2Client, Node, cluster, listen, wait_connected

pytestmark = pytest.mark.timeout(30)


async def test_a_call_reaches_the_peers_handler_and_bad_calls_fail_cleanly():
    async with cluster(2) as (a, b):
        await wait_connected([a, b])
        calls = []

        async def echo(from_node: int, body: bytes) -> bytes:
            calls.append(from_node)
            if body == b"bad":
                raise RpcRefused("a body this handler refuses")
            return body[::-1]

        b.transport.add_rpc_handler("echo", echo)
        assert await a.transport.call(2, "echo", b"abc") == b"cba"
        assert await a.transport.call(2, "echo", b"x" * 200_000) == b"x" * 200_000  # beyond one window
        assert calls == [1, 1]
        with pytest.raises(RpcFailed, match="400"):
            await a.transport.call(2, "echo", b"bad")
        with pytest.raises(RpcFailed, match="404"):
            await a.transport.call(2, "nobody-serves-this", b"")
        with pytest.raises(RpcFailed, match="not a peer"):
            await a.transport.call(9, "echo", b"")
        async with H2Client.open(b.address) as client:  # no chronik-from-node header
            response = await client.request("POST", RPC_PATH_PREFIX + "echo", [], b"abc")
        assert response.status == 400
        assert await a.transport.call(2, "echo", b"still") == b"llits"  # the server is unharmed


async def test_calls_reuse_one_connection_per_peer_and_reconnect_after_the_peer_restarts():
    """Sequential calls to a peer share one connection; concurrent ones open their own (kept
    for the next calls); a peer that restarts leaves a stale connection, and the next call
    goes through on a fresh one."""
    a, b = Node(1), Node(2)
    a_listeners, b_listeners = await listen(), await listen()
    a.address, b.address = a_listeners[0].socket.getsockname()[:2], b_listeners[0].socket.getsockname()[:2]

    async def echo(from_node: int, body: bytes) -> bytes:
        await trio.sleep(0.05 if body == b"slow" else 0)
        return body

    a.transport = Transport(1, a_listeners, {2: b.address}, a.on_batch, a.report_unreachable)
    async with trio.open_nursery() as outer:
        await outer.start(a.transport.run)
        for life in range(2):
            listeners = b_listeners if life == 0 else await trio.open_tcp_listeners(b.address[1], host=b.address[0])
            b.transport = Transport(2, listeners, {1: a.address}, b.on_batch, b.report_unreachable)
            b.transport.add_rpc_handler("echo", echo)
            async with trio.open_nursery() as inner:
                await inner.start(b.transport.run)
                opened = a.transport.rpc_connections_opened(2)
                for i in range(5):
                    assert await a.transport.call(2, "echo", b"%d" % i) == b"%d" % i
                assert a.transport.rpc_connections_opened(2) == opened + 1  # one new, for five calls
                if life == 0:
                    async with trio.open_nursery() as calls:
                        for _ in range(3):
                            calls.start_soon(a.transport.call, 2, "echo", b"slow")
                    assert a.transport.rpc_connections_opened(2) == 3  # three at once: three connections
                    for _ in range(6):
                        await a.transport.call(2, "echo", b"again")
                    assert a.transport.rpc_connections_opened(2) == 3  # all kept and reused
                inner.cancel_scope.cancel()  # the peer stops: its connections close
        outer.cancel_scope.cancel()
