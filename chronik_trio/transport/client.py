"""The HTTP/2 side that sends: one PeerSender task per peer, driving `h2` over a trio stream.

A PeerSender owns one connection (prior-knowledge h2c) and on it one long-lived POST to
STREAM_PATH whose body is a sequence of RaftBatch frames. `enqueue` (sync, never blocks) puts
an encoded GroupMessage on a bounded queue; the writer takes everything queued (up to one
frame), encodes one RaftBatch and writes it as soon as it runs, within the h2 flow-control
windows. Messages are dropped, and the caller told through `report_unreachable`, when the
queue is full, when the peer has no connection, and when a connection breaks with messages
still queued. A broken connection is retried with capped exponential backoff.
"""

from __future__ import annotations

import collections
import enum
import logging
import select
from collections.abc import Awaitable, Callable, Iterator

import attrs

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio

from ..pb import raft_pb2, transport_pb2
from .framing import (FRAME_HEADER_BYTES, FRAME_KIND_RAFT_BATCH, FRAME_KIND_SNAPSHOT_CHUNK,
                      batch_envelope_bytes_max,
                      encode_frame, encode_group_message, encode_raft_batch,
                      group_message_overhead_bytes)
from .metrics import DropReason, PeerMetrics, TransportMetrics
from .server import FROM_NODE_HEADER, STREAM_PATH
from .snapshot import SNAPSHOT_CHUNK_BYTES, split_snapshot

log = logging.getLogger(__name__)

# Per-peer queue bounds. Raft re-sends whatever is lost (the leader probes, heartbeats
# repeat), so a deep queue only adds latency and memory to a peer that is slow or gone:
# 4096 messages is over a second of heartbeats and appends for a few hundred groups, and
# 64 MiB holds a few dozen 1 MB appends. Beyond either, drop and report.
PEER_QUEUE_MESSAGES_MAX = 4096
PEER_QUEUE_BYTES_MAX = 64 * 2**20
# Reconnect backoff: the first retry soon (a restarting peer is back in well under a
# second), doubling to a cap below the Raft election timeout so a recovered peer is reached
# before it would start an election of its own.
RECONNECT_BACKOFF_INITIAL_S = 0.05
RECONNECT_BACKOFF_MAX_S = 1.0
# A connect that hangs (SYN to a black hole) is given up after this and retried.
CONNECT_TIMEOUT_S = 2.0
# Keepalive: a peer that vanished without closing (power loss, a network partition that
# drops packets) never makes a write fail quickly, so the sender pings while it is
# connected and gives the connection up when a ping goes unanswered. The timeout is below
# a Raft election timeout's worth of seconds on a loaded machine, the interval a small cost.
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 3.0
# Bytes read per receive call; the server sends only small frames (settings, window
# updates, ping answers, response headers), so h2's default receive windows suffice too.
RECEIVE_BYTES_MAX = 65536

# Snapshots waiting or being written per peer. Each holds its whole data in memory (as the
# message it came in did); the leader retries a refused one after report_snapshot(False).
PEER_SNAPSHOTS_MAX = 4

Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]
ReportUnreachable = Callable[[int, str], None]
ReportSnapshot = Callable[[int, str, bool], None]


@attrs.define
class _PendingSnapshot:
    group: str
    chunks: Iterator[transport_pb2.SnapshotChunk]


class PeerState(enum.Enum):
    CONNECTING = "connecting"  # no connection yet; send() drops
    CONNECTED = "connected"  # stream open; send() queues
    BACKOFF = "backoff"  # the last connection failed; send() drops until the next one


class PeerConnectionLost(Exception):
    """The connection or the stream to a peer ended; expected, retried after a backoff."""


# What a connection may fail with, all handled by reconnecting.
CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                     trio.TooSlowError, h2.exceptions.ProtocolError, PeerConnectionLost)


class PeerSender:
    """The sender to one peer. Run `run` as one task; call `enqueue` from anywhere in trio."""

    def __init__(self, *, node_id: int, peer_id: int, address: tuple[str, int],
                 connect: Connect, frame_bytes_max: int, metrics: TransportMetrics,
                 report_unreachable: ReportUnreachable,
                 report_snapshot: ReportSnapshot | None,
                 report_down: Callable[[int], None] = lambda peer_id: None) -> None:
        self.node_id = node_id
        self.peer_id = peer_id
        self.address = address
        self._connect = connect
        self._frame_bytes_max = frame_bytes_max
        self._metrics = metrics
        self._peer_metrics: PeerMetrics = metrics.peer(peer_id)
        self._report_unreachable = report_unreachable
        self._report_snapshot = report_snapshot
        self._report_down = report_down
        # Frames carry a chunk and a small envelope; leave room for the envelope.
        self._chunk_bytes = min(SNAPSHOT_CHUNK_BYTES, frame_bytes_max // 2)
        self.state = PeerState.CONNECTING
        # (group, encoded GroupMessage); bytes counted in _queued_bytes
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._queued_bytes = 0
        self._snapshots: collections.deque[_PendingSnapshot] = collections.deque()
        self._work = trio.Event()  # set while messages or snapshots are waiting
        self._connected = trio.Event()  # set while state is CONNECTED
        self._connection: _Connection | None = None  # the current one, while run() has one

    @property
    def queue_depth_messages(self) -> int:
        return len(self._queue)

    def enqueue(self, group: str, message: raft_pb2.Message | bytes) -> bool:
        """Queues one message (or encoded chronik.raft.Message) of a group; never blocks.

        On refusal drops it, counts the drop, calls report_unreachable and returns False.
        A MSG_SNAPSHOT (given as a Message) goes in chunks, see enqueue_snapshot.
        """
        if isinstance(message, raft_pb2.Message) and message.type == raft_pb2.MSG_SNAPSHOT:
            return self.enqueue_snapshot(group, message)
        if self.state is not PeerState.CONNECTED:
            return self._refuse(group, DropReason.PEER_DISCONNECTED)
        encoded = encode_group_message(group, message)
        size = group_message_overhead_bytes(encoded)
        if size + batch_envelope_bytes_max() > self._frame_bytes_max:
            log.warning("node %d: message of group %r to node %d is %d bytes, frame limit %d",
                        self.node_id, group, self.peer_id, size, self._frame_bytes_max)
            return self._refuse(group, DropReason.MESSAGE_TOO_LARGE)
        if (len(self._queue) >= PEER_QUEUE_MESSAGES_MAX
                or self._queued_bytes + size > PEER_QUEUE_BYTES_MAX):
            return self._refuse(group, DropReason.QUEUE_FULL)
        self._queue.append((group, encoded))
        self._queued_bytes += size
        self._work.set()
        self._update_depth()
        return True

    def enqueue_snapshot(self, group: str, message: raft_pb2.Message) -> bool:
        """Queues a MSG_SNAPSHOT, written in chunks between batches; never blocks.

        report_snapshot(peer, group, True) follows once its last chunk is written,
        (peer, group, False) if it is dropped, now (returning False) or later.
        """
        if self.state is not PeerState.CONNECTED:
            return self._refuse(group, DropReason.PEER_DISCONNECTED, snapshot=True)
        if len(self._snapshots) >= PEER_SNAPSHOTS_MAX:
            return self._refuse(group, DropReason.SNAPSHOT_QUEUE_FULL, snapshot=True)
        self._snapshots.append(_PendingSnapshot(group, split_snapshot(
            self.node_id, self.peer_id, group, message, self._chunk_bytes)))
        self._work.set()
        return True

    def _refuse(self, group: str, reason: DropReason, *, snapshot: bool = False) -> bool:
        self._metrics.drop(reason)
        self._peer_metrics.reported_unreachable.inc()
        self._report_unreachable(self.peer_id, group)
        if snapshot and self._report_snapshot is not None:
            self._report_snapshot(self.peer_id, group, False)
        return False

    def _refresh_work(self) -> None:
        if not self._queue and not self._snapshots and self._work.is_set():
            self._work = trio.Event()

    def _update_depth(self) -> None:
        self._peer_metrics.queue_depth_messages.set(len(self._queue))
        self._peer_metrics.queue_depth_bytes.set(self._queued_bytes)

    def _take_batch(self) -> list[tuple[str, bytes]]:
        """Takes queued messages, in order, up to one frame's worth (at least one)."""
        budget = self._frame_bytes_max - batch_envelope_bytes_max()
        taken: list[tuple[str, bytes]] = []
        while self._queue:
            group, encoded = self._queue[0]
            size = group_message_overhead_bytes(encoded)
            if taken and size > budget:
                break
            self._queue.popleft()
            self._queued_bytes -= size
            budget -= size
            taken.append((group, encoded))
        self._refresh_work()
        self._update_depth()
        return taken

    def _report_lost(self, in_flight: list[tuple[str, bytes]]) -> None:
        """After a connection broke: drops what is queued, and reports each group that
        had messages queued or being written (they may not have arrived) once."""
        groups = dict.fromkeys(group for group, _ in in_flight)
        groups.update(dict.fromkeys(group for group, _ in self._queue))
        snapshots = [snapshot.group for snapshot in self._snapshots]
        groups.update(dict.fromkeys(snapshots))
        lost = len(in_flight) + len(self._queue) + len(snapshots)
        if lost:
            self._metrics.drop(DropReason.CONNECTION_LOST, lost)
        self._clear()
        for group in groups:
            self._peer_metrics.reported_unreachable.inc()
            self._report_unreachable(self.peer_id, group)
        if self._report_snapshot is not None:
            for group in snapshots:
                self._report_snapshot(self.peer_id, group, False)

    def _clear(self) -> None:
        self._queue.clear()
        self._snapshots.clear()
        self._queued_bytes = 0
        self._refresh_work()
        self._update_depth()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Connects, sends, and reconnects after failures with capped backoff; forever."""
        task_status.started()
        backoff_s = RECONNECT_BACKOFF_INITIAL_S
        try:
            while True:
                self._peer_metrics.connect_attempts.inc()
                connection = self._connection = _Connection(self)
                try:
                    await connection.serve()
                except* CONNECTION_ERRORS as group:
                    reason = "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)
                    self._peer_metrics.connect_failures.inc()
                    log.info("node %d: connection to node %d at %s:%d failed (%s); retry in "
                             "%.2f s", self.node_id, self.peer_id, *self.address, reason,
                             backoff_s)
                self._set_state(PeerState.BACKOFF)
                self._report_lost(connection.in_flight)
                # Broken or refused: the peer's process most likely died; say so at once
                # rather than after PEER_SILENCE_S of silence (failover time).
                self._report_down(self.peer_id)
                if connection.accepted:
                    backoff_s = RECONNECT_BACKOFF_INITIAL_S
                await trio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_BACKOFF_MAX_S)
        finally:
            # Stopped (peer removed, transport shut down): nobody is left to report to.
            self._set_state(PeerState.CONNECTING)
            self._clear()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def closed_by_peer(self) -> bool:
        """Whether our connection to the peer is up but the peer has already closed or reset
        it, unseen by the read loop so far (see _Connection.closed_by_peer)."""
        connection = self._connection
        return self.state is PeerState.CONNECTED and connection is not None and connection.closed_by_peer()

    def _set_state(self, state: PeerState) -> None:
        self.state = state
        self._peer_metrics.connected.set(1 if state is PeerState.CONNECTED else 0)
        if state is PeerState.CONNECTED:
            self._connected.set()
        elif self._connected.is_set():
            self._connected = trio.Event()


class _Connection:
    """One connection and its one request stream; `serve` returns or raises when it ends."""

    def __init__(self, sender: PeerSender) -> None:
        self.sender = sender
        self.accepted = False  # the server answered 200 to our stream
        self._h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None))
        self._stream: trio.abc.Stream | None = None
        self._stream_id = 0
        self._send_lock = trio.Lock()
        self._window_opened = trio.Event()
        self.in_flight: list[tuple[str, bytes]] = []  # the batch being written
        self._ping_acked = trio.Event()

    def closed_by_peer(self) -> bool:
        """A zero-timeout poll of the socket for the peer's FIN or reset (or the socket
        already closed while the failure is still on its way to run()). A SIGKILLed peer's
        sockets are closed by its kernel at once; a Kafka client that saw its own
        connection to that peer break may ask us for Metadata before our read loop has run
        and noticed the same (a stale leader in the answer costs the client ~1 s)."""
        stream = self._stream
        # Under TLS (tls.py) the socket is the one of the stream it wraps.
        sock = getattr(stream, "socket", None) or getattr(
            getattr(stream, "transport_stream", None), "socket", None)
        if sock is None:
            return False
        fd = sock.fileno()
        if fd < 0:  # already closed: the connection failed and is being torn down
            return True
        poller = select.poll()
        poller.register(fd, select.POLLRDHUP)
        return any(events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)
                   for _, events in poller.poll(0))

    async def serve(self) -> None:
        s = self.sender
        host, port = s.address
        with trio.fail_after(CONNECT_TIMEOUT_S):
            self._stream = await s._connect(host, port)
        async with self._stream:
            self._h2.initiate_connection()
            self._stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(self._stream_id, [
                (b":method", b"POST"), (b":scheme", b"http"),
                (b":authority", f"{host}:{port}".encode()), (b":path", STREAM_PATH.encode()),
                (b"content-type", b"application/x-chronik-raft-frames"),
                (FROM_NODE_HEADER, str(s.node_id).encode())])
            await self._flush()
            s._set_state(PeerState.CONNECTED)
            log.debug("node %d: connected to node %d", s.node_id, s.peer_id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop)
                nursery.start_soon(self._keepalive)
                await self._write_loop()

    async def _flush(self) -> None:
        assert self._stream is not None
        try:  # free (the usual case): taken without the checkpoint of `async with`, which
            self._send_lock.acquire_nowait()  # was one more scheduler step per batch sent
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            data = self._h2.data_to_send()
            if data:
                await self._stream.send_all(data)
        finally:
            self._send_lock.release()

    async def _read_loop(self) -> None:
        assert self._stream is not None
        while True:
            data = await self._stream.receive_some(RECEIVE_BYTES_MAX)
            if not data:
                raise PeerConnectionLost("peer closed the connection")
            for event in self._h2.receive_data(data):
                self._handle_event(event)
            await self._flush()

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(PING_INTERVAL_S)
            self._ping_acked = trio.Event()
            self._h2.ping(b"chronikp")
            # The flush is inside the timeout too: a peer that stopped reading leaves the
            # writer blocked in send_all, holding the send lock.
            with trio.move_on_after(PING_TIMEOUT_S):
                await self._flush()
                await self._ping_acked.wait()
            if not self._ping_acked.is_set():
                raise PeerConnectionLost(f"no answer to a ping within {PING_TIMEOUT_S} s")

    def _handle_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.PingAckReceived):
            self._ping_acked.set()
        elif isinstance(event, h2.events.ResponseReceived):
            status = dict(event.headers).get(b":status", b"")
            if status != b"200":
                raise PeerConnectionLost(f"stream refused with status {status!r}")
            self.accepted = True
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._window_opened.set()
        elif isinstance(event, h2.events.DataReceived):
            # The server writes a body only to say why it refuses the rest of the stream;
            # it then waits for us to go.
            raise PeerConnectionLost(f"server refused the stream: {bytes(event.data[:200])!r}")
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            raise PeerConnectionLost(f"server ended the stream ({type(event).__name__})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise PeerConnectionLost(f"server closed the connection: {event.error_code!r}")

    async def _write_loop(self) -> None:
        """Writes a batch of what is queued, then a snapshot chunk, in turn, while any."""
        s = self.sender
        while True:
            await s._work.wait()
            if s._queue:
                await self._write_batch()
            if s._snapshots:
                await self._write_snapshot_chunk()

    async def _write_snapshot_chunk(self) -> None:
        s = self.sender
        snapshot = s._snapshots[0]
        chunk = next(snapshot.chunks)
        payload = chunk.SerializeToString()
        if len(payload) > s._frame_bytes_max:
            log.warning("node %d: snapshot of group %r to node %d: a chunk needs %d bytes, "
                        "frame limit %d", s.node_id, snapshot.group, s.peer_id, len(payload),
                        s._frame_bytes_max)
            s._snapshots.popleft()
            s._refresh_work()
            s._refuse(snapshot.group, DropReason.MESSAGE_TOO_LARGE, snapshot=True)
            return
        await self._send_body(encode_frame(FRAME_KIND_SNAPSHOT_CHUNK, payload))
        s._peer_metrics.sent_bytes.inc(len(payload))
        if chunk.last:
            s._snapshots.popleft()
            s._refresh_work()
            s._peer_metrics.sent_snapshots.inc()
            s._peer_metrics.sent_messages.inc()
            if s._report_snapshot is not None:
                s._report_snapshot(s.peer_id, snapshot.group, True)

    async def _write_batch(self) -> None:
        s = self.sender
        self.in_flight = s._take_batch()
        frame = encode_frame(FRAME_KIND_RAFT_BATCH, encode_raft_batch(
            s.node_id, s.peer_id, [encoded for _, encoded in self.in_flight]))
        await self._send_body(frame)
        taken, self.in_flight = self.in_flight, []
        s._peer_metrics.sent_batches.inc()
        s._peer_metrics.sent_messages.inc(len(taken))
        s._peer_metrics.sent_bytes.inc(len(frame) - FRAME_HEADER_BYTES)

    async def _send_body(self, data: bytes) -> None:
        """Writes data on our stream as fast as the peer's windows allow."""
        view = memoryview(data)
        while view:
            window = min(self._h2.local_flow_control_window(self._stream_id),
                         self._h2.max_outbound_frame_size)
            if window <= 0:
                self._window_opened = trio.Event()
                await self._window_opened.wait()
                continue
            chunk = view[:window]
            self._h2.send_data(self._stream_id, bytes(chunk))
            view = view[len(chunk):]
            await self._flush()
