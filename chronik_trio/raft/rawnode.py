"""RawNode: the public face of one Raft node, with the etcd-raft / raft-rs Ready contract.

The caller drives it:

    rd = node.ready()            # only if node.has_ready()
    send(rd.messages)            # may go out before anything is persisted
    persist(rd.snapshot, rd.entries, rd.hard_state)   # fsync if rd.must_sync
    send(rd.persisted_messages)  # promise durable state: only after the persist
    apply(rd.committed_entries)  # incl. node.apply_conf_change for conf-change entries
    node.advance(rd)

Between ready() and advance*(), step/propose/tick/campaign assert: the Ready describes a
state that must not move underneath the caller. Asynchronous persistence:
`advance_append_async(rd)` releases the node at once, and `on_persist_ready(rd.number)`
reports later that the Ready (and all before it) is durable; the caller holds
`rd.persisted_messages` until then. `advance_append(rd)` + `advance_apply()` split the
synchronous `advance(rd)` when applying lags persisting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Config
from .convert import encode_conf_change
from .errors import ProposalDropped, ReadIndexDropped, StepLocalMessage, StepPeerNotFound
from .raft import Raft
from .storage import Storage
from .types import (EMPTY_HARD_STATE, LOCAL_MESSAGES, NONE, RESPONSE_MESSAGES, ConfChangeV2,
                    ConfState, Entry, EntryType, HardState, Message, MessageType,
                    ProgressState, ReadState, Snapshot, SoftState, StateRole)

MAX_UNPERSISTED_READIES = 1024
"""Readies handed out with advance_append_async and not yet reported persisted. A caller
that stops persisting must not make the node pile up state without limit."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the caller must do, in the order given in the module docstring.

    hard_state / soft_state are None when unchanged since the previous Ready. entries and
    snapshot are to be persisted; committed_entries to be applied (all durable already).
    """
    number: int
    soft_state: SoftState | None
    hard_state: HardState | None
    read_states: tuple[ReadState, ...]
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    persisted_messages: tuple[Message, ...]
    must_sync: bool


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class ElectionTimer:
    """A follower campaigns once elapsed_ticks reaches randomized_timeout_ticks (drawn anew
    from [timeout_ticks, 2 * timeout_ticks) at each term change)."""
    elapsed_ticks: int
    timeout_ticks: int
    randomized_timeout_ticks: int


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    lead_transferee: int
    conf_state: ConfState
    progress: dict[int, ProgressStatus]  # filled only on the leader


@dataclass(frozen=True, slots=True)
class _Unpersisted:
    number: int
    last_entry: tuple[int, int] | None   # (index, term) of the last entry in the Ready
    snapshot_index: int                  # 0: no snapshot
    self_messages: tuple[Message, ...]   # our own vote, counted once durable


class RawNode:
    """One Raft node. Not thread-safe: the caller serialises calls (one lock per group)."""

    def __init__(self, cfg: Config, storage: Storage) -> None:
        self.raft = Raft(cfg, storage)
        self._prev_soft_state = self.raft.soft_state()
        self._prev_hard_state = self.raft.hard_state()
        self._number = 0
        self._in_ready = 0  # number of the Ready handed out and not yet advanced; 0: none
        self._unpersisted: deque[_Unpersisted] = deque()

    @property
    def id(self) -> int:
        return self.raft.id

    # -- what a runtime reads between Readies: cheap, no copies (status() copies) -----------

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def leader_id(self) -> int:
        """The leader this node knows in the current term (NONE: none)."""
        return self.raft.leader_id

    @property
    def role(self) -> StateRole:
        return self.raft.state

    @property
    def lead_transferee(self) -> int:
        """The peer a leader transfer is under way to (NONE: none)."""
        return self.raft.lead_transferee

    @property
    def applied_index(self) -> int:
        """The highest index the caller reported applied (advance / advance_apply)."""
        return self.raft.log.applied

    @property
    def committed_index(self) -> int:
        return self.raft.log.committed

    def last_index(self) -> int:
        """The index of the last entry in the log (stable or not)."""
        return self.raft.log.last_index()

    def entries(self, low: int, high: int) -> list[Entry]:
        """The log's entries [low, high); low must not be compacted away."""
        return self.raft.log.slice(low, high, None)

    def voter_ids(self) -> frozenset[int]:
        return self.raft.trk.voter_ids()

    def match_indexes(self) -> dict[int, int]:
        """Each member's match index as this node tracks it (meaningful on the leader)."""
        return {peer: pr.match for peer, pr in self.raft.trk.progress.items()}

    def progress(self) -> dict[int, ProgressStatus]:
        """Each member's replication progress as this node tracks it (meaningful on the
        leader; status() gives it only there)."""
        return {i: ProgressStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
                for i, pr in self.raft.trk.progress.items()}

    def election_timer(self) -> ElectionTimer:
        r = self.raft
        return ElectionTimer(elapsed_ticks=r.election_elapsed_ticks, timeout_ticks=r.election_timeout_ticks,
                             randomized_timeout_ticks=r.randomized_election_timeout_ticks)

    def append_response_can_wait(self, m: Message) -> bool:
        """Whether a peer's message m, an append response, may wait in the caller's queue
        until it steps the node for another reason (Raft.append_response_can_wait): it would
        change only this leader's bookkeeping of that follower. Reads state only, so it may
        be asked between ready() and advance()."""
        return self.raft.append_response_can_wait(m)

    def _assert_not_in_ready(self, what: str) -> None:
        assert not self._in_ready, f"{what} between ready() #{self._in_ready} and advance()"

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of logical time (election and heartbeat timeouts count ticks)."""
        self._assert_not_in_ready("tick")
        self.raft.tick()

    def campaign_answered(self) -> bool:
        """Whether this node's campaign heard from any peer: true unless it is a candidate
        (or pre-candidate) whose vote requests no peer has answered yet. A candidate that
        got there by a pre-vote was answered (the pre-vote won)."""
        r = self.raft
        if r.state == StateRole.PRE_CANDIDATE or (r.state == StateRole.CANDIDATE and not r.pre_vote):
            return any(voter != r.id for voter in r.trk.votes)
        return True

    def campaign(self) -> None:
        """Start an election now (a pre-vote first if pre_vote is on)."""
        self._assert_not_in_ready("campaign")
        self.raft.step(Message(type=MessageType.HUP, from_=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Append data to the log (forwarded to the leader on a follower).
        Raises ProposalDropped if it cannot be accepted here and now."""
        self._assert_not_in_ready("propose")
        self.raft.step(Message(type=MessageType.PROPOSE, from_=self.raft.id,
                               entries=(Entry(term=0, index=0, data=data),)))

    def propose_batch(self, datas: Sequence[bytes], entry_type: EntryType = EntryType.NORMAL) -> None:
        """Propose several entries as one message: all are appended, in order, or none
        (ProposalDropped), e.g. when the uncommitted-size bound would be crossed. entry_type:
        NORMAL, or an application type Raft treats as normal (LOG_START)."""
        self._assert_not_in_ready("propose_batch")
        assert datas, "propose_batch needs at least one entry"
        assert entry_type not in (EntryType.CONF_CHANGE, EntryType.CONF_CHANGE_V2), entry_type
        self.raft.step(Message(type=MessageType.PROPOSE, from_=self.raft.id,
                               entries=tuple(Entry(term=0, index=0, data=d, type=entry_type) for d in datas)))

    def propose_conf_change(self, cc: ConfChangeV2) -> None:
        """Propose a membership change. Raises ProposalDropped if another is pending, the
        change is invalid for the current config, or there is no leader to take it."""
        self._assert_not_in_ready("propose_conf_change")
        e = Entry(term=0, index=0, data=encode_conf_change(cc), type=EntryType.CONF_CHANGE_V2)
        self.raft.step(Message(type=MessageType.PROPOSE, from_=self.raft.id, entries=(e,)))

    def step(self, m: Message) -> None:
        """Handle a message from a peer. Raises StepLocalMessage for local-only types and
        StepPeerNotFound for a response from a non-member. A proposal or read forwarded by a
        peer that cannot be served here is dropped silently (the peer retries)."""
        self._assert_not_in_ready("step")
        assert m.to == self.raft.id, ("message for", m.to, "stepped into", self.raft.id)
        if m.type in LOCAL_MESSAGES:
            raise StepLocalMessage(f"{m.type.name} from {m.from_}")
        if m.type in RESPONSE_MESSAGES and m.from_ not in self.raft.trk.progress:
            raise StepPeerNotFound(f"{m.type.name} from non-member {m.from_}")
        try:
            self.raft.step(m)
        except (ProposalDropped, ReadIndexDropped):
            if m.type not in (MessageType.PROPOSE, MessageType.READ_INDEX):
                raise

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; the answer arrives as a ReadState carrying ctx
        in a later Ready. ctx must be unique per outstanding read. Raises ReadIndexDropped."""
        self._assert_not_in_ready("read_index")
        assert ctx, "read_index needs a non-empty request context"
        self.raft.step(Message(type=MessageType.READ_INDEX, from_=NONE, context=ctx))

    def transfer_leader(self, transferee: int) -> None:
        """Ask the leader to hand leadership to transferee (TimeoutNow once it is caught up)."""
        self._assert_not_in_ready("transfer_leader")
        self.raft.step(Message(type=MessageType.TRANSFER_LEADER, from_=transferee))

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to deliver to node_id: stop streaming to it optimistically."""
        self._assert_not_in_ready("report_unreachable")
        self.raft.step(Message(type=MessageType.UNREACHABLE, from_=node_id))

    def report_snapshot(self, node_id: int, success: bool) -> None:
        """Outcome of sending a snapshot message to node_id."""
        self._assert_not_in_ready("report_snapshot")
        self.raft.step(Message(type=MessageType.SNAP_STATUS, from_=node_id, reject=not success))

    def request_snapshot(self) -> None:
        """Ask the leader for a snapshot (e.g. the state machine needs rebuilding).
        Raises ProposalDropped if this node is not a follower with a known leader."""
        self._assert_not_in_ready("request_snapshot")
        self.raft.request_snapshot()

    def apply_conf_change(self, cc: ConfChangeV2) -> ConfState:
        """Apply a committed conf-change entry (call while applying committed_entries, in
        log order). Returns the new ConfState, to be saved with the applied state."""
        return self.raft.apply_conf_change(cc)

    # -- outputs ----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if self._in_ready:
            return False
        r.flush_bcast()
        hs = r.hard_state()
        return (r.soft_state() != self._prev_soft_state
                or (hs != self._prev_hard_state and hs != EMPTY_HARD_STATE)
                or bool(r.msgs) or bool(r.msgs_after_append) or bool(r.read_states)
                or r.log.has_unstable_to_persist() or r.log.has_next_committed())

    def ready(self) -> Ready:
        """What to persist, send and apply now; the node is frozen until advance*()."""
        self._assert_not_in_ready("ready")
        assert len(self._unpersisted) < MAX_UNPERSISTED_READIES, \
            ("unpersisted Readies", len(self._unpersisted))
        r = self.raft
        r.flush_bcast()
        ss, hs = r.soft_state(), r.hard_state()
        ents, snap = r.log.take_unstable_to_persist()
        committed = r.log.take_next_committed()
        r.reduce_uncommitted_size(committed)
        after = r.msgs_after_append
        self_msgs = tuple(m for m in after if m.to == r.id)
        prev = self._prev_hard_state
        self._number += 1
        rd = Ready(
            number=self._number,
            soft_state=ss if ss != self._prev_soft_state else None,
            hard_state=hs if hs != prev else None,
            read_states=tuple(r.read_states),
            entries=tuple(ents), snapshot=snap, committed_entries=tuple(committed),
            messages=tuple(r.msgs),
            persisted_messages=tuple(m for m in after if m.to != r.id),
            must_sync=bool(ents) or snap is not None or hs.term != prev.term
            or hs.vote != prev.vote)
        r.msgs, r.msgs_after_append = [], []
        r.reset_read_states()
        self._prev_soft_state, self._prev_hard_state = ss, hs
        last = (ents[-1].index, ents[-1].term) if ents else None
        self._unpersisted.append(
            _Unpersisted(self._number, last, snap.index if snap else 0, self_msgs))
        self._in_ready = self._number
        return rd

    def advance(self, rd: Ready) -> None:
        """rd is fully handled: persisted, sent, and its committed entries applied."""
        self.advance_append(rd)
        self.advance_apply()

    def advance_append(self, rd: Ready) -> None:
        """rd's entries, snapshot and hard state are durable and its messages sent; its
        committed entries may still be in the works (report them with advance_apply)."""
        self.advance_append_async(rd)
        self.on_persist_ready(rd.number)

    def advance_append_async(self, rd: Ready) -> None:
        """Release the node before rd is persisted; report it with on_persist_ready."""
        assert self._in_ready == rd.number, ("advance of Ready", rd.number, self._in_ready)
        self._in_ready = 0

    def on_persist_ready(self, number: int) -> None:
        """Ready #number and every earlier one are durable."""
        self._assert_not_in_ready("on_persist_ready")
        assert number <= self._number, (number, self._number)
        r = self.raft
        while self._unpersisted and self._unpersisted[0].number <= number:
            u = self._unpersisted.popleft()
            if u.snapshot_index:
                r.log.stable_snap_to(u.snapshot_index)
            if u.last_entry is not None:
                r.on_persisted(*u.last_entry)
            for m in u.self_messages:
                r.step(m)

    def advance_apply(self, applied: int | None = None) -> None:
        """The state machine applied committed entries up to `applied` (default: all
        committed entries handed out so far)."""
        self._assert_not_in_ready("advance_apply")
        self.raft.applied_to(self.raft.log.applying if applied is None else applied)

    def status(self) -> Status:
        r = self.raft
        progress = self.progress() if r.state == StateRole.LEADER else {}
        return Status(id=r.id, hard_state=r.hard_state(), soft_state=r.soft_state(),
                      applied=r.log.applied, lead_transferee=r.lead_transferee,
                      conf_state=r.trk.config.conf_state(), progress=progress)
