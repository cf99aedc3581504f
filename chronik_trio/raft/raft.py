"""The Raft state machine (one node of one group). RawNode (rawnode.py) is its public face.

Roles are a swapped pair (message handlers, tick function): `_become_*` installs the pair
for the new role, so no handler tests "am I the leader?". Messages leave through `msgs`
(may be sent at once) and `msgs_after_append` (responses that promise durable state; sent
once the Ready that carries that state is persisted). A candidate's vote for itself is such
a response addressed to itself: RawNode delivers it after the persist, so a node never wins
an election with a vote it might forget in a crash.
"""

from __future__ import annotations

import random
from typing import Callable

from . import confchange
from .config import Config
from .convert import decode_conf_change, encode_conf_change
from .errors import (Compacted, ConfChangeInvalid, ProposalDropped, ReadIndexDropped,
                     SnapshotTemporarilyUnavailable, Unavailable)
from .log import RaftLog
from .quorum import VoteResult
from .read_only import ReadOnly
from .storage import Storage
from .tracker import Progress, ProgressTracker, TrackerConfig
from .types import (AFTER_PERSIST_MESSAGES, EMPTY_HARD_STATE, NONE, ConfChangeV2, ConfState,
                    Entry, EntryType, HardState, Message, MessageType, ProgressState,
                    ReadOnlyOption, ReadState, Snapshot, SoftState, StateRole)

MT = MessageType

CAMPAIGN_TRANSFER = b"CampaignTransfer"
"""Vote-request context of a campaign started by leader transfer: it overrides the lease."""

MAX_PENDING_READ_INDEX_MESSAGES = 4096
"""Reads a new leader holds until it has committed an entry of its term."""

OUTBOX_MESSAGES_MAX = 65536
"""Messages waiting for the next Ready; beyond it new ones are dropped (as a network would)
rather than growing without bound while the caller does not collect Readies."""

CONF_SCAN_PAGE_BYTES = 1 << 20
"""Page size when scanning committed-but-unapplied entries for conf changes."""


class Raft:
    """State of one Raft node. Fields use the paper's and etcd's names.

    term, vote: the durable HardState (with log.committed). leader_id: who we believe leads
    `term` (NONE if unknown). election_elapsed_ticks / heartbeat_elapsed_ticks: ticks since
    the last reset of each timer. lead_transferee: target of an ongoing leader transfer or
    NONE.
    pending_conf_index: a conf change may be proposed only once applied >= this index.
    """

    def __init__(self, cfg: Config, storage: Storage) -> None:
        cfg.validate()
        self.id = cfg.id
        self.rng = cfg.rng if cfg.rng is not None else random.Random(cfg.id)
        self.log = RaftLog(storage, cfg.max_committed_size_per_ready_bytes)
        self.trk = ProgressTracker(cfg.max_inflight_msgs, cfg.max_inflight_bytes)
        self.election_timeout_ticks = cfg.election_tick
        self.heartbeat_timeout_ticks = cfg.heartbeat_tick
        self.max_size_per_msg_bytes = cfg.max_size_per_msg_bytes
        self.max_uncommitted_size_bytes = cfg.max_uncommitted_size_bytes
        self.check_quorum = cfg.check_quorum
        self.pre_vote = cfg.pre_vote
        self.disable_proposal_forwarding = cfg.disable_proposal_forwarding
        self.skip_bcast_commit = cfg.skip_bcast_commit
        self.skip_heartbeat_after_append = cfg.skip_heartbeat_after_append
        self.read_only = ReadOnly(cfg.read_only_option)
        self.msgs: list[Message] = []
        self.msgs_after_append: list[Message] = []
        self.read_states: list[ReadState] = []
        self.pending_read_index_messages: list[Message] = []
        self.term = 0
        self.vote = NONE
        self.leader_id = NONE
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        # True while the newest config in our log leaves us out of the incoming voters. A
        # leader then appends no more proposals: entries only it holds would make it refuse
        # its vote to voters that still need it (they have not applied the change yet),
        # while it may no longer campaign itself - a deadlock once it crashes.
        self.leaving_voters = False
        self.bcast_pending = False
        self.pending_request_snapshot = 0
        self.uncommitted_size_bytes = 0
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_election_timeout_ticks = cfg.election_tick
        self.state = StateRole.FOLLOWER
        self._handlers: dict[MessageType, Callable[[Message], None]] = {}
        self._tick: Callable[[], None] = self._tick_election

        hs, cs = storage.initial_state()
        cfg_, prs = confchange.restore(self.trk, self.log.last_index(), cs)
        self.trk.config, self.trk.progress = cfg_, prs
        if hs != EMPTY_HARD_STATE:
            self._load_hard_state(hs)
        if cfg.applied > 0:
            assert cfg.applied <= self.log.committed, (cfg.applied, self.log.committed)
            self.log.applying = max(self.log.applying, cfg.applied)
            self.log.applied_to(cfg.applied)
        self._role_handlers = {
            StateRole.FOLLOWER: self._follower_handlers(),
            StateRole.PRE_CANDIDATE: self._candidate_handlers(),
            StateRole.CANDIDATE: self._candidate_handlers(),
            StateRole.LEADER: self._leader_handlers(),
        }
        self._become_follower(self.term, NONE)

    def _load_hard_state(self, hs: HardState) -> None:
        assert hs.commit <= self.log.last_index(), (hs, self.log.last_index())
        # A snapshot holds only committed state, so its index counts as committed even if
        # the application compacted past the commit index it last persisted.
        self.log.committed = max(hs.commit, self.log.committed)
        self.term = hs.term
        self.vote = hs.vote

    # -- state snapshots --------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(leader_id=self.leader_id, role=self.state)

    def promotable(self) -> bool:
        """Whether this node may campaign: a voter, not installing a snapshot."""
        pr = self.trk.progress.get(self.id)
        return pr is not None and not pr.is_learner and self.log.unstable.snapshot is None

    # -- sending ----------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        out = self.msgs_after_append if m.type in AFTER_PERSIST_MESSAGES else self.msgs
        if len(out) >= OUTBOX_MESSAGES_MAX and m.to != self.id:
            return  # Raft tolerates lost messages; a caller this far behind is stalled anyway
        out.append(m)

    def _msg(self, type_: MessageType, to: int, **fields) -> Message:
        term = fields.pop("term", self.term)
        return Message(type=type_, to=to, from_=self.id, term=term, **fields)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send `to` the entries it lacks (or a probe, or a snapshot); returns whether a
        message was sent."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        if pr.pending_request_snapshot:
            return self._send_snapshot(to, pr)
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            ents = self.log.entries_from(pr.next, self.max_size_per_msg_bytes)
        except (Compacted, Unavailable):
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(self._msg(MT.APPEND, to, index=prev_index, log_term=prev_term,
                             entries=tuple(ents), commit=self.log.committed))
        pr.appended = True
        if pr.state == ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.add(last, sum(len(e.data) for e in ents))
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't ship a snapshot to a peer that seems down
        try:
            snap = self.log.storage.snapshot(pr.pending_request_snapshot)
        except SnapshotTemporarilyUnavailable:
            return False
        assert not snap.is_empty(), ("empty snapshot for", to)
        pr.become_snapshot(snap.index)
        pr.pending_request_snapshot = 0
        self._send(self._msg(MT.SNAPSHOT, to, snapshot=snap))
        return True

    def _bcast_append(self) -> None:
        for node_id in self.trk.progress:
            if node_id != self.id:
                self._send_append(node_id)

    def _bcast_commit(self) -> None:
        """Our commit index moved: tell every follower at once with an append (empty if it
        has every entry already), unless skip_bcast_commit defers that to the next append
        with entries or the next heartbeat (both carry the commit index). A pending
        membership change is always told at once: a joining replica waits for its commit."""
        if not self.skip_bcast_commit or self.pending_conf_index > self.log.applied:
            self._bcast_append()

    def _bcast_heartbeat(self, periodic: bool = False) -> None:
        """periodic: the heartbeat round of a heartbeat timeout (BEAT), which may leave out
        followers an append just reached (skip_heartbeat_after_append)."""
        ctx = self.read_only.last_pending_request_ctx()
        skip = periodic and self.skip_heartbeat_after_append and not ctx
        if skip:
            self.flush_bcast()  # proposals waiting for the Ready go first, and count
        committed = self.log.committed
        for node_id, pr in self.trk.progress.items():
            if node_id == self.id:
                continue
            appended, pr.appended = pr.appended, False
            if skip and appended:
                continue  # an append since the last round reset its election timer
            # Never tell a follower to commit past what it is known to hold.
            self._send(self._msg(MT.HEARTBEAT, node_id, commit=min(pr.match, committed),
                                 context=ctx))

    # -- role changes -----------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader_id = NONE
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_election_timeout_ticks = \
            self.election_timeout_ticks + self.rng.randrange(self.election_timeout_ticks)
        self.lead_transferee = NONE
        self.trk.reset_votes()
        last = self.log.last_index()
        for node_id, pr in self.trk.progress.items():
            is_learner = pr.is_learner
            new = self.trk.new_progress(last + 1, is_learner)
            if node_id == self.id:
                new.match = self.log.persisted_index()
                new.recent_active = True
            self.trk.progress[node_id] = new
        self.pending_conf_index = 0
        self.leaving_voters = self.id not in self.trk.config.voters.incoming
        self.uncommitted_size_bytes = 0
        self.read_only = ReadOnly(self.read_only.option)
        self.pending_read_index_messages = []

    def _set_role(self, role: StateRole) -> None:
        self.state = role
        self._handlers = self._role_handlers[role]
        self._tick = self._tick_heartbeat if role == StateRole.LEADER else self._tick_election

    def _become_follower(self, term: int, leader_id: int) -> None:
        self._reset(term)
        self.leader_id = leader_id
        self._set_role(StateRole.FOLLOWER)

    def _become_pre_candidate(self) -> None:
        assert self.state != StateRole.LEADER, "leader -> pre-candidate"
        # Neither term nor vote change: a pre-vote campaign leaves no durable trace.
        self.trk.reset_votes()
        self.leader_id = NONE
        self._set_role(StateRole.PRE_CANDIDATE)

    def _become_candidate(self) -> None:
        assert self.state != StateRole.LEADER, "leader -> candidate"
        self._reset(self.term + 1)
        self.vote = self.id
        self._set_role(StateRole.CANDIDATE)

    def _become_leader(self) -> None:
        assert self.state == StateRole.CANDIDATE, ("-> leader from", self.state)
        self._reset(self.term)
        self.leader_id = self.id
        self._set_role(StateRole.LEADER)
        self.trk.progress[self.id].become_replicate()
        # Conf changes in the uncommitted tail may be pending: allow none until applied.
        self.pending_conf_index = self.log.last_index()
        # One of them may remove us: until they are applied, act as if it does.
        self.leaving_voters = self.leaving_voters or self._has_conf_change_between(
            self.log.applied + 1, self.log.last_index() + 1)
        # The empty entry commits the entries of earlier terms (Raft paper 5.4.2).
        assert self._append_entries([Entry(term=0, index=0)])

    # -- ticks ------------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed_ticks += 1
        timed_out = self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
        if timed_out and self.promotable():
            self.election_elapsed_ticks = 0
            self.step(Message(type=MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed_ticks += 1
        self.election_elapsed_ticks += 1
        if self.election_elapsed_ticks >= self.election_timeout_ticks:
            self.election_elapsed_ticks = 0
            if self.check_quorum:
                self.step(Message(type=MT.CHECK_QUORUM, from_=self.id))
            if self.state == StateRole.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer took an election timeout: give up
            self._maybe_hand_off_leadership()
        if self.state != StateRole.LEADER:
            return
        if self.heartbeat_elapsed_ticks >= self.heartbeat_timeout_ticks:
            self.heartbeat_elapsed_ticks = 0
            self.step(Message(type=MT.BEAT, from_=self.id))

    # -- step: term checks common to all roles ----------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message. Raises ProposalDropped / ReadIndexDropped for local requests
        that cannot be served."""
        if m.term > self.term:
            if not self._step_higher_term(m):
                return
        elif 0 < m.term < self.term:
            self._step_lower_term(m)
            return
        if m.type == MT.HUP:
            self._hup(transfer=False)
        elif m.type == MT.VOTE or m.type == MT.PRE_VOTE:
            self._handle_vote_request(m)
        else:
            handler = self._handlers.get(m.type)
            if handler is not None:
                handler(m)

    def _step_higher_term(self, m: Message) -> bool:
        """Returns whether m should still be handled."""
        if m.type == MT.VOTE or m.type == MT.PRE_VOTE:
            force = m.context == CAMPAIGN_TRANSFER
            in_lease = self.check_quorum and self.leader_id != NONE and \
                self.election_elapsed_ticks < self.election_timeout_ticks
            if in_lease and not force:
                # Leader lease (thesis 4.2.3): we heard from a leader within the minimum
                # election timeout, so ignore a candidate that would disrupt it.
                return False
        if m.type == MT.PRE_VOTE:
            return True  # answering a pre-vote never changes our term
        if m.type == MT.PRE_VOTE_RESPONSE and not m.reject:
            return True  # the term in a granted pre-vote is the one we will campaign in
        leader = m.from_ if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT) else NONE
        self._become_follower(m.term, leader)
        return True

    def _step_lower_term(self, m: Message) -> None:
        if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APPEND):
            # A stale leader, perhaps cut off while we moved on: tell it our term so it
            # steps down (with check-quorum/pre-vote our term does not reach it otherwise).
            self._send(self._msg(MT.APPEND_RESPONSE, m.from_))
        elif m.type == MT.PRE_VOTE:
            self._send(self._msg(MT.PRE_VOTE_RESPONSE, m.from_, reject=True))
        elif m.type == MT.VOTE:
            # The paper's rule (Figure 2): answer with our term so the candidate catches up.
            # Without pre-vote, a voter whose vote only we can give (its config is newer than
            # ours) could otherwise climb terms no faster than we do and never reach ours;
            # the simulation found that livelock.
            self._send(self._msg(MT.VOTE_RESPONSE, m.from_, reject=True))

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = self.vote == m.from_ or \
            (self.vote == NONE and self.leader_id == NONE) or \
            (m.type == MT.PRE_VOTE and m.term > self.term)
        resp = MT.VOTE_RESPONSE if m.type == MT.VOTE else MT.PRE_VOTE_RESPONSE
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(self._msg(resp, m.from_, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed_ticks = 0
                self.vote = m.from_
        else:
            self._send(self._msg(resp, m.from_, reject=True))

    # -- elections --------------------------------------------------------------------------

    def _hup(self, transfer: bool) -> None:
        if self.state == StateRole.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            return  # its outcome decides who may vote; wait until it is applied
        if self.pre_vote and not transfer:
            self._campaign(pre_vote=True, transfer=False)
        else:
            self._campaign(pre_vote=False, transfer=transfer)

    def _has_unapplied_conf_changes(self) -> bool:
        return self._has_conf_change_between(self.log.applied + 1, self.log.committed + 1)

    def _has_conf_change_between(self, lo: int, hi: int) -> bool:
        while lo < hi:
            ents = self.log.slice(lo, hi, CONF_SCAN_PAGE_BYTES)
            if any(e.type == EntryType.CONF_CHANGE_V2 for e in ents):
                return True
            lo = ents[-1].index + 1
        return False

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
            self.trk.record_vote(self.id, True)
            if self.trk.tally()[2] == VoteResult.WON:
                self._campaign(pre_vote=False, transfer=False)  # a single voter
                return
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
            # Our own vote counts once it is durable (see the module docstring).
            self._send(self._msg(MT.VOTE_RESPONSE, self.id))
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node_id in sorted(self.trk.voter_ids()):
            if node_id != self.id:
                self._send(self._msg(vote_type, node_id, term=term, index=last_index,
                                     log_term=last_term, context=ctx))

    def _candidate_vote_response(self, m: Message) -> None:
        expected = MT.PRE_VOTE_RESPONSE if self.state == StateRole.PRE_CANDIDATE \
            else MT.VOTE_RESPONSE
        if m.type != expected:
            return
        self.trk.record_vote(m.from_, not m.reject)
        result = self.trk.tally()[2]
        if result == VoteResult.WON:
            if self.state == StateRole.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
                self._bcast_append()
        elif result == VoteResult.LOST:
            self._become_follower(self.term, NONE)

    # -- role handler tables ----------------------------------------------------------------

    def _follower_handlers(self) -> dict[MessageType, Callable[[Message], None]]:
        return {
            MT.PROPOSE: self._follower_forward,
            MT.APPEND: self._follower_append,
            MT.HEARTBEAT: self._follower_heartbeat,
            MT.SNAPSHOT: self._follower_snapshot,
            MT.TRANSFER_LEADER: self._follower_forward,
            MT.TIMEOUT_NOW: lambda m: self._hup(transfer=True),
            MT.READ_INDEX: self._follower_forward,
            MT.READ_INDEX_RESPONSE: self._follower_read_index_response,
        }

    def _candidate_handlers(self) -> dict[MessageType, Callable[[Message], None]]:
        def from_leader(handle: Callable[[Message], None]) -> Callable[[Message], None]:
            def step(m: Message) -> None:
                self._become_follower(m.term, m.from_)  # a leader of our term exists
                handle(m)
            return step
        return {
            MT.PROPOSE: self._drop_proposal,
            MT.READ_INDEX: self._drop_read,
            MT.APPEND: from_leader(self._follower_append),
            MT.HEARTBEAT: from_leader(self._follower_heartbeat),
            MT.SNAPSHOT: from_leader(self._follower_snapshot),
            MT.VOTE_RESPONSE: self._candidate_vote_response,
            MT.PRE_VOTE_RESPONSE: self._candidate_vote_response,
        }

    def _leader_handlers(self) -> dict[MessageType, Callable[[Message], None]]:
        return {
            MT.BEAT: lambda m: self._bcast_heartbeat(periodic=True),
            MT.CHECK_QUORUM: self._leader_check_quorum,
            MT.PROPOSE: self._leader_propose,
            MT.READ_INDEX: self._leader_read_index,
            MT.APPEND_RESPONSE: self._leader_append_response,
            MT.HEARTBEAT_RESPONSE: self._leader_heartbeat_response,
            MT.SNAP_STATUS: self._leader_snap_status,
            MT.UNREACHABLE: self._leader_unreachable,
            MT.TRANSFER_LEADER: self._leader_transfer,
        }

    # -- follower ---------------------------------------------------------------------------

    def _drop_proposal(self, m: Message) -> None:
        raise ProposalDropped(f"{self.id} is {self.state.name} in term {self.term}")

    def _drop_read(self, m: Message) -> None:
        raise ReadIndexDropped(f"{self.id} is {self.state.name} in term {self.term}")

    def _follower_forward(self, m: Message) -> None:
        if self.leader_id == NONE:
            if m.type == MT.READ_INDEX:
                self._drop_read(m)
            if m.type == MT.PROPOSE:
                self._drop_proposal(m)
            return
        if m.type == MT.PROPOSE and self.disable_proposal_forwarding:
            raise ProposalDropped(f"forwarding disabled, leader is {self.leader_id}")
        from_ = m.from_ if m.type == MT.TRANSFER_LEADER else self.id
        self._send(Message(type=m.type, to=self.leader_id, from_=from_, entries=m.entries,
                           context=m.context))

    def _follower_append(self, m: Message) -> None:
        self.election_elapsed_ticks = 0
        self.leader_id = m.from_
        if self.pending_request_snapshot:
            self._send_request_snapshot()
            return
        if m.index < self.log.committed:
            self._send(self._msg(MT.APPEND_RESPONSE, m.from_, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(self._msg(MT.APPEND_RESPONSE, m.from_, index=last_new))
            return
        # Reject with a hint (thesis 5.3): the largest index whose term is <= the leader's
        # term at m.index, so the leader can skip a whole term of conflicts per round trip.
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term)
        self._send(self._msg(MT.APPEND_RESPONSE, m.from_, index=m.index, reject=True,
                             reject_hint=hint_index, log_term=hint_term))

    def _follower_heartbeat(self, m: Message) -> None:
        self.election_elapsed_ticks = 0
        self.leader_id = m.from_
        self.log.commit_to(m.commit)
        self._send(self._msg(MT.HEARTBEAT_RESPONSE, m.from_, context=m.context))

    def _follower_snapshot(self, m: Message) -> None:
        self.election_elapsed_ticks = 0
        self.leader_id = m.from_
        assert m.snapshot is not None, m
        if self.restore(m.snapshot):
            self._send(self._msg(MT.APPEND_RESPONSE, m.from_, index=self.log.last_index()))
        else:
            self._send(self._msg(MT.APPEND_RESPONSE, m.from_, index=self.log.committed))

    def _follower_read_index_response(self, m: Message) -> None:
        self.read_states.append(ReadState(index=m.index, request_ctx=m.context))

    def _send_request_snapshot(self) -> None:
        self._send(self._msg(MT.APPEND_RESPONSE, self.leader_id, index=self.log.committed,
                             reject=True, reject_hint=self.log.last_index(),
                             request_snapshot=self.pending_request_snapshot))

    def request_snapshot(self) -> None:
        """Ask the leader for a snapshot at least as new as our commit index."""
        if self.state != StateRole.FOLLOWER or self.leader_id == NONE:
            raise ProposalDropped(f"{self.id} is {self.state.name} without a leader to ask")
        self.pending_request_snapshot = max(self.log.committed, 1)
        self._send_request_snapshot()

    def restore(self, snap: Snapshot) -> bool:
        """Install snap if it is newer than our commit; returns whether it was installed."""
        requested = self.pending_request_snapshot and snap.index >= self.pending_request_snapshot
        if snap.index < self.log.committed or (snap.index == self.log.committed and not requested):
            return False
        # We may be missing from the snapshot's config: a node added after the snapshot was
        # taken learns of its membership from the conf-change entries that follow it.
        cs = snap.metadata.conf_state
        if not requested and self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we have its entries; fast-forward the commit
            return False
        self.log.restore(snap)
        self.trk.config, self.trk.progress = confchange.restore(self.trk, snap.index, cs)
        self.pending_request_snapshot = 0
        return True

    # -- leader -----------------------------------------------------------------------------

    def _leader_check_quorum(self, m: Message) -> None:
        if not self.trk.quorum_active():
            self._become_follower(self.term, NONE)  # heard from no quorum for a timeout
        for node_id, pr in self.trk.progress.items():
            if node_id != self.id:
                pr.recent_active = False

    def _leader_propose(self, m: Message) -> None:
        assert m.entries, m
        if self.id not in self.trk.progress:
            raise ProposalDropped(f"leader {self.id} is no longer a member")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is moving to {self.lead_transferee}")
        conf_at, next_cfg = 0, None
        for i, e in enumerate(m.entries):
            cc = decode_conf_change(e.data) if e.type == EntryType.CONF_CHANGE_V2 else None
            if self.leaving_voters and (cc is None or not cc.leaves_joint()):
                # Only finishing the joint config may follow our own removal (see
                # leaving_voters in __init__).
                raise ProposalDropped(f"leader {self.id} is leaving the voters; "
                                      "leadership is being handed off")
            if cc is not None:
                next_cfg = self._check_conf_change(cc)
                conf_at = self.log.last_index() + i + 1
        if not self._append_entries(list(m.entries)):
            raise ProposalDropped(f"uncommitted size over {self.max_uncommitted_size_bytes} B")
        if next_cfg is not None:
            self.pending_conf_index = conf_at
            self.leaving_voters = self.id not in next_cfg.voters.incoming
        # Replicate when the caller next collects a Ready, not per proposal: a burst of
        # proposals then leaves in one append per follower instead of one each.
        self.bcast_pending = True

    def flush_bcast(self) -> None:
        """Send the appends deferred by proposals (RawNode calls it before a Ready)."""
        if self.bcast_pending:
            self.bcast_pending = False
            if self.state == StateRole.LEADER:
                for node_id in self.trk.progress:
                    if node_id != self.id:
                        self._send_append(node_id, send_if_empty=False)

    def _check_conf_change(self, cc: ConfChangeV2) -> TrackerConfig:
        """The config cc leads to; raises ProposalDropped if cc may not be proposed now."""
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(f"conf change at {self.pending_conf_index} not yet applied "
                                  f"(applied {self.log.applied})")
        joint = self.trk.config.voters.is_joint()
        if joint and not cc.leaves_joint():
            raise ProposalDropped("config is joint: only leaving it may be proposed")
        if not joint and cc.leaves_joint():
            raise ProposalDropped("config is not joint: nothing to leave")
        try:
            return confchange.apply_conf_change(self.trk, self.log.last_index(), cc)[0]
        except ConfChangeInvalid as e:
            raise ProposalDropped(f"invalid conf change: {e}") from e

    def _append_entries(self, ents: list[Entry]) -> bool:
        """Append proposals at the end of the log in this term; False if over the
        uncommitted-size bound (a lone entry of any size is always accepted)."""
        size = sum(len(e.data) for e in ents)
        if self.uncommitted_size_bytes > 0 and size > 0 and \
                self.uncommitted_size_bytes + size > self.max_uncommitted_size_bytes:
            return False
        self.uncommitted_size_bytes += size
        last = self.log.last_index()
        term = self.term
        self.log.append([Entry(term=term, index=last + 1 + i, data=e.data, type=e.type)
                         for i, e in enumerate(ents)])
        return True

    def reduce_uncommitted_size(self, ents: list[Entry]) -> None:
        if self.state != StateRole.LEADER:
            return
        size = sum(len(e.data) for e in ents)
        self.uncommitted_size_bytes = max(0, self.uncommitted_size_bytes - size)

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds, if that entry is of our term."""
        if not self.log.maybe_commit(self.trk.committed(), self.term):
            return False
        if self.pending_read_index_messages and self._committed_entry_in_current_term():
            pending, self.pending_read_index_messages = self.pending_read_index_messages, []
            for m in pending:
                self._serve_read_index(m)
        return True

    def on_persisted(self, index: int, term: int) -> None:
        """Entries up to (index, term) are durable (called by RawNode)."""
        if self.log.unstable.stable_to(index, term):
            assert self.log.storage.last_index() >= index, \
                ("persisted up to", index, "but storage ends at", self.log.storage.last_index())
        if self.state != StateRole.LEADER:
            return
        pr = self.trk.progress.get(self.id)
        if pr is not None and pr.maybe_update(self.log.persisted_index()) and self._maybe_commit():
            self._bcast_commit()

    def _leader_append_response(self, m: Message) -> None:
        pr = self.trk.progress[m.from_]
        pr.recent_active = True
        if m.request_snapshot:
            if pr.state != ProgressState.SNAPSHOT:
                pr.become_probe()
                pr.pending_request_snapshot = m.request_snapshot
                self._send_append(m.from_)
            return
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.from_)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()  # the snapshot (or appends after it) caught it up
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._bcast_commit()
        elif was_paused:
            self._send_append(m.from_)
        while self._send_append(m.from_, send_if_empty=False):
            pass  # bounded: each send fills inflights or pauses a probe
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self._send(self._msg(MT.TIMEOUT_NOW, m.from_))

    def append_response_can_wait(self, m: Message) -> bool:
        """Whether stepping m later (with the next message, tick or proposal) delays nothing
        but this leader's bookkeeping of the sender: m acknowledges entries already
        committed, from a follower in replicate state that has been sent every entry and
        whose flow is not paused, with no leader transfer under way. Stepping it would then
        move that follower's match and free its inflights, and do nothing else: no commit
        (the entries are committed), no send (nothing is left to send it)."""
        if (m.type != MT.APPEND_RESPONSE or self.state != StateRole.LEADER or m.term != self.term
                or m.reject or m.request_snapshot or self.lead_transferee != NONE):
            return False
        pr = self.trk.progress.get(m.from_)
        return (pr is not None and pr.state == ProgressState.REPLICATE and not pr.inflights.full()
                and pr.next > self.log.last_index() and m.index <= self.log.committed)

    def _leader_heartbeat_response(self, m: Message) -> None:
        pr = self.trk.progress[m.from_]
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()  # a lost append must not stall the pipe forever
        if pr.match < self.log.last_index() or pr.pending_request_snapshot:
            self._send_append(m.from_)
        if self.read_only.option != ReadOnlyOption.SAFE or not m.context:
            return
        acks = self.read_only.recv_ack(m.from_, m.context)
        if acks is None:
            return
        if self.trk.config.voters.vote_result({i: True for i in acks}) != VoteResult.WON:
            return
        for status in self.read_only.advance(m.context):
            self._respond_read(status.request, status.index)

    def _leader_snap_status(self, m: Message) -> None:
        pr = self.trk.progress.get(m.from_)
        if pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if m.reject:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for a heartbeat response before probing again

    def _leader_unreachable(self, m: Message) -> None:
        pr = self.trk.progress.get(m.from_)
        if pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()  # stop streaming optimistically into a void

    def _leader_transfer(self, m: Message) -> None:
        transferee = m.from_
        pr = self.trk.progress.get(transferee)
        if pr is None or pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return
            self.lead_transferee = NONE
        if transferee == self.id:
            return
        self.election_elapsed_ticks = 0  # the transfer must finish within an election timeout
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self._send(self._msg(MT.TIMEOUT_NOW, transferee))
        else:
            self._send_append(transferee)

    # -- read index -------------------------------------------------------------------------

    def _committed_entry_in_current_term(self) -> bool:
        return self.log.match_term(self.log.committed, self.term)

    def _leader_read_index(self, m: Message) -> None:
        if not self._committed_entry_in_current_term():
            # Our commit index may lag what was committed before (by the previous leader,
            # or by us before a restart: the commit index in the hard state may be older
            # than what was applied) until an entry of our term commits (thesis 6.4). Even
            # a single voter must wait; the simulation found that case.
            if len(self.pending_read_index_messages) >= MAX_PENDING_READ_INDEX_MESSAGES:
                raise ReadIndexDropped("too many reads waiting for the first commit")
            self.pending_read_index_messages.append(m)
            return
        self._serve_read_index(m)

    def _serve_read_index(self, m: Message) -> None:
        if self.trk.is_singleton() and self.id in self.trk.config.voters.incoming:
            # We alone are the quorum. (A leader that is no longer a voter must not take
            # this shortcut: the sole voter may already lead a later term.)
            self._respond_read(m, self.log.committed)
        elif self.read_only.option == ReadOnlyOption.SAFE:
            self.read_only.add_request(self.log.committed, m)
            self.read_only.recv_ack(self.id, m.context)
            self._bcast_heartbeat()
        else:
            self._respond_read(m, self.log.committed)

    def _respond_read(self, req: Message, index: int) -> None:
        if req.from_ in (NONE, self.id):
            self.read_states.append(ReadState(index=index, request_ctx=req.context))
        else:
            self._send(self._msg(MT.READ_INDEX_RESPONSE, req.from_, index=index,
                                 context=req.context))

    # -- membership -------------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChangeV2) -> ConfState:
        """Switch to the configuration cc leads to (cc is committed and being applied)."""
        cfg, prs = confchange.apply_conf_change(self.trk, self.log.last_index(), cc)
        return self._switch_to_config(cfg, prs)

    def _switch_to_config(self, cfg: TrackerConfig, prs: dict[int, Progress]) -> ConfState:
        self.trk.config, self.trk.progress = cfg, prs
        cs = cfg.conf_state()
        if self.state != StateRole.LEADER:
            return cs
        if self._maybe_commit():
            self._bcast_append()  # the new config's quorum may already hold more entries
        else:
            for node_id in prs:
                if node_id != self.id:
                    self._send_append(node_id, send_if_empty=False)
        if self.lead_transferee != NONE and self.lead_transferee not in cfg.voters.ids():
            self.lead_transferee = NONE
        self._maybe_hand_off_leadership()
        return cs

    def _maybe_hand_off_leadership(self) -> None:
        """A leader that is no longer a voter keeps leading (stepping down could strand the
        voters: they may lack entries only it has, and refuse each other's votes) but hands
        leadership to the most up-to-date voter."""
        if self.state != StateRole.LEADER or self.lead_transferee != NONE or \
                self.id in self.trk.config.voters.ids():
            return
        voters = sorted(self.trk.config.voters.ids(),
                        key=lambda i: (-self.trk.progress[i].match, i))
        if voters:
            self._leader_transfer(Message(type=MT.TRANSFER_LEADER, from_=voters[0]))

    def applied_to(self, index: int) -> None:
        self.log.applied_to(index)
        if index >= self.pending_conf_index:
            # Every conf change in our log is applied: the current config is the newest.
            self.leaving_voters = self.id not in self.trk.config.voters.incoming
        if self.trk.config.auto_leave and index >= self.pending_conf_index and \
                self.state == StateRole.LEADER:
            # Leave the joint config on our own: propose the empty ConfChangeV2.
            leave = Entry(term=0, index=0, data=encode_conf_change(ConfChangeV2()),
                          type=EntryType.CONF_CHANGE_V2)
            try:
                self._leader_propose(Message(type=MT.PROPOSE, from_=self.id, entries=(leave,)))
            except ProposalDropped:
                pass  # retried when the next entry is applied

    def reset_read_states(self) -> None:
        self.read_states = []

    def describe_progress(self) -> dict[int, str]:
        return {i: repr(pr) for i, pr in sorted(self.trk.progress.items())}
