"""Drives every Raft group of a node: ticks, peer messages, and the Ready pass.

One Ready pass handles every group that has work (up to READY_GROUPS_PER_PASS; the rest in
the next pass), and makes all of their writes durable with one worker-thread call that
fsyncs each dirty file once (group commit across groups). The
order inside a pass lives in `ready_pass` and is the etcd/raft-rs contract:

1. step queued peer messages and due ticks, then take each group's Ready, holding its lock;
2. send `messages` at once (a leader may send appends before its own fsync: Raft thesis
   10.2.1; heartbeats and votes requests promise nothing);
3. write the snapshot, entries and hard state;
4. fsync everything written, in one call to the runtime's fsync thread;
5. send `persisted_messages` (votes and append responses promise durable state, so they
   wait for step 4);
6. apply committed entries (they are durable on a quorum, so applying never waits for 4),
7. advance; a group that has a Ready again (advance() can make one, e.g. a sole voter's
   commit) goes through 1-7 once more in the same pass, still under its lock (without
   stepping new messages), and is woken for the next pass if it has one yet again;
   release the locks.

The runtime takes its clock from trio and its network as a `send` callable, so a test (or a
later simulation) can drive a whole cluster in one process.
"""

from __future__ import annotations

import itertools
import logging
import time
import typing

import trio

from chronik_trio.raft.convert import decode_conf_change
from chronik_trio.raft.types import EntryType, Message
from chronik_trio.storage.raft_storage import RaftSyncTicket, run_tickets

from .raft_group import RaftGroup
from .seams import DedicatedThread, RunSync

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 0.05  # with election_tick 10: elections after 0.5-1 s of silence
COMMIT_CHECKPOINT_INTERVAL_S = 5.0  # commit indexes are saved at least this often
# A peer not heard from for this long is presumed down: the quiesced groups it led wake up
# and elect a new leader (after their own election timeout). Three liveness intervals, so a
# loaded machine's scheduling hiccups do not wake groups for nothing. A peer whose process
# died is noticed sooner, by its connection breaking (`peer_down`).
PEER_SILENCE_S = 0.75
# One liveness message per peer every 250 ms. Idle, these and the wake-ups to send them are
# most of a node's CPU (100 ms cost 0.5 % of a core more per node with 1,000 groups).
LIVENESS_EVERY_TICKS = 5
PEER_ACTIVE_S = 1.0  # heard from within this: active, for the ISR
# Rounds of Ready -> persist -> apply -> advance per pass for a group that advance() left
# with a new Ready (a sole voter's commit after its fsync): the second is done in the same
# pass, under the locks already held. Bounded, so a group with a long backlog of committed
# entries (max_committed_size_per_ready_bytes at a time) does not hold the pass, and every
# other group, for more than this; the rest waits for the next pass.
READY_ROUNDS_PER_PASS = 2
# Groups one Ready pass takes at most; the others stay woken, for the next pass. A pass runs
# without a checkpoint until its fsync round, so with thousands of active groups (a topic of
# many partitions just created, every group electing) one pass over all of them held the
# loop for seconds: liveness messages and transport pings went unanswered, peers took the
# node for dead and woke their quiesced groups, which made the next pass longer still.
READY_GROUPS_PER_PASS = 512


def _run_tickets(tickets: list[RaftSyncTicket]) -> None:
    run_tickets(tickets)  # many groups: one filesystem sync per phase, not fsyncs per group


class RaftRuntime:
    def __init__(self, node_id: int, send: typing.Callable[[str, Message], None], *,
                 heartbeat: typing.Callable[[int], None] = lambda peer: None,
                 tick_interval_s: float = TICK_INTERVAL_S,
                 peer_silence_s: float = PEER_SILENCE_S,
                 observe_pass: typing.Callable[[float], None] = lambda seconds: None,
                 observe_fsync: typing.Callable[[float], None] = lambda seconds: None,
                 run_sync: RunSync | None = None) -> None:
        """send(group_id, message) hands a Raft message to the network; heartbeat(peer)
        sends one node-level liveness message (the network calls heard_from and
        liveness_from on the other side); both must not block. observe_pass and
        observe_fsync are given the seconds of each Ready pass and fsync round (metrics).
        run_sync hands the fsync rounds off; None (the real path): to this runtime's own
        DedicatedThread, one worker thread that lives across rounds."""
        self.node_id = node_id
        self.fsync_thread = DedicatedThread(f"fsync-node{node_id}") if run_sync is None else None
        self._run_sync = run_sync if run_sync is not None else self.fsync_thread.run_sync
        self._send = send
        self._heartbeat = heartbeat
        self.tick_interval_s = tick_interval_s
        self.peer_silence_s = peer_silence_s
        self.peers: dict[int, float] = {}  # peer id -> trio time last heard from
        self._silent: set[int] = set()
        self._heard_again: set[int] = set()  # silent peers heard since, awaiting a liveness message
        self._incarnations: dict[int, int] = {}  # peer -> the process id its liveness carried
        self.groups: dict[str, RaftGroup] = {}
        # The groups not quiesced, in the order they woke: the only ones the tick loop
        # visits, so a node's idle cost does not grow with its quiet groups. A dict, not a
        # set: the simulator needs the same order under every hash seed.
        self.awake: dict[str, RaftGroup] = {}
        self._active: dict[str, RaftGroup] = {}  # groups with inbox, ticks or proposals
        # The groups that went quiet since the ISR check (leader_reports.py) last took them:
        # it looks only at these and the awake ones, not at every group every second.
        self.went_quiet: dict[str, RaftGroup] = {}
        # Taken first by every Ready pass it is woken for, whatever the backlog (the __meta
        # group: CreateTopics and every leader report wait on it, and with thousands of
        # partition groups woken it would wait behind READY_GROUPS_PER_PASS of them).
        self.first_group_id: str | None = None
        self.ticks = 0  # group ticks queued by the tick loop, in all
        self._wakeup = trio.Event()
        self._group_woke = trio.Event()  # lets an idle tick loop (every group quiesced) go on
        self._last_commit_checkpoint = 0.0
        self.passes = 0
        self.largest_pass = 0  # the most groups one Ready pass took (READY_GROUPS_PER_PASS)
        self.fsync_rounds = 0
        self.unknown_group_drops = 0
        self.malformed_drops = 0  # peer messages no peer may send (node/peers.py)
        self.observe_pass = observe_pass
        self.observe_fsync = observe_fsync
        self.fsync_started: float | None = None  # trio time the fsync round in flight began
        self.stalled_s = 0.0  # seconds the tick loop ran late, in all (see _check_peers)
        self.silence_wakes = 0  # quiesced groups woken because peers went unheard

    def add(self, group: RaftGroup, *, first: bool = False) -> None:
        """first: the group every Ready pass takes first (see first_group_id)."""
        assert group.group_id not in self.groups, group.group_id
        self.groups[group.group_id] = group
        if first:
            self.first_group_id = group.group_id
        group.on_quiesced_changed = self._quiesced_changed
        if not group.quiesced:
            self.awake[group.group_id] = group
        self.wake(group)

    def remove(self, group_id: str) -> RaftGroup | None:
        self._active.pop(group_id, None)
        self.awake.pop(group_id, None)
        self.went_quiet.pop(group_id, None)
        return self.groups.pop(group_id, None)

    def take_went_quiet(self) -> list[RaftGroup]:
        """The groups that went quiet since the last call (see went_quiet)."""
        groups, self.went_quiet = list(self.went_quiet.values()), {}
        return groups

    def _quiesced_changed(self, group: RaftGroup, quiesced: bool) -> None:
        if quiesced:
            self.awake.pop(group.group_id, None)
            if group.group_id in self.groups:
                self.went_quiet[group.group_id] = group
        elif group.group_id in self.groups:
            self.awake[group.group_id] = group
            self._group_woke.set()  # an idle tick loop ticks again

    def wake(self, group: RaftGroup) -> None:
        self._active[group.group_id] = group
        self._wakeup.set()
        self._group_woke.set()

    def set_peers(self, peer_ids) -> None:
        now = trio.current_time()
        self.peers = {p: self.peers.get(p, now) for p in peer_ids if p != self.node_id}
        self._silent &= set(self.peers)
        self._heard_again &= set(self.peers)

    def is_alive(self, node_id: int, now: float) -> bool:
        """This node, or a peer heard from within PEER_ACTIVE_S (node-level liveness: one
        message per peer per tick, so steadier than Raft's per-election recent_active)."""
        return node_id == self.node_id or now - self.peers.get(node_id, float("-inf")) <= PEER_ACTIVE_S

    def is_reachable(self, node_id: int, now: float) -> bool:
        """is_alive, and not cut off: its connection has not broken (peer_down) and it has
        not been silent for peer_silence_s since. For what clients are told (Metadata), where
        a dead leader should show as unavailable at once; the ISR keeps using is_alive."""
        return self.is_alive(node_id, now) and node_id not in self._silent

    def heard_from(self, peer_id: int) -> None:
        """Any message from peer_id arrived."""
        if peer_id not in self.peers:
            return
        self.peers[peer_id] = trio.current_time()
        if peer_id in self._silent:
            self._silent.discard(peer_id)
            self._heard_again.add(peer_id)

    def liveness_from(self, peer_id: int, incarnation: int) -> None:
        """peer_id's liveness message, carrying its process's random id (after heard_from).
        A peer heard again after its silence woke groups is a false alarm (a pause, a remade
        connection) if its process is the same one: the groups still following it at the
        same term go quiet again (requiesce_if_false_alarm). A restarted process leads
        nothing, so then its groups' elections go on."""
        if peer_id not in self.peers:
            return
        known = self._incarnations.get(peer_id)
        self._incarnations[peer_id] = incarnation
        if peer_id not in self._heard_again:
            return
        self._heard_again.discard(peer_id)
        if known != incarnation:
            return
        quieted = sum(g.requiesce_if_false_alarm(peer_id) for g in self.groups.values())
        if quieted:
            log.info("node %d: node %d heard again: %d group(s) following it quiet again",
                     self.node_id, peer_id, quieted)

    def peer_down(self, peer_id: int) -> None:
        """The transport's connection to peer broke or was refused: its process most likely
        died (a SIGKILL closes its sockets at once). Treated as silence without waiting for
        PEER_SILENCE_S, and the groups it led count the silence at once, so one of their
        followers campaigns at the next pass instead of after 0.5-1 s (RaftGroup.leader_lost).
        Only a hint: if the peer is alive, its next message clears it (heard_from), and
        followers still hearing from their leader refuse an unneeded pre-vote."""
        if peer_id not in self.peers or peer_id in self._silent:
            return
        self._silent.add(peer_id)
        lost = [g for g in self.groups.values() if g.leader_id == peer_id and not g.is_leader]
        log.info("node %d: connection to node %d lost: %d group(s) it led count it as silent",
                 self.node_id, peer_id, len(lost))
        for group in lost:
            group.leader_lost(peer_id)
        self._wake_if_majority_silent()

    def deliver(self, group_id: str, message: Message) -> bool:
        """A message from the network for one of our groups; False if we host no such group."""
        group = self.groups.get(group_id)
        if group is None:
            return False
        group.deliver(message)
        return True

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick_loop)
            task_status.started()
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                if self._active:  # else every wake was consumed by the pass before
                    await self.ready_pass()

    async def _tick_loop(self) -> None:
        """Ticks every group that is not quiesced, every tick_interval_s. While every group
        is quiesced it sleeps until the next liveness message is due, or until a group
        wakes (a message, a proposal, a report): an idle node wakes 4 times a second, not 20."""
        ticks = 0
        ticking = True
        while True:
            if ticking:
                due = trio.current_time() + self.tick_interval_s
                await trio.sleep(self.tick_interval_s)
                ticks += 1
            else:
                idle_ticks = LIVENESS_EVERY_TICKS - ticks % LIVENESS_EVERY_TICKS
                self._group_woke = trio.Event()
                due = trio.current_time() + idle_ticks * self.tick_interval_s
                with trio.move_on_after(idle_ticks * self.tick_interval_s) as waited:
                    await self._group_woke.wait()
                if not waited.cancelled_caught:
                    ticking = True  # a group woke: its ticks start one interval from now
                    continue
                ticks += idle_ticks
            self._check_peers(send_liveness=ticks % LIVENESS_EVERY_TICKS == 0,
                              stalled_s=trio.current_time() - due)
            awake = list(self.awake.values())  # tick() may quiesce nothing, but wakes
            for group in awake:
                group.tick()
            self.ticks += len(awake)
            ticking = bool(awake)

    def _check_peers(self, *, send_liveness: bool, stalled_s: float = 0.0) -> None:
        """stalled_s: how late this check runs (this node's own loop was busy: a long Ready
        pass, an overloaded machine); what of it exceeds a tick interval is forgiven. What
        peers sent meanwhile is still unread behind the stall, so it is not their silence:
        each peer's last-heard time moves on by it. Without this, a node whose loop stalls for
        peer_silence_s finds every peer silent and wakes every quiesced group, and waking
        them stalls it again (with 2,000 groups on a loaded machine, elections that went on
        for minutes). Silence still builds up over the time the loop runs, so a peer gone
        quiet is noticed all the same, later by the stalls."""
        now = trio.current_time()
        forgiven = stalled_s - self.tick_interval_s  # a scheduling delay within a tick is not a stall
        if forgiven > 0:
            self.stalled_s += forgiven
            for peer in list(self.peers):
                self.peers[peer] = min(now, self.peers[peer] + forgiven)
        newly_silent = []
        for peer, heard in self.peers.items():
            if send_liveness:
                self._heartbeat(peer)
            if now - heard > self.peer_silence_s and peer not in self._silent:
                self._silent.add(peer)
                newly_silent.append(peer)
        if not newly_silent:
            return
        if self._wake_if_majority_silent():
            return
        woken = [g for g in self.groups.values() if g.quiesced and g.leader_id in newly_silent]
        log.info("node(s) %s silent for %.2f s: waking %d quiesced group(s)",
                 newly_silent, self.peer_silence_s, len(woken))
        self.silence_wakes += len(woken)
        for group in woken:
            group.wake_for_silence(group.leader_id)

    def _wake_if_majority_silent(self) -> bool:
        """If we hear no majority we are likely the one cut off: every group ticks again, so
        the groups we lead step down by check-quorum. Returns whether that was the case."""
        if 2 * len(self._silent) < len(self.peers) + 1:
            return False
        woken = [g for g in self.groups.values() if g.quiesced]
        log.info("node(s) %s silent: no majority heard, waking %d quiesced group(s)",
                 sorted(self._silent), len(woken))
        self.silence_wakes += len(woken)
        for group in woken:
            group.wake_for_silence(group.leader_id)
        return True

    @property
    def quiesced_count(self) -> int:
        return len(self.groups) - len(self.awake)

    async def ready_pass(self) -> None:
        """One pass over every active group; see the module docstring for the order."""
        first = self._active.pop(self.first_group_id, None) if self.first_group_id else None
        budget = READY_GROUPS_PER_PASS - (first is not None)
        if len(self._active) <= budget:
            active, self._active = list(self._active.values()), {}
        else:  # the longest woken first; the rest wait for the next pass, which this wakes
            active = [self._active.pop(gid) for gid in list(itertools.islice(self._active, budget))]
            self._wakeup.set()
        if first is not None:
            active.insert(0, first)
        self.largest_pass = max(self.largest_pass, len(active))
        started = time.perf_counter()
        held = []
        try:
            for group in active:
                await group.lock.acquire()
                if group.closed:  # removed (topic deleted) while we waited for its lock
                    group.lock.release()
                    continue
                held.append(group)
            readies = self._collect(held)
            rounds = 0
            while readies:
                rounds += 1
                await self._persist(readies)
                again = []
                for group, rd in readies:
                    self._send_all(group, rd.persisted_messages)
                    self._apply(group, rd)
                    group.node.advance(rd)
                    group.advanced()
                    group.release_cached_entries()
                    if group.node.has_ready():
                        # advance() itself can leave work: a sole voter's own durable
                        # append commits, a follower's entries committed before they were
                        # durable here become applicable, a candidate's vote for itself
                        # counts, committed entries beyond one Ready's budget remain.
                        again.append(group)
                if rounds < READY_ROUNDS_PER_PASS:
                    # Handled in this pass, with the locks still held: no wake-up, no
                    # new pass (a sole voter's commit follows its fsync at once).
                    readies = self._collect(again, step=False)
                else:
                    for group in again:
                        self.wake(group)  # nothing else would before its next tick (50 ms)
                    readies = []
        finally:
            for group in held:
                group.lock.release()
        if any(not g.quiesced for g in held):
            self._group_woke.set()  # e.g. a stale quiesce heartbeat left a group awake
        self.passes += 1
        self.observe_pass(time.perf_counter() - started)

    def _collect(self, groups: list[RaftGroup], *, step: bool = True) -> list:
        """Each group's Ready, written (not yet synced); step=False: without stepping its
        queued messages and ticks first (a pass's second round: what arrived meanwhile
        waits for the next pass, which it woke)."""
        readies = []
        for group in groups:
            if step:
                self._send_all(group, group.step_inbox_and_ticks())
                # A wake since this pass took its groups (e.g. a second answer that came
                # while it waited for the locks) is consumed here: its message or tick was
                # just stepped, a proposal goes in this Ready. What comes later wakes again.
                self._active.pop(group.group_id, None)
            if not group.node.has_ready():
                group.release_cached_entries()  # e.g. the last append responses came in
                continue
            rd = group.node.ready()
            if rd.soft_state is not None:
                group.on_soft_state(rd.soft_state)
            self._send_all(group, rd.messages)
            if rd.snapshot is not None and not rd.snapshot.is_empty():
                # Rare (a follower far behind): saved on the loop thread before the entries.
                group.storage.apply_snapshot(rd.snapshot)
                group.machine.restore(rd.snapshot)
            if rd.entries:
                group.storage.append(rd.entries)
            if rd.hard_state is not None:
                group.storage.set_hard_state(rd.hard_state)
            readies.append((group, rd))
        return readies

    async def _persist(self, readies: list) -> None:
        now = trio.current_time()
        save_commit = now - self._last_commit_checkpoint >= COMMIT_CHECKPOINT_INTERVAL_S
        if save_commit:
            self._last_commit_checkpoint = now
        tickets = [(g, g.storage.begin_sync(save_commit=save_commit)) for g, _ in readies]
        tickets = [(g, t) for g, t in tickets if t is not None]
        if tickets:
            # Timed on trio's clock (perf_counter on a real node, virtual time in a simulation,
            # where the real time of a round depends on the machine's load and made a seed's
            # disk-health verdicts, and so its run, differ from one replay to the next).
            started = self.fsync_started = trio.current_time()
            # Shielded: a shutdown must not leave a round begun but not ended (the thread's
            # entry is a checkpoint); the clean close syncs every group again after it.
            with trio.CancelScope(shield=True):
                await self._run_sync(_run_tickets, [t for _, t in tickets])
            self.fsync_started = None
            self.observe_fsync(trio.current_time() - started)
            self.fsync_rounds += 1
            for group, ticket in tickets:
                group.on_persisted(group.storage.end_sync(ticket))

    def _send_all(self, group: RaftGroup, messages) -> None:
        for message in messages:
            self._send(group.group_id, message)

    def _apply(self, group: RaftGroup, rd) -> None:
        normal = []
        for entry in rd.committed_entries:
            if entry.type == EntryType.CONF_CHANGE_V2:
                self._flush_normal(group, normal)
                normal = []
                cc = decode_conf_change(entry.data)
                conf_state = group.node.apply_conf_change(cc)
                group.conf_change_applied(cc)
                group.machine.on_conf_state(entry.index, conf_state)
            else:
                normal.append(entry)
        self._flush_normal(group, normal)

    @staticmethod
    def _flush_normal(group: RaftGroup, entries: list) -> None:
        if entries:
            group.on_applied(entries, group.machine.apply(entries))
