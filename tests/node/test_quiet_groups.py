"""Many groups, few of them busy (issue 20): a new group goes quiet right after its
election, the tick loop visits only the groups that are awake, and the group every pass
takes first (__meta on a node) is not held back by a backlog of others. Counts, not times."""

import pytest
import trio

from chronik_trio.node import raft_group, raft_runtime
from tests.node.cluster import TICK_S, LocalCluster

pytestmark = pytest.mark.timeout(60)

QUIET_TIMEOUT_S = 20.0


def _awake_is_exactly_the_groups_not_quiesced(cluster) -> None:
    for n, runtime in cluster.runtimes.items():
        expected = {gid for gid, g in runtime.groups.items() if not g.quiesced}
        assert set(runtime.awake) == expected, (n, sorted(runtime.awake), sorted(expected))


async def _all_quiet(cluster, groups) -> None:
    with trio.fail_after(QUIET_TIMEOUT_S):
        while not all(r.quiesced_count == len(groups) for r in cluster.runtimes.values()):
            await trio.sleep(TICK_S)


def _leaders(cluster, groups):
    return {g: cluster.runtimes[cluster.leader(g)].groups[g] for g in groups}


async def test_new_groups_go_quiet_right_after_their_election_and_then_nothing_ticks(tmp_path, nursery):
    """Forty groups elect with nothing proposed: each leader quiesces as soon as its election
    entry is committed, applied and held by both followers (early_quiesces), not after
    QUIESCE_AFTER_IDLE_TICKS idle ticks. Then no group is awake and the tick loop gives no
    tick and the runtime runs no pass."""
    groups = tuple(f"n{i}" for i in range(40))
    cluster = LocalCluster(tmp_path, groups=groups, seed=3)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    await _all_quiet(cluster, groups)
    for g, leader in _leaders(cluster, groups).items():
        assert leader.early_quiesces >= 1, (g, leader.early_quiesces)
        assert leader.elected_index == leader.node.last_index() == leader.node.committed_index
    _awake_is_exactly_the_groups_not_quiesced(cluster)
    assert all(not r.awake for r in cluster.runtimes.values())

    await cluster.settle()  # the answers to the quiescing heartbeats are stepped
    ticks = {n: r.ticks for n, r in cluster.runtimes.items()}
    passes = {n: r.passes for n, r in cluster.runtimes.items()}
    await trio.sleep(30 * TICK_S)  # more than one quiesce delay's worth of ticks
    assert {n: r.ticks for n, r in cluster.runtimes.items()} == ticks
    assert {n: r.passes for n, r in cluster.runtimes.items()} == passes


async def test_a_group_with_entries_since_its_election_waits_the_quiesce_delay(tmp_path, nursery):
    """Early quiescence is only for a log that still ends at the election entry: after a
    proposal the leader quiesces by the idle count, the awake set follows it both ways, and
    while only that group is awake each tick round ticks that one group alone."""
    groups = tuple(f"p{i}" for i in range(12))
    cluster = LocalCluster(tmp_path, groups=groups, seed=4)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    await _all_quiet(cluster, groups)
    leader_id = cluster.leader("p0")
    group = cluster.runtimes[leader_id].groups["p0"]
    early = group.early_quiesces
    ticks = {n: r.ticks for n, r in cluster.runtimes.items()}

    await group.propose(b"hello")
    assert "p0" in cluster.runtimes[leader_id].awake
    _awake_is_exactly_the_groups_not_quiesced(cluster)
    await _all_quiet(cluster, groups)
    _awake_is_exactly_the_groups_not_quiesced(cluster)
    assert group.early_quiesces == early  # went quiet by the idle count
    leader_ticks = cluster.runtimes[leader_id].ticks - ticks[leader_id]
    assert leader_ticks >= raft_group.QUIESCE_AFTER_IDLE_TICKS
    # Only p0 was awake: fewer ticks than one round over all twelve groups would be for
    # each of the idle count's rounds.
    assert leader_ticks < len(groups) * raft_group.QUIESCE_AFTER_IDLE_TICKS


async def test_the_first_group_is_taken_first_by_a_pass_whatever_the_backlog(tmp_path, nursery, monkeypatch):
    """Nine groups woken at once, three taken per pass: the group marked first (added last)
    is stepped first on every node, in the first pass, not after the eight before it."""
    monkeypatch.setattr(raft_runtime, "READY_GROUPS_PER_PASS", 3)
    stepped: dict[int, list[str]] = {}
    step = raft_group.RaftGroup.step_inbox_and_ticks

    def recording(self):
        stepped.setdefault(self.node.id, []).append(self.group_id)
        return step(self)

    monkeypatch.setattr(raft_group.RaftGroup, "step_inbox_and_ticks", recording)
    groups = tuple(f"b{i}" for i in range(8)) + ("meta",)
    cluster = LocalCluster(tmp_path, groups=groups, seed=6, first_group="meta")
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    await _all_quiet(cluster, groups)
    for n in cluster.node_ids:
        assert stepped[n][:3] == ["meta", "b0", "b1"], stepped[n][:6]
        assert 0 < cluster.runtimes[n].largest_pass <= 3
