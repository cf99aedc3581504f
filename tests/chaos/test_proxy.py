"""The harness's TCP proxy: ok forwards (after a delay if set), cut closes connections and
refuses new ones, blackhole holds bytes until the heal."""

from __future__ import annotations

import pytest
import trio

from chaos.proxy import LinkState, Proxy

pytestmark = pytest.mark.timeout(30)


async def echo_server(nursery: trio.Nursery) -> int:
    async def echo(stream: trio.SocketStream) -> None:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    listeners = await nursery.start(trio.serve_tcp, echo, 0)
    return listeners[0].socket.getsockname()[1]


async def roundtrip(stream: trio.SocketStream, data: bytes) -> bytes:
    await stream.send_all(data)
    got = b""
    while len(got) < len(data):
        chunk = await stream.receive_some(1024)
        if not chunk:
            break
        got += chunk
    return got


async def test_ok_cut_blackhole_delay_and_heal():
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        proxy = Proxy("client->1", ("127.0.0.1", port))
        proxy_port = await nursery.start(proxy.run)
        stream = await trio.open_tcp_stream("127.0.0.1", proxy_port)
        assert await roundtrip(stream, b"hello") == b"hello"

        proxy.set(LinkState.BLACKHOLE)
        await stream.send_all(b"held")
        with trio.move_on_after(0.3) as quiet:
            await stream.receive_some(1024)
        assert quiet.cancelled_caught  # nothing came back while black-holed
        proxy.heal()
        with trio.fail_after(5):
            assert await stream.receive_some(1024) == b"held"  # held, not dropped

        proxy.set(LinkState.OK, delay_s=0.2)
        start = trio.current_time()
        assert await roundtrip(stream, b"slow") == b"slow"
        assert trio.current_time() - start >= 0.4  # delayed both ways
        proxy.heal()

        proxy.set(LinkState.CUT)
        with trio.fail_after(5):
            assert await stream.receive_some(1024) == b""  # the live connection was closed
        refused = await trio.open_tcp_stream("127.0.0.1", proxy_port)
        with trio.fail_after(5):
            try:
                assert await refused.receive_some(1024) == b""  # a new one is closed at once
            except trio.BrokenResourceError:
                pass
        proxy.heal()
        again = await trio.open_tcp_stream("127.0.0.1", proxy_port)
        assert await roundtrip(again, b"back") == b"back"
        nursery.cancel_scope.cancel()
