"""Transport: the Raft transport of one node (server + one sender task per peer)."""

from __future__ import annotations

import functools
from collections.abc import Callable
import logging

import hypercorn.config
import trio
from prometheus_client import CollectorRegistry

from ..pb import raft_pb2
from .client import (PING_INTERVAL_S, Connect, PeerSender, PeerState, ReportSnapshot,
                     ReportUnreachable)
from .metrics import DropReason, TransportMetrics
from . import rpc
from .server import FROM_NODE_HEADER, DropLog, OnBatch, RaftIngressApp, peer_label_for
from .serving import serve_listeners
from .tls import CONNECTION_NODE_KEY, PeerRefused, PeerTLS, RefusalReason, accept_peer, connect_peer

log = logging.getLogger(__name__)

# The largest frame (a RaftBatch or a snapshot chunk) sent or accepted. Raft's max_size_per_msg must stay
# well below it: a message that does not fit is dropped. 16 MiB holds a few 1 MB entries per
# append with room for the envelope, and bounds what one connection makes us buffer.
FRAME_BYTES_MAX_DEFAULT = 16 * 2**20
# hypercorn settings. One stream per peer connection is all a sender opens; a few more let
# tools and the per-request route work, and bound the server's memory per connection (each
# stream may hold max_app_queue_size chunks of up to H2_FRAME_BYTES_MAX).
H2_STREAMS_MAX = 8
# A connection carrying per-request traffic must not be closed every 1000 requests
# (hypercorn's default): reconnecting costs more than the requests.
KEEP_ALIVE_REQUESTS_MAX = 2**31
# A connection that sends nothing for this long is closed. Senders ping every
# PING_INTERVAL_S, so only dead or stuck clients hit it; it frees what they hold.
SERVER_READ_TIMEOUT_S = 10 * PING_INTERVAL_S
# The largest snapshot rebuilt from chunks. The receiver holds it in memory (as the Raft
# message it becomes), so it is a memory bound; partition snapshots are state, not the log.
SNAPSHOT_BYTES_MAX_DEFAULT = 256 * 2**20


class TransportFailed(Exception):
    """Serving failed unexpectedly (a bug, e.g. in on_batch): the node must stop."""


class Transport:
    """The HTTP/2 Raft transport of node `node_id`.

    Args:
        node_id: this node's id (> 0).
        listen: (host, port) to listen on, port 0 for any; or ready trio Listeners (the seam
            for listeners made by the caller, e.g. of a simulated network), which the
            transport closes.
        peers: peer id -> (host, port) of its Raft port.
        on_batch: called with each valid chronik.transport.RaftBatch received, from the
            server's task; synchronous and must not block (queue the work).
        report_unreachable: called with (peer_id, group) for each message dropped because
            the peer's queue was full or it had no connection, and once per group when a
            connection breaks with messages still queued. Synchronous, must not block;
            called from send() itself and from sender tasks.
        report_snapshot: called with (peer_id, group, ok) for each MSG_SNAPSHOT sent: ok once
            its last chunk is written, not ok when it was dropped. Same rules as
            report_unreachable (which is called as well when a snapshot is dropped).
        frame_bytes_max: the largest frame (RaftBatch or snapshot chunk) sent or received.
        snapshot_bytes_max: the largest snapshot data accepted from a peer.
        registry: where metrics go; by default a new CollectorRegistry of this transport.
        health: extra JSON-able facts (the node's) merged into what /health answers.
        connect: opens a stream to (host, port); the seam for a simulated network.
        on_peer_down: called with peer_id whenever the connection to it breaks or cannot be
            made (a hint that its process died, sooner than silence shows it); may also be
            set as the attribute of that name after construction. Synchronous, must not block.
        tls: mutual TLS between nodes (tls.py): the listeners and every connection made
            through `connect` speak TLS, both ends show a certificate of the cluster's CA
            naming their node id. None: cleartext HTTP/2.
        public_listen: (host, port) or ready Listeners serving only /health and /metrics
            (server.py's PUBLIC_ROUTES when `tls` is on), in cleartext, for monitoring without
            a node certificate. None: no such listener.
    """

    def __init__(self, node_id: int, listen: tuple[str, int] | list[trio.abc.Listener],
                 peers: dict[int, tuple[str, int]], on_batch: OnBatch,
                 report_unreachable: ReportUnreachable, *,
                 report_snapshot: ReportSnapshot | None = None,
                 frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
                 snapshot_bytes_max: int = SNAPSHOT_BYTES_MAX_DEFAULT,
                 registry: CollectorRegistry | None = None,
                 health: Callable[[], dict] | None = None,
                 connect: Connect = trio.open_tcp_stream,
                 on_peer_down: Callable[[int], None] | None = None,
                 tls: PeerTLS | None = None,
                 public_listen: tuple[str, int] | list[trio.abc.Listener] | None = None
                 ) -> None:
        assert node_id > 0 and node_id not in peers, (node_id, peers)
        self.node_id = node_id
        self.tls = tls
        self._public_listen = public_listen
        self.public_address: tuple[str, int] | None = None
        self._refusal_log = DropLog(trio.current_time)
        self.on_peer_down = on_peer_down
        self.registry = registry if registry is not None else CollectorRegistry()
        self._extra_health = health
        self.metrics = TransportMetrics(self.registry)
        self.frame_bytes_max = frame_bytes_max
        self._listen = listen
        self._report_unreachable = report_unreachable
        self._report_snapshot = report_snapshot
        self._connect = connect
        self._senders: dict[int, PeerSender] = {}
        self._sender_scopes: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._fatal: BaseException | None = None
        self._fatal_event = trio.Event()
        self.listen_address: tuple[str, int] | None = None
        self.rpc_handlers: dict[str, rpc.RpcHandler] = {}
        self._rpc_peers: dict[int, rpc.RpcPeer] = {}  # calls to each peer, on connections kept
        self.app = RaftIngressApp(
            node_id=node_id, on_batch=on_batch, frame_bytes_max=frame_bytes_max,
            request_bytes_max=frame_bytes_max, snapshot_bytes_max=snapshot_bytes_max,
            metrics=self.metrics,
            peer_label=peer_label_for(lambda: self._senders), health=self._health,
            on_fatal=self._on_fatal, peers_authenticated=tls is not None,
            on_refused=self._refused, rpc_handlers=self.rpc_handlers)
        for peer_id, address in peers.items():
            self.add_peer(peer_id, address)

    def send(self, peer_id: int, group: str, message: raft_pb2.Message | bytes) -> bool:
        """Queues a Raft message (or an encoded one) of `group` for `peer_id`; never blocks.

        Returns False when it was dropped (unknown peer, no connection, full queue, too
        large); report_unreachable has then been called. A MSG_SNAPSHOT must be given as a
        Message: it is sent in chunks (interleaved with batches) and ends in report_snapshot.
        """
        sender = self._senders.get(peer_id)
        if sender is None:
            self.metrics.drop(DropReason.PEER_UNKNOWN)
            self._report_unreachable(peer_id, group)
            if (self._report_snapshot is not None and isinstance(message, raft_pb2.Message)
                    and message.type == raft_pb2.MSG_SNAPSHOT):
                self._report_snapshot(peer_id, group, False)
            return False
        return sender.enqueue(group, message)

    @property
    def connect(self) -> Connect:
        """The stream opener this transport was given (TCP, or a simulated network's),
        without the peers' TLS: the node also reaches a member's Kafka listener with it when
        it joins (membership.kafka_call), so that call goes where the node's traffic goes."""
        return self._connect

    def add_rpc_handler(self, name: str, handler: rpc.RpcHandler) -> None:
        """Serve POST /rpc/v1/<name> with handler (rpc.py)."""
        self.rpc_handlers[name] = handler

    async def call(self, peer_id: int, name: str, body: bytes, *, timeout_s: float = rpc.RPC_TIMEOUT_S) -> bytes:
        """A request/response call to a peer's handler `name` (rpc.py), over the peer's
        RpcPeer: connections of their own, kept between calls, made the way the peer's Raft
        stream is made (its sender's connect: whatever secures that channel secures this
        one). Raises rpc.RpcFailed."""
        sender = self._senders.get(peer_id)
        if sender is None:
            raise rpc.RpcFailed(f"node {peer_id} is not a peer")
        peer = self._rpc_peers.get(peer_id)
        if peer is None or peer.address != sender.address:
            if peer is not None:
                await peer.close()
            peer = self._rpc_peers[peer_id] = rpc.RpcPeer(sender._connect, self.node_id, sender.address,
                                                          from_header=FROM_NODE_HEADER)
        return await peer.call(name, body, timeout_s=timeout_s)

    def rpc_connections_opened(self, peer_id: int) -> int:
        """How many connections calls to peer_id have opened so far (tests count them)."""
        peer = self._rpc_peers.get(peer_id)
        return peer.opened if peer is not None else 0

    def add_peer(self, peer_id: int, address: tuple[str, int]) -> None:
        """Starts sending to a new peer (replacing its address if known)."""
        assert peer_id > 0 and peer_id != self.node_id, peer_id
        if peer_id in self._senders:
            self.remove_peer(peer_id)
        connect = (self._connect if self.tls is None
                   else functools.partial(self._connect_tls, peer_id))
        self._senders[peer_id] = PeerSender(
            node_id=self.node_id, peer_id=peer_id, address=address, connect=connect,
            frame_bytes_max=self.frame_bytes_max, metrics=self.metrics,
            report_unreachable=self._report_unreachable, report_snapshot=self._report_snapshot,
            report_down=self._peer_down)
        if self._nursery is not None:
            self._start_sender(peer_id)

    def remove_peer(self, peer_id: int) -> None:
        """Stops sending to a peer; what is queued for it is dropped without reports."""
        self._senders.pop(peer_id, None)
        peer = self._rpc_peers.pop(peer_id, None)
        if peer is not None and self._nursery is not None:
            self._nursery.start_soon(peer.close)
        scope = self._sender_scopes.pop(peer_id, None)
        if scope is not None:
            scope.cancel()
        self.metrics.remove_peer(peer_id)

    def peer_state(self, peer_id: int) -> PeerState | None:
        sender = self._senders.get(peer_id)
        return sender.state if sender is not None else None

    def peer_closed(self, peer_id: int) -> bool:
        """Whether the connection to peer_id is up in our books but already closed or reset
        by the peer (its process died a moment ago); a syscall, no waiting."""
        sender = self._senders.get(peer_id)
        return sender is not None and sender.closed_by_peer()

    def queue_depth_messages(self, peer_id: int) -> int:
        return self._senders[peer_id].queue_depth_messages

    async def wait_peer_connected(self, peer_id: int) -> None:
        await self._senders[peer_id].wait_connected()

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int] | None]
                  = trio.TASK_STATUS_IGNORED) -> None:
        """Serves and sends until cancelled; started() with the (host, port) listened on
        (None for listeners without a socket).

        Raises:
            TransportFailed: serving raised an unexpected exception (its __cause__).
        """
        assert self._nursery is None, "Transport.run called twice"
        listeners = await _open_listeners(self._listen)
        self.listen_address = _address_of(listeners)
        public = [] if self._public_listen is None else await _open_listeners(self._public_listen)
        self.public_address = _address_of(public)
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(
                serve_listeners, self.app, self._hypercorn_config(), listeners,
                self._on_connection_failed,
                accept=None if self.tls is None else self._accept_tls))
            if public:
                await nursery.start(functools.partial(
                    serve_listeners, self.app, self._hypercorn_config(), public,
                    self._on_connection_failed, accept=_uncertified))
            self._nursery = nursery
            nursery.start_soon(self._watch_fatal)
            for peer_id in self._senders:
                self._start_sender(peer_id)
            log.info("node %d: Raft transport listening on %s", self.node_id,
                     self.listen_address or listeners)
            task_status.started(self.listen_address)
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):  # the node stopping: close the kept connections
                    for peer in list(self._rpc_peers.values()):
                        await peer.close()

    async def _accept_tls(self, stream: trio.abc.Stream, peer: str
                          ) -> tuple[trio.abc.Stream, dict] | None:
        assert self.tls is not None
        try:
            secured, node_id = await accept_peer(stream, self.tls)
        except PeerRefused as refused:
            self._refused(refused.reason, f"connection from {peer}: {refused.detail}")
            return None
        log.debug("node %d: TLS connection from %s, certificate of node %d", self.node_id, peer,
                  node_id)
        return secured, {CONNECTION_NODE_KEY: node_id}

    async def _connect_tls(self, peer_id: int, host: str, port: int) -> trio.abc.Stream:
        assert self.tls is not None
        stream = await self._connect(host, port)
        try:
            return await connect_peer(stream, self.tls, peer_id)
        except PeerRefused as refused:
            await trio.aclose_forcefully(stream)
            # A peer going down breaks handshakes too (a reset, an EOF): that is an ordinary
            # connection failure, logged by the sender; only what TLS refused is a refusal.
            if refused.by_tls:
                self._refused(refused.reason, f"connection to node {peer_id} at {host}:{port}: "
                                              f"{refused.detail}")
            raise trio.BrokenResourceError(str(refused)) from None
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    def _refused(self, reason: RefusalReason, what: str) -> None:
        """A peer refused by mutual TLS: counted, and logged (rate-limited per reason)."""
        self.metrics.peers_refused.labels(reason.value).inc()
        unlogged = self._refusal_log.admit(reason)
        if unlogged is not None:
            more = f" ({unlogged} more not logged)" if unlogged else ""
            log.warning("node %d: refused peer (%s): %s%s", self.node_id, reason.value, what, more)

    def _hypercorn_config(self) -> hypercorn.config.Config:
        config = hypercorn.config.Config()
        config.accesslog = None
        config.errorlog = logging.getLogger("chronik_trio.transport.hypercorn")
        config.h2_max_concurrent_streams = H2_STREAMS_MAX
        config.keep_alive_max_requests = KEEP_ALIVE_REQUESTS_MAX
        config.include_server_header = False
        config.read_timeout = SERVER_READ_TIMEOUT_S
        return config

    def _start_sender(self, peer_id: int) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._sender_scopes[peer_id] = scope
        self._nursery.start_soon(self._run_sender, self._senders[peer_id], scope)

    async def _run_sender(self, sender: PeerSender, scope: trio.CancelScope) -> None:
        with scope:
            await sender.run()

    def _peer_down(self, peer_id: int) -> None:
        if self.on_peer_down is not None:
            self.on_peer_down(peer_id)

    def _on_connection_failed(self, peer: str, exc: BaseException) -> None:
        self.metrics.connection_failures.inc()
        log.error("node %d: the connection from %s failed inside hypercorn and was closed",
                  self.node_id, peer, exc_info=exc)

    def _on_fatal(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._fatal_event.set()

    async def _watch_fatal(self) -> None:
        await self._fatal_event.wait()
        raise TransportFailed(f"node {self.node_id}: serving the Raft transport failed: "
                              f"{self._fatal!r}") from self._fatal

    def _health(self) -> dict:
        answer = {"status": "ok", "node_id": self.node_id,
                  "peers": {str(p): s.state.value for p, s in self._senders.items()}}
        if self._extra_health is not None:
            answer.update(self._extra_health())
        return answer


async def _open_listeners(listen: tuple[str, int] | list[trio.abc.Listener]
                          ) -> list[trio.abc.Listener]:
    if isinstance(listen, tuple):
        host, port = listen
        return await trio.open_tcp_listeners(port, host=host)
    return listen


def _address_of(listeners: list[trio.abc.Listener]) -> tuple[str, int] | None:
    sock = getattr(listeners[0], "socket", None) if listeners else None
    return None if sock is None else sock.getsockname()[:2]


async def _uncertified(stream: trio.abc.Stream, peer: str) -> tuple[trio.abc.Stream, dict]:
    """A public listener's connection: no node certificate (only PUBLIC_ROUTES with TLS on)."""
    return stream, {CONNECTION_NODE_KEY: None}
