"""Bug classes the simulation must catch: each is a patch of the broker made inside this
process only (never in the product), and `first_catch` runs seeds until one fails.

    python -m tests.chaos.sim_bugs NAME [FIRST LAST] [--stormy | --votes | --followers | --copier]
    (from the repository root)

prints `seed N hash H` for each seed run, then `caught NAME by seed N: <failing checks>` or
`missed NAME in seeds FIRST..LAST`.
Run with PYTHONHASHSEED=0 (as test_sim.py does) so the seed that catches it is stable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sys
import tempfile
import typing

import attrs

from chaos.scenario import parse_scenario
from chaos.sim.driver import run_seed
from chronik_trio.group import store as group_store
from chronik_trio.node import partition_group, raft_group, raft_runtime
from chronik_trio.storage import hardstate_log

def _scenario(name: str, schedule: str) -> str:
    """24 s, 3 nodes, 2 partitions RF 3, 2 producers at 20/s and a consumer; `schedule` is
    the nemesis's schedule entries (YAML, indented 4)."""
    return f"""
name: {name}
seed: 1
duration_s: 24
cluster: {{nodes: 3}}
topics:
  - {{name: chaos, partitions: 2, replication_factor: 3}}
workload: {{producers: 2, consumers: 1, rate_per_s: 20, request_timeout_s: 3, delivery_timeout_s: 8}}
nemesis:
  quiet_s: 6
  schedule:
{schedule}checks:
  duplicates: {{report_only: true}}
  unavailability: {{enabled: false}}
"""


SCENARIO = _scenario("sim-bugs", """\
    - interval_s: [2, 4]
      start_s: 2
      faults:
        - {kind: kill, target: leader, topic: chaos, duration_s: 1}
        - {kind: partition, mode: isolate-leader, duration_s: 3}
        - {kind: partition, mode: one-way-leader, duration_s: 3}
        - {kind: power-loss, target: all, duration_s: 1}
        - {kind: power-loss, target: leader, topic: chaos, duration_s: 1}
""")


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
# Acknowledgements before durability on the followers: the partition's followers' fsyncs
# stall for half a second while writes go on, then every node loses power and the leader comes
# back 3 s after the others, so the followers may elect one of themselves with only what
# they had made durable. A broker whose followers acknowledge only durable entries commits
# nothing in the stall (the leader alone is not a quorum); one that acknowledges early has
# answered writes that only the leader kept, and the new leader's log overwrites them there.
FOLLOWERS = _scenario("sim-bugs-followers", """\
    - interval_s: [3, 5]
      start_s: 2
      faults:
        - {kind: power-loss, target: all, topic: chaos, stall_followers_s: 0.5, duration_s: 0.5,
           leader_back_after_s: 3}
""")
# Offsets of an aborted transaction: a consume-transform-produce copier (chaos -> chaos-out,
# each batch one transaction with its input offsets, sent before its records) under outages
# longer than its delivery timeout (the output's leader killed or isolated, power lost
# everywhere), so some of its transactions fail after their offsets were written and are
# aborted, by the copier or by its next InitProducerId. A broker that keeps those offsets
# has the copier resume after records whose copies were aborted: never copied
# (exactly_once_output).
COPIER = """
name: sim-bugs-copier
seed: 1
duration_s: 24
cluster: {nodes: 3}
topics:
  - {name: chaos, partitions: 2, replication_factor: 3}
  - {name: chaos-out, partitions: 2, replication_factor: 3}
workload: {producers: 2, consumers: 1, rate_per_s: 20, request_timeout_s: 2, delivery_timeout_s: 4,
           client: confluent-kafka, idempotence: true, transactional: true, txn_records: 5, abort_every: 3,
           copy_to: chaos-out}
nemesis:
  quiet_s: 6
  schedule:
    - interval_s: [2, 4]
      start_s: 2
      faults:
        - {kind: kill, target: leader, topic: chaos-out, duration_s: 5}
        - {kind: partition, mode: isolate-leader, topic: chaos-out, duration_s: 6}
        - {kind: power-loss, target: all, duration_s: 3}
checks:
  duplicates: {report_only: true}
  unavailability: {enabled: false}
"""
VOTES_CRASH_AFTER_VOTE = 0.5  # with --votes: half the granted votes are followed by a kill

def _acks_before_commit() -> tuple:
    """acks=all answered once the leader appended, before the quorum commit."""
    early: set[int] = set()
    keep = []

    def propose_locked_many(original):
        def propose(self, datas, *args, **kwargs):
            waiter = original(self, datas, *args, **kwargs)
            if self.group_id != "__meta":
                early.add(id(waiter))
                keep.append(waiter)
            return waiter
        return propose

    def wait_applied(original):
        async def wait(waiter):
            return None if id(waiter) in early else await original(waiter)
        return staticmethod(wait)
    return ((raft_group.RaftGroup, "propose_locked_many", propose_locked_many),
            (raft_group.RaftGroup, "wait_applied", wait_applied))


def _vote_not_persisted(original):
    """The Raft hard state is saved without its vote: a restarted node may vote twice in a term."""
    def append(self, states):
        return original(self, [(key, dataclasses.replace(hs, vote=0)) for key, hs in states])
    return append


def _fetch_above_high_watermark(original):
    """Fetch serves the leader's whole log, uncommitted entries included."""
    def read(self, offset, max_bytes, **_ignored):
        return self.log.read_batches(offset, max_bytes=max_bytes, end_offset=self.log.next_offset)
    return read


def _follower_ack_before_durable(original):
    """Append responses (and votes) sent before the entries are fsynced (in every round of a
    Ready pass: `_collect` takes `step` for a pass's second round)."""
    def collect(self, groups, **kwargs):
        out = []
        for group, rd in original(self, groups, **kwargs):
            self._send_all(group, rd.persisted_messages)
            out.append((group, dataclasses.replace(rd, persisted_messages=())))
        return out
    return collect


def _txn_offsets_kept_on_abort(original):
    """A transaction's offsets (TxnOffsetCommit) become the group's at its marker whatever
    the marker says: an abort keeps them as a commit would."""
    def apply_marker(self, data, producer_id, index):
        for group_id, offsets in self.pending.pop(producer_id, {}).items():
            self.offsets.setdefault(group_id, {}).update(offsets)
    return apply_marker


def _skip_fsync(node) -> None:
    """Every fsync is a no-op in the disk's books: acknowledged writes are never durable."""
    node.disk.skip_fsync = True


@attrs.frozen
class BugClass:
    """A bug class: the patches that make it (owner, attribute, original -> replacement; or a
    patch of each new Node), the scenario that shows it (a flag of `main`: "" is SCENARIO) and
    the first seed of that scenario among 1..50 that catches it (test_sim.py runs that seed
    with the patch, where it must fail, and without, where it must pass)."""

    name: str
    seed: int | None
    scenario: str = ""
    patches: tuple = ()
    node_patch: typing.Callable | None = None
    # The check that must be among the failing ones: the bug itself shows, not a patch that
    # stopped matching the code it replaces and made the node fail some other way.
    caught_by: str = ""


BUGS = (
    BugClass("acks_before_commit", 1, patches=_acks_before_commit(), caught_by="lost_writes"),
    BugClass("skip_fsync", 1, node_patch=_skip_fsync, caught_by="lost_writes"),
    BugClass("fetch_above_high_watermark", 1, patches=(
        (partition_group.PartitionReplica, "read", _fetch_above_high_watermark),),
        caught_by="inconsistent_offsets"),
    BugClass("vote_not_persisted", 5, "--votes", patches=(
        (hardstate_log.HardStateLog, "append", _vote_not_persisted),), caught_by="election_safety"),
    BugClass("follower_ack_before_durable", 1, "--followers", patches=(
        (raft_runtime.RaftRuntime, "_collect", _follower_ack_before_durable),), caught_by="lost_writes"),
    BugClass("txn_offsets_kept_on_abort", 4, "--copier", patches=(
        (group_store.GroupStore, "_apply_marker", _txn_offsets_kept_on_abort),), caught_by="exactly_once_output"),
)
BASELINE = BugClass("baseline", None)  # no patch: the broker as shipped
PATCHES = {b.name: b for b in (BASELINE, *BUGS)}
SCENARIOS = {"": SCENARIO, "--stormy": STORMY, "--votes": VOTES, "--followers": FOLLOWERS, "--copier": COPIER}


@contextlib.contextmanager
def patched(bug: BugClass):
    """The bug's patches in place for the block (restored after); yields its node patch."""
    saved = []
    try:
        for owner, name, replace in bug.patches:
            saved.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, replace(getattr(owner, name)))
        yield bug.node_patch
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def first_catch(name: str, seeds: range, out: pathlib.Path, scenario_text: str = SCENARIO,
                crash_after_vote: float = 0.0) -> tuple[int, tuple[str, ...]] | None:
    scenario = parse_scenario(scenario_text)
    for seed in seeds:
        with patched(PATCHES[name]) as node_patch:
            result = run_seed(scenario, seed, out / f"{name}-{seed}", node_patch=node_patch,
                              crash_after_vote=crash_after_vote)
        print(f"seed {seed} hash {result.digest}", flush=True)
        if not result.passed:
            return seed, result.failed
    return None


def main(argv: list[str]) -> int:
    name = argv[0]
    first, last = (int(argv[1]), int(argv[2])) if len(argv) > 2 else (1, 50)
    scenario_text = SCENARIOS[next((a for a in argv if a in SCENARIOS), "")]
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
