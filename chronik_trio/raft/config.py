"""Configuration of one Raft node."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import ConfigInvalid
from .types import ReadOnlyOption

MAX_SIZE_PER_MSG_BYTES = 1 << 20
"""Default bound on the entries of one append message: large enough to batch well, small
enough that one message does not monopolise a peer connection."""
MAX_INFLIGHT_MSGS = 256
"""Default bound on unacknowledged appends per follower in replicate state."""
MAX_INFLIGHT_BYTES = 32 << 20
"""Default bound on the bytes of those appends (memory held by the transport per peer)."""
MAX_UNCOMMITTED_SIZE_BYTES = 64 << 20
"""Default bound on proposed-but-uncommitted entry data a leader accepts: beyond it proposals
are dropped, so a leader that lost its quorum does not grow its log without limit."""
MAX_COMMITTED_SIZE_PER_READY_BYTES = 16 << 20
"""Default bound on committed entry data handed out in one Ready."""


@dataclass
class Config:
    """Parameters of a RawNode. `id` is this node's id (>= 1).

    election_tick: ticks a follower waits without hearing from a leader before campaigning;
    the actual timeout is drawn from [election_tick, 2 * election_tick) with `rng`.
    heartbeat_tick: ticks between leader heartbeats (must be < election_tick).
    applied: the last index the state machine has applied (restart).
    rng: the only source of randomness; None means random.Random(id), deterministic.
    skip_bcast_commit (raft-rs's option of that name): a leader whose commit index moves
    does not send each follower an append of its own to say so; the new commit index goes
    with the next append that carries entries, or the next heartbeat. Followers then learn
    of a commit (and apply it) later, by up to a heartbeat interval when nothing else is
    sent, in exchange for a round of messages fewer per commit. While a membership change
    is pending (proposed, not yet applied here) the commit is sent at once all the same.
    Safety does not depend on it: a follower's commit index only decides what it applies.
    skip_heartbeat_after_append: a leader's periodic heartbeat to a follower is left out when
    an append went to that follower since the previous round: that append reset the
    follower's election timer already (Raft paper, Figure 2: heartbeats are for idle
    periods). With skip_bcast_commit, the commit index of the last entries of a burst then
    reaches the followers one round later (up to two heartbeat intervals). A heartbeat
    carrying a ReadIndex request is always sent.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg_bytes: int = MAX_SIZE_PER_MSG_BYTES
    max_inflight_msgs: int = MAX_INFLIGHT_MSGS
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES
    max_uncommitted_size_bytes: int = MAX_UNCOMMITTED_SIZE_BYTES
    max_committed_size_per_ready_bytes: int = MAX_COMMITTED_SIZE_PER_READY_BYTES
    check_quorum: bool = True
    pre_vote: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    disable_proposal_forwarding: bool = False
    skip_bcast_commit: bool = False
    skip_heartbeat_after_append: bool = False
    rng: random.Random | None = field(default=None, repr=False)

    def validate(self) -> None:
        """Raises ConfigInvalid."""
        if self.id <= 0:
            raise ConfigInvalid(f"id must be >= 1, got {self.id}")
        if self.heartbeat_tick <= 0:
            raise ConfigInvalid(f"heartbeat_tick must be > 0, got {self.heartbeat_tick}")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigInvalid(f"election_tick {self.election_tick} must be greater than "
                                f"heartbeat_tick {self.heartbeat_tick}")
        if self.max_inflight_msgs <= 0:
            raise ConfigInvalid(f"max_inflight_msgs must be > 0, got {self.max_inflight_msgs}")
        if self.max_inflight_bytes < 0 or self.max_uncommitted_size_bytes <= 0 or \
                self.max_size_per_msg_bytes <= 0 or self.max_committed_size_per_ready_bytes <= 0:
            raise ConfigInvalid("size limits must be positive")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ConfigInvalid("lease-based reads need check_quorum (the lease is the "
                                "check-quorum interval)")
