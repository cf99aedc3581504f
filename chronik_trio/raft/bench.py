"""Micro-benchmark: committed entries per second for a 3-node in-memory group.

    python -m chronik_trio.raft.bench            # 100 B and 64 KiB entries
    python -m chronik_trio.raft.bench --representation

All three RawNodes run in this one process with MemoryStorage: the figure is the cost of
the Raft logic itself (Ready handling, replication, commit), without disk or network. The
clock is injected; only `main()` reads a real one (the library modules never do).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Callable

from chronik_trio.pb import raft_pb2 as pb

from .config import Config
from .rawnode import RawNode
from .storage import MemoryStorage
from .types import Entry, Message, MessageType, StateRole

PROPOSALS_IN_FLIGHT_MAX = 512
"""Uncommitted proposals the driver keeps queued at the leader (a client pipeline)."""
UNCOMMITTED_BYTES_MAX = 32 << 20
"""Byte bound of that pipeline, so that 64 KiB entries do not pile up hundreds of MB."""


@dataclass(frozen=True, slots=True)
class BenchResult:
    entry_bytes: int
    entries: int
    elapsed_s: float

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.elapsed_s

    @property
    def mib_per_s(self) -> float:
        return self.entries * self.entry_bytes / self.elapsed_s / (1 << 20)


class _Group:
    """Three nodes, one inbox each, synchronous Ready handling."""

    def __init__(self) -> None:
        voters = (1, 2, 3)
        self.storages = {i: MemoryStorage.with_voters(voters) for i in voters}
        self.nodes = {i: RawNode(Config(id=i, rng=random.Random(i), max_inflight_msgs=256,
                                        max_uncommitted_size_bytes=UNCOMMITTED_BYTES_MAX * 2),
                                 self.storages[i]) for i in voters}
        self.inbox: dict[int, list[Message]] = {i: [] for i in voters}
        self.applied = dict.fromkeys(voters, 0)

    def handle_ready(self, i: int) -> bool:
        node = self.nodes[i]
        if not node.has_ready():
            return False
        rd = node.ready()
        for m in rd.messages:
            self.inbox[m.to].append(m)
        storage = self.storages[i]
        storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        for m in rd.persisted_messages:
            self.inbox[m.to].append(m)
        self.applied[i] += sum(1 for e in rd.committed_entries if e.data)
        node.advance(rd)
        return True

    def deliver(self, i: int) -> bool:
        msgs, self.inbox[i] = self.inbox[i], []
        for m in msgs:
            self.nodes[i].step(m)
        return bool(msgs)

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for i in self.nodes:
                while self.handle_ready(i):
                    busy = True
            for i in self.nodes:
                busy |= self.deliver(i)

    def compact(self) -> None:
        """Drop applied entries everyone holds, to keep memory flat."""
        upto = min(n.raft.log.applied for n in self.nodes.values())
        for s in self.storages.values():
            if s.first_index() <= upto <= s.last_index():
                s.compact(upto)


def run(entry_bytes: int, entries: int, clock: Callable[[], float]) -> BenchResult:
    g = _Group()
    g.nodes[1].campaign()
    g.pump()
    leader = g.nodes[1]
    assert leader.raft.state == StateRole.LEADER, leader.raft.state
    payload = b"x" * entry_bytes
    per_batch = max(1, min(PROPOSALS_IN_FLIGHT_MAX, UNCOMMITTED_BYTES_MAX // entry_bytes))
    proposed = 0
    start = clock()
    while g.applied[1] < entries:
        batch = min(per_batch, entries - proposed)
        for _ in range(batch):
            leader.propose(payload)
        proposed += batch
        g.pump()
        g.compact()
    return BenchResult(entry_bytes, g.applied[1], clock() - start)


def measure_representation(clock: Callable[[], float], n: int = 20_000,
                           repeats: int = 7) -> dict[str, tuple[float, float]]:
    """(build, read) microseconds per append message of 4 entries, with raft/'s dataclasses
    and with the generated protobuf classes; the minimum of `repeats` interleaved runs, so
    that noise from other processes on the machine does not decide."""
    def build_dc(k: int):
        return Message(type=MessageType.APPEND, to=2, from_=1, term=3, log_term=3, index=k,
                       commit=k, entries=tuple(Entry(3, k + j, b"d") for j in range(4)))

    def build_pb(k: int):
        return pb.Message(type=3, to=2, term=3, log_term=3, index=k, commit=k,
                          entries=[pb.Entry(term=3, index=k + j, data=b"d") for j in range(4)])

    def read(m) -> int:
        # Raft reads a message's fields several times on its way through step().
        total = 0
        for _ in range(5):
            total += m.term + m.index + m.log_term + m.commit + m.to
            for e in m.entries:
                total += e.term + e.index
        return total

    best: dict[str, list[float]] = {"dataclasses": [1e9, 1e9], "protobuf": [1e9, 1e9]}
    for _ in range(repeats):
        for name, build in (("dataclasses", build_dc), ("protobuf", build_pb)):
            t0 = clock()
            msgs = [build(k) for k in range(n)]
            t1 = clock()
            for m in msgs:
                read(m)
            t2 = clock()
            best[name][0] = min(best[name][0], (t1 - t0) / n * 1e6)
            best[name][1] = min(best[name][1], (t2 - t1) / n * 1e6)
    return {k: (v[0], v[1]) for k, v in best.items()}


def main(argv: list[str]) -> int:
    import time  # the one real clock in raft/, for this command-line entry point only

    if "--representation" in argv:
        for name, (build_us, read_us) in measure_representation(time.perf_counter).items():
            print(f"{name:12s} build {build_us:6.2f} us, read x5 {read_us:6.2f} us "
                  "per append message of 4 entries")
        return 0
    for entry_bytes, count in ((100, 100_000), (64 * 1024, 20_000)):
        r = run(entry_bytes, count, time.perf_counter)
        print(f"3 nodes in memory, {entry_bytes:>6d} B entries: {r.entries_per_s:>9.0f} "
              f"committed entries/s ({r.mib_per_s:.1f} MiB/s, {r.entries} entries in "
              f"{r.elapsed_s:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
