"""An in-memory cluster of RawNodes for tests: a message queue per node, MemoryStorage as
the disk, a list of applied payloads as the state machine, and optional network cuts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from chronik_trio.raft import (Config, ConfState, EntryType, MemoryStorage, Message, RawNode,
                               Ready, StateRole, StepPeerNotFound, decode_conf_change)

STABILIZE_ROUNDS_MAX = 1000
"""A stabilize that has not converged after this many rounds is a livelock bug."""


def encode_state(applied: list[bytes]) -> bytes:
    return b",".join(d.hex().encode() for d in applied)


def decode_state(data: bytes) -> list[bytes]:
    return [bytes.fromhex(x.decode()) for x in data.split(b",")] if data else []


@dataclass
class Peer:
    """One node: its RawNode, its 'disk' and its state machine."""
    node: RawNode
    storage: MemoryStorage
    cfg: Config
    applied: list[bytes] = field(default_factory=list)  # payloads in log order
    applied_index: int = 0
    conf_state: ConfState = ConfState()
    crashed: bool = False


class Cluster:
    def __init__(self, voters: tuple[int, ...], learners: tuple[int, ...] = (), *,
                 seed: int = 0, **cfg_fields) -> None:
        self.seed = seed
        self.cfg_fields = {"election_tick": 10, "heartbeat_tick": 1, **cfg_fields}
        self.peers: dict[int, Peer] = {}
        self.inbox: dict[int, list[Message]] = {}
        self.cut: set[tuple[int, int]] = set()
        self.on_apply = None  # hook(peer_id, entry) for checkers
        for node_id in (*voters, *learners):
            self.add_peer(node_id, MemoryStorage.with_voters(voters, learners))

    def add_peer(self, node_id: int, storage: MemoryStorage) -> Peer:
        cfg = Config(id=node_id, rng=random.Random(self.seed * 1000 + node_id),
                     **self.cfg_fields)
        _, cs = storage.initial_state()
        p = Peer(RawNode(cfg, storage), storage, cfg, conf_state=cs)
        self.peers[node_id] = p
        self.inbox.setdefault(node_id, [])
        return p

    def node(self, node_id: int) -> RawNode:
        return self.peers[node_id].node

    def leader(self) -> int | None:
        leads = [i for i, p in self.peers.items()
                 if not p.crashed and p.node.raft.state == StateRole.LEADER]
        if not leads:
            return None
        return max(leads, key=lambda i: self.peers[i].node.raft.term)

    # -- network ----------------------------------------------------------------------------

    def send(self, msgs) -> None:
        for m in msgs:
            if (m.from_, m.to) in self.cut or m.to not in self.peers:
                continue
            self.inbox[m.to].append(m)

    def partition(self, *groups: tuple[int, ...]) -> None:
        self.cut = {(a, b) for g in groups for a in g for h in groups if h is not g for b in h}

    def isolate(self, node_id: int) -> None:
        others = tuple(i for i in self.peers if i != node_id)
        self.partition((node_id,), others)

    def heal(self) -> None:
        self.cut = set()

    def deliver(self, node_id: int) -> list[Message]:
        msgs, self.inbox[node_id] = self.inbox[node_id], []
        p = self.peers[node_id]
        if p.crashed:
            return []
        for m in msgs:
            if (m.from_, m.to) in self.cut:
                continue
            try:
                p.node.step(m)
            except StepPeerNotFound:
                pass
        return msgs

    # -- ready handling ---------------------------------------------------------------------

    def persist(self, p: Peer, rd: Ready) -> None:
        if rd.snapshot is not None:
            p.storage.apply_snapshot(rd.snapshot)
            p.applied = decode_state(rd.snapshot.data)
            p.applied_index = rd.snapshot.index
            p.conf_state = rd.snapshot.metadata.conf_state
        p.storage.append(rd.entries)
        if rd.hard_state is not None:
            p.storage.set_hard_state(rd.hard_state)

    def apply(self, node_id: int, p: Peer, rd: Ready) -> None:
        for e in rd.committed_entries:
            assert e.index == p.applied_index + 1, (node_id, e.index, p.applied_index)
            if self.on_apply is not None:
                self.on_apply(node_id, e)
            if e.type == EntryType.CONF_CHANGE_V2:
                p.conf_state = p.node.apply_conf_change(decode_conf_change(e.data))
            elif e.data:
                p.applied.append(e.data)
            p.applied_index = e.index

    def process_ready(self, node_id: int) -> Ready | None:
        """Handle one Ready the synchronous way; returns it (None if there was none)."""
        p = self.peers[node_id]
        if p.crashed or not p.node.has_ready():
            return None
        rd = p.node.ready()
        self.send(rd.messages)
        self.persist(p, rd)
        self.send(rd.persisted_messages)
        self.apply(node_id, p, rd)
        p.node.advance(rd)
        return rd

    def stabilize(self, ids: tuple[int, ...] | None = None) -> None:
        ids = tuple(self.peers) if ids is None else ids
        for _ in range(STABILIZE_ROUNDS_MAX):
            busy = False
            for i in ids:
                while self.process_ready(i) is not None:
                    busy = True
            for i in ids:
                if self.deliver(i):
                    busy = True
            if not busy:
                return
        raise AssertionError(f"no convergence in {STABILIZE_ROUNDS_MAX} rounds")

    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.peers[node_id].node.tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for p in self.peers.values():
                if not p.crashed:
                    p.node.tick()
            self.stabilize()

    def elect(self, node_id: int) -> None:
        self.node(node_id).campaign()
        self.stabilize()
        assert self.node(node_id).raft.state == StateRole.LEADER, \
            (node_id, self.node(node_id).raft.state)

    def propose(self, node_id: int, data: bytes) -> None:
        self.node(node_id).propose(data)
        self.stabilize()

    def crash(self, node_id: int) -> None:
        """Lose everything not persisted: the RawNode and its state machine."""
        p = self.peers[node_id]
        p.crashed = True
        self.inbox[node_id] = []

    def restart(self, node_id: int) -> Peer:
        p = self.peers[node_id]
        snap = p.storage.snapshot(0) if p.storage.first_index() > 1 else None
        applied = snap.index if snap is not None else 0
        cfg = Config(id=node_id, rng=random.Random(self.seed * 1000 + node_id + 7919),
                     applied=applied, **self.cfg_fields)
        q = Peer(RawNode(cfg, p.storage), p.storage, cfg)
        q.applied = decode_state(snap.data) if snap is not None else []
        q.applied_index = applied
        q.conf_state = p.storage.initial_state()[1]
        self.peers[node_id] = q
        return q

    def compact(self, node_id: int) -> None:
        """Snapshot the state machine at its applied index and compact the log there."""
        p = self.peers[node_id]
        idx = p.applied_index
        if idx <= p.storage.first_index() - 1:
            return
        p.storage.create_snapshot(idx, p.conf_state, encode_state(p.applied))
        p.storage.compact(idx)

    def log_entries(self, node_id: int):
        """The node's whole log (storage + unstable), from its first index."""
        log = self.peers[node_id].node.raft.log
        return log.slice(log.first_index(), log.last_index() + 1, None)
