"""Serving the ASGI app with hypercorn's trio worker, with HTTP/2 windows sized for Raft.

hypercorn.trio.serve would do, except that hypercorn (0.18) has no setting for the HTTP/2
flow-control windows or the advertised max frame size: its connections keep the protocol
defaults (64 KiB windows, 16 KiB frames), and a sender of big appends then waits for a
WINDOW_UPDATE every 32 KiB. Measured here (docs/transport.md): 64 KiB messages at ~37 MB/s
with the defaults, ~124 MB/s with 8 MiB windows and 1 MiB frames. So this module is the
small part of hypercorn.trio.run.worker_serve we need (no lifespan, no QUIC; TLS is done
before hypercorn sees a stream, by the `accept` hook: tls.py),
with a TCPServer that, when a connection turns out to be HTTP/2, sends a SETTINGS frame with
bigger windows and frame size, and a WINDOW_UPDATE for the connection window. Both are
ordinary HTTP/2 (RFC 9113 6.5, 6.9); h2 applies our new limits once the peer acknowledges.

Each connection also runs inside its own boundary: hypercorn failing on what one client sent
closes that connection, not the server (see serve_listeners).

It also takes ready-made trio Listeners, the node's seam for its listeners. hypercorn asks a
plain stream's `.socket` for the peer's address; a stream without one (an in-memory stream of
a simulated network) gets a stand-in that gives a placeholder address. Everything used from
hypercorn is pinned (pyproject) and covered by tests/transport.
"""

from __future__ import annotations

import binascii
import functools
import logging
import socket
from collections.abc import Awaitable, Callable

import h2.settings
import hyperframe.frame
import hypercorn.config
import trio
from hypercorn.events import RawData
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

log = logging.getLogger(__name__)


def _raw_data_repr_head(data: bytes | None) -> str:
    """hyperframe's _raw_data_repr, same output, hexlifying only the 10 bytes it shows."""
    if not data:
        return "None"
    r = binascii.hexlify(data[:11]).decode("ascii")
    return "<hex:" + (r[:20] + "..." if len(r) > 20 else r) + ">"


# h2 (4.4) formats every received frame for a trace log line whether or not anything logs
# it (`logger.trace("Received frame: %s", repr(frame))`), and hyperframe's repr hexlifies the
# frame's whole body to show 20 hex digits of it: with 1 MiB DATA frames, 10.6 % of a node's
# time in a 3-node produce run (py-spy). Same text, a constant cost.
hyperframe.frame._raw_data_repr = _raw_data_repr_head

# Receive windows (per stream and per connection) we give every HTTP/2 peer. Big enough that
# a sender keeps several 1 MiB DATA frames in flight on loopback or a LAN; it also bounds how
# much one connection can make us hold beyond hypercorn's per-stream app queue.
H2_WINDOW_BYTES = 8 * 2**20
# The largest DATA frame we accept (the protocol maximum is 2**24 - 1): fewer frames per
# byte, fewer trips through hypercorn.
H2_FRAME_BYTES_MAX = 2**20
# The protocol's initial connection window, which only WINDOW_UPDATE frames can grow.
_H2_INITIAL_WINDOW_BYTES = 65535


class _RaftTCPServer(TCPServer):
    """hypercorn's TCPServer, which enlarges the windows of a connection once it is HTTP/2."""

    _windows_sent = False

    async def protocol_send(self, event: object) -> None:
        if isinstance(event, RawData) and not self._windows_sent:
            inner = getattr(getattr(self, "protocol", None), "protocol", None)
            if isinstance(inner, H2Protocol):
                self._windows_sent = True
                connection = inner.connection
                connection.update_settings({
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW_BYTES,
                    h2.settings.SettingCodes.MAX_FRAME_SIZE: H2_FRAME_BYTES_MAX})
                connection.increment_flow_control_window(
                    H2_WINDOW_BYTES - _H2_INITIAL_WINDOW_BYTES)
                # h2 applies a new local max frame size when the peer acknowledges it, but
                # only from its next receive_data call: a peer's ACK and its first big frame
                # in one read would be refused (FRAME_SIZE_ERROR). Accepting big frames
                # before we have announced them is harmless, so do it now.
                connection.max_inbound_frame_size = H2_FRAME_BYTES_MAX
                event = RawData(data=event.data + connection.data_to_send())
        await super().protocol_send(event)


# What a stream without a socket reports as both ends' address.
SOCKETLESS_ADDRESS = ("0.0.0.0", 0)


class _SocketStandIn:
    """The part of a socket hypercorn's TCPServer reads (for the ASGI scope's addresses)."""

    family = socket.AF_INET

    def getpeername(self) -> tuple[str, int]:
        return SOCKETLESS_ADDRESS

    def getsockname(self) -> tuple[str, int]:
        return SOCKETLESS_ADDRESS


class _SocketlessStream(trio.abc.Stream):
    """A stream without a socket, with the stand-in hypercorn asks for."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.socket = _SocketStandIn()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


# Given each accepted stream and the peer's name: the stream to serve (e.g. TLS over it) and
# the connection's state (copied into every request's ASGI scope), or None to close it.
Accept = Callable[[trio.abc.Stream, str], Awaitable[tuple[trio.abc.Stream, dict] | None]]


async def serve_listeners(app: object, config: hypercorn.config.Config,
                          listeners: list[trio.abc.Listener],
                          on_connection_failed: Callable[[str, BaseException], None], *,
                          accept: Accept | None = None,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
    """Serves `app` (ASGI, without lifespan events) on `listeners` until cancelled.

    A connection whose hypercorn task fails is closed and reported to
    `on_connection_failed(peer, exception)`; the others go on. `accept`, when given, sees
    every stream first (the TLS handshake and the peer's identity, tls.py).
    """
    context = WorkerContext(None)
    wrapped_app = wrap_app(app, config.wsgi_max_body_size, "asgi")

    async def handler(stream: trio.abc.Stream) -> None:
        peer = _peer_name(stream)
        if not hasattr(stream, "socket") and not hasattr(stream, "do_handshake"):
            stream = _SocketlessStream(stream)
        try:
            state: dict = {}
            if accept is not None:
                accepted = await accept(stream, peer)
                if accepted is None:
                    await trio.aclose_forcefully(stream)
                    return
                stream, state = accepted
            await _RaftTCPServer(wrapped_app, config, context, ConnectionState(state), stream)
        except* Exception as group:
            # The boundary of one connection. Our app's own exceptions never arrive here
            # (hypercorn catches them; the app hands them to on_fatal, which stops the
            # node). What does is hypercorn or h2 failing on what one client sent, e.g.
            # KeyError for DATA on a stream hypercorn has forgotten, or BusyResourceError
            # when it writes from two tasks at once (both found by
            # tests/transport/test_bad_input.py), or the TLS layer failing in a way accept
            # did not foresee. That must cost this connection only; trio.serve_listeners
            # would let it end the whole server.
            await trio.aclose_forcefully(stream)
            on_connection_failed(peer, group)

    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(trio.serve_listeners, handler, listeners,
                                              handler_nursery=nursery))
        task_status.started()


def _peer_name(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return repr(stream)
    try:
        return "%s:%d" % sock.getpeername()[:2]
    except OSError:
        return "a peer that already left"
