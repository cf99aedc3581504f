"""The HTTP/2 side that receives: an ASGI app served by hypercorn on trio.

Routes:
  POST /raft/v1/stream  the Raft ingress: one long-lived request per peer connection, its body
                        a sequence of frames (framing.py). Header `chronik-from-node` names
                        the sending node; every RaftBatch must carry that from_node and our
                        node id as to_node.
  POST /raft/v1/batch   the same frames in one bounded request body (tools, the benchmark).
  POST /rpc/v1/<name>   a request/response call between nodes (rpc.py): the handler
                        registered under <name> answers the body; header
                        `chronik-from-node` names the caller.
  GET  /health          200, a small JSON object.
  GET  /metrics         Prometheus text of the transport's registry.

Bad input is dropped with a log line and `chronik_transport_dropped_total{reason}`; a frame
or body above the limit refuses the rest of that request (413, or on the stream a last
line of body), never the server. hypercorn logs and swallows
exceptions raised by an ASGI app, so the app hands any unexpected exception to `on_fatal`, which
the Transport re-raises in its nursery: a bug in on_batch must stop the node, not vanish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import google.protobuf.message
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..pb import transport_pb2
from .framing import FRAME_KIND_RAFT_BATCH, FRAME_KIND_SNAPSHOT_CHUNK, FrameDecoder, FrameTooLarge
from .metrics import PEER_OTHER, DropReason, TransportMetrics
from .rpc import RPC_PATH_PREFIX, RpcHandler, RpcRefused
from .snapshot import SnapshotAssembler, SnapshotRefused
from .tls import CONNECTION_NODE_KEY, RefusalReason

log = logging.getLogger(__name__)

STREAM_PATH = "/raft/v1/stream"
BATCH_PATH = "/raft/v1/batch"
FROM_NODE_HEADER = b"chronik-from-node"
# What a connection without a peer's certificate may still ask when mutual TLS is on.
PUBLIC_ROUTES = frozenset({("GET", "/health"), ("GET", "/metrics")})

# Log lines for drops, per reason, per interval. Someone sending garbage in a loop must not
# flood the log; the metric still counts every drop, and the next line logged says how many
# went unlogged.
DROP_LOG_LINES_MAX = 10
DROP_LOG_INTERVAL_S = 10.0

# Snapshots half-received at once on one stream: a leader of many groups may be catching a
# peer up on a few of them together; each holds up to snapshot_bytes_max in memory.
SNAPSHOT_ASSEMBLIES_MAX = 4

OnBatch = Callable[[transport_pb2.RaftBatch], None]


class DropLog:
    """Decides which drops get a log line: at most `lines_max` per reason per interval.

    `admit(reason)` returns None to stay quiet, or how many drops of that reason went
    unlogged before this one (0 usually). Time comes from the injected clock.
    """

    def __init__(self, clock: Callable[[], float], lines_max: int = DROP_LOG_LINES_MAX,
                 interval_s: float = DROP_LOG_INTERVAL_S) -> None:
        self._clock = clock
        self._lines_max = lines_max
        self._interval_s = interval_s
        # reason -> [interval start, lines logged in it, drops not logged]
        self._state: dict[DropReason | RefusalReason, list] = {}

    def admit(self, reason: DropReason | RefusalReason) -> int | None:
        now = self._clock()
        state = self._state.setdefault(reason, [now, 0, 0])
        if now - state[0] >= self._interval_s:
            state[0], state[1] = now, 0
        if state[1] >= self._lines_max:
            state[2] += 1
            return None
        state[1] += 1
        unlogged, state[2] = state[2], 0
        return unlogged


class RaftIngressApp:
    """ASGI application of one Transport.

    Args:
        node_id: our node id; batches addressed to anyone else are dropped.
        on_batch: called (synchronously, must not block) with each valid RaftBatch.
        frame_bytes_max: the largest frame payload accepted.
        request_bytes_max: the largest body accepted on BATCH_PATH.
        snapshot_bytes_max: the largest snapshot data rebuilt from chunks.
        peer_label: maps a claimed node id to a bounded metric label.
        health: returns the JSON-able object /health answers.
        on_fatal: receives any unexpected exception raised while serving.
        clock: the time the drop log's rate limit runs on.
        peers_authenticated: mutual TLS is on (tls.py): every request but PUBLIC_ROUTES
            needs a connection whose certificate named a node, and one naming a node may not
            claim another in its chronik-from-node header. Checked before routing, so every
            route inherits it.
        on_refused: called with (RefusalReason, what) for each request so refused.
    """

    def __init__(self, *, node_id: int, on_batch: OnBatch, frame_bytes_max: int,
                 request_bytes_max: int, snapshot_bytes_max: int, metrics: TransportMetrics,
                 peer_label: Callable[[int], str], health: Callable[[], dict],
                 on_fatal: Callable[[BaseException], None],
                 clock: Callable[[], float] = trio.current_time,
                 peers_authenticated: bool = False,
                 on_refused: Callable[[RefusalReason, str], None] = lambda reason, what: None,
                 rpc_handlers: dict[str, RpcHandler] | None = None) -> None:
        self.node_id = node_id
        self.peers_authenticated = peers_authenticated
        self.on_refused = on_refused
        self.on_batch = on_batch
        self.frame_bytes_max = frame_bytes_max
        self.request_bytes_max = request_bytes_max
        self.snapshot_bytes_max = snapshot_bytes_max
        self.metrics = metrics
        self.peer_label = peer_label
        self.health = health
        self.on_fatal = on_fatal
        self.rpc_handlers = rpc_handlers if rpc_handlers is not None else {}
        self._drop_log = DropLog(clock)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            elif scope["type"] == "http":
                await self._route(scope, _Exchange(receive, send))
        except Exception as exc:
            self.on_fatal(exc)
            raise

    async def _route(self, scope: dict, exchange: _Exchange) -> None:
        method, path = scope["method"], scope["path"]
        if self.peers_authenticated and (method, path) not in PUBLIC_ROUTES:
            refusal = self._unauthenticated(scope)
            if refusal is not None:
                self.on_refused(*refusal)
                await exchange.respond(403, b"refused: " + refusal[1].encode() + b"\n")
                return
        if path in (STREAM_PATH, BATCH_PATH):
            if method != "POST":
                await exchange.respond(405, b"POST only\n")
            elif path == STREAM_PATH:
                await self._serve_stream(scope, exchange)
            else:
                await self._serve_batch(scope, exchange)
        elif path.startswith(RPC_PATH_PREFIX) and method == "POST":
            await self._serve_rpc(scope, exchange, path[len(RPC_PATH_PREFIX):])
        elif path == "/health" and method == "GET":
            body = self._observe(lambda: json.dumps(self.health()).encode() + b"\n", path)
            await (exchange.respond(200, body, b"application/json") if body is not None
                   else exchange.respond(500, b"health failed (logged)\n"))
        elif path == "/metrics" and method == "GET":
            body = self._observe(lambda: generate_latest(self.metrics.registry), path)
            await (exchange.respond(200, body, CONTENT_TYPE_LATEST.encode()) if body is not None
                   else exchange.respond(500, b"metrics failed (logged)\n"))
        else:
            await exchange.respond(404, b"not found\n")

    @staticmethod
    def _observe(render: Callable[[], bytes], path: str) -> bytes | None:
        """/health or /metrics rendered, or None (logged) if that failed: what only reports
        on the node must not stop it (unlike a failure on the Raft routes, which is fatal)."""
        try:
            return render()
        except Exception:
            log.exception("GET %s failed; answered 500, the node goes on", path)
            return None

    def _unauthenticated(self, scope: dict) -> tuple[RefusalReason, str] | None:
        """Why mutual TLS refuses this request, or None: it came on a connection whose
        certificate named a node, and claims that node (or no node) as its sender."""
        certified = scope.get("state", {}).get(CONNECTION_NODE_KEY)
        what = f"{scope['method']} {scope['path']} from {_client(scope)}"
        if certified is None:
            return RefusalReason.UNAUTHENTICATED, f"{what}: no node certificate on this connection"
        claimed = [value for name, value in scope["headers"] if name == FROM_NODE_HEADER]
        if claimed and claimed != [str(certified).encode()]:
            return (RefusalReason.NODE_ID_MISMATCH,
                    f"{what}: claims node {b','.join(claimed).decode('ascii', 'replace')}, "
                    f"its certificate names node {certified}")
        return None

    def _claimed_node(self, scope: dict) -> int | None:
        for name, value in scope["headers"]:
            if name == FROM_NODE_HEADER:
                try:
                    node = int(value.decode("ascii"), 10)
                except (UnicodeDecodeError, ValueError):
                    return None
                return node if 0 < node < 2**64 else None
        return None

    async def _serve_stream(self, scope: dict, exchange: _Exchange) -> None:
        from_node = self._claimed_node(scope)
        if from_node is None:
            self._drop_stream(scope, DropReason.BAD_STREAM_HEADERS, "no valid chronik-from-node")
            await exchange.respond(400, b"chronik-from-node header required\n")
            return
        # Answer at once: the response headers tell the sender the stream is accepted.
        await exchange.start(200, b"text/plain")
        decoder = FrameDecoder(self.frame_bytes_max)
        assembler = self._assembler()
        label = self.peer_label(from_node)
        while (chunk := await exchange.receive()) is not None:
            try:
                for frame in decoder.feed(chunk):
                    self._handle_frame(from_node, label, frame.kind, frame.payload, assembler)
            except FrameTooLarge as exc:
                self._drop_stream(scope, DropReason.OVERSIZED, str(exc))
                await exchange.finish(b"frame too large\n")
                return
        if exchange.disconnected:
            return
        if decoder.buffered_bytes:
            self._drop_stream(scope, DropReason.TRUNCATED,
                              f"stream ended inside a frame ({decoder.buffered_bytes} bytes)")
        await exchange.finish(b"")

    async def _serve_batch(self, scope: dict, exchange: _Exchange) -> None:
        from_node = self._claimed_node(scope)
        if from_node is None:
            self._drop_stream(scope, DropReason.BAD_STREAM_HEADERS, "no valid chronik-from-node")
            await exchange.respond(400, b"chronik-from-node header required\n")
            return
        body = bytearray()
        while (chunk := await exchange.receive()) is not None:
            body += chunk
            if len(body) > self.request_bytes_max:
                self._drop_stream(scope, DropReason.OVERSIZED,
                                  f"body above {self.request_bytes_max} bytes")
                await exchange.respond(413, b"request body too large\n")
                return
        if exchange.disconnected:
            return
        decoder = FrameDecoder(self.frame_bytes_max)
        assembler = self._assembler()
        label = self.peer_label(from_node)
        try:
            for frame in decoder.feed(bytes(body)):
                self._handle_frame(from_node, label, frame.kind, frame.payload, assembler)
        except FrameTooLarge as exc:
            self._drop_stream(scope, DropReason.OVERSIZED, str(exc))
            await exchange.respond(413, b"frame too large\n")
            return
        if decoder.buffered_bytes:
            self._drop_stream(scope, DropReason.TRUNCATED, "body ended inside a frame")
            await exchange.respond(400, b"truncated frame\n")
            return
        await exchange.respond(204, b"")

    async def _serve_rpc(self, scope: dict, exchange: _Exchange, name: str) -> None:
        handler = self.rpc_handlers.get(name)
        from_node = self._claimed_node(scope)
        if handler is None or from_node is None:
            await exchange.respond(404 if handler is None else 400,
                                   b"unknown call\n" if handler is None else b"chronik-from-node header required\n")
            return
        body = bytearray()
        while (chunk := await exchange.receive()) is not None:
            body += chunk
            if len(body) > self.request_bytes_max:
                self._drop_stream(scope, DropReason.OVERSIZED, f"body above {self.request_bytes_max} bytes")
                await exchange.respond(413, b"request body too large\n")
                return
        if exchange.disconnected:
            return
        try:
            answer = await handler(from_node, bytes(body))
        except RpcRefused as exc:
            log.warning("call %s from node %d refused: %s", name, from_node, exc)
            await exchange.respond(400, str(exc).encode()[:1000] + b"\n")
            return
        await exchange.respond(200, answer, b"application/x-protobuf")

    def _assembler(self) -> SnapshotAssembler:
        return SnapshotAssembler(self.snapshot_bytes_max, SNAPSHOT_ASSEMBLIES_MAX)

    def _handle_frame(self, from_node: int, label: str, kind: int, payload: bytes,
                      assembler: SnapshotAssembler) -> None:
        self.metrics.received_bytes.labels(label).inc(len(payload))
        if kind == FRAME_KIND_RAFT_BATCH:
            self._handle_batch(from_node, label, payload)
        elif kind == FRAME_KIND_SNAPSHOT_CHUNK:
            self._handle_snapshot_chunk(from_node, label, payload, assembler)
        else:
            self._drop(DropReason.UNKNOWN_KIND, from_node, f"frame kind {kind}")

    def _handle_batch(self, from_node: int, label: str, payload: bytes) -> None:
        batch = transport_pb2.RaftBatch()
        try:
            batch.ParseFromString(payload)
        except google.protobuf.message.DecodeError as exc:
            self._drop(DropReason.MALFORMED, from_node, f"RaftBatch does not parse: {exc}")
            return
        if not self._addressed_right(from_node, batch.from_node, batch.to_node,
                                     len(batch.messages)):
            return
        self._drop_foreign_messages(from_node, batch)
        if batch.messages:
            self.metrics.received_batches.labels(label).inc()
            self.metrics.received_messages.labels(label).inc(len(batch.messages))
            self.on_batch(batch)

    def _handle_snapshot_chunk(self, from_node: int, label: str, payload: bytes,
                               assembler: SnapshotAssembler) -> None:
        chunk = transport_pb2.SnapshotChunk()
        try:
            chunk.ParseFromString(payload)
        except google.protobuf.message.DecodeError as exc:
            self._drop(DropReason.MALFORMED, from_node, f"SnapshotChunk does not parse: {exc}")
            return
        if not self._addressed_right(from_node, chunk.from_node, chunk.to_node, 1):
            return
        sender = getattr(chunk.message, "from")
        if chunk.message.to != self.node_id or sender != from_node:
            self._drop(DropReason.WRONG_FROM_NODE if sender != from_node
                       else DropReason.WRONG_TO_NODE, from_node,
                       f"snapshot of group {chunk.group!r} from {sender} to {chunk.message.to}")
            return
        try:
            message = assembler.add(chunk)
        except SnapshotRefused as exc:
            self._drop(DropReason.SNAPSHOT_REFUSED, from_node, str(exc))
            return
        if message is None:
            return
        batch = transport_pb2.RaftBatch(
            from_node=from_node, to_node=self.node_id,
            messages=[transport_pb2.GroupMessage(group=chunk.group, message=message)])
        self.metrics.received_snapshots.labels(label).inc()
        self.metrics.received_batches.labels(label).inc()
        self.metrics.received_messages.labels(label).inc()
        self.on_batch(batch)

    def _addressed_right(self, from_node: int, claimed_from: int, to_node: int,
                         count: int) -> bool:
        if to_node != self.node_id:
            self._drop(DropReason.WRONG_TO_NODE, from_node, f"frame for node {to_node}", count)
            return False
        if claimed_from != from_node:
            self._drop(DropReason.WRONG_FROM_NODE, from_node,
                       f"frame claims from_node {claimed_from}", count)
            return False
        return True

    def _drop_foreign_messages(self, from_node: int, batch: transport_pb2.RaftBatch) -> None:
        """Removes messages whose own from/to disagree with the batch they came in."""
        messages = batch.messages
        for i in range(len(messages) - 1, -1, -1):
            m = messages[i].message
            sender = getattr(m, "from")
            if m.to != self.node_id:
                self._drop(DropReason.WRONG_TO_NODE, from_node,
                           f"message of group {messages[i].group!r} to node {m.to}")
                del messages[i]
            elif sender != from_node:
                self._drop(DropReason.WRONG_FROM_NODE, from_node,
                           f"message of group {messages[i].group!r} from node {sender}")
                del messages[i]

    def _drop(self, reason: DropReason, from_node: int, what: str, count: int = 1) -> None:
        self.metrics.drop(reason, max(count, 1))
        unlogged = self._drop_log.admit(reason)
        if unlogged is not None:
            log.warning("node %d: dropped from node %d (%s): %s%s", self.node_id, from_node,
                        reason.value, what, _unlogged_note(unlogged))

    def _drop_stream(self, scope: dict, reason: DropReason, what: str) -> None:
        self.metrics.drop(reason)
        unlogged = self._drop_log.admit(reason)
        if unlogged is not None:
            log.warning("node %d: refused request %s %s from %s (%s): %s%s", self.node_id,
                        scope["method"], scope["path"], scope.get("client"), reason.value,
                        what, _unlogged_note(unlogged))


def _client(scope: dict) -> str:
    client = scope.get("client")
    return "%s:%s" % tuple(client[:2]) if client else "an unknown address"


def _unlogged_note(unlogged: int) -> str:
    return f" ({unlogged} more of this reason not logged)" if unlogged else ""


class _Exchange:
    """One HTTP request and its response, which never ends before the request does.

    hypercorn 0.18 forgets a stream once its response has ended, and a DATA frame that then
    arrives for it raises KeyError in the connection's task, which ends the whole server.
    So an early answer (an error, a refusal) is written at once but the response is only
    ended after the request body has ended or the client has gone; what comes meanwhile
    is read and discarded (the connection's read timeout bounds a client that never ends).
    """

    def __init__(self, receive: Callable, send: Callable) -> None:
        self._receive = receive
        self._send = send
        self.request_ended = False
        self.disconnected = False

    async def receive(self) -> bytes | None:
        """The next piece of the request body; None once it ended or the client left."""
        if self.request_ended:
            return None
        event = await self._receive()
        if event["type"] != "http.request":
            self.request_ended = self.disconnected = True
            return None
        if not event.get("more_body", False):
            self.request_ended = True
        return event.get("body", b"")

    async def start(self, status: int, content_type: bytes) -> None:
        await self._send({"type": "http.response.start", "status": status,
                          "headers": [(b"content-type", content_type)]})

    async def finish(self, body: bytes) -> None:
        """Writes the last of the response body, then ends it once the request has ended."""
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})
        while await self.receive() is not None:
            pass
        if not self.disconnected:
            await self._send({"type": "http.response.body", "body": b""})

    async def respond(self, status: int, body: bytes, content_type: bytes = b"text/plain"
                      ) -> None:
        await self.start(status, content_type)
        await self.finish(body)


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def peer_label_for(peers: Callable[[], object]) -> Callable[[int], str]:
    """A label function: the peer id if configured, else PEER_OTHER (bounded cardinality)."""
    def label(node_id: int) -> str:
        return str(node_id) if node_id in peers() else PEER_OTHER  # type: ignore[operator]
    return label
