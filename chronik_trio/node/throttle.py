"""The catch-up throttle of partition moves: bytes per second a leader sends to the replicas
catching up as learners (node/reassignments.py), summed over all of them.

Kafka's broker config `leader.replication.throttled.rate` (dynamic, per broker or
cluster-wide; unset: no limit). Only appends and snapshots to a learner count and wait; a
voter's traffic, heartbeats and votes never do, so producers and elections are untouched. A
message over the budget waits in a bounded queue (Raft's inflight limit keeps it short: a
leader sends a learner more only as appends are acknowledged); Raft takes a delayed append as
a slow network. The budget refills continuously and holds at most BURST_S of it.
"""

from __future__ import annotations

import collections
import logging
import typing

import trio

from chronik_trio.cluster.configs import LONG_MAX
from chronik_trio.raft.types import Message, MessageType

log = logging.getLogger(__name__)

RATE_CONFIG = "leader.replication.throttled.rate"
BURST_S = 0.1  # at most this many seconds' worth of budget saved up while idle
# Messages waiting for budget; beyond it one is dropped (Raft sends it again). A learner has
# at most max_inflight_msgs appends unacknowledged, so this holds hundreds of learners' worth.
QUEUE_MESSAGES_MAX = 4096
THROTTLED_TYPES = frozenset({MessageType.APPEND, MessageType.SNAPSHOT})


def message_bytes(message: Message) -> int:
    """What a message weighs against the budget: its entries' or snapshot's data."""
    if message.snapshot is not None:
        return len(message.snapshot.data)
    return sum(len(entry.data) for entry in message.entries)


class CatchUpThrottle:
    def __init__(self, send: typing.Callable[[str, Message], None],
                 is_learner: typing.Callable[[str, int], bool],
                 rate_bytes_per_s: typing.Callable[[], int]) -> None:
        """send: the network's send; is_learner(group, peer): whether peer is a learner of
        our group; rate_bytes_per_s(): the configured rate now (LONG_MAX: none)."""
        self._send = send
        self._is_learner = is_learner
        self._rate = rate_bytes_per_s
        self._queue: collections.deque[tuple[str, Message, int]] = collections.deque()
        self._budget_bytes = 0.0
        self._refilled_at = 0.0
        self._queued = trio.Event()
        self.throttled_bytes = 0  # bytes that waited for budget (for tests and metrics)
        self.dropped_messages = 0

    def send(self, group_id: str, message: Message) -> None:
        """The runtime's send (sync, never blocks)."""
        if message.type not in THROTTLED_TYPES:
            self._send(group_id, message)
            return
        rate = self._rate()
        if rate >= LONG_MAX or not self._is_learner(group_id, message.to):
            self._send(group_id, message)
            return
        size = message_bytes(message)
        self._refill(rate)
        if not self._queue and self._budget_bytes > 0:
            self._budget_bytes -= size  # may go below zero: a big message waits for nothing
            self._send(group_id, message)
            return
        if len(self._queue) >= QUEUE_MESSAGES_MAX:
            self.dropped_messages += 1
            return
        self.throttled_bytes += size
        self._queue.append((group_id, message, size))
        self._queued.set()

    def _refill(self, rate: int) -> None:
        now = trio.current_time()
        self._budget_bytes = min(self._budget_bytes + (now - self._refilled_at) * rate, rate * BURST_S)
        self._refilled_at = now

    async def run(self) -> None:
        """Send what waits, as the budget allows."""
        while True:
            if not self._queue:
                self._queued = trio.Event()
                await self._queued.wait()
                continue
            rate = self._rate()
            if rate < LONG_MAX:
                self._refill(rate)
                if self._budget_bytes <= 0:
                    await trio.sleep(-self._budget_bytes / rate + 0.001)
                    continue
            group_id, message, size = self._queue.popleft()
            self._budget_bytes -= size
            self._send(group_id, message)
