"""What a leader knows about each peer: Progress (match, next, flow control) and the config."""

from __future__ import annotations

from collections import deque

from .quorum import JointConfig, VoteResult
from .types import ConfState, ProgressState


class Inflights:
    """Append messages sent to a peer in replicate state and not yet acknowledged, bounded
    in count (max_inflight_msgs) and in bytes (max_inflight_bytes, 0: no byte bound)."""

    __slots__ = ("_queue", "_bytes", "size", "max_bytes")

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        assert size > 0, size
        self._queue: deque[tuple[int, int]] = deque()
        self._bytes = 0
        self.size = size
        self.max_bytes = max_bytes

    def add(self, index: int, size_bytes: int) -> None:
        assert not self.full(), ("inflights full", self.size, self._bytes)
        self._queue.append((index, size_bytes))
        self._bytes += size_bytes

    def free_le(self, index: int) -> None:
        """Forget messages whose last index is <= index (acknowledged)."""
        q = self._queue
        while q and q[0][0] <= index:
            self._bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._queue:
            self._bytes -= self._queue.popleft()[1]

    def full(self) -> bool:
        return len(self._queue) >= self.size or \
            (self.max_bytes > 0 and self._bytes >= self.max_bytes)

    def count(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self._bytes = 0


class Progress:
    """A leader's view of one follower.

    match: highest index known replicated there. next: index of the next entry to send
    (match < next). In PROBE state at most one append is in flight (probe_sent); in REPLICATE
    the leader streams optimistically within `inflights`; in SNAPSHOT it waits for the
    snapshot at pending_snapshot to be reported. appended: an append was sent to the peer
    since the leader's last heartbeat round.
    """

    __slots__ = ("match", "next", "state", "pending_snapshot", "recent_active", "probe_sent",
                 "inflights", "is_learner", "pending_request_snapshot", "appended")

    def __init__(self, next_index: int, inflights: Inflights, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.probe_sent = False
        self.inflights = inflights
        self.is_learner = is_learner
        self.pending_request_snapshot = 0
        self.appended = False

    def copy(self) -> Progress:
        inflights = Inflights(self.inflights.size, self.inflights.max_bytes)
        pr = Progress(self.next, inflights, self.is_learner)
        pr.match, pr.state = self.match, self.state
        pr.pending_snapshot, pr.recent_active = self.pending_snapshot, self.recent_active
        pr.probe_sent = self.probe_sent
        pr.pending_request_snapshot = self.pending_request_snapshot
        pr.appended = self.appended
        if self.state == ProgressState.REPLICATE:
            for index, size in self.inflights._queue:
                inflights.add(index, size)
        return pr

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        pending = self.pending_snapshot if self.state == ProgressState.SNAPSHOT else 0
        self._reset_state(ProgressState.PROBE)
        self.next = max(self.match + 1, pending + 1)

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to index arrived; returns whether match moved."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append at `rejected` was refused; the follower's log ends near match_hint.
        Returns False if the rejection is stale (refers to an older probe)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        s = f"{self.state.name} match={self.match} next={self.next}"
        if self.is_learner:
            s += " learner"
        if self.state == ProgressState.SNAPSHOT:
            s += f" pending_snapshot={self.pending_snapshot}"
        if self.probe_sent:
            s += " paused"
        if self.inflights.count():
            s += f" inflight={self.inflights.count()}"
        return s


class TrackerConfig:
    """Membership: voters (maybe joint), learners, and learners_next (voters of the outgoing
    config being demoted: they become learners when the joint config is left)."""

    __slots__ = ("voters", "learners", "learners_next", "auto_leave")

    def __init__(self, voters: JointConfig, learners: frozenset[int] = frozenset(),
                 learners_next: frozenset[int] = frozenset(), auto_leave: bool = False):
        self.voters = voters
        self.learners = learners
        self.learners_next = learners_next
        self.auto_leave = auto_leave

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(sorted(self.voters.incoming)),
                         learners=tuple(sorted(self.learners)),
                         voters_outgoing=tuple(sorted(self.voters.outgoing)),
                         learners_next=tuple(sorted(self.learners_next)),
                         auto_leave=self.auto_leave)

    def __repr__(self) -> str:
        s = f"voters={self.voters!r}"
        if self.learners:
            s += f" learners=({' '.join(map(str, sorted(self.learners)))})"
        if self.learners_next:
            s += f" learners_next=({' '.join(map(str, sorted(self.learners_next)))})"
        if self.auto_leave:
            s += " autoleave"
        return s


class ProgressTracker:
    """The config, a Progress per member, and the votes of the current election."""

    __slots__ = ("config", "progress", "votes", "max_inflight_msgs", "max_inflight_bytes")

    def __init__(self, max_inflight_msgs: int, max_inflight_bytes: int) -> None:
        self.config = TrackerConfig(JointConfig(frozenset()))
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight_msgs = max_inflight_msgs
        self.max_inflight_bytes = max_inflight_bytes

    def new_progress(self, next_index: int, is_learner: bool) -> Progress:
        return Progress(next_index, Inflights(self.max_inflight_msgs, self.max_inflight_bytes),
                        is_learner)

    def committed(self) -> int:
        progress = self.progress
        return self.config.voters.committed_index(lambda i: progress[i].match)

    def quorum_active(self) -> bool:
        progress = self.progress
        return self.config.voters.is_active(lambda i: progress[i].recent_active)

    def voter_ids(self) -> frozenset[int]:
        return self.config.voters.ids()

    def is_singleton(self) -> bool:
        v = self.config.voters
        return len(v.incoming) == 1 and not v.outgoing

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.votes.values() if v)
        rejected = len(self.votes) - granted
        return granted, rejected, self.config.voters.vote_result(self.votes)
