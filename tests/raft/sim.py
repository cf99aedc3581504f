"""A simulated network of RawNodes with faults, and a checker of Raft's safety properties.

Every node persists asynchronously: `ready()` hands out a Ready, its messages and committed
entries are handled at once, and its entries/hard state reach the MemoryStorage ("disk")
only when `persist` runs for that node. A crash drops the node's unpersisted Readies and
its in-memory state machine; a restart rebuilds the RawNode from its storage.

The checker runs after every single step of every node (so the first node to know of a
commit is the leader that made it) and asserts, with the seed in every message:
election safety, log matching, leader completeness, state machine safety, and that nothing
is applied before it is committed.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from chronik_trio.raft import (Config, ConfChangeSingle, ConfChangeType, ConfChangeV2,
                               ConfState, EntryType, MemoryStorage, Message, MessageType,
                               ProposalDropped,
                               RawNode, Ready, ReadIndexDropped, StateRole, StepPeerNotFound,
                               decode_conf_change)

from .cluster import decode_state, encode_state

IN_FLIGHT_MESSAGES_MAX = 2000
"""Messages the simulated network holds; beyond it the oldest are dropped (a lossy link)."""
LIVENESS_TICKS_MAX = 400
"""After healing, a leader must commit a new entry on every voter within this many ticks
(20 election timeouts of 10 ticks with randomization; generous on purpose)."""


@dataclass
class SimPeer:
    node: RawNode
    storage: MemoryStorage
    unpersisted: deque = field(default_factory=deque)  # Readies handed out, not yet durable
    applied: list[tuple[int, bytes]] = field(default_factory=list)  # (index, data)
    applied_index: int = 0
    conf_state: ConfState = ConfState()
    crashed: bool = False


class SafetyViolation(AssertionError):
    pass


class Sim:
    def __init__(self, n: int, voters: tuple[int, ...], seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = tuple(range(1, n + 1))
        self.learners0 = tuple(i for i in self.ids if i not in voters)
        self.peers: dict[int, SimPeer] = {}
        self.net: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.leaders: dict[int, int] = {}           # term -> leader id
        self.committed: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, type)
        self.commit_term: dict[int, int] = {}       # index -> term in which it was committed
        self.observed_commit: dict[int, int] = {}
        self.proposals = 0
        self.restarts = 0
        # Most runs use both, as the node does; the rest check the protocol without them.
        self.pre_vote = self.rng.random() < 0.75
        self.check_quorum = self.rng.random() < 0.75
        # Half the runs defer commits to the next append or heartbeat, half leave heartbeats
        # out after appends, as the node's partition groups do (drawn from a generator of
        # their own, so a seed's other choices stay what they were).
        options = random.Random(seed ^ 0x5B1C)
        self.skip_bcast_commit = options.random() < 0.5
        self.skip_heartbeat_after_append = options.random() < 0.5
        self.reads = 0
        self.read_floor: dict[bytes, int] = {}  # read ctx -> highest index committed before
        for i in self.ids:
            storage = MemoryStorage.with_voters(voters, self.learners0)
            self.peers[i] = self._new_peer(i, storage, applied=0)

    def fail(self, what: str) -> None:
        raise SafetyViolation(f"[sim seed={self.seed}] {what}")

    def _new_peer(self, i: int, storage: MemoryStorage, applied: int) -> SimPeer:
        cfg = Config(id=i, election_tick=10, heartbeat_tick=1, applied=applied,
                     max_size_per_msg_bytes=64, max_inflight_msgs=4,
                     pre_vote=self.pre_vote, check_quorum=self.check_quorum,
                     skip_bcast_commit=self.skip_bcast_commit,
                     skip_heartbeat_after_append=self.skip_heartbeat_after_append,
                     rng=random.Random(self.seed * 7919 + i * 31 + self.restarts))
        p = SimPeer(RawNode(cfg, storage), storage)
        p.conf_state = storage.initial_state()[1]
        self.observed_commit[i] = 0
        return p

    # -- observation and checks -------------------------------------------------------------

    def observe(self, i: int) -> None:
        """Record what node i knows now: leadership and newly committed entries."""
        p = self.peers[i]
        r = p.node.raft
        if r.state == StateRole.LEADER:
            other = self.leaders.setdefault(r.term, i)
            if other != i:
                self.fail(f"election safety: {other} and {i} both lead term {r.term}")
        c = r.log.committed
        lo = max(self.observed_commit[i] + 1, r.log.first_index())
        if lo <= c:
            for e in r.log.slice(lo, c + 1, None):
                got = (e.term, e.data, int(e.type))
                known = self.committed.setdefault(e.index, got)
                if known != got:
                    self.fail(f"state machine safety: {i} commits {got} at {e.index}, "
                              f"earlier {known}")
                self.commit_term.setdefault(e.index, r.term)
        self.observed_commit[i] = max(self.observed_commit[i], c)

    def on_apply(self, i: int, index: int, term: int, data: bytes, type_: int) -> None:
        known = self.committed.get(index)
        if known is None:
            self.fail(f"node {i} applies {index} before it is committed")
        if known != (term, data, type_):
            self.fail(f"node {i} applies {(term, data)} at {index}, committed {known}")

    def check(self) -> None:
        """The properties that need all logs at once (run between rules)."""
        logs = {}
        for i, p in self.peers.items():
            log = p.node.raft.log
            logs[i] = (log.first_index(), log.slice(log.first_index(), log.last_index() + 1,
                                                   None))
        self._check_log_matching(logs)
        self._check_leader_completeness(logs)

    def _check_log_matching(self, logs) -> None:
        ids = sorted(logs)
        for a_i, a in enumerate(ids):
            fa, ea = logs[a]
            for b in ids[a_i + 1:]:
                fb, eb = logs[b]
                lo = max(fa, fb)
                hi = min(fa + len(ea), fb + len(eb)) - 1
                # Find the highest common index with equal terms; below it all must agree.
                k = hi
                while k >= lo and ea[k - fa].term != eb[k - fb].term:
                    k -= 1
                for j in range(lo, k + 1):
                    if ea[j - fa] != eb[j - fb]:
                        self.fail(f"log matching: {a} and {b} share term at {k} but "
                                  f"differ at {j}: {ea[j - fa]} vs {eb[j - fb]}")

    def _check_leader_completeness(self, logs) -> None:
        for i, p in self.peers.items():
            r = p.node.raft
            if p.crashed or r.state != StateRole.LEADER:
                continue
            first, ents = logs[i]
            for index, (term, data, _) in self.committed.items():
                if self.commit_term[index] >= r.term or index < first:
                    continue
                if index >= first + len(ents) or ents[index - first].term != term:
                    self.fail(f"leader completeness: leader {i} of term {r.term} lacks "
                              f"{term}/{index} committed in term {self.commit_term[index]}")

    # -- node actions -----------------------------------------------------------------------

    def live(self) -> list[int]:
        return [i for i in self.ids if not self.peers[i].crashed]

    def leader(self) -> int | None:
        leads = [i for i in self.live() if self.peers[i].node.raft.state == StateRole.LEADER]
        return max(leads, key=lambda i: self.peers[i].node.raft.term) if leads else None

    def send(self, msgs) -> None:
        for m in msgs:
            self.net.append(m)
        while len(self.net) > IN_FLIGHT_MESSAGES_MAX:
            self.dropped(self.net.pop(0))

    def dropped(self, m: Message) -> None:
        """The transport's duty: tell the leader when a snapshot did not arrive."""
        self._report_snapshot(m, ok=False)

    def _report_snapshot(self, m: Message, ok: bool) -> None:
        sender = self.peers[m.from_]
        if m.type == MessageType.SNAPSHOT and not sender.crashed:
            sender.node.report_snapshot(m.to, ok)
            self.observe(m.from_)

    def tick(self, i: int) -> None:
        p = self.peers[i]
        if not p.crashed:
            p.node.tick()
            self.observe(i)

    def propose(self, i: int) -> None:
        p = self.peers[i]
        if p.crashed:
            return
        self.proposals += 1
        try:
            p.node.propose(b"p%d" % self.proposals)
        except ProposalDropped:
            pass
        self.observe(i)

    def read_index(self, i: int) -> None:
        """Ask for a read point; it must cover every entry committed before the request
        (linearizability of ReadIndex), checked when the ReadState arrives."""
        p = self.peers[i]
        if p.crashed:
            return
        self.reads += 1
        ctx = b"r%d" % self.reads
        self.read_floor[ctx] = max(self.committed, default=0)
        try:
            p.node.read_index(ctx)
        except ReadIndexDropped:
            pass

    def _check_read_states(self, i: int, rd: Ready) -> None:
        for rs in rd.read_states:
            floor = self.read_floor.get(rs.request_ctx, 0)
            if rs.index < floor:
                self.fail(f"read index: node {i} got {rs.index} for {rs.request_ctx!r}, but "
                          f"{floor} was committed before the read was issued")

    def transfer_leader(self, target: int) -> None:
        lead = self.leader()
        if lead is not None:
            self.peers[lead].node.transfer_leader(target)
            self.observe(lead)

    def report_unreachable(self, i: int, target: int) -> None:
        p = self.peers[i]
        if not p.crashed:
            p.node.report_unreachable(target)

    def deliver(self, k: int, duplicate: bool = False) -> None:
        if not self.net:
            return
        m = self.net[k % len(self.net)] if duplicate else self.net.pop(k % len(self.net))
        p = self.peers[m.to]
        if p.crashed or (m.from_, m.to) in self.cut:
            self.dropped(m)
            return
        try:
            p.node.step(m)
        except StepPeerNotFound:
            pass
        self.observe(m.to)
        self._report_snapshot(m, ok=True)

    def handle_ready(self, i: int) -> bool:
        """Take a Ready, send what may go now, apply, and queue the persist."""
        p = self.peers[i]
        if p.crashed or not p.node.has_ready():
            return False
        rd = p.node.ready()
        self._check_read_states(i, rd)
        self.send(rd.messages)
        for e in rd.committed_entries:
            self._apply_entry(i, p, e)
        p.node.advance_append_async(rd)
        p.unpersisted.append(rd)
        p.node.advance_apply()
        self.observe(i)
        return True

    def _apply_entry(self, i: int, p: SimPeer, e) -> None:
        assert e.index == p.applied_index + 1, (self.seed, i, e.index, p.applied_index)
        self.on_apply(i, e.index, e.term, e.data, int(e.type))
        if e.type == EntryType.CONF_CHANGE_V2:
            p.conf_state = p.node.apply_conf_change(decode_conf_change(e.data))
        elif e.data:
            p.applied.append((e.index, e.data))
        p.applied_index = e.index

    def persist(self, i: int) -> bool:
        p = self.peers[i]
        if p.crashed or not p.unpersisted:
            return False
        rd: Ready = p.unpersisted.popleft()
        if rd.snapshot is not None:
            p.storage.apply_snapshot(rd.snapshot)
            p.applied = list(_decode_applied(rd.snapshot.data))
            p.applied_index = rd.snapshot.index
            p.conf_state = rd.snapshot.metadata.conf_state
        p.storage.append(rd.entries)
        if rd.hard_state is not None:
            p.storage.set_hard_state(rd.hard_state)
        self.send(rd.persisted_messages)
        p.node.on_persist_ready(rd.number)
        self.observe(i)
        return True

    def crash_restart(self, i: int) -> None:
        """Lose the unpersisted Readies and the state machine; rebuild from storage."""
        old = self.peers[i]
        self.restarts += 1
        storage = old.storage
        snap_index = storage.first_index() - 1
        p = self._new_peer(i, storage, applied=snap_index)
        if snap_index:
            snap = storage.snapshot(0)
            p.applied = list(_decode_applied(snap.data))
            p.applied_index = snap_index
        self.peers[i] = p
        self.observe(i)

    def compact(self, i: int) -> None:
        p = self.peers[i]
        if p.crashed:
            return
        idx = p.applied_index  # applied entries are durable, so the storage holds them
        if idx <= p.storage.first_index() - 1:
            return
        p.storage.create_snapshot(idx, p.conf_state, _encode_applied(p.applied))
        p.storage.compact(idx)

    def conf_change(self, kind: int, target: int) -> None:
        lead = self.leader()
        if lead is None:
            return
        cs = self.peers[lead].conf_state
        voters, learners = set(cs.voters), set(cs.learners)
        t = ConfChangeType
        if kind == 0:       # add or promote
            changes = [ConfChangeSingle(t.ADD_NODE if target in learners else
                                        t.ADD_LEARNER_NODE, target)]
        elif kind == 1:     # demote or remove
            changes = [ConfChangeSingle(t.ADD_LEARNER_NODE if target in voters else
                                        t.REMOVE_NODE, target)]
        else:               # swap two voters through a joint config
            others = [j for j in self.ids if j not in voters]
            if not others or target not in voters:
                return
            changes = [ConfChangeSingle(t.ADD_NODE, others[0]),
                       ConfChangeSingle(t.REMOVE_NODE, target)]
        try:
            self.peers[lead].node.propose_conf_change(ConfChangeV2(changes=tuple(changes)))
        except ProposalDropped:
            pass
        self.observe(lead)

    # -- composite steps --------------------------------------------------------------------

    def round(self, drop_pct: int = 0, dup_pct: int = 0) -> None:
        """Every live node ticks, handles its Ready and persists; then the messages in
        flight are delivered in random order, some dropped or duplicated."""
        for i in self.live():
            self.tick(i)
        for i in self.live():
            while self.handle_ready(i):
                pass
            while self.persist(i):
                pass
        batch, self.net = self.net, []
        self.rng.shuffle(batch)
        for m in batch:
            r = self.rng.randrange(100)
            if r < drop_pct:
                self.dropped(m)
                continue
            self.net.append(m)
            self.deliver(len(self.net) - 1)
            if r >= 100 - dup_pct:
                self.net.append(m)
                self.deliver(len(self.net) - 1)

    def settle(self) -> None:
        """Handle every Ready, persist it and deliver every message until quiet."""
        for _ in range(200):
            busy = False
            for i in self.live():
                while self.handle_ready(i) or self.persist(i):
                    busy = True
            while self.net:
                self.deliver(0)
                busy = True
            if not busy:
                return
        self.fail("no quiescence after 200 settle rounds")

    def heal_and_check_liveness(self) -> int:
        """Heal every fault; a leader must then commit a new entry everywhere in bounded
        ticks. Returns the ticks it took."""
        self.cut = set()
        for i in self.ids:
            if self.peers[i].crashed:
                self.crash_restart(i)
        self.settle()
        marker = None  # (leader, term, index, data) of the entry that must commit
        for ticks in range(LIVENESS_TICKS_MAX):
            for i in self.live():
                self.tick(i)
            self.settle()
            lead = self.leader()
            if lead is None:
                continue
            r = self.peers[lead].node.raft
            if marker is None or marker[:2] != (lead, r.term):
                data = b"live%d" % ticks
                try:
                    self.peers[lead].node.propose(data)
                except ProposalDropped:
                    continue
                marker = (lead, r.term, r.log.last_index(), data)
                self.settle()
            cs = self.peers[lead].conf_state
            voters = set(cs.voters) | set(cs.voters_outgoing)
            index, data = marker[2], marker[3]
            if self.committed.get(index, (0, b""))[1] == data and \
                    all(self.peers[v].applied_index >= index for v in voters):
                return ticks
        self.fail(f"liveness: no leader committing everywhere within {LIVENESS_TICKS_MAX} "
                  f"ticks after healing (leader={self.leader()})")
        return LIVENESS_TICKS_MAX


def _encode_applied(applied: list[tuple[int, bytes]]) -> bytes:
    return encode_state([b"%d:" % i + d for i, d in applied])


def _decode_applied(data: bytes):
    for item in decode_state(data):
        i, _, d = item.partition(b":")
        yield int(i), d


def random_schedule(seed: int, n: int, steps: int) -> Sim:
    """One seed drives a whole faulty run (TigerBeetle style), then liveness is checked.
    Complements the Hypothesis machine with long schedules; rerun a failing seed alone with
    `random_schedule(seed, n, steps)`."""
    rng = random.Random(seed)
    s = Sim(n, voters=(1, 2, 3), seed=seed)
    for _ in range(steps):
        action = rng.randrange(10)
        i = rng.randrange(1, n + 1)
        if action < 4:
            for _ in range(rng.randrange(1, 10)):
                s.round(rng.choice([0, 0, 5, 30]), rng.choice([0, 5]))
        elif action == 4:
            s.propose(i)
            s.propose(i)
        elif action == 5:
            side = set(rng.sample(range(1, n + 1), rng.randrange(1, n)))
            s.cut = {(x, y) for x in side for y in range(1, n + 1) if y not in side}
            s.cut |= {(y, x) for (x, y) in s.cut}
        elif action == 6:
            s.cut = set()
        elif action == 7 and rng.random() < 0.3:
            s.crash_restart(i)
        elif action == 8:
            s.compact(i)
        elif action == 9:
            kind = rng.randrange(6)
            if kind < 4:
                s.conf_change(min(kind, 2), i)
            elif kind == 4:
                s.transfer_leader(i)
            else:
                s.read_index(i)
                s.report_unreachable(i, rng.randrange(1, n + 1))
        s.check()
    s.heal_and_check_liveness()
    s.check()
    return s
