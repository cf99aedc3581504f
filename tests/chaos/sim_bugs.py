"""Bug classes the simulation must catch: each is a patch of the broker made inside this
process only (never in the product), and `first_catch` runs seeds until one fails.

    python -m tests.chaos.sim_bugs NAME [FIRST LAST] [--stormy | --votes]   (from the repository root)

prints `caught NAME by seed N: <failing checks>` or `missed NAME in seeds FIRST..LAST`.
Run with PYTHONHASHSEED=0 (as test_sim.py does) so the seed that catches it is stable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sys
import tempfile

from chaos.scenario import parse_scenario
from chaos.sim.driver import run_seed
from chronik_trio.node import partition_group, raft_group, raft_runtime
from chronik_trio.storage import hardstate

SCENARIO = """
name: sim-bugs
seed: 1
duration_s: 24
cluster: {nodes: 3}
topics:
  - {name: chaos, partitions: 2, replication_factor: 3}
workload: {producers: 2, consumers: 1, rate_per_s: 20, request_timeout_s: 3, delivery_timeout_s: 8}
nemesis:
  quiet_s: 6
  schedule:
    - interval_s: [2, 4]
      start_s: 2
      faults:
        - {kind: kill, target: leader, topic: chaos, duration_s: 1}
        - {kind: partition, mode: isolate-leader, duration_s: 3}
        - {kind: partition, mode: one-way-leader, duration_s: 3}
        - {kind: power-loss, target: all, duration_s: 1}
        - {kind: power-loss, target: leader, topic: chaos, duration_s: 1}
checks:
  duplicates: {report_only: true}
  unavailability: {enabled: false}
"""


# Elections and power loss, close together: where a lost vote or an early acknowledgement
# from a follower shows.
STORMY = """
name: sim-bugs-stormy
seed: 1
duration_s: 24
cluster: {nodes: 3}
topics:
  - {name: chaos, partitions: 2, replication_factor: 3}
workload: {producers: 2, consumers: 1, rate_per_s: 40, request_timeout_s: 3, delivery_timeout_s: 8}
nemesis:
  quiet_s: 6
  schedule:
    - interval_s: [1, 2]
      start_s: 1
      faults:
        - {kind: kill, target: random, duration_s: 0.3}
        - {kind: kill, target: leader, topic: chaos, duration_s: 0.3}
        - {kind: power-loss, target: all, duration_s: 0.5}
        - {kind: partition, mode: isolate-random, duration_s: 1}
checks:
  duplicates: {report_only: true}
  unavailability: {enabled: false}
"""


# Votes forgotten: elections forced every few hundred milliseconds (a node isolated, the
# leader killed) while nodes restart within a fraction of an election timeout, so a voter
# that lost its vote is back while the term's other candidate still campaigns. Five nodes
# (__meta has five voters) make split votes, and so second candidates, common. The
# simulator's election-safety check (one leader per term per group) sees a double vote.
VOTES = """
name: sim-bugs-votes
seed: 1
duration_s: 20
cluster: {nodes: 5}
topics:
  - {name: chaos, partitions: 2, replication_factor: 3}
workload: {producers: 2, consumers: 1, rate_per_s: 20, request_timeout_s: 3, delivery_timeout_s: 8}
nemesis:
  quiet_s: 5
  schedule:
    - interval_s: [0.3, 0.8]
      start_s: 1
      faults:
        - {kind: kill, target: random, duration_s: 0.1}
        - {kind: kill, target: leader, topic: chaos, duration_s: 0.1}
        - {kind: power-loss, target: random, duration_s: 0.1}
        - {kind: partition, mode: isolate-random, duration_s: 0.6}
        - {kind: partition, mode: isolate-leader, duration_s: 0.6}
checks:
  duplicates: {report_only: true}
  unavailability: {enabled: false}
"""
VOTES_CRASH_AFTER_VOTE = 0.5  # with --votes: half the granted votes are followed by a kill

@contextlib.contextmanager
def _patched(owner, name: str, value):
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


@contextlib.contextmanager
def acks_before_commit():
    """acks=all answered once the leader appended, before the quorum commit."""
    early: set[int] = set()
    keep = []
    original_propose = raft_group.RaftGroup.propose_locked_many
    original_wait = raft_group.RaftGroup.wait_applied

    def propose_locked_many(self, datas):
        waiter = original_propose(self, datas)
        if self.group_id != "__meta":
            early.add(id(waiter))
            keep.append(waiter)
        return waiter

    async def wait_applied(waiter):
        if id(waiter) in early:
            return None
        return await original_wait(waiter)
    with _patched(raft_group.RaftGroup, "propose_locked_many", propose_locked_many), \
            _patched(raft_group.RaftGroup, "wait_applied", staticmethod(wait_applied)):
        yield None


@contextlib.contextmanager
def skip_fsync():
    """Every fsync is a no-op in the disk's books: acknowledged writes are never durable."""
    def patch(node) -> None:
        node.disk.skip_fsync = True
    yield patch


@contextlib.contextmanager
def vote_not_persisted():
    """The Raft hard state is saved without its vote: a restarted node may vote twice in a term."""
    original = hardstate.HardStateFile.save

    def save(self, hs):
        return original(self, dataclasses.replace(hs, vote=0))
    with _patched(hardstate.HardStateFile, "save", save):
        yield None


@contextlib.contextmanager
def fetch_above_high_watermark():
    """Fetch serves the leader's whole log, uncommitted entries included."""
    def read(self, offset, max_bytes):
        return self.log.read_batches(offset, max_bytes=max_bytes, end_offset=self.log.next_offset)
    with _patched(partition_group.PartitionReplica, "read", read):
        yield None


@contextlib.contextmanager
def follower_ack_before_durable():
    """Append responses (and votes) sent before the entries are fsynced."""
    original = raft_runtime.RaftRuntime._collect

    def collect(self, groups):
        readies = original(self, groups)
        out = []
        for group, rd in readies:
            self._send_all(group, rd.persisted_messages)
            out.append((group, dataclasses.replace(rd, persisted_messages=())))
        return out
    with _patched(raft_runtime.RaftRuntime, "_collect", collect):
        yield None


@contextlib.contextmanager
def baseline():
    """No patch: the broker as shipped (each seed that catches a bug must pass here)."""
    yield None


PATCHES = {f.__name__: f for f in (baseline, acks_before_commit, skip_fsync, vote_not_persisted,
                                    fetch_above_high_watermark, follower_ack_before_durable)}


def first_catch(name: str, seeds: range, out: pathlib.Path, scenario_text: str = SCENARIO,
                crash_after_vote: float = 0.0) -> tuple[int, tuple[str, ...]] | None:
    scenario = parse_scenario(scenario_text)
    for seed in seeds:
        with PATCHES[name]() as node_patch:
            result = run_seed(scenario, seed, out / f"{name}-{seed}", node_patch=node_patch,
                              crash_after_vote=crash_after_vote)
        if not result.passed:
            return seed, result.failed
    return None


def main(argv: list[str]) -> int:
    name = argv[0]
    first, last = (int(argv[1]), int(argv[2])) if len(argv) > 2 else (1, 50)
    scenario_text = STORMY if "--stormy" in argv else VOTES if "--votes" in argv else SCENARIO
    with tempfile.TemporaryDirectory() as tmp:
        found = first_catch(name, range(first, last + 1), pathlib.Path(tmp), scenario_text,
                            VOTES_CRASH_AFTER_VOTE if "--votes" in argv else 0.0)
    if found is None:
        print(f"missed {name} in seeds {first}..{last}")
        return 1
    seed, failed = found
    print(f"caught {name} by seed {seed}: " + " | ".join(f.split(" [")[0] for f in failed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
