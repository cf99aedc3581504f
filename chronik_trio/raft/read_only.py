"""Pending ReadIndex requests on a leader (Raft thesis 6.4)."""

from __future__ import annotations

from collections import deque

from .errors import ReadIndexDropped
from .types import Message, ReadOnlyOption

MAX_PENDING_READS = 4096
"""Read requests awaiting a heartbeat quorum. Past this, new reads are refused: a leader
that cannot reach a quorum must not buffer reads without bound."""


class ReadIndexStatus:
    __slots__ = ("request", "index", "acks")

    def __init__(self, request: Message, index: int) -> None:
        self.request = request
        self.index = index
        self.acks: set[int] = set()


class ReadOnly:
    """Reads keyed by their request context, in arrival order. A read at position k is
    confirmed when a quorum acknowledged a heartbeat carrying its context or a later one."""

    __slots__ = ("option", "_pending", "_queue")

    def __init__(self, option: ReadOnlyOption) -> None:
        self.option = option
        self._pending: dict[bytes, ReadIndexStatus] = {}
        self._queue: deque[bytes] = deque()

    def add_request(self, index: int, m: Message) -> None:
        if m.context in self._pending:
            return  # the same read asked twice: one answer serves both
        if len(self._queue) >= MAX_PENDING_READS:
            raise ReadIndexDropped(f"{len(self._queue)} reads pending")
        self._pending[m.context] = ReadIndexStatus(m, index)
        self._queue.append(m.context)

    def recv_ack(self, node_id: int, ctx: bytes) -> set[int] | None:
        status = self._pending.get(ctx)
        if status is None:
            return None
        status.acks.add(node_id)
        return status.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Remove and return every read up to and including ctx."""
        if ctx not in self._pending:
            return []
        done = []
        while self._queue:
            c = self._queue.popleft()
            done.append(self._pending.pop(c))
            if c == ctx:
                break
        return done

    def last_pending_request_ctx(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def pending_count(self) -> int:
        return len(self._queue)
