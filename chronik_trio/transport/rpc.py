"""The request/response route of the peer transport: POST /rpc/v1/<name>, one request per
HTTP/2 stream, answered with the handler's bytes.

It rides on the transport's own listener and its `connect` seam (so it is served and
dialled exactly as the Raft stream is, with whatever that channel is secured with), for
the few calls nodes make to each other outside Raft: the transaction coordinator's markers
to a partition leader and a leader's verification at the coordinator (node/txn_routes.py).
Bodies are protobuf messages the caller and the handler agree on (proto/txn.proto).

Client: one connection per call (these calls are per transaction, not per record); the
call fails with RpcFailed (retriable by the caller) on any connection error, a non-200
answer, a body above the limit or the timeout. Server: a handler that raises RpcRefused
answers 400 with its message; an unknown name 404.
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


async def call(connect: Connect, node_id: int, address: tuple[str, int], name: str, body: bytes, *,
               from_header: bytes, timeout_s: float = RPC_TIMEOUT_S,
               response_bytes_max: int = RPC_BODY_BYTES_MAX) -> bytes:
    """POST body to RPC_PATH_PREFIX + name at address; the answer's body."""
    host, port = address
    try:
        with trio.fail_after(timeout_s):
            stream = await connect(host, port)
            async with stream:
                return await _exchange(stream, node_id, f"{host}:{port}".encode(), name, body, from_header,
                                       response_bytes_max)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
            h2.exceptions.ProtocolError) as exc:
        raise RpcFailed(f"{name} to {host}:{port}: {exc!r}") from None


async def _exchange(stream: trio.abc.Stream, node_id: int, authority: bytes, name: str, body: bytes,
                    from_header: bytes, response_bytes_max: int) -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
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
                    raise RpcFailed(f"{name}: answer above {response_bytes_max} bytes")
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                raise RpcFailed(f"{name}: stream reset by the peer")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                if status != b"200":
                    raise RpcFailed(f"{name}: answered {status!r}: {bytes(answer[:200])!r}")
                return bytes(answer)
