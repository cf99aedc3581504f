"""One Raft group hosted by this node: its RawNode, durable storage, state machine and lock.

The lock is held from ready() through advance() by the Ready pass (raft_runtime.py) and
by every proposer, so no propose can slip into that window (the seed's panic). Messages
from peers are queued in `inbox` and stepped by the Ready pass itself.
"""

from __future__ import annotations

import collections
import heapq
import logging
import random
import typing
import zlib

import trio

from chronik_trio.errors import NotLeader, ProposalFailed
from chronik_trio.raft.config import Config as RaftConfig
from chronik_trio.raft.errors import ConfChangeInvalid, ProposalDropped, StepPeerNotFound
from chronik_trio.raft.rawnode import RawNode
from chronik_trio.raft.types import (ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message,
                                     MessageType, Snapshot, SoftState, StateRole)

log = logging.getLogger(__name__)

ELECTION_TICK = 10  # x 50 ms ticks: a follower campaigns after 0.5-1 s without a leader
HEARTBEAT_TICK = 2
PENDING_TICKS_MAX = HEARTBEAT_TICK  # ticks a group not yet reached by a pass keeps (see tick)
INBOX_MESSAGES_MAX = 4096  # per group; a flood beyond this is dropped (Raft retries)
PENDING_PROPOSALS_MAX = 10_000  # per group; bounds waiter memory if commits stall
QUIESCE_AFTER_IDLE_TICKS = 20  # an idle leader quiesces after this many ticks (1 s at 50 ms)
LEADER_LOST_GRACE_TICKS = 2  # see leader_lost
QUIESCE_CONTEXT = b"chronik.quiesce"  # marks the leader's last heartbeat before it goes quiet


class StateMachine(typing.Protocol):
    def apply(self, entries: typing.Sequence[Entry]) -> list[typing.Any]:
        """Apply committed normal entries in order; one result per entry."""

    def on_soft_state(self, leader_id: int, role: StateRole, term: int) -> None:
        """Leadership changed (called before that Ready's committed entries are applied)."""

    def on_conf_state(self, index: int, conf_state: ConfState) -> None:
        """A membership change committed at index took effect."""

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the state by a snapshot received from the leader."""


class _Waiter:
    __slots__ = ("term", "index", "event", "result", "error")

    def __init__(self, term: int) -> None:
        self.term = term
        self.index = 0
        self.event = trio.Event()
        self.result: typing.Any = None
        self.error: Exception | None = None

    def resolve(self, result=None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.event.set()


class GroupLock:
    """A trio.Lock whose acquire takes no checkpoint when the lock is free (and nobody waits:
    still fair). The Ready pass takes each active group's lock, and a produce takes its
    group's: with trio.Lock each of those was one more trip through the scheduler per record,
    for a lock that is almost always free. What follows an acquire reaches a checkpoint of
    its own (the pass's fsync round, a produce's wait for its commit). trio.Lock cannot be
    subclassed, hence the wrapper."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def statistics(self) -> trio.LockStatistics:
        return self._lock.statistics()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info) -> None:
        self.release()


class RaftGroup:
    """Quiescence: a leader whose followers are all caught up, with nothing proposed or
    pending for QUIESCE_AFTER_IDLE_TICKS ticks, sends each follower a heartbeat marked
    QUIESCE_CONTEXT and stops ticking; a follower that steps that heartbeat from its leader
    stops ticking too. Any other message, a proposal, or the runtime hearing that a peer
    went silent wakes the group (quiesced = False), and it ticks again. An idle group then
    costs no CPU and no network; node-level liveness (raft_runtime.py) stands in for its
    heartbeats.
    """

    def __init__(self, group_id: str, node: RawNode, storage, machine: StateMachine,
                 wake: typing.Callable[["RaftGroup"], None]) -> None:
        self.group_id = group_id
        self.node = node
        self.storage = storage
        self.machine = machine
        self._wake = wake
        self.lock = GroupLock()
        self.inbox: collections.deque[Message] = collections.deque()
        # Transport reports arrive from inside a Ready window; stepped with the inbox.
        self._reports: list[tuple[str, int, bool]] = []
        self.pending_ticks = 0
        self.dropped_messages = 0
        # Told whenever quiesced changes (the runtime keeps its set of awake groups, the
        # only ones its tick loop visits); set by RaftRuntime.add.
        self.on_quiesced_changed: typing.Callable[["RaftGroup", bool], None] = lambda group, quiesced: None
        self._quiesced = False
        self.idle_ticks = 0
        # The index of the empty entry this node appended on becoming leader (0: not
        # leader). While the log ends there (nothing proposed since the election), a leader
        # whose followers all hold it goes quiet at once, without QUIESCE_AFTER_IDLE_TICKS:
        # thousands of new partitions each elect once and would otherwise tick and heartbeat
        # for a second each (see _quiesce_due).
        self.elected_index = 0
        # (peer, term) when the group was woken because node peer went unheard; see
        # wake_for_silence. None once real traffic woke it or it was quieted again.
        self._silence_wake: tuple[int, int] | None = None
        self.replay_target = 0  # the node serves once applied reaches this (node.py)
        # A replica created to join a partition being reassigned (node/reassignments.py): it
        # does not tick, so never campaigns, until it applied the conf change of that move
        # (generation in its context) adding it. Its bootstrap config is the group's first
        # one, which may name it a voter (or the only one) long before it really is.
        self.joining_generation: int | None = None
        self.joined_listeners: list[typing.Callable[[], None]] = []
        self.closed = False  # set under the lock; the Ready pass skips closed groups
        self.leader_known = trio.Event()  # set and replaced whenever a leader is learnt
        self.leader_changes = 0
        self.early_quiesces = 0  # times this group went quiet right after its election
        self.persisted_index = storage.log.durable_index
        self._persist_waiters: list[tuple[int, int, trio.Event]] = []  # a heap by index
        self._waiters: dict[int, _Waiter] = {}
        self._advanced: trio.Event | None = None  # see wait_advanced; made only when awaited
        ss = node.status().soft_state
        self.leader_id, self.role, self.term = ss.leader_id, ss.role, node.status().hard_state.term

    @property
    def quiesced(self) -> bool:
        """Whether the group is quiet: it does not tick, and its leader sends no heartbeats."""
        return self._quiesced

    @quiesced.setter
    def quiesced(self, value: bool) -> None:
        if value != self._quiesced:
            self._quiesced = value
            self.on_quiesced_changed(self, value)

    @property
    def is_leader(self) -> bool:
        return self.role == StateRole.LEADER

    @property
    def sole_voter(self) -> bool:
        """Whether this node is the group's only voter (a one-replica partition)."""
        return tuple(self.node.voter_ids()) == (self.node.id,)

    def deliver(self, message: Message) -> None:
        """A message from a peer (sync, never blocks): queued for the Ready pass.

        A group without a configuration yet (a node joining the cluster, node/membership.py)
        takes no entries from the start of the log: applied on an empty configuration, the
        first conf change would fail. It waits for the leader's snapshot instead (the leader
        sends one once its log no longer starts at index 1)."""
        if len(self.inbox) >= INBOX_MESSAGES_MAX or (
                message.type == MessageType.APPEND and message.index == 0 and message.entries
                and not self.storage.is_initialized):
            self.dropped_messages += 1
            return
        # A leader's second answer to an append of committed entries changes only its
        # bookkeeping: it is stepped with whatever wakes the group next (the next record, the
        # next tick), not in a Ready pass of its own (one pass per record fewer on 3 voters).
        # A quiesced group is woken all the same: it does not tick.
        can_wait = not self.quiesced and self.node.append_response_can_wait(message)
        self.inbox.append(message)
        if message.type != MessageType.HEARTBEAT_RESPONSE and message.context != QUIESCE_CONTEXT:
            self.quiesced = False  # real traffic: tick again
            self._silence_wake = None
        if not can_wait:
            self._wake(self)

    def transfer_leader(self, peer: int) -> None:
        """Ask Raft to hand leadership to peer (stepped by the next Ready pass)."""
        self._reports.append(("transfer", peer, False))
        self.unquiesce()
        self._wake(self)

    def transfer_pending(self) -> bool:
        """Whether a leader transfer is already under way."""
        return self.node.lead_transferee != 0 or any(k == "transfer" for k, _, _ in self._reports)

    def report_unreachable(self, peer: int) -> None:
        self._reports.append(("unreachable", peer, False))
        self._wake(self)

    def report_snapshot(self, peer: int, ok: bool) -> None:
        self._reports.append(("snapshot", peer, ok))
        self._wake(self)

    def unquiesce(self) -> None:
        if self.quiesced:
            self.quiesced = False
            self.idle_ticks = 0
            self._wake(self)

    def tick(self) -> None:
        """One tick of the runtime's clock. A group the Ready pass has not reached since its
        last ticks keeps at most PENDING_TICKS_MAX of them, not one more per interval: its
        clock runs only as fast as this node gets to it. Otherwise a node with more awake
        groups than a pass takes (thousands of new partitions electing at once) stepped each
        group's backlog of ticks at once, so every timer it has ran out together: followers
        started elections their leader's heartbeats, queued behind the same backlog, would
        have stopped, and the elections' messages made the backlog longer (10,000 partitions
        never settled: docs/bench.md, issue 20's third round). One heartbeat interval's
        worth: a leader reached once a pass still heartbeats once a pass, and a follower
        campaigns only after several passes without its leader. Raft's safety does not
        depend on time; the node reads nothing by lease."""
        if self.pending_ticks >= PENDING_TICKS_MAX:
            return  # still queued for a pass (with its wake-up)
        self.pending_ticks += 1
        self._wake(self)

    def wake_for_silence(self, peer: int) -> None:
        """Node peer went unheard (or its connection broke): tick again, so that if peer led
        this group and is gone, an election follows. Remembered, so that hearing peer again
        before anything changed quiets the group again (requiesce_if_false_alarm)."""
        if self.quiesced:
            self._silence_wake = (peer, self.node.term)
        self.unquiesce()

    def requiesce_if_false_alarm(self, peer: int) -> bool:
        """Node peer, whose silence woke this follower, was heard again (a pause, a broken
        connection remade): if the group still follows peer at the same term, go quiet again.
        Otherwise its quiesced leader stays silent, the follower's election timer runs out,
        and it becomes a pre-candidate (forgetting the leader) only to be refused by the
        replicas still holding the leader's lease. Returns whether it went quiet."""
        wake = self._silence_wake
        if wake is None or wake[0] != peer:
            return False
        self._silence_wake = None
        node = self.node
        if (self.quiesced or self.inbox or node.role != StateRole.FOLLOWER
                or node.leader_id != peer or node.term != wake[1]):
            return False
        self.quiesced = True
        self.pending_ticks = 0
        return True

    def leader_lost(self, dead: int) -> None:
        """Our leader's node `dead` is gone (its connection broke): count the silence at
        once, so that the election starts without waiting 0.5-1 s. One survivor, chosen
        alike by all of them (by term), counts up to two ticks short of its randomized
        timeout and so campaigns 100 ms later; the others count one election timeout, which ends their
        lease (they grant the pre-vote) and leaves them their randomized remainder, so two
        do not split the vote. Raft's safety does not depend on timing; at worst an
        unneeded pre-vote is refused by followers still hearing from a live leader."""
        node, timer = self.node, self.node.election_timer()
        survivors = sorted(v for v in node.voter_ids() if v != dead)
        if survivors and survivors[node.term % len(survivors)] == node.id:
            # Two ticks short: the others notice the broken connection too before its
            # pre-vote reaches them (until then they would refuse it, holding their lease).
            ticks = max(1, timer.randomized_timeout_ticks - timer.elapsed_ticks
                        - LEADER_LOST_GRACE_TICKS)
        else:
            ticks = timer.timeout_ticks
        self.wake_for_silence(dead)
        self.pending_ticks += ticks
        self._wake(self)

    async def propose(self, data: bytes):
        """Propose data as the leader and wait until it is applied here; return the state
        machine's result for it. Raises NotLeader or ProposalFailed."""
        async with self.lock:
            self.check_leader()
            waiter = self.propose_locked(data)
        self._wake(self)
        return await self.wait_applied(waiter)

    async def propose_conf_change(self, change: ConfChangeV2) -> None:
        """Propose a membership change as the leader; does not wait for it to apply (the
        caller watches the configuration). Raises NotLeader or ProposalFailed (another change
        is pending, or the change is invalid for the current configuration)."""
        async with self.lock:
            self.check_leader()
            self.unquiesce()
            try:
                self.node.propose_conf_change(change)
            except (ProposalDropped, ConfChangeInvalid) as exc:
                raise ProposalFailed(f"group {self.group_id}: {exc}") from None
        self._wake(self)

    def check_leader(self) -> None:
        """Raise NotLeader unless this node leads the group (call with the lock held)."""
        if not self.is_leader:
            raise NotLeader(self.group_id, self.leader_id, self.term)

    def propose_locked(self, data: bytes) -> "_Waiter":
        """Propose as the leader with the lock held; returns the waiter for its application.
        The caller wakes the runtime after releasing the lock."""
        return self.propose_locked_many([data])

    def propose_locked_many(self, datas: list[bytes], entry_type: EntryType = EntryType.NORMAL) -> "_Waiter":
        """Propose several entries in one proposal: Raft accepts or drops them together, so
        a multi-batch produce is never half written. Returns the waiter of the last one."""
        self.unquiesce()
        if len(self._waiters) >= PENDING_PROPOSALS_MAX:
            raise ProposalFailed(f"group {self.group_id}: {len(self._waiters)} proposals pending")
        try:
            self.node.propose_batch(datas, entry_type)
        except ProposalDropped as exc:
            raise ProposalFailed(f"group {self.group_id}: {exc}") from None
        # The leader appended them at once: the last index and term are theirs.
        waiter = _Waiter(self.node.term)
        waiter.index = self.node.last_index()
        self._waiters[waiter.index] = waiter
        return waiter

    def wake_runtime(self) -> None:
        self._wake(self)

    @staticmethod
    async def wait_applied(waiter: "_Waiter"):
        await waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def wait_persisted(self, index: int) -> None:
        """Until this node's log is durable through index (acks=1)."""
        if self.persisted_index >= index:
            return
        event = trio.Event()
        heapq.heappush(self._persist_waiters, (index, id(event), event))
        await event.wait()

    async def wait_advanced(self) -> None:
        """Until the Ready pass next advances this group (its applied or commit index, its
        leader or its term may have moved): callers re-check their condition after it."""
        if self._advanced is None:
            self._advanced = trio.Event()
        await self._advanced.wait()

    def advanced(self) -> None:
        """Called by the Ready pass after advance()."""
        if self._advanced is not None:
            self._advanced.set()
            self._advanced = None

    def on_persisted(self, index: int) -> None:
        self.persisted_index = max(self.persisted_index, index)
        while self._persist_waiters and self._persist_waiters[0][0] <= self.persisted_index:
            heapq.heappop(self._persist_waiters)[2].set()

    async def propose_anywhere(self, data: bytes) -> None:
        """Propose data from whichever role this node has: a follower forwards it to the
        leader through Raft. Does not wait; the caller recognises the entry when it is
        applied (by an id inside data). Raises ProposalFailed if no leader is known."""
        async with self.lock:
            self.unquiesce()
            try:
                self.node.propose(data)
            except ProposalDropped as exc:
                raise ProposalFailed(f"group {self.group_id}: {exc}") from None
        self._wake(self)

    # --- called by the Ready pass with the lock held --------------------------------------------

    def step_inbox_and_ticks(self) -> list[Message]:
        """Step queued messages and due ticks; return quiesce heartbeats to send, if this
        leader just went quiet."""
        ticks, self.pending_ticks = self.pending_ticks, 0
        busy = False  # heartbeat traffic is what an idle group has; it does not count
        reports, self._reports = self._reports, []
        for kind, peer, ok in reports:
            if kind == "unreachable":
                self.node.report_unreachable(peer)
            elif kind == "snapshot":
                self.node.report_snapshot(peer, ok)
            elif self.is_leader:
                self.node.transfer_leader(peer)
        while self.inbox:
            message = self.inbox.popleft()
            busy = busy or message.type != MessageType.HEARTBEAT_RESPONSE
            try:
                self.node.step(message)
            except StepPeerNotFound:  # a response from a node no longer a member: routine
                self.dropped_messages += 1
                continue
            except ProposalDropped:  # a follower's forwarded proposal, and no leader takes it
                self.dropped_messages += 1  # here now: its proposer retries (MetaService)
                continue
            if message.context == QUIESCE_CONTEXT and message.type == MessageType.HEARTBEAT:
                self.quiesced = message.from_ == self.node.leader_id and message.term == self.node.term
        if self.quiesced:
            return []
        if self.joining_generation is not None:
            ticks = 0  # see joining_generation
        for _ in range(ticks):
            self.node.tick()
        if not self.is_leader:
            return []
        if self._just_elected() and not self._waiters and self._caught_up():
            self.early_quiesces += 1
            return self._quiesce()
        if busy or self._waiters or not self._caught_up():
            self.idle_ticks = 0
            return []
        self.idle_ticks += ticks
        if self.idle_ticks < QUIESCE_AFTER_IDLE_TICKS:
            return []
        return self._quiesce()

    def _just_elected(self) -> bool:
        """A leader whose log still ends at the entry of its election, with no leader
        transfer under way: once that entry is committed, applied and held by every
        follower, there is nothing to wait QUIESCE_AFTER_IDLE_TICKS for. Waiting cost a new
        group 20 ticks and 10 heartbeat rounds; creating 10,000 partitions, that tick work
        grew as groups x creation time (docs/bench.md, issue 20)."""
        node = self.node
        return (self.elected_index != 0 and node.last_index() == self.elected_index
                and node.lead_transferee == 0)

    def release_cached_entries(self) -> None:
        """Let storage drop cached entries nobody will read soon: applied here and, on a
        leader, matched by every follower (a lagging one is read from the files)."""
        node = self.node
        upto = node.applied_index
        if self.is_leader:
            upto = min([upto] + [match for peer, match in node.match_indexes().items() if peer != node.id])
        self.storage.release_recent(upto)

    def _caught_up(self) -> bool:
        node = self.node
        last = node.last_index()
        if node.committed_index != last or node.applied_index != last:
            return False
        return all(match == last for match in node.match_indexes().values())

    def _quiesce(self) -> list[Message]:
        node = self.node
        self.quiesced = True
        return [Message(type=MessageType.HEARTBEAT, to=peer, from_=node.id, term=node.term,
                        commit=min(match, node.committed_index), context=QUIESCE_CONTEXT)
                for peer, match in node.match_indexes().items() if peer != node.id]

    def on_soft_state(self, ss: SoftState) -> None:
        was_leader = self.is_leader
        if ss.leader_id != self.leader_id and ss.leader_id:
            self.leader_changes += 1
            log.info("group %s: leader is node %d at term %d (seen by node %d)",
                     self.group_id, ss.leader_id, self.node.term, self.node.id)
        self.leader_id, self.role = ss.leader_id, ss.role
        self.term = self.node.term
        if not was_leader and self.is_leader:
            self.elected_index = self.node.last_index()  # its empty entry (Raft 8)
        elif not self.is_leader:
            self.elected_index = 0
        if ss.leader_id:
            self.leader_known.set()
            self.leader_known = trio.Event()
        if was_leader and not self.is_leader:
            self._fail_waiters(f"group {self.group_id}: leadership lost before commit")
        self.machine.on_soft_state(ss.leader_id, ss.role, self.term)

    def conf_change_applied(self, cc: ConfChangeV2) -> None:
        """A committed conf change was applied here (by the Ready pass)."""
        if self.joining_generation is None or not cc.context.isdigit():
            return
        me = self.node.id
        adds_me = any(c.node_id == me and c.type != ConfChangeType.REMOVE_NODE for c in cc.changes)
        if adds_me and int(cc.context) >= self.joining_generation:
            log.info("group %s: node %d joined (conf change of generation %s)", self.group_id, me,
                     cc.context.decode())
            self.joining_generation = None
            for listener in self.joined_listeners:
                listener()

    def on_applied(self, entries: typing.Sequence[Entry], results: list) -> None:
        for entry, result in zip(entries, results):
            waiter = self._waiters.pop(entry.index, None)
            if waiter is None:
                continue
            if entry.term == waiter.term:
                waiter.resolve(result)
            else:
                waiter.resolve(error=ProposalFailed(
                    f"group {self.group_id}: index {entry.index} holds term {entry.term}, not {waiter.term}"))

    def _fail_waiters(self, reason: str) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.resolve(error=ProposalFailed(reason))

    def close(self) -> None:
        """Call with the lock held (or with the runtime stopped)."""
        self.closed = True
        self._fail_waiters(f"group {self.group_id}: closed")
        self.advanced()  # whoever waits on it looks again, and sees it closed
        self.storage.close()


def open_group(node_id: int, group_id: str, storage, machine: StateMachine,
               wake: typing.Callable[[RaftGroup], None], *, rng: random.Random,
               campaign_now: bool = False, joining_generation: int | None = None,
               skip_bcast_commit: bool = False, skip_heartbeat_after_append: bool = False) -> RaftGroup:
    """A RaftGroup over storage (restoring machine from its snapshot first), for the caller
    to add to its runtime. A group whose only voter is this node campaigns at once, as does
    one given campaign_now. The election timer's generator is seeded from rng.
    skip_bcast_commit: the leader tells followers of a commit only with its next append or
    heartbeat, for groups whose followers need not apply at once; skip_heartbeat_after_append:
    no heartbeat to a follower an append just reached (both raft/config.py)."""
    snapshot = storage.snapshot(0) if storage.first_index() > 1 else None
    if snapshot is not None:
        machine.restore(snapshot)
    seed = zlib.crc32(group_id.encode()) ^ (node_id << 20) ^ rng.getrandbits(32)
    node = RawNode(RaftConfig(id=node_id, election_tick=ELECTION_TICK, heartbeat_tick=HEARTBEAT_TICK,
                              rng=random.Random(seed), skip_bcast_commit=skip_bcast_commit,
                              skip_heartbeat_after_append=skip_heartbeat_after_append), storage)
    group = RaftGroup(group_id, node, storage, machine, wake)
    group.joining_generation = joining_generation
    hard_state, conf_state = storage.initial_state()
    # Replayed once the group has applied what it knew was committed; a group whose
    # only voter is this node commits its whole log as soon as it leads again.
    group.replay_target = hard_state.commit
    if joining_generation is not None:
        pass  # never campaigns before it joined (see RaftGroup.joining_generation)
    elif conf_state.voters == (node_id,):
        node.campaign()  # the only voter: lead at once instead of after a timeout
        group.replay_target = storage.last_index()
    elif campaign_now:
        node.campaign()
    return group
