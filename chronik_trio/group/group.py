"""One consumer group under the classic rebalance protocol (Kafka's GroupCoordinator rules).

States, as Kafka names them:

  Empty --join--> PreparingRebalance --every member rejoined, or the rebalance timeout-->
  CompletingRebalance --the leader's SyncGroup, written through Raft--> Stable
  Stable / CompletingRebalance --a member joins, leaves, changes its protocols, or its
  session expires--> PreparingRebalance
  PreparingRebalance --nobody left--> Empty;  any --deleted--> Dead

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

UNKNOWN_MEMBER_ID = ""
NO_GENERATION = -1
# Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms defaults.
SESSION_TIMEOUT_MS_MIN = 6_000
SESSION_TIMEOUT_MS_MAX = 1_800_000
MEMBERS_MAX = 1000  # group.max.size is unbounded in Kafka; a bound keeps one group's cost known


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


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
        self.state = GroupState.EMPTY
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
        self._rebalance_deadline_ms = 0.0
        self._join_not_before_ms = 0.0  # the initial rebalance delay of a group that was Empty
        self._assignments: dict[str, bytes] | None = None  # the leader's, until written
        self.outbox: list[Event] = []

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
        if self.state == GroupState.DEAD:
            return _error_join(ErrorCode.coordinator_not_available, request.member_id)
        if not self.session_timeout_ms_min <= request.session_timeout_ms <= self.session_timeout_ms_max:
            return _error_join(ErrorCode.invalid_session_timeout, request.member_id)
        if not self._supports(request.protocol_type, request.protocols):
            return _error_join(ErrorCode.inconsistent_group_protocol, request.member_id)
        if request.member_id == UNKNOWN_MEMBER_ID:
            return self._join_unknown(now_ms, request, new_member_id)
        return self._join_known(now_ms, request)

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
            return _error_join(ErrorCode.fenced_instance_id, member_id)
        member = self.members.get(member_id)
        if member is None:
            return _error_join(ErrorCode.unknown_member_id, member_id)
        changed = member.protocols != request.protocols
        self._update_member(now_ms, member, request)
        if self.state == GroupState.PREPARING_REBALANCE:
            member.awaiting_join = True
            self._try_complete_join(now_ms)
            return JoinPending(member_id)
        if self.state == GroupState.COMPLETING_REBALANCE and not changed:
            return self._join_result(member_id)  # a retried JoinGroup: the same answer again
        if self.state == GroupState.STABLE and not changed and member_id != self.leader_id:
            return self._join_result(member_id)  # nothing to rebalance for
        member.awaiting_join = True
        self._prepare_rebalance(now_ms)
        self._try_complete_join(now_ms)
        return JoinPending(member_id)

    def _update_member(self, now_ms: float, member: Member, request: JoinRequest) -> None:
        member.protocols = request.protocols
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.client_id, member.client_host = request.client_id, request.client_host
        member.heartbeat_deadline_ms = now_ms + request.session_timeout_ms

    def _add_member(self, now_ms: float, request: JoinRequest, member_id: str) -> JoinPending:
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
        if self.state != GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(now_ms)
        self._try_complete_join(now_ms)
        return JoinPending(member_id)

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
        if self.state == GroupState.STABLE and self._select_protocol() == self.protocol_name:
            self.outbox.append(PersistWanted(self.generation_id))  # the new member id
            is_leader = new_member_id == self.leader_id
            result = self._join_result(new_member_id)
            return attrs.evolve(result, skip_assignment=is_leader)
        member.awaiting_join = True
        if self.state != GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(now_ms)
        self._try_complete_join(now_ms)
        return JoinPending(new_member_id)

    def _join_result(self, member_id: str) -> JoinResult:
        members = ()
        if member_id == self.leader_id:
            members = tuple((m.member_id, m.instance_id, m.metadata(self.protocol_name))
                            for m in self.members.values())
        return JoinResult(ErrorCode.none, member_id, self.generation_id, self.protocol_type,
                          self.protocol_name, self.leader_id or "", members)

    # --- rebalancing ---------------------------------------------------------------------------

    def _prepare_rebalance(self, now_ms: float) -> None:
        if self.state == GroupState.COMPLETING_REBALANCE:
            self._fail_syncs(ErrorCode.rebalance_in_progress)
        was_empty = self.state == GroupState.EMPTY
        self.state = GroupState.PREPARING_REBALANCE
        timeout_ms = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self._rebalance_deadline_ms = now_ms + timeout_ms
        self._join_not_before_ms = now_ms + min(self.initial_rebalance_delay_ms, timeout_ms) if was_empty else 0.0

    def _fail_syncs(self, error: ErrorCode) -> None:
        self._assignments = None
        for member in self.members.values():
            if member.awaiting_sync:
                member.awaiting_sync = False
                self.outbox.append(SyncCompleted(member.member_id, SyncResult(error)))

    def _all_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def _try_complete_join(self, now_ms: float) -> None:
        if self.state != GroupState.PREPARING_REBALANCE:
            return
        if now_ms >= self._rebalance_deadline_ms or (self._all_joined() and now_ms >= self._join_not_before_ms):
            self._complete_join(now_ms)

    def _complete_join(self, now_ms: float) -> None:
        for member in [m for m in self.members.values() if not m.awaiting_join]:
            self._remove(member.member_id)  # did not rejoin within the rebalance timeout
        self.generation_id += 1
        if not self.members:
            self.state = GroupState.EMPTY
            self.protocol_name = None
            self.leader_id = None
            self.outbox.append(PersistWanted(self.generation_id))
            return
        self.protocol_name = self._select_protocol()
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        self.state = GroupState.COMPLETING_REBALANCE
        self._assignments = None
        for member in self.members.values():
            member.awaiting_join = False
            member.assignment = b""
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            self.outbox.append(JoinCompleted(member.member_id, self._join_result(member.member_id)))

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
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(now_ms)
        self._try_complete_join(now_ms)

    # --- SyncGroup -----------------------------------------------------------------------------

    def sync(self, now_ms: float, member_id: str, generation_id: int, instance_id: str | None,
             protocol_type: str | None, protocol_name: str | None,
             assignments: typing.Sequence[tuple[str, bytes]]) -> SyncResult | SyncPending:
        error = self._check_member(member_id, generation_id, instance_id)
        if error is not None:
            return SyncResult(error)
        if (protocol_type is not None and protocol_type != self.protocol_type) or \
                (protocol_name is not None and protocol_name != self.protocol_name):
            return SyncResult(ErrorCode.inconsistent_group_protocol)
        member = self.members[member_id]
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if self.state == GroupState.PREPARING_REBALANCE:
            return SyncResult(ErrorCode.rebalance_in_progress)
        if self.state == GroupState.STABLE:
            return SyncResult(ErrorCode.none, self.protocol_type, self.protocol_name, member.assignment)
        member.awaiting_sync = True
        if member_id == self.leader_id and self._assignments is None:
            given = dict(assignments)
            self._assignments = {m: given.get(m, b"") for m in self.members}
            self.outbox.append(PersistWanted(self.generation_id))
        return SyncPending(member_id)

    def snapshot_assignments(self) -> dict[str, bytes]:
        """The assignment to write: the leader's while it is being written, else the current."""
        if self._assignments is not None:
            return dict(self._assignments)
        return {m.member_id: m.assignment for m in self.members.values()}

    def persisted(self, generation_id: int) -> None:
        """The metadata written at generation_id is committed: a pending assignment applies."""
        if self.state != GroupState.COMPLETING_REBALANCE or generation_id != self.generation_id \
                or self._assignments is None:
            return
        for member_id, assignment in self._assignments.items():
            if member_id in self.members:
                self.members[member_id].assignment = assignment
        self._assignments = None
        self.state = GroupState.STABLE
        for member in self.members.values():
            if member.awaiting_sync:
                member.awaiting_sync = False
                self.outbox.append(SyncCompleted(member.member_id, SyncResult(
                    ErrorCode.none, self.protocol_type, self.protocol_name, member.assignment)))

    def persist_failed(self, now_ms: float, generation_id: int, error: ErrorCode) -> None:
        """Writing the assignment failed (e.g. leadership of the offsets partition moved)."""
        if self.state != GroupState.COMPLETING_REBALANCE or generation_id != self.generation_id:
            return
        self._fail_syncs(error)
        self._prepare_rebalance(now_ms)

    # --- Heartbeat, LeaveGroup, session expiry --------------------------------------------------

    def _check_member(self, member_id: str, generation_id: int, instance_id: str | None) -> ErrorCode | None:
        if self.state == GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if self._fenced(member_id, instance_id):
            return ErrorCode.fenced_instance_id
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        if generation_id != self.generation_id:
            return ErrorCode.illegal_generation
        return None

    def heartbeat(self, now_ms: float, member_id: str, generation_id: int,
                  instance_id: str | None) -> ErrorCode:
        error = self._check_member(member_id, generation_id, instance_id)
        if error is not None:
            return error
        member = self.members[member_id]
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if self.state == GroupState.PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave(self, now_ms: float, member_id: str, instance_id: str | None) -> ErrorCode:
        """One member of a LeaveGroup (by member id, or by instance id for static members)."""
        if self.state == GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if instance_id is not None:
            current = self.instances.get(instance_id)
            if current is None:
                return ErrorCode.unknown_member_id
            if member_id != UNKNOWN_MEMBER_ID and member_id != current:
                return ErrorCode.fenced_instance_id
            member_id = current
        if member_id in self.pending_members:
            del self.pending_members[member_id]
            self._try_complete_join(now_ms)
            return ErrorCode.none
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        self._member_gone(now_ms, member_id)
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
        if self.state == GroupState.PREPARING_REBALANCE:
            # Everyone in: the join completes when the initial delay ends; else at the timeout.
            ready_ms = self._join_not_before_ms if self._all_joined() else self._rebalance_deadline_ms
            deadline = min(deadline, ready_ms)
        return deadline

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
        if self.state == GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if self._fenced(member_id, instance_id):
            return ErrorCode.fenced_instance_id
        if generation_id < 0 and self.state == GroupState.EMPTY:
            return ErrorCode.none  # a group that uses Kafka only to store offsets
        if self.state == GroupState.COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        if generation_id != self.generation_id:
            return ErrorCode.illegal_generation
        return ErrorCode.none

    def commit_seen(self, now_ms: float, member_id: str) -> None:
        member = self.members.get(member_id)
        if member is not None:
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms

    def mark_dead(self) -> None:
        """Deleted, or its coordinator moved: every waiting member is told to look again."""
        for member in self.members.values():
            if member.awaiting_join:
                self.outbox.append(JoinCompleted(member.member_id,
                                                 _error_join(ErrorCode.not_coordinator, member.member_id)))
            if member.awaiting_sync:
                self.outbox.append(SyncCompleted(member.member_id, SyncResult(ErrorCode.not_coordinator)))
        self.state = GroupState.DEAD

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
        self.state = GroupState.STABLE if self.members else GroupState.EMPTY
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members), None)
