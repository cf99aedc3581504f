"""Group commit: one fsync covers every append that arrived meanwhile, on every log of the node.

Appends write to the page cache on the trio thread and mark their log dirty. This task takes
every dirty log's SyncTicket, fsyncs them all in one worker thread call, then tells each log
how far it is durable. While that fsync runs, new appends pile up for the next round, so the
number of fsyncs per second is bounded by the disk, not by the number of requests.
"""

from __future__ import annotations

import logging
import typing

import trio

log = logging.getLogger(__name__)


class Durable(typing.Protocol):
    """Something with a SegmentLog that wants to hear how far it is durable."""

    log: typing.Any
    closed: bool

    def on_durable(self, index: int) -> None: ...


def _run_tickets(tickets: list) -> None:
    for ticket in tickets:
        ticket.run()


class GroupCommitter:
    def __init__(self, *, interval_s: float | None = None) -> None:
        # None: sync as soon as anything is dirty (acks wait for it). A number: the fsync
        # policy "interval", where acks do not wait and syncs happen at most this often.
        self.interval_s = interval_s
        self._dirty: dict[int, Durable] = {}
        self._wakeup = trio.Event()
        self.rounds = 0

    def mark_dirty(self, target: Durable) -> None:
        self._dirty[id(target)] = target
        self._wakeup.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wakeup.wait()
            if self.interval_s is not None:
                await trio.sleep(self.interval_s)
            self._wakeup = trio.Event()
            await self.sync_dirty()

    async def sync_dirty(self) -> None:
        """Fsync every dirty log once and report durability. Not cancellable mid-fsync."""
        targets = [t for t in self._dirty.values() if not t.closed]  # deleted meanwhile: nothing to keep
        self._dirty.clear()
        pending = [(t, t.log.begin_sync()) for t in targets]
        pending = [(t, ticket) for t, ticket in pending if ticket is not None]
        if not pending:
            return
        # A failing fsync raises here and stops the node: after an fsync error the page cache
        # can no longer be trusted, so the only safe move is to restart and recover from disk.
        await trio.to_thread.run_sync(_run_tickets, [ticket for _, ticket in pending])
        self.rounds += 1
        for target, ticket in pending:
            target.on_durable(target.log.end_sync(ticket))
