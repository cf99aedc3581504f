"""The harness's TCP proxies: every node-to-node and client-to-node link goes through one.

A Proxy listens on 127.0.0.1 and forwards each accepted connection to its target. Its
state (set at any time, applies to live connections at once):

  ok          bytes flow (after `delay_s`, if set)
  cut         live connections are closed and new ones are closed as soon as accepted
              (the peer sees a refused/reset connection: a fast failure)
  blackhole   connections stay open but no byte goes through either way (the peer sees
              silence: a slow failure, as with a dropped route). Bytes are held, not
              dropped, as TCP would retransmit them: they flow again after the heal if
              the connection is still open.

A node dials peer j at the address in its own --peers list, so the harness gives node i the
proxy of link i->j as j's address: cutting that proxy cuts i->j only (one way); cutting the
proxies of i->j and j->i cuts the link both ways.
"""

from __future__ import annotations

import enum
import logging

import trio

log = logging.getLogger(__name__)

CHUNK_BYTES = 65536
# Chunks in flight inside one delayed direction; the reader waits when it is full, so a
# delayed link also loses throughput, as a long link does.
DELAY_QUEUE_CHUNKS = 256
CONNECT_TIMEOUT_S = 5.0
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class LinkState(enum.Enum):
    OK = "ok"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class Proxy:
    """Forwards 127.0.0.1:port (chosen when started) to `target`.

    Args:
        name: for log lines and the timeline (e.g. "1->2", "client->3").
        target: (host, port) to connect to for each accepted connection.
    """

    def __init__(self, name: str, target: tuple[str, int]) -> None:
        self.name = name
        self.target = target
        self.state = LinkState.OK
        self.delay_s = 0.0
        self.port: int | None = None
        self._connections: set[trio.CancelScope] = set()
        self._changed = trio.Event()
        self.connections_total = 0

    def set(self, state: LinkState, delay_s: float | None = None) -> None:
        self.state = state
        if delay_s is not None:
            self.delay_s = delay_s
        if state is LinkState.CUT:
            for scope in list(self._connections):
                scope.cancel()
        self._changed.set()
        self._changed = trio.Event()

    def heal(self) -> None:
        self.set(LinkState.OK, 0.0)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serves until cancelled; started() with the port it listens on."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._serve, listeners, handler_nursery=nursery)

    async def _serve(self, client: trio.SocketStream) -> None:
        self.connections_total += 1
        async with client:
            if self.state is LinkState.CUT:
                return
            scope = trio.CancelScope()
            self._connections.add(scope)
            try:
                with scope:
                    server = None
                    try:
                        with trio.move_on_after(CONNECT_TIMEOUT_S):
                            server = await trio.open_tcp_stream(*self.target)
                    except OSError:
                        pass
                    if server is None:
                        return  # the target refused (a killed node) or is silent: close
                    try:
                        async with server:
                            async with trio.open_nursery() as nursery:
                                nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                                nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
                    except* STREAM_ERRORS:
                        pass  # either side went away: so does the other
            finally:
                self._connections.discard(scope)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream,
                    done: trio.CancelScope) -> None:
        """source -> sink through a queue that holds each chunk until its delivery time."""
        send, receive = trio.open_memory_channel(DELAY_QUEUE_CHUNKS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive, sink, done)
            async with send:
                try:
                    while True:
                        data = await source.receive_some(CHUNK_BYTES)
                        if not data:
                            break
                        while self.state is LinkState.BLACKHOLE:
                            await self._changed.wait()
                        await send.send((trio.current_time() + self.delay_s, data))
                except STREAM_ERRORS:
                    done.cancel()

    async def _deliver(self, receive: trio.MemoryReceiveChannel, sink: trio.SocketStream,
                       done: trio.CancelScope) -> None:
        try:
            async with receive:
                async for deliver_at, data in receive:
                    await trio.sleep_until(deliver_at)
                    while self.state is LinkState.BLACKHOLE:
                        await self._changed.wait()
                    await sink.send_all(data)
            await sink.send_eof() if hasattr(sink, "send_eof") else None
        except STREAM_ERRORS:
            pass
        done.cancel()
