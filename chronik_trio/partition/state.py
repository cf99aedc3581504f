"""Kafka over Raft, the pure part: offsets, the high watermark, and the ISR rule.

The node (node/partition_group.py) feeds these from the partition's Raft group; nothing
here touches files, sockets, clocks or trio. Time is a number the caller passes in.
"""

from __future__ import annotations

import typing

import attrs

# batch_base_offset is not used here: the node reads it from this module with batch_end_offset.
from chronik_trio.record_batch import batch_base_offset, batch_end_offset  # noqa: F401


class BatchState(typing.Protocol):
    """State a replica derives from its partition's committed batches, beyond the high
    watermark: the producer table (partition/producers.py), a group coordinator's groups
    and offsets on __consumer_offsets. Kept in the partition's snapshots.

    apply() sees each committed batch once, in log order. A snapshot's state may be newer
    than the snapshot's log position (it is taken at the applied index, while the snapshot
    sits at the retention boundary); the machine then skips the batches it already holds,
    by offset, so that restoring and replaying give exactly the state of applying them all.
    """

    name: str

    def apply(self, data: memoryview, index: int) -> None:
        """One committed v2 record batch (a Raft entry's data) at Raft index `index`."""

    def encode(self) -> bytes:
        ...

    def decode(self, data: bytes) -> None:
        """Replace the state by an encoded one."""


class HighWatermark:
    """What applying committed entries gives every replica: the end of the last committed
    batch. Nothing at or above it is served to consumers."""

    def __init__(self, log_start_offset: int) -> None:
        # Applying starts over from the snapshot (Raft re-delivers committed entries), so
        # the high watermark starts at the log's start and climbs back as entries apply.
        self.offset = log_start_offset

    def apply(self, entry_datas: typing.Sequence[bytes]) -> list[int | None]:
        """Apply committed normal entries in order; returns each data entry's end offset
        (None for empty entries: leader no-ops carry no offsets)."""
        results: list[int | None] = []
        for data in entry_datas:
            if data:
                end = batch_end_offset(data)
                results.append(end)
                if end > self.offset:
                    self.offset = end
            else:
                results.append(None)
        return results

    def restore(self, next_offset: int) -> None:
        """A snapshot says the log continues from next_offset."""
        self.offset = max(self.offset, next_offset)


class OffsetAssigner:
    """The leader's next offset. A new term starts from the log's end, which is exact then
    because every entry of the previous term is persisted before the leader's first
    proposal (the Ready pass holds the group lock until it is)."""

    def __init__(self) -> None:
        self._next: int | None = None
        self._term = 0

    def reserve(self, term: int, log_next_offset: int, record_counts: typing.Sequence[int]) -> list[int]:
        """Base offsets for batches of these record counts; the reservation holds only if
        the caller proposes them (call commit_reservation after a successful proposal)."""
        if self._next is None or self._term != term:
            self._next, self._term = log_next_offset, term
        bases, offset = [], self._next
        for count in record_counts:
            assert count > 0, count
            bases.append(offset)
            offset += count
        self._pending = offset
        return bases

    def commit_reservation(self) -> None:
        self._next = self._pending

    def end_offset(self, term: int, log_next_offset: int) -> int:
        """The leader's log end offset in term (proposed, not necessarily persisted)."""
        return self._next if self._next is not None and self._term == term else log_next_offset


@attrs.frozen(slots=True)
class FollowerProgress:
    match: int
    recent_active: bool
    is_learner: bool


class InSyncReplicas:
    """Kafka's replica.lag.time.max.ms rule over Raft progress, on the leader.

    A follower is in sync while its node is alive (heard from recently) and it has, within
    lag_time_s, replicated everything the leader had at the previous check. The leader is
    always in sync; a new term starts with everyone caught up (as Kafka starts from the
    previous ISR)."""

    def __init__(self, lag_time_s: float) -> None:
        self.lag_time_s = lag_time_s
        self._caught_up_at: dict[int, float] = {}
        self._last_index_seen = 0
        self._term = 0
        self.isr: tuple[int, ...] = ()

    def update(self, now: float, *, term: int, leader: int, last_index: int, idle: bool,
               progress: dict[int, FollowerProgress]) -> tuple[int, ...]:
        if self._term != term:
            self._term = term
            self._caught_up_at = {peer: now for peer in progress}
            self._last_index_seen = last_index
        for peer, pr in progress.items():
            if peer == leader or idle or pr.match >= self._last_index_seen:
                self._caught_up_at[peer] = now
        self._last_index_seen = last_index
        self.isr = tuple(sorted(
            peer for peer, pr in progress.items() if not pr.is_learner and (
                peer == leader or (pr.recent_active and
                                   now - self._caught_up_at.get(peer, float("-inf")) <= self.lag_time_s))))
        return self.isr
