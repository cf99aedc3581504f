"""Helpers of the transport tests: transports on 127.0.0.1, a small h2 client, waiting."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import attrs
import h2.config
import h2.connection
import h2.events
import trio

from chronik_trio.pb import raft_pb2, transport_pb2
from chronik_trio.transport import Transport

HOST = "127.0.0.1"
WAIT_STEP_S = 0.01


def message(from_: int, to: int, index: int, data: bytes = b"") -> raft_pb2.Message:
    m = raft_pb2.Message(type=raft_pb2.MSG_APPEND, to=to, term=1, index=index,
                         entries=[raft_pb2.Entry(term=1, index=index + 1, data=data)])
    setattr(m, "from", from_)
    return m


@attrs.define
class Node:
    """One transport and what its callbacks saw."""

    node_id: int
    transport: Transport = None  # type: ignore[assignment]
    address: tuple[str, int] = (HOST, 0)
    batches: list[transport_pb2.RaftBatch] = attrs.Factory(list)
    unreachable: list[tuple[int, str]] = attrs.Factory(list)

    def on_batch(self, batch: transport_pb2.RaftBatch) -> None:
        self.batches.append(batch)

    def report_unreachable(self, peer_id: int, group: str) -> None:
        self.unreachable.append((peer_id, group))

    def received(self) -> list[tuple[int, str, int]]:
        """(from node, group, index) of every message received, in order."""
        return [(b.from_node, gm.group, gm.message.index)
                for b in self.batches for gm in b.messages]


async def listen() -> list[trio.SocketListener]:
    return await trio.open_tcp_listeners(0, host=HOST)


@contextlib.asynccontextmanager
async def cluster(count: int, per_node: Callable[[int], dict] | None = None,
                  **transport_kwargs) -> AsyncIterator[list[Node]]:
    """`count` transports (ids 1..count) that know each other, running until the block ends;
    per_node(node_id) gives more Transport arguments of one node (e.g. its TLS)."""
    nodes = [Node(i + 1) for i in range(count)]
    listeners = [await listen() for _ in nodes]
    for node, ls in zip(nodes, listeners):
        node.address = ls[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:
        for node, ls in zip(nodes, listeners):
            peers = {n.node_id: n.address for n in nodes if n is not node}
            node.transport = Transport(node.node_id, ls, peers, node.on_batch, node.report_unreachable,
                                       **transport_kwargs, **(per_node(node.node_id) if per_node else {}))
            await nursery.start(node.transport.run)
        yield nodes
        nursery.cancel_scope.cancel()


async def wait_connected(nodes: list[Node], timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        for node in nodes:
            for peer in nodes:
                if peer is not node and node.transport.peer_state(peer.node_id) is not None:
                    await node.transport.wait_peer_connected(peer.node_id)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(WAIT_STEP_S)


@attrs.define
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class H2Client:
    """A small prior-knowledge h2c client for tests: requests one at a time, or raw bytes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, address: tuple[str, int]) -> AsyncIterator[H2Client]:
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            yield cls(stream)

    async def request(self, method: str, path: str, headers: list[tuple[bytes, bytes]] = (),
                      body: bytes = b"", timeout_s: float = 5.0) -> Response:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", method.encode()), (b":scheme", b"http"),
                                     (b":authority", b"test"), (b":path", path.encode()),
                                     *headers], end_stream=not body)
        pending = memoryview(body)
        status, response_headers, data = 0, {}, bytearray()
        with trio.fail_after(timeout_s):
            while True:
                while pending:
                    window = min(self.conn.local_flow_control_window(sid),
                                 self.conn.max_outbound_frame_size)
                    if window <= 0:
                        break
                    chunk, pending = pending[:window], pending[window:]
                    self.conn.send_data(sid, bytes(chunk), end_stream=not pending)
                await self.stream.send_all(self.conn.data_to_send())
                received = await self.stream.receive_some(65536)
                if not received:
                    raise ConnectionError("server closed the connection")
                for event in self.conn.receive_data(received):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                        response_headers = dict(event.headers)
                        status = int(response_headers[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                            event.stream_id)
                        if event.stream_id == sid:
                            data += event.data
                    elif (isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset))
                          and event.stream_id == sid):
                        await self.stream.send_all(self.conn.data_to_send())
                        return Response(status, response_headers, bytes(data))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        raise ConnectionError(f"connection terminated: {event}")

    async def send_after_answer(self, path: str, headers: list[tuple[bytes, bytes]],
                                first: bytes, rest: list[bytes], end: bool,
                                wait_s: float = 0.5) -> None:
        """Opens a POST, sends `first`, waits for the answer to start, then keeps sending
        `rest` (what a client does that ignores an early response), and ends the stream
        (then waits for the response to end) or just leaves."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                     (b":authority", b"test"), (b":path", path.encode()),
                                     *headers])
        self.conn.send_data(sid, first[:16384])
        await self.stream.send_all(self.conn.data_to_send())
        if not await self._wait_for(sid, h2.events.ResponseReceived, wait_s):
            return
        for piece in rest:
            if self.conn.local_flow_control_window(sid) < len(piece[:16384]):
                break
            self.conn.send_data(sid, piece[:16384])
        if end:
            self.conn.end_stream(sid)
        await self.stream.send_all(self.conn.data_to_send())
        if end:
            await self._wait_for(sid, (h2.events.StreamEnded, h2.events.StreamReset), wait_s)

    async def _wait_for(self, sid: int, kinds, wait_s: float) -> bool:
        """Reads until an event of `kinds` for stream `sid`; False if it never came."""
        with trio.move_on_after(wait_s):
            while True:
                received = await self.stream.receive_some(65536)
                if not received:
                    return False
                for event in self.conn.receive_data(received):
                    if isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                            event.stream_id)
                    if isinstance(event, kinds) and getattr(event, "stream_id", 0) == sid:
                        await self.stream.send_all(self.conn.data_to_send())
                        return True
                    if isinstance(event, h2.events.ConnectionTerminated):
                        return False
                await self.stream.send_all(self.conn.data_to_send())
        return False
