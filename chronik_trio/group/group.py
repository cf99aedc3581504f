"""One consumer group under the classic rebalance protocol (Kafka's GroupCoordinator rules).

States, as Kafka names them:

  Empty --join--> PreparingRebalance --every member rejoined, or the rebalance timeout-->
  CompletingRebalance --the leader's SyncGroup, written through Raft--> Stable
  Stable / CompletingRebalance --a member joins, leaves, changes its protocols, or its
  session expires--> PreparingRebalance
  PreparingRebalance --nobody left--> Empty;  any --deleted--> Dead

Every move is a row of _TRANSITIONS, (state, GroupInput) -> (action, next state), as h2
drives an HTTP/2 stream; Group._step is the only place the state changes. An input with no
row in the current state raises IllegalGroupInput carrying the error code Kafka answers
with (REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, COORDINATOR_NOT_AVAILABLE); the request
methods turn it, and the member checks' GroupErrors, into the answer.

The caller passes the time (`now_ms`, a monotonic clock) into every call and calls tick()
often; answers that must wait (JoinGroup until the rebalance completes, SyncGroup until the
assignment is written) come back later as events in `outbox`: JoinCompleted, SyncCompleted,
and PersistWanted when the group's metadata must be written to the log (the caller writes
it and reports back with persisted() or persist_failed()). Nothing here does I/O.

Static members (group.instance.id, KIP-345) keep their assignment across restarts: a rejoin
with a known instance id replaces the old member id (which is then fenced) and, in a Stable
group whose protocol does not change, gets the current generation without a rebalance.
"""

from __future__ import annotations

import enum
import typing

import attrs
from kio.schema.errors import ErrorCode

from .errors import GroupError, IllegalGroupInput

UNKNOWN_MEMBER_ID = ""
NO_GENERATION = -1
# Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms defaults.
SESSION_TIMEOUT_MS_MIN = 6_000
SESSION_TIMEOUT_MS_MAX = 1_800_000
MEMBERS_MAX = 1000  # group.max.size is unbounded in Kafka; a bound keeps one group's cost known
NEVER_MS = float("inf")  # a disarmed timer


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


class GroupInput(enum.Enum):
    """What can happen to a group: the second key of _TRANSITIONS. The arguments an input's
    actions take are in brackets."""

    REQUEST_RECEIVED = "a client request, before any other check"  # ()
    MEMBER_JOINED = "a new member joined"  # (now_ms, member_id)
    MEMBER_REJOINED = "a member rejoined with the protocols it had"  # (now_ms, member_id)
    LEADER_REJOINED = "the leader rejoined with the protocols it had"  # (now_ms, member_id)
    MEMBER_CHANGED = "a member rejoined with other protocols"  # (now_ms, member_id)
    STATIC_MEMBER_RETURNED = "a static member rejoined under a new id, the protocol stays"  # (now_ms, member_id)
    STATIC_MEMBER_CHANGED = "a static member rejoined under a new id, the protocol changes"  # (now_ms, member_id)
    MEMBER_LEFT = "a member left or its session expired (already removed)"  # (now_ms, member_id)
    JOIN_PHASE_ENDED = "every member rejoined, or the rebalance timeout passed"  # (now_ms,)
    JOIN_PHASE_ENDED_EMPTY = "the join phase ended with no member left"  # (now_ms,)
    MEMBER_SYNCED = "a SyncGroup that brings no assignment"  # (member_id, assignments)
    LEADER_SYNCED = "the leader's SyncGroup with the generation's assignment"  # (member_id, assignments)
    ASSIGNMENT_PERSISTED = "the assignment's write committed"  # ()
    PERSIST_FAILED = "a metadata write of this generation failed"  # (now_ms, error)
    HEARTBEAT = "a member's Heartbeat"  # ()
    MEMBER_COMMIT = "an OffsetCommit with a generation"  # (member_id, generation_id)
    STANDALONE_COMMIT = "an OffsetCommit without a generation (offsets storage only)"  # (member_id, generation_id)
    DELETED = "deleted, or its coordinator moved"  # ()
    LOADED = "restored from the log with members"  # ()
    LOADED_EMPTY = "restored from the log without members"  # ()


@attrs.frozen(slots=True)
class JoinRequest:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    require_known_member_id: bool  # JoinGroup v4+: MEMBER_ID_REQUIRED for a new member


@attrs.frozen(slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str = ""
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: tuple[tuple[str, str | None, bytes], ...] = ()  # the leader's: (id, instance id, metadata)
    skip_assignment: bool = False


@attrs.frozen(slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@attrs.frozen(slots=True)
class JoinPending:
    """The JoinGroup of member_id waits for the rebalance: a JoinCompleted will follow."""
    member_id: str


@attrs.frozen(slots=True)
class SyncPending:
    """The SyncGroup of member_id waits for the assignment: a SyncCompleted will follow."""
    member_id: str


@attrs.frozen(slots=True)
class JoinCompleted:
    member_id: str
    result: JoinResult


@attrs.frozen(slots=True)
class SyncCompleted:
    member_id: str
    result: SyncResult


@attrs.frozen(slots=True)
class PersistWanted:
    """The group's metadata changed (a new assignment, a new static member id, or it became
    Empty): write Group.snapshot() at this generation to the log."""
    generation_id: int


Event = typing.Union[JoinCompleted, SyncCompleted, PersistWanted]


@attrs.define(slots=True)
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]
    heartbeat_deadline_ms: float
    assignment: bytes = b""
    awaiting_join: bool = False
    awaiting_sync: bool = False

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]


def _error_join(error: ErrorCode, member_id: str = "") -> JoinResult:
    return JoinResult(error=error, member_id=member_id)


class Group:
    """One group's live state on its coordinator. See the module docstring."""

    def __init__(self, group_id: str, *, initial_rebalance_delay_ms: int = 0,
                 session_timeout_ms_min: int = SESSION_TIMEOUT_MS_MIN,
                 session_timeout_ms_max: int = SESSION_TIMEOUT_MS_MAX) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY  # changed only by _step
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.generation_id = 0
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        self.instances: dict[str, str] = {}  # group.instance.id -> member id
        self.pending_members: dict[str, float] = {}  # MEMBER_ID_REQUIRED given -> deadline
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.session_timeout_ms_min = session_timeout_ms_min
        self.session_timeout_ms_max = session_timeout_ms_max
        # The join phase's timers: armed only in PreparingRebalance, infinite otherwise.
        self._rebalance_deadline_ms = NEVER_MS
        self._join_not_before_ms = NEVER_MS  # the initial rebalance delay of a group that was Empty
        self._assignments: dict[str, bytes] | None = None  # the leader's, until written
        self.outbox: list[Event] = []

    def _step(self, group_input: GroupInput, *args):
        """Take one input: look up (state, input) in _TRANSITIONS, move to the next state,
        then run the row's action (as h2 does) and return what it returns.

        Raises:
            IllegalGroupInput: the state has no row for the input; nothing changed.
            GroupError: the commit check's action refused (its rows keep the state).
        """
        row = _TRANSITIONS.get((self.state, group_input))
        if row is None:
            raise IllegalGroupInput(self.state, group_input, _refusal(self.state, group_input))
        action, self.state = row
        return action(self, *args) if action is not None else None

    # --- what others ask ----------------------------------------------------------------------

    def is_member(self, member_id: str) -> bool:
        return member_id in self.members

    def _fenced(self, member_id: str, instance_id: str | None) -> bool:
        """A static member's request with a member id that is no longer the instance's."""
        if instance_id is None:
            return False
        current = self.instances.get(instance_id)
        return current is not None and current != member_id

    def take_events(self) -> list[Event]:
        events, self.outbox = self.outbox, []
        return events

    # --- JoinGroup -----------------------------------------------------------------------------

    def join(self, now_ms: float, request: JoinRequest, new_member_id: str) -> JoinResult | JoinPending:
        """A JoinGroup. new_member_id is the id a new member gets (the caller makes it)."""
        try:
            self._step(GroupInput.REQUEST_RECEIVED)
            if not self.session_timeout_ms_min <= request.session_timeout_ms <= self.session_timeout_ms_max:
                raise GroupError("session timeout out of bounds", ErrorCode.invalid_session_timeout)
            if not self._supports(request.protocol_type, request.protocols):
                raise GroupError("no protocol in common", ErrorCode.inconsistent_group_protocol)
            if request.member_id == UNKNOWN_MEMBER_ID:
                return self._join_unknown(now_ms, request, new_member_id)
            return self._join_known(now_ms, request)
        except GroupError as exc:
            return _error_join(exc.error_code, request.member_id)

    def _supports(self, protocol_type: str, protocols: tuple[tuple[str, bytes], ...]) -> bool:
        if not protocol_type or not protocols:
            return False
        if not self.members:
            return True
        names = {name for name, _ in protocols}
        return protocol_type == self.protocol_type and bool(names & self._candidates())

    def _candidates(self) -> set[str]:
        members = iter(self.members.values())
        common = set(next(members).protocol_names())
        for member in members:
            common &= set(member.protocol_names())
        return common

    def _join_unknown(self, now_ms: float, request: JoinRequest, new_member_id: str):
        if request.instance_id is not None and request.instance_id in self.instances:
            return self._replace_static(now_ms, request, new_member_id)
        if len(self.members) + len(self.pending_members) >= MEMBERS_MAX:
            return _error_join(ErrorCode.group_max_size_reached)
        if request.require_known_member_id and request.instance_id is None:
            # KIP-394: the member must come back with this id; until then it only holds a
            # place (dropped after its session timeout).
            self.pending_members[new_member_id] = now_ms + request.session_timeout_ms
            return _error_join(ErrorCode.member_id_required, new_member_id)
        return self._add_member(now_ms, request, new_member_id)

    def _join_known(self, now_ms: float, request: JoinRequest):
        member_id = request.member_id
        if member_id in self.pending_members:
            del self.pending_members[member_id]
            return self._add_member(now_ms, request, member_id)
        if self._fenced(member_id, request.instance_id):
            raise GroupError(f"member {member_id} is fenced", ErrorCode.fenced_instance_id)
        member = self.members.get(member_id)
        if member is None:
            raise GroupError(f"unknown member {member_id}", ErrorCode.unknown_member_id)
        changed = member.protocols != request.protocols
        self._update_member(now_ms, member, request)
        if changed:
            group_input = GroupInput.MEMBER_CHANGED
        elif member_id == self.leader_id:
            group_input = GroupInput.LEADER_REJOINED
        else:
            group_input = GroupInput.MEMBER_REJOINED
        return self._await_join(now_ms, member_id, self._step(group_input, now_ms, member_id))

    def _await_join(self, now_ms: float, member_id: str, answer: JoinResult | None) -> JoinResult | JoinPending:
        """A join input's answer, or, when its action gave none, the member waits for the
        join phase to end (which its join may have just completed)."""
        if answer is not None:
            return answer
        self.members[member_id].awaiting_join = True
        self._try_complete_join(now_ms)
        return JoinPending(member_id)

    def _update_member(self, now_ms: float, member: Member, request: JoinRequest) -> None:
        member.protocols = request.protocols
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.client_id, member.client_host = request.client_id, request.client_host
        member.heartbeat_deadline_ms = now_ms + request.session_timeout_ms

    def _add_member(self, now_ms: float, request: JoinRequest, member_id: str) -> JoinResult | JoinPending:
        if not self.members:
            self.protocol_type = request.protocol_type
        member = Member(member_id, request.instance_id, request.client_id, request.client_host,
                        request.session_timeout_ms, request.rebalance_timeout_ms, request.protocols,
                        now_ms + request.session_timeout_ms, awaiting_join=True)
        self.members[member_id] = member
        if request.instance_id is not None:
            self.instances[request.instance_id] = member_id
        if self.leader_id is None:
            self.leader_id = member_id
        return self._await_join(now_ms, member_id, self._step(GroupInput.MEMBER_JOINED, now_ms, member_id))

    def _replace_static(self, now_ms: float, request: JoinRequest, new_member_id: str):
        """A static member restarted: it takes over its old member id's place and assignment."""
        old_id = self.instances[request.instance_id]
        old = self.members.pop(old_id)
        if old.awaiting_join:
            self.outbox.append(JoinCompleted(old_id, _error_join(ErrorCode.fenced_instance_id, old_id)))
        if old.awaiting_sync:
            self.outbox.append(SyncCompleted(old_id, SyncResult(ErrorCode.fenced_instance_id)))
        member = Member(new_member_id, request.instance_id, request.client_id, request.client_host,
                        request.session_timeout_ms, request.rebalance_timeout_ms, request.protocols,
                        now_ms + request.session_timeout_ms, assignment=old.assignment)
        self.members[new_member_id] = member
        self.instances[request.instance_id] = new_member_id
        if self.leader_id == old_id:
            self.leader_id = new_member_id
        same = self._select_protocol() == self.protocol_name
        group_input = GroupInput.STATIC_MEMBER_RETURNED if same else GroupInput.STATIC_MEMBER_CHANGED
        return self._await_join(now_ms, new_member_id, self._step(group_input, now_ms, new_member_id))

    def _join_result(self, member_id: str) -> JoinResult:
        members = ()
        if member_id == self.leader_id:
            members = tuple((m.member_id, m.instance_id, m.metadata(self.protocol_name))
                            for m in self.members.values())
        return JoinResult(ErrorCode.none, member_id, self.generation_id, self.protocol_type,
                          self.protocol_name, self.leader_id or "", members)

    # --- the actions of the join inputs (rows of _TRANSITIONS) ---------------------------------

    def _answer_join(self, now_ms: float, member_id: str) -> JoinResult:
        """A retried JoinGroup, or one with nothing to rebalance for: the current answer."""
        return self._join_result(member_id)

    def _keep_generation(self, now_ms: float, member_id: str) -> JoinResult:
        """A static member's new id in a Stable group: written, no rebalance (KIP-345)."""
        self.outbox.append(PersistWanted(self.generation_id))
        return attrs.evolve(self._join_result(member_id), skip_assignment=member_id == self.leader_id)

    def _rebalance_from_empty(self, now_ms: float, member_id: str) -> None:
        """The first member of an Empty group: others joining within the initial delay join
        the same generation."""
        self._arm_join_timers(now_ms, self.initial_rebalance_delay_ms)

    def _rebalance(self, now_ms: float, member_id: str) -> None:
        self._arm_join_timers(now_ms, None)

    def _abort_syncs_and_rebalance(self, now_ms: float, member_id: str) -> None:
        """The generation being assigned is abandoned: its waiting SyncGroups are told so."""
        self._fail_syncs(ErrorCode.rebalance_in_progress)
        self._arm_join_timers(now_ms, None)

    # --- rebalancing ---------------------------------------------------------------------------

    def _arm_join_timers(self, now_ms: float, initial_delay_ms: int | None) -> None:
        timeout_ms = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self._rebalance_deadline_ms = now_ms + timeout_ms
        self._join_not_before_ms = 0.0 if initial_delay_ms is None else now_ms + min(initial_delay_ms, timeout_ms)

    def _disarm_join_timers(self) -> None:
        self._rebalance_deadline_ms = self._join_not_before_ms = NEVER_MS

    def _fail_syncs(self, error: ErrorCode) -> None:
        self._assignments = None
        for member in self.members.values():
            if member.awaiting_sync:
                member.awaiting_sync = False
                self.outbox.append(SyncCompleted(member.member_id, SyncResult(error)))

    def _all_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def _try_complete_join(self, now_ms: float) -> None:
        """End the join phase if its time has come (never outside PreparingRebalance: the
        timers are disarmed there)."""
        if now_ms >= self._rebalance_deadline_ms or (self._all_joined() and now_ms >= self._join_not_before_ms):
            for member in [m for m in self.members.values() if not m.awaiting_join]:
                self._remove(member.member_id)  # did not rejoin within the rebalance timeout
            self.generation_id += 1
            ended = GroupInput.JOIN_PHASE_ENDED if self.members else GroupInput.JOIN_PHASE_ENDED_EMPTY
            self._step(ended, now_ms)

    def _complete_join(self, now_ms: float) -> None:
        """Action: the generation is formed; every member gets its JoinGroup answer."""
        self._disarm_join_timers()
        self.protocol_name = self._select_protocol()
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        self._assignments = None
        for member in self.members.values():
            member.awaiting_join = False
            member.assignment = b""
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            self.outbox.append(JoinCompleted(member.member_id, self._join_result(member.member_id)))

    def _become_empty(self, now_ms: float) -> None:
        """Action: nobody rejoined; the empty group is written."""
        self._disarm_join_timers()
        self.protocol_name = None
        self.leader_id = None
        self.outbox.append(PersistWanted(self.generation_id))

    def _select_protocol(self) -> str | None:
        """Kafka's vote: each member votes for its most preferred protocol that every member
        supports; the most votes win (ties: the protocol the leader prefers first)."""
        if not self.members:
            return None
        candidates = self._candidates()
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = next((name for name in member.protocol_names() if name in candidates), None)
            if choice is not None:
                votes[choice] = votes.get(choice, 0) + 1
        if not votes:
            return None
        leader = self.members.get(self.leader_id) or next(iter(self.members.values()))
        order = {name: i for i, name in enumerate(leader.protocol_names())}
        return max(votes, key=lambda name: (votes[name], -order.get(name, len(order))))

    def _remove(self, member_id: str) -> None:
        member = self.members.pop(member_id)
        if member.instance_id is not None and self.instances.get(member.instance_id) == member_id:
            del self.instances[member.instance_id]
        if member.awaiting_join:
            self.outbox.append(JoinCompleted(member_id, _error_join(ErrorCode.unknown_member_id, member_id)))
        if member.awaiting_sync:
            self.outbox.append(SyncCompleted(member_id, SyncResult(ErrorCode.unknown_member_id)))
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)

    def _member_gone(self, now_ms: float, member_id: str) -> None:
        """A member left or its session expired: the others rebalance without it."""
        self._remove(member_id)
        self._step(GroupInput.MEMBER_LEFT, now_ms, member_id)
        self._try_complete_join(now_ms)

    # --- SyncGroup -----------------------------------------------------------------------------

    def sync(self, now_ms: float, member_id: str, generation_id: int, instance_id: str | None,
             protocol_type: str | None, protocol_name: str | None,
             assignments: typing.Sequence[tuple[str, bytes]]) -> SyncResult | SyncPending:
        try:
            self._check_member(member_id, generation_id, instance_id)
            if (protocol_type is not None and protocol_type != self.protocol_type) or \
                    (protocol_name is not None and protocol_name != self.protocol_name):
                raise GroupError("another protocol", ErrorCode.inconsistent_group_protocol)
            member = self.members[member_id]
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            assigns = member_id == self.leader_id and self._assignments is None
            group_input = GroupInput.LEADER_SYNCED if assigns else GroupInput.MEMBER_SYNCED
            return self._step(group_input, member_id, assignments)
        except GroupError as exc:
            return SyncResult(exc.error_code)

    def _answer_sync(self, member_id: str, assignments: typing.Sequence[tuple[str, bytes]]) -> SyncResult:
        """Action: a Stable group's SyncGroup is answered with the member's assignment."""
        return SyncResult(ErrorCode.none, self.protocol_type, self.protocol_name, self.members[member_id].assignment)

    def _await_assignment(self, member_id: str, assignments: typing.Sequence[tuple[str, bytes]]) -> SyncPending:
        self.members[member_id].awaiting_sync = True
        return SyncPending(member_id)

    def _take_assignment(self, member_id: str, assignments: typing.Sequence[tuple[str, bytes]]) -> SyncPending:
        """Action: the leader's assignment, to be written before anyone gets it."""
        given = dict(assignments)
        self._assignments = {m: given.get(m, b"") for m in self.members}
        self.outbox.append(PersistWanted(self.generation_id))
        return self._await_assignment(member_id, assignments)

    def snapshot_assignments(self) -> dict[str, bytes]:
        """The assignment to write: the leader's while it is being written, else the current."""
        if self._assignments is not None:
            return dict(self._assignments)
        return {m.member_id: m.assignment for m in self.members.values()}

    def persisted(self, generation_id: int) -> None:
        """The metadata written at generation_id is committed: a pending assignment applies."""
        if generation_id == self.generation_id and self._assignments is not None:
            self._step(GroupInput.ASSIGNMENT_PERSISTED)

    def _hand_out_assignment(self) -> None:
        """Action: the written assignment is every member's; the waiting SyncGroups get it."""
        assert self._assignments is not None
        for member_id, assignment in self._assignments.items():
            if member_id in self.members:
                self.members[member_id].assignment = assignment
        self._assignments = None
        for member in self.members.values():
            if member.awaiting_sync:
                member.awaiting_sync = False
                self.outbox.append(SyncCompleted(member.member_id, SyncResult(
                    ErrorCode.none, self.protocol_type, self.protocol_name, member.assignment)))

    def persist_failed(self, now_ms: float, generation_id: int, error: ErrorCode) -> None:
        """Writing the group's metadata failed (e.g. leadership of the offsets partition moved)."""
        if generation_id == self.generation_id:
            self._step(GroupInput.PERSIST_FAILED, now_ms, error)

    def _assignment_lost(self, now_ms: float, error: ErrorCode) -> None:
        """Action: the assignment was not written; its SyncGroups fail and the group rejoins."""
        self._fail_syncs(error)
        self._arm_join_timers(now_ms, None)

    # --- Heartbeat, LeaveGroup, session expiry --------------------------------------------------

    def _check_member(self, member_id: str, generation_id: int, instance_id: str | None) -> None:
        """Kafka's checks of a member's request, in Kafka's order. Raises GroupError."""
        self._step(GroupInput.REQUEST_RECEIVED)
        if self._fenced(member_id, instance_id):
            raise GroupError(f"member {member_id} is fenced", ErrorCode.fenced_instance_id)
        self._check_generation(member_id, generation_id)

    def _check_generation(self, member_id: str, generation_id: int) -> None:
        """Also the action of a commit to a group with members: it must come from a member of
        this generation."""
        if member_id not in self.members:
            raise GroupError(f"unknown member {member_id}", ErrorCode.unknown_member_id)
        if generation_id != self.generation_id:
            raise GroupError(f"generation {generation_id} is not {self.generation_id}",
                             ErrorCode.illegal_generation)

    def heartbeat(self, now_ms: float, member_id: str, generation_id: int,
                  instance_id: str | None) -> ErrorCode:
        try:
            self._check_member(member_id, generation_id, instance_id)
            member = self.members[member_id]
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            self._step(GroupInput.HEARTBEAT)
        except GroupError as exc:
            return exc.error_code
        return ErrorCode.none

    def leave(self, now_ms: float, member_id: str, instance_id: str | None) -> ErrorCode:
        """One member of a LeaveGroup (by member id, or by instance id for static members)."""
        try:
            self._step(GroupInput.REQUEST_RECEIVED)
            if instance_id is not None:
                current = self.instances.get(instance_id)
                if current is None:
                    raise GroupError(f"unknown instance {instance_id}", ErrorCode.unknown_member_id)
                if member_id != UNKNOWN_MEMBER_ID and member_id != current:
                    raise GroupError(f"member {member_id} is fenced", ErrorCode.fenced_instance_id)
                member_id = current
            if member_id in self.pending_members:
                del self.pending_members[member_id]
                self._try_complete_join(now_ms)
                return ErrorCode.none
            if member_id not in self.members:
                raise GroupError(f"unknown member {member_id}", ErrorCode.unknown_member_id)
            self._member_gone(now_ms, member_id)
        except GroupError as exc:
            return exc.error_code
        return ErrorCode.none

    def next_deadline_ms(self) -> float:
        """When tick() next has something to do. The caller sleeps until then: a time in the
        past must mean tick() has work, or the caller would spin."""
        deadline = float("inf")
        for member in self.members.values():
            if not (member.awaiting_join or member.awaiting_sync):
                deadline = min(deadline, member.heartbeat_deadline_ms)
        for pending in self.pending_members.values():
            deadline = min(deadline, pending)
        # Everyone in: the join completes when the initial delay ends; else at the timeout
        # (both never, outside PreparingRebalance).
        ready_ms = self._join_not_before_ms if self._all_joined() else self._rebalance_deadline_ms
        return min(deadline, ready_ms)

    def tick(self, now_ms: float) -> None:
        """Expire sessions and pending member ids; complete a rebalance whose time is up."""
        for member_id, deadline in list(self.pending_members.items()):
            if now_ms >= deadline:
                del self.pending_members[member_id]
        for member in list(self.members.values()):
            if member.awaiting_join or member.awaiting_sync:
                continue  # waiting on us, not silent: the rebalance timeout covers them
            if now_ms >= member.heartbeat_deadline_ms and member.member_id in self.members:
                self._member_gone(now_ms, member.member_id)
        self._try_complete_join(now_ms)

    # --- commits, deletion, loading --------------------------------------------------------------

    def check_commit(self, member_id: str, generation_id: int, instance_id: str | None) -> ErrorCode:
        """Whether an OffsetCommit may write (Kafka's order of checks)."""
        try:
            self._step(GroupInput.REQUEST_RECEIVED)
            if self._fenced(member_id, instance_id):
                raise GroupError(f"member {member_id} is fenced", ErrorCode.fenced_instance_id)
            commit = GroupInput.STANDALONE_COMMIT if generation_id < 0 else GroupInput.MEMBER_COMMIT
            self._step(commit, member_id, generation_id)
        except GroupError as exc:
            return exc.error_code
        return ErrorCode.none

    def commit_seen(self, now_ms: float, member_id: str) -> None:
        member = self.members.get(member_id)
        if member is not None:
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms

    def mark_dead(self) -> None:
        """Deleted, or its coordinator moved: every waiting member is told to look again."""
        self._step(GroupInput.DELETED)

    def _tell_waiters_to_look_again(self) -> None:
        """Action: the group is gone from this coordinator."""
        self._disarm_join_timers()
        self._assignments = None
        for member in self.members.values():
            if member.awaiting_join:
                self.outbox.append(JoinCompleted(member.member_id,
                                                 _error_join(ErrorCode.not_coordinator, member.member_id)))
            if member.awaiting_sync:
                self.outbox.append(SyncCompleted(member.member_id, SyncResult(ErrorCode.not_coordinator)))

    def load(self, now_ms: float, *, protocol_type: str | None, protocol_name: str | None,
             generation_id: int, leader_id: str | None,
             members: typing.Iterable[tuple[str, str | None, str, str, int, int, bytes, bytes]]) -> None:
        """Restore from the log on a new coordinator: (member id, instance id, client id, client
        host, session and rebalance timeouts, subscription, assignment) per member. Sessions
        start afresh now; members that are gone expire after their session timeout."""
        self.protocol_type, self.protocol_name = protocol_type, protocol_name
        self.generation_id, self.leader_id = generation_id, leader_id
        self.members.clear()
        self.instances.clear()
        for (member_id, instance_id, client_id, client_host, session_ms, rebalance_ms,
             subscription, assignment) in members:
            self.members[member_id] = Member(member_id, instance_id, client_id, client_host, session_ms,
                                             rebalance_ms, ((protocol_name or "", subscription),),
                                             now_ms + session_ms, assignment=assignment)
            if instance_id is not None:
                self.instances[instance_id] = member_id
        self._step(GroupInput.LOADED if self.members else GroupInput.LOADED_EMPTY)
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members), None)


# --- the transition table --------------------------------------------------------------------

_S = GroupState
_I = GroupInput
Action = typing.Optional[typing.Callable[..., typing.Any]]

_LIVE = (_S.EMPTY, _S.PREPARING_REBALANCE, _S.COMPLETING_REBALANCE, _S.STABLE)
_REJOINS = (_I.MEMBER_REJOINED, _I.LEADER_REJOINED, _I.MEMBER_CHANGED, _I.STATIC_MEMBER_RETURNED,
            _I.STATIC_MEMBER_CHANGED)

_TRANSITIONS: dict[tuple[GroupState, GroupInput], tuple[Action, GroupState]] = {
    # Dead takes no request; every live state does (then the request's own checks run).
    **{(state, _I.REQUEST_RECEIVED): (None, state) for state in _LIVE},

    # JoinGroup. An action that answers returns the JoinResult; one that returns None
    # leaves the member waiting for the join phase to end.
    (_S.EMPTY, _I.MEMBER_JOINED): (Group._rebalance_from_empty, _S.PREPARING_REBALANCE),
    (_S.COMPLETING_REBALANCE, _I.MEMBER_JOINED): (Group._abort_syncs_and_rebalance, _S.PREPARING_REBALANCE),
    (_S.STABLE, _I.MEMBER_JOINED): (Group._rebalance, _S.PREPARING_REBALANCE),
    **{(_S.PREPARING_REBALANCE, i): (None, _S.PREPARING_REBALANCE) for i in (_I.MEMBER_JOINED, *_REJOINS)},
    (_S.COMPLETING_REBALANCE, _I.MEMBER_REJOINED): (Group._answer_join, _S.COMPLETING_REBALANCE),
    (_S.COMPLETING_REBALANCE, _I.LEADER_REJOINED): (Group._answer_join, _S.COMPLETING_REBALANCE),
    (_S.COMPLETING_REBALANCE, _I.MEMBER_CHANGED): (Group._abort_syncs_and_rebalance, _S.PREPARING_REBALANCE),
    (_S.COMPLETING_REBALANCE, _I.STATIC_MEMBER_RETURNED): (Group._abort_syncs_and_rebalance,
                                                           _S.PREPARING_REBALANCE),
    (_S.COMPLETING_REBALANCE, _I.STATIC_MEMBER_CHANGED): (Group._abort_syncs_and_rebalance,
                                                          _S.PREPARING_REBALANCE),
    (_S.STABLE, _I.MEMBER_REJOINED): (Group._answer_join, _S.STABLE),
    (_S.STABLE, _I.LEADER_REJOINED): (Group._rebalance, _S.PREPARING_REBALANCE),  # it may want a new assignment
    (_S.STABLE, _I.MEMBER_CHANGED): (Group._rebalance, _S.PREPARING_REBALANCE),
    (_S.STABLE, _I.STATIC_MEMBER_RETURNED): (Group._keep_generation, _S.STABLE),
    (_S.STABLE, _I.STATIC_MEMBER_CHANGED): (Group._rebalance, _S.PREPARING_REBALANCE),

    # A member gone (LeaveGroup, session expiry): the rest rebalance.
    (_S.PREPARING_REBALANCE, _I.MEMBER_LEFT): (None, _S.PREPARING_REBALANCE),
    (_S.COMPLETING_REBALANCE, _I.MEMBER_LEFT): (Group._abort_syncs_and_rebalance, _S.PREPARING_REBALANCE),
    (_S.STABLE, _I.MEMBER_LEFT): (Group._rebalance, _S.PREPARING_REBALANCE),

    # The join phase ends (everyone rejoined, or the rebalance timeout).
    (_S.PREPARING_REBALANCE, _I.JOIN_PHASE_ENDED): (Group._complete_join, _S.COMPLETING_REBALANCE),
    (_S.PREPARING_REBALANCE, _I.JOIN_PHASE_ENDED_EMPTY): (Group._become_empty, _S.EMPTY),

    # SyncGroup, and the write of the leader's assignment.
    (_S.COMPLETING_REBALANCE, _I.MEMBER_SYNCED): (Group._await_assignment, _S.COMPLETING_REBALANCE),
    (_S.COMPLETING_REBALANCE, _I.LEADER_SYNCED): (Group._take_assignment, _S.COMPLETING_REBALANCE),
    (_S.STABLE, _I.MEMBER_SYNCED): (Group._answer_sync, _S.STABLE),
    (_S.STABLE, _I.LEADER_SYNCED): (Group._answer_sync, _S.STABLE),
    (_S.COMPLETING_REBALANCE, _I.ASSIGNMENT_PERSISTED): (Group._hand_out_assignment, _S.STABLE),
    (_S.COMPLETING_REBALANCE, _I.PERSIST_FAILED): (Group._assignment_lost, _S.PREPARING_REBALANCE),
    # Elsewhere the failed write was no assignment (an Empty group, a static member's new
    # id), or the group moved on: nobody waits on it.
    **{(state, _I.PERSIST_FAILED): (None, state)
       for state in (_S.EMPTY, _S.PREPARING_REBALANCE, _S.STABLE, _S.DEAD)},

    # Heartbeat and OffsetCommit.
    (_S.COMPLETING_REBALANCE, _I.HEARTBEAT): (None, _S.COMPLETING_REBALANCE),
    (_S.STABLE, _I.HEARTBEAT): (None, _S.STABLE),
    (_S.EMPTY, _I.STANDALONE_COMMIT): (None, _S.EMPTY),  # a group that uses Kafka only to store offsets
    **{(state, i): (Group._check_generation, state)
       for state in (_S.PREPARING_REBALANCE, _S.STABLE) for i in (_I.MEMBER_COMMIT, _I.STANDALONE_COMMIT)},

    # Deletion, or this node no longer coordinates; loading on a new coordinator.
    **{(state, _I.DELETED): (Group._tell_waiters_to_look_again, _S.DEAD) for state in _LIVE},
    (_S.DEAD, _I.DELETED): (None, _S.DEAD),  # the waiters were told when it died
    (_S.EMPTY, _I.LOADED): (None, _S.STABLE),
    (_S.EMPTY, _I.LOADED_EMPTY): (None, _S.EMPTY),
}

# The inputs a client's request brings, and what Kafka answers one refused in a state.
CLIENT_INPUTS = frozenset({
    _I.REQUEST_RECEIVED, _I.MEMBER_JOINED, *_REJOINS, _I.MEMBER_LEFT, _I.MEMBER_SYNCED,
    _I.LEADER_SYNCED, _I.HEARTBEAT, _I.MEMBER_COMMIT, _I.STANDALONE_COMMIT})
_REFUSALS = {
    _S.DEAD: ErrorCode.coordinator_not_available,
    _S.EMPTY: ErrorCode.unknown_member_id,  # an Empty group has no members
    _S.PREPARING_REBALANCE: ErrorCode.rebalance_in_progress,  # SyncGroup, Heartbeat
    _S.COMPLETING_REBALANCE: ErrorCode.rebalance_in_progress,  # OffsetCommit
}


def _refusal(state: GroupState, group_input: GroupInput) -> ErrorCode:
    """The error code of an input that `state` has no row for."""
    if group_input in CLIENT_INPUTS and state in _REFUSALS:
        return _REFUSALS[state]
    return ErrorCode.unknown_server_error  # one of the group's own inputs: a bug
