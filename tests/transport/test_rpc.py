"""The request/response route between nodes (transport/rpc.py): a call reaches the peer's
handler and returns its answer; an unknown call, a refused body, a missing caller header
and an unreachable peer fail the call, never the server."""

from __future__ import annotations

import pytest

from chronik_trio.transport.rpc import RPC_PATH_PREFIX, RpcFailed, RpcRefused

from .helpers import H2Client, cluster, wait_connected

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
