"""The request/response route of the peer transport: POST /rpc/v1/<name>, one request per
HTTP/2 stream, answered with the handler's bytes.

It rides on the transport's own listener and its `connect` seam (so it is served and
dialled exactly as the Raft stream is, with whatever that channel is secured with), for
the few calls nodes make to each other outside Raft: the transaction coordinator's markers
to a partition leader and a leader's verification at the coordinator (node/txn_routes.py).
Bodies are protobuf messages the caller and the handler agree on (proto/txn.proto).

Client: RpcPeer, one per peer, keeps the connections it opened and reuses them: a call
takes an idle connection (or opens one: concurrent calls each get their own), runs one
HTTP/2 stream on it, and gives it back. An idle connection is kept for at most RPC_IDLE_S
(below the server's read timeout, which closes quiet connections) and at most
RPC_IDLE_MAX of them. A call whose connection fails before an answer, on a reused
connection (the peer restarted or closed it), is tried again on the next idle one, at
last on a fresh one; the handlers are idempotent (markers, adding a partition). A call
that fails on a fresh connection, or is answered other than 200, fails with RpcFailed
(retriable by the caller): a connection error, a non-200 answer, a body above the limit or
the timeout. close() (the node stopping, the peer removed) closes them all. Server: a
handler that raises RpcRefused answers 400 with its message; an unknown name 404.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

log = logging.getLogger(__name__)

RPC_PATH_PREFIX = "/rpc/v1/"
RPC_BODY_BYTES_MAX = 1 << 20
RPC_TIMEOUT_S = 10.0

# (calling node id, request body) -> response body
RpcHandler = Callable[[int, bytes], Awaitable[bytes]]
Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]


class RpcFailed(Exception):
    """The call did not get an answer (the peer may or may not have acted on it)."""


class RpcRefused(Exception):
    """Raised by a handler: the request is malformed (answered 400, logged)."""


RPC_IDLE_S = 5.0  # an idle connection is reused this long (the server closes quiet ones later)
RPC_IDLE_MAX = 4  # idle connections kept per peer
_CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.ProtocolError)


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.idle_since = 0.0


class RpcPeer:
    """The calls to one peer's rpc route, over connections kept between calls."""

    def __init__(self, connect: Connect, node_id: int, address: tuple[str, int], *, from_header: bytes) -> None:
        self.connect = connect
        self.node_id = node_id
        self.address = address
        self.from_header = from_header
        self.opened = 0  # connections opened so far (tests count them)
        self._idle: list[_Connection] = []
        self._closed = False

    async def call(self, name: str, body: bytes, *, timeout_s: float = RPC_TIMEOUT_S,
                   response_bytes_max: int = RPC_BODY_BYTES_MAX) -> bytes:
        """POST body to RPC_PATH_PREFIX + name at the peer; the answer's body."""
        host, port = self.address
        if self._closed:
            raise RpcFailed(f"{name} to {host}:{port}: closed")
        try:
            with trio.fail_after(timeout_s):
                while True:
                    conn, reused = await self._take(), True
                    if conn is None:
                        conn, reused = await self._open(), False
                    try:
                        answer = await _exchange(conn, self.node_id, f"{host}:{port}".encode(), name, body,
                                                 self.from_header, response_bytes_max)
                    except _CONNECTION_ERRORS + (RpcFailed,) as exc:
                        await trio.aclose_forcefully(conn.stream)
                        if reused and not isinstance(exc, _Answered):
                            continue  # a stale connection: once more on a fresh one
                        raise
                    except BaseException:
                        await trio.aclose_forcefully(conn.stream)  # cancelled mid-call: unusable
                        raise
                    await self._give_back(conn)
                    return answer
        except (*_CONNECTION_ERRORS, trio.TooSlowError) as exc:
            raise RpcFailed(f"{name} to {host}:{port}: {exc!r}") from None

    async def _take(self) -> _Connection | None:
        """The most recently used idle connection; expired ones are closed."""
        while self._idle:
            conn = self._idle.pop()
            if trio.current_time() - conn.idle_since < RPC_IDLE_S:
                return conn
            await trio.aclose_forcefully(conn.stream)
        return None

    async def _open(self) -> _Connection:
        stream = await self.connect(*self.address)
        self.opened += 1
        return _Connection(stream)

    async def _give_back(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= RPC_IDLE_MAX:
            await trio.aclose_forcefully(conn.stream)
            return
        conn.idle_since = trio.current_time()
        self._idle.append(conn)

    async def close(self) -> None:
        """Closes the idle connections; calls in flight close theirs when they end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)


class _Answered(RpcFailed):
    """The peer answered (a non-200 status, a reset stream, an oversized body): not a stale
    connection, so not tried again."""


async def _exchange(connection: _Connection, node_id: int, authority: bytes, name: str, body: bytes,
                    from_header: bytes, response_bytes_max: int) -> bytes:
    conn, stream = connection.h2, connection.stream
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", authority),
                            (b":path", (RPC_PATH_PREFIX + name).encode()),
                            (b"content-length", str(len(body)).encode()),
                            (from_header, str(node_id).encode())])
    view, ended = memoryview(body), False
    status, answer = None, bytearray()
    while True:
        while view:
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if window <= 0:
                break
            conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
        if not view and not ended:
            conn.end_stream(sid)
            ended = True
        await stream.send_all(conn.data_to_send())
        data = await stream.receive_some(65536)
        if not data:
            raise RpcFailed(f"{name}: connection closed before the answer")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                status = dict(event.headers).get(b":status")
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                answer += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
                if len(answer) > response_bytes_max:
                    raise _Answered(f"{name}: answer above {response_bytes_max} bytes")
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                raise _Answered(f"{name}: stream reset by the peer")
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise RpcFailed(f"{name}: the peer closed the connection (GOAWAY)")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                await stream.send_all(conn.data_to_send())  # window updates, settings acks
                if status != b"200":
                    raise _Answered(f"{name}: answered {status!r}: {bytes(answer[:200])!r}")
                return bytes(answer)
