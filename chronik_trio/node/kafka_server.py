"""One Kafka client connection: read frames, run requests concurrently, answer in order.

Clients pipeline (up to 5 requests in flight is common), so each request runs in its own task
and the answers go out in request order: the task whose answer is done and first in line
sends it, and every later one already done after it (`_Answers`); a slow Fetch long-poll
does not hold up the decode of the requests behind it. No task sits between a request and its
answer: one record at a time, a request costs its own task and the reader's wake-up, not a
writer's two more. At most INFLIGHT_REQUESTS_MAX are in flight per connection: past that we
stop reading, which pushes back on the client through TCP.

Blast radius (docs/kafka-api.md, "Bad input and handler errors"): bytes that do not decode
close their connection with a log line; an unexpected exception while answering one decoded
request is contained here: that request is answered with UNKNOWN_SERVER_ERROR (or, where no
answer can be formed, its connection is closed), logged at ERROR with its traceback and
counted, and the node keeps serving. Failures that mean the node's own state can no longer
be trusted (storage corruption, disk errors, memory) are not contained: they stop the node.
"""

from __future__ import annotations

import collections
import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.kafka import codec
from chronik_trio.kafka.authorization import refusal
from chronik_trio.kafka.errors import MalformedRequest, ProtocolViolation, UnsupportedApi
from chronik_trio.kafka.framing import FrameDecoder
from chronik_trio.kafka.handlers import registry
from chronik_trio.kafka.handlers.groups import COMMIT_TURN, REQUEST_CLIENT, CommitOrder
from chronik_trio.kafka.session import SESSION, AuthState, Session
from chronik_trio.kafka.session import current as current_session
from chronik_trio.storage.errors import CorruptHardStateError, CorruptLogError, DiskError

log = logging.getLogger(__name__)

INFLIGHT_REQUESTS_MAX = 32  # well above the 5 clients pipeline; bounds memory per connection
RECEIVE_CHUNK_BYTES = 256 << 10
OFFSET_COMMIT_KEY = 8
PRODUCE_KEY = 0

# Not contained: the node's own data or memory is in doubt, and fail-stop (design.md) is what
# keeps a replica with a damaged log or an unknown page cache from serving or voting on it.
FAIL_STOP_ERRORS = (CorruptLogError, CorruptHardStateError, DiskError, MemoryError)


class RequestErrors:
    """Requests answered with UNKNOWN_SERVER_ERROR (or closed) after an unexpected exception,
    by (api_key, api_version); exported as chronik_kafka_request_errors in /metrics."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[int, int]] = collections.Counter()

    def add(self, api_key: int, api_version: int) -> None:
        self.counts[(api_key, api_version)] += 1


class AnswerFailed(ProtocolViolation):
    """A request whose handler failed and for which no error answer could be formed (or that
    gets no answer, acks=0): its connection is closed, the client reconnects and retries."""


class _Slot:
    """The answer to one request, filled in by its task, sent in request order (_Answers)."""

    __slots__ = ("done", "chunks", "request")

    def __init__(self, request: str) -> None:
        self.done = trio.Event()
        self.chunks: list | None = None
        self.request = request


async def serve_connection(stream: trio.abc.Stream, ctx, peer: str, session: Session | None = None) -> None:
    """Serve one client until it disconnects or breaks the protocol (then close, log why).
    session: the connection's listener and authentication (None: a default, open one)."""
    answers = _Answers(stream)
    if session is not None:
        SESSION.set(session)  # every request's task copies this task's context
    try:
        async with trio.open_nursery() as nursery:
            await _read_requests(stream, ctx, peer, answers, nursery, session)
    except* ProtocolViolation as group:
        log.warning("closing connection from %s: %s", peer, group.exceptions[0])
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        log.info("connection from %s was reset", peer)
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _read_requests(stream, ctx, peer: str, answers: _Answers, nursery,
                         session: Session | None = None) -> None:
    decoder = FrameDecoder(ctx.config.request_max_bytes)
    commits = CommitOrder()
    while True:
        data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
        if not data:
            if decoder.buffered_bytes:
                raise ProtocolViolation(
                    f"connection closed mid-frame ({decoder.buffered_bytes} bytes of a request pending)")
            break
        decoder.feed(data)
        while (frame := decoder.next_frame()) is not None:
            request, slot = _decode_or_close(frame, ctx)
            authenticating = session is not None and session.authenticating
            if authenticating and request is not None and not session.allows(request.api_key):
                _refuse(session, ctx, peer, f"{type(request.body).__name__} before authentication completed")
            await answers.wait_for_room()
            answers.add(slot)
            if request is None:  # answered at decode (ApiVersions at an unknown version)
                await answers.send_ready()
            else:
                is_commit = request.api_key == OFFSET_COMMIT_KEY
                COMMIT_TURN.set((commits, commits.ticket()) if is_commit else None)  # the task copies it
                # start, not start_soon: the request's task runs its first step (for a
                # Produce to a free partition: up to and including its proposal) before the
                # next request's task exists, so pipelined produces to one partition are
                # appended in request order (tasks spawned together run in any order).
                await nursery.start(_answer, request, slot, ctx, peer, answers)
            if authenticating:
                await slot.done.wait()  # the SASL exchange is one request at a time, in order
                await answers.sent(slot)
                if session.state is AuthState.FAILED:
                    _count_refusal(session, ctx, peer)
                    return  # the answer (its error code) is sent, then the connection closes
    # The client half-closed: the requests in flight still answer, then the nursery ends.


class NotAuthenticated(ProtocolViolation):
    """A request other than the SASL exchange before authentication completed."""


def _count_refusal(session: Session, ctx, peer: str) -> None:
    log.warning("listener %s: authentication failed for the connection from %s: %s",
                session.listener, peer, session.failure)
    failures = getattr(ctx, "auth_failures", None)
    if failures is not None:
        failures.add(session.listener or "PLAINTEXT", "sasl")


def _refuse(session: Session, ctx, peer: str, reason: str) -> None:
    session.fail(reason)
    _count_refusal(session, ctx, peer)
    raise NotAuthenticated(reason)


def _decode_or_close(frame: bytes, ctx):
    """_decode; any exception from it is a frame we cannot read, and closes the connection."""
    try:
        return _decode(frame, ctx)
    except ProtocolViolation:
        raise
    except Exception as exc:  # a kio corner the codec's list does not name: still just bad bytes
        raise MalformedRequest(f"request does not decode: {type(exc).__name__}: {exc}") from exc


def _decode(frame: bytes, ctx):
    """Decode one frame. ApiVersions at an unknown version gets its special v0 answer."""
    api_key, api_version, correlation_id = codec.peek_header(frame)
    if api_key == registry.API_VERSIONS_KEY and not registry.supports(api_key, api_version):
        slot = _Slot(f"ApiVersions v{api_version}")
        slot.chunks = codec.encode_response(correlation_id, registry.unsupported_api_versions_response())
        slot.done.set()
        return None, slot
    if not registry.supports(api_key, api_version):
        raise UnsupportedApi(f"api_key {api_key} version {api_version} is not supported "
                             f"(correlation id {correlation_id})")
    request = codec.decode_request(frame)
    null = codec.null_field(request.body)
    if null is not None:
        raise MalformedRequest(f"{type(request.body).__name__} v{api_version}: field {null} is null, "
                               f"which its schema does not allow")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("request %s v%d correlation %d from client %r%s", type(request.body).__name__,
                  api_version, correlation_id, request.client_id,
                  f" ({request.trailing_bytes} trailing bytes ignored)" if request.trailing_bytes else "")
    return request, _Slot(f"{type(request.body).__name__} v{api_version}")


async def _answer(request, slot: _Slot, ctx, peer: str, answers: _Answers,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()  # the reader goes on once this task's first step ends
    REQUEST_CLIENT.set((request.client_id or "", "/" + peer.rpartition(":")[0]))  # Kafka's "/host"
    _, handler = registry.HANDLERS[request.api_key]
    ctx.requests_inflight += 1
    try:
        body = refusal(request.api_key, request.api_version, request.body, ctx, current_session())
        if body is None:
            body = await handler(request.body, ctx, request.api_version)
        chunks = None if body is None else codec.encode_response(request.correlation_id, body)
    except Exception as exc:  # Cancelled and KeyboardInterrupt are BaseExceptions: never caught
        if _not_contained(exc):
            raise
        chunks = _contained(request, ctx, peer)
    finally:
        ctx.requests_inflight -= 1
    slot.chunks = chunks
    slot.done.set()
    await answers.send_ready()


def _not_contained(exc: Exception) -> bool:
    """A protocol violation (closes the connection) or a fail-stop error, alone or inside the
    exception group of a handler's nursery (Produce runs its partitions in one)."""
    passes = (ProtocolViolation, *FAIL_STOP_ERRORS)
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(passes) is not None
    return isinstance(exc, passes)


def _contained(request, ctx, peer: str) -> list:
    """Log and count the exception being handled; the chunks of an UNKNOWN_SERVER_ERROR
    answer of the request's API and version, or raise AnswerFailed to close the connection."""
    log.error("request %s v%d (correlation %d) from client %r at %s failed; contained (answered "
              "UNKNOWN_SERVER_ERROR, or its connection closed), the node keeps serving", type(request.body).__name__,
              request.api_version, request.correlation_id, request.client_id, peer, exc_info=True)
    errors = getattr(ctx, "request_errors", None)
    if errors is not None:
        errors.add(request.api_key, request.api_version)
    if request.api_key == PRODUCE_KEY and getattr(request.body, "acks", None) == 0:
        raise AnswerFailed("an acks=0 produce failed: closing the connection, as Kafka does")
    try:
        body = codec.error_response(request.api_key, request.api_version, request.body,
                                    ErrorCode.unknown_server_error)
        return codec.encode_response(request.correlation_id, body)
    except Exception as exc:
        raise AnswerFailed(f"no error answer could be formed for {type(request.body).__name__} "
                           f"v{request.api_version}: {type(exc).__name__}: {exc}") from None


class _Answers:
    """The connection's requests in flight, in request order, and the sending of their answers.

    Whoever finishes an answer (its request's task, or the reader for one answered at decode)
    calls send_ready: if nobody is sending, it sends every done answer at the head of the
    line, in order, and stops at the first not done; that one's task sends it and what follows
    it when it finishes. If somebody is sending, it will reach the new answer itself, since it
    re-checks the head after each send. So an answer never waits for a task to be scheduled
    just to write it."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._slots: collections.deque[_Slot] = collections.deque()
        self._sending = False
        self._changed = trio.Event()  # set when an answer is sent (room, or a slot gone)

    async def wait_for_room(self) -> None:
        """Waits while INFLIGHT_REQUESTS_MAX requests are unanswered (back-pressure)."""
        while len(self._slots) >= INFLIGHT_REQUESTS_MAX:
            await self._wait_changed()

    def add(self, slot: _Slot) -> None:
        self._slots.append(slot)

    async def sent(self, slot: _Slot) -> None:
        """Waits until slot's answer has been sent (or dropped, for one without an answer)."""
        while slot in self._slots:
            await self._wait_changed()

    async def _wait_changed(self) -> None:
        if self._changed.is_set():
            self._changed = trio.Event()
        await self._changed.wait()

    async def send_ready(self) -> None:
        if self._sending:
            return  # the sender re-checks the head after its send
        self._sending = True
        try:
            slots = self._slots
            while slots and slots[0].done.is_set():
                slot = slots[0]
                if slot.chunks is not None:
                    for piece in _coalesce(slot.chunks):
                        await self._stream.send_all(piece)
                slots.popleft()
                self._changed.set()
        finally:
            self._sending = False


COALESCE_BELOW_BYTES = 64 << 10  # join small chunks into one send; send big ones as they are
# A run of small chunks is sent once it holds this much: a Fetch answer of many small batches
# is then sent in pieces a reused heap block holds, never joined into one copy of it all
# (a fresh multi-megabyte buffer costs a page fault per 4 KiB).
COALESCE_RUN_BYTES_MAX = 256 << 10


def _coalesce(chunks):
    """Yield send buffers: runs of small chunks joined (up to COALESCE_RUN_BYTES_MAX), large
    record blobs passed uncopied."""
    run: list = []
    run_bytes = 0
    for chunk in chunks:
        if len(chunk) < COALESCE_BELOW_BYTES:
            run.append(chunk)
            run_bytes += len(chunk)
            if run_bytes < COALESCE_RUN_BYTES_MAX:
                continue
            chunk = b""
        if run:
            yield b"".join(run)
            run, run_bytes = [], 0
        if chunk:
            yield chunk
    if run:
        yield b"".join(run)
