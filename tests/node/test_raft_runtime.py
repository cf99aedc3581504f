"""Raft groups driven by RaftRuntime over real files: commit, failover, restart, group commit."""

import time

import pytest
import trio

from chronik_trio.errors import NotLeader, ProposalFailed
from chronik_trio.node import raft_group, raft_runtime
from tests.node.cluster import TICK_S, LocalCluster

pytestmark = pytest.mark.timeout(60)


def _applied(cluster, node_id, group="g"):
    return [d for _, d in cluster.machines[(node_id, group)].applied]


async def _propose_all(cluster, values, group="g"):
    """Propose each value at the current leader, retrying on leader changes; bounded."""
    for value in values:
        for _ in range(200):
            leader = await cluster.wait_leader(group)
            try:
                await cluster.runtimes[leader].groups[group].propose(value)
                break
            except (NotLeader, ProposalFailed):
                await trio.sleep(0.02)
        else:
            raise AssertionError(f"could not commit {value!r}")


async def _converged(cluster, expected_len, nodes, group="g", timeout_s=10):
    with trio.fail_after(timeout_s):
        while not all(len(_applied(cluster, n, group)) >= expected_len for n in nodes):
            await trio.sleep(0.01)


async def _quiet_cluster(tmp_path, nursery, groups, seed):
    """Three nodes hosting groups, each with one entry committed, every group quiesced."""
    cluster = LocalCluster(tmp_path, groups=groups, seed=seed)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    for g in groups:
        await _propose_all(cluster, [b"hello"], group=g)
    await _all_quiesced(cluster, groups)
    return cluster


async def _all_quiesced(cluster, groups, timeout_s=10):
    with trio.fail_after(timeout_s):
        while not all(r.quiesced_count == len(groups) for r in cluster.runtimes.values()):
            await trio.sleep(0.05)


def _leader_changes(cluster):
    return {(n, g): group.leader_changes for n, r in cluster.runtimes.items() for g, group in r.groups.items()}


async def test_three_nodes_elect_one_leader_and_apply_the_same_entries(tmp_path, nursery):
    cluster = LocalCluster(tmp_path)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    leader = await cluster.wait_leader()
    values = [b"v%d" % i for i in range(30)]
    await _propose_all(cluster, values)
    await _converged(cluster, 30, cluster.node_ids)
    for n in cluster.node_ids:
        assert _applied(cluster, n) == values
    follower = next(n for n in cluster.node_ids if n != leader)
    with pytest.raises(NotLeader) as exc:
        await cluster.runtimes[follower].groups["g"].propose(b"nope")
    assert exc.value.leader_id == leader


async def test_an_isolated_leader_is_replaced_and_catches_up_after_healing(tmp_path, nursery):
    cluster = LocalCluster(tmp_path, seed=2)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    old = await cluster.wait_leader()
    await _propose_all(cluster, [b"a", b"b"])
    cluster.isolate(old)
    rest = [n for n in cluster.node_ids if n != old]
    new = await cluster.wait_leader(among=rest)
    assert new != old
    # The old leader cannot commit alone: its proposal fails or never applies.
    with trio.move_on_after(0.5):
        try:
            await cluster.runtimes[old].groups["g"].propose(b"lost")
        except (NotLeader, ProposalFailed):
            pass
    await _propose_all(cluster, [b"c", b"d"])
    cluster.heal()
    await _converged(cluster, 4, cluster.node_ids)
    for n in cluster.node_ids:
        assert _applied(cluster, n) == [b"a", b"b", b"c", b"d"]


async def test_a_crashed_node_restarts_from_disk_and_catches_up(tmp_path, nursery):
    cluster = LocalCluster(tmp_path, seed=3)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    await _propose_all(cluster, [b"x%d" % i for i in range(10)])
    victim = await cluster.wait_leader()
    await cluster.crash(victim)
    await _propose_all(cluster, [b"y%d" % i for i in range(10)])
    await cluster.start(nursery, victim, bootstrap=False)
    await _converged(cluster, 20, cluster.node_ids)
    expected = [b"x%d" % i for i in range(10)] + [b"y%d" % i for i in range(10)]
    for n in cluster.node_ids:
        assert _applied(cluster, n)[-20:] == expected
    # The restarted node re-applied its committed log from disk before catching up.
    assert _applied(cluster, victim) == expected


async def test_one_fsync_round_serves_many_groups(tmp_path, nursery):
    groups = tuple(f"g{i}" for i in range(20))
    cluster = LocalCluster(tmp_path, groups=groups, seed=4)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    for g in groups:
        await cluster.wait_leader(g)
    before = {n: r.fsync_rounds for n, r in cluster.runtimes.items()}

    async def one(g):
        await _propose_all(cluster, [b"p"], group=g)

    async with trio.open_nursery() as inner:
        for g in groups:
            inner.start_soon(one, g)
    rounds = {n: r.fsync_rounds - before[n] for n, r in cluster.runtimes.items()}
    # 20 groups each committing an entry (append + acks + commit) on 3 nodes: far fewer
    # fsync rounds than groups x steps, because one round covers every group that wrote.
    assert all(r < len(groups) for r in rounds.values()), rounds


async def test_every_fsync_round_of_a_runtime_goes_to_its_one_long_lived_thread(tmp_path, nursery):
    # The hand-off per round is a queue put and a token callback, not a thread (or a
    # thread-cache job, limiter and thread renaming) per round (issue 20).
    cluster = LocalCluster(tmp_path, node_ids=(1,), seed=7)
    await cluster.start(nursery, 1, bootstrap=True)
    await cluster.wait_leader()
    runtime = cluster.runtimes[1]
    rounds = runtime.fsync_rounds
    await _propose_all(cluster, [b"%d" % i for i in range(30)])
    assert runtime.fsync_rounds - rounds >= 30  # one voter: a round for each proposal
    assert runtime.fsync_thread.threads_started == 1


async def test_idle_groups_quiesce_and_a_quiesced_group_still_fails_over(tmp_path, nursery):
    groups = tuple(f"q{i}" for i in range(30))
    cluster = await _quiet_cluster(tmp_path, nursery, groups, seed=5)
    # Quiet: no Ready passes at all while idle (ticks and heartbeats skip quiesced groups).
    passes = {n: r.passes for n, r in cluster.runtimes.items()}
    await trio.sleep(0.5)
    assert {n: r.passes for n, r in cluster.runtimes.items()} == passes

    # A proposal wakes its group, commits, and the group goes quiet again.
    await _propose_all(cluster, [b"again"], group="q0")
    await _converged(cluster, 2, cluster.node_ids, group="q0")

    # Crash the node leading q1: its followers hear nothing, wake, and elect a new leader.
    victim = cluster.leader("q1")
    await cluster.crash(victim)
    rest = [n for n in cluster.node_ids if n != victim]
    new = await cluster.wait_leader("q1", among=rest, timeout_s=5)
    assert new != victim
    await _propose_all(cluster, [b"after-failover"], group="q1")


async def test_a_group_closed_while_the_ready_pass_waits_for_a_lock_is_skipped(tmp_path, nursery):
    # The Ready pass snapshots its active groups, then awaits each lock in turn. A group
    # removed and closed meanwhile (DeleteTopics) must be skipped, not stepped.
    cluster = LocalCluster(tmp_path, node_ids=(1,), groups=("a", "b"), seed=6)
    await cluster.start(nursery, 1, bootstrap=True)
    runtime = cluster.runtimes[1]
    a, b = runtime.groups["a"], runtime.groups["b"]
    await cluster.wait_leader("a")
    await cluster.wait_leader("b")
    async with a.lock:
        runtime.wake(a)
        runtime.wake(b)
        await trio.sleep(0.05)  # the pass is now waiting for a's lock, with b after it
        async with b.lock:
            runtime.remove("b")
            b.close()
    await trio.sleep(0.1)  # the pass acquires b's lock, sees it closed and skips it
    await _propose_all(cluster, [b"still-alive"], group="a")
    assert _applied(cluster, 1, "a")[-1] == b"still-alive"


async def test_a_shutdown_that_lands_as_an_fsync_round_starts_leaves_no_sync_half_done(tmp_path):
    """Found by the chaos harness (mixed.yaml seed 10): cancelled as the round reached its
    worker-thread call, the round left its tickets outstanding and the clean close's final
    sync stopped the node with an AssertionError. The round now always finishes."""
    import types

    from chronik_trio.node.raft_runtime import RaftRuntime
    from chronik_trio.raft.types import Entry
    from chronik_trio.storage import Disk
    from chronik_trio.storage.raft_storage import DurableRaftStorage

    storage = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=(1,), kafka=False)
    storage.append([Entry(term=1, index=1, data=b"x")])
    persisted: list[int] = []
    group = types.SimpleNamespace(storage=storage, on_persisted=persisted.append)
    runtime = RaftRuntime(1, lambda group_id, message: None)
    with trio.CancelScope() as scope:
        scope.cancel()  # the shutdown: the round's first checkpoint sees it
        await runtime._persist([(group, None)])
    assert persisted == [1]  # the round ran to the end
    storage.sync(save_commit=True)  # what the clean close does next
    storage.close()


async def test_a_peer_heard_again_after_a_false_alarm_leaves_its_followers_quiet(tmp_path, nursery):
    """A leader's node unheard for a while (a pause, a remade connection) wakes the quiesced
    groups it leads on the other nodes. Heard again, and the same process (its liveness
    carries its incarnation), they go quiet again at once: otherwise the quiesced leader
    stays silent, each follower's election timer runs out and it becomes a pre-candidate,
    forgetting its leader until the leader answers (a flap of every such group)."""
    groups = tuple(f"q{i}" for i in range(6))
    cluster = await _quiet_cluster(tmp_path, nursery, groups, seed=7)
    before = _leader_changes(cluster)

    # 1. The connection to the leader broke (peer_down): the chosen survivor would campaign
    # about a tick later. The peer is heard again, same process, before the next pass.
    leader = cluster.leader("q0")
    follower = next(n for n in cluster.node_ids if n != leader)
    runtime = cluster.runtimes[follower]
    runtime.peer_down(leader)
    led = [g for g in runtime.groups.values() if g.leader_id == leader]
    assert led and not any(g.quiesced for g in led)
    cluster.hear(follower, leader, cluster.incarnations[leader])
    assert all(g.quiesced for g in led)

    # 2. Nothing from the leader's node past peer_silence_s: the tick loop wakes its groups.
    # The link comes back at once, and the next liveness message quiets them again.
    cluster.cut.add((leader, follower))
    with trio.fail_after(5):
        while all(g.quiesced for g in led):
            await trio.sleep(TICK_S / 5)
    cluster.heal()
    with trio.fail_after(5):
        while not all(g.quiesced for g in led):
            await trio.sleep(TICK_S / 5)

    await trio.sleep(40 * TICK_S)  # past any election timeout
    assert _leader_changes(cluster) == before, "a follower forgot its leader"
    await _all_quiesced(cluster, groups)


async def test_a_peer_heard_again_as_a_new_process_lets_the_woken_groups_go_on(tmp_path, nursery):
    """A restarted process leads nothing: the groups its earlier process led stay awake, so
    that their election goes on."""
    cluster = await _quiet_cluster(tmp_path, nursery, ("q0", "q1"), seed=8)
    leader = cluster.leader("q0")
    follower = next(n for n in cluster.node_ids if n != leader)
    runtime = cluster.runtimes[follower]
    runtime.peer_down(leader)
    led = [g for g in runtime.groups.values() if g.leader_id == leader]
    cluster.hear(follower, leader, cluster.incarnations[leader] + 1)
    assert led and not any(g.quiesced for g in led)


async def test_a_stall_of_the_nodes_own_loop_is_not_its_peers_silence(tmp_path, nursery):
    """The whole event loop stalls (a long Ready pass over thousands of groups, an overloaded
    machine) for twice peer_silence_s. The peers' liveness messages wait unread behind the
    stall: no runtime may take that for their silence and wake its quiesced groups (with
    thousands of groups, waking them all stalled the loop again: an election storm)."""
    groups = tuple(f"s{i}" for i in range(4))
    cluster = await _quiet_cluster(tmp_path, nursery, groups, seed=9)
    before = _leader_changes(cluster)
    stalled = {n: r.stalled_s for n, r in cluster.runtimes.items()}
    time.sleep(2 * cluster.runtimes[1].peer_silence_s)  # blocks every runtime's tasks at once
    with trio.fail_after(5):  # until each tick loop has looked at its peers after the stall
        while not all(r.stalled_s > stalled[n] for n, r in cluster.runtimes.items()):
            await trio.sleep(TICK_S)
    assert {n: r.silence_wakes for n, r in cluster.runtimes.items()} == {n: 0 for n in cluster.node_ids}
    assert all(r.quiesced_count == len(groups) for r in cluster.runtimes.values())
    assert _leader_changes(cluster) == before

    # A peer really gone quiet is still noticed: its link cut, the groups it leads wake.
    leader = cluster.leader("s0")
    follower = next(n for n in cluster.node_ids if n != leader)
    cluster.cut.add((leader, follower))
    with trio.fail_after(5):
        while cluster.runtimes[follower].silence_wakes == 0:
            await trio.sleep(TICK_S)


async def test_a_ready_pass_takes_a_bounded_number_of_groups_and_the_rest_follow(tmp_path, nursery, monkeypatch):
    """More groups woken than one pass takes (every group of a new topic electing at once):
    each pass takes at most READY_GROUPS_PER_PASS, so the loop gets a checkpoint between them
    (liveness, transport pings), and the others are taken by the passes after it: every
    group still elects, commits and quiesces."""
    monkeypatch.setattr(raft_runtime, "READY_GROUPS_PER_PASS", 3)
    groups = tuple(f"b{i}" for i in range(8))
    cluster = await _quiet_cluster(tmp_path, nursery, groups, seed=10)
    for runtime in cluster.runtimes.values():
        assert 0 < runtime.largest_pass <= 3
    for g in groups:
        await _converged(cluster, 1, cluster.node_ids, group=g)
        assert all(_applied(cluster, n, g) == [b"hello"] for n in cluster.node_ids)


async def test_a_group_no_pass_reached_for_many_ticks_is_stepped_a_heartbeat_of_ticks(tmp_path, nursery):
    """A follower's group that the Ready pass cannot reach for several election timeouts (its
    node busy with thousands of others) keeps one heartbeat interval of pending ticks
    (PENDING_TICKS_MAX), not one per tick interval. Before,
    the backlog of ticks was stepped at once after the leader's queued heartbeats: the
    election timer ran out and the follower campaigned against a live leader (with 10,000
    new partitions, elections fed on themselves)."""
    groups = ("g",)
    cluster = LocalCluster(tmp_path, groups=groups, seed=11)
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    await _propose_all(cluster, [b"hello"])
    leader = cluster.leader("g")
    follower = next(n for n in cluster.node_ids if n != leader)
    group = cluster.runtimes[follower].groups["g"]
    timeout_ticks = group.node.election_timer().timeout_ticks
    await group.lock.acquire()  # the pass waits for it; the tick loop goes on
    try:
        # An entry the follower cannot take keeps the leader from going quiet (heartbeats).
        nursery.start_soon(cluster.runtimes[leader].groups["g"].propose, b"more")
        ticks = cluster.runtimes[follower].ticks
        with trio.fail_after(10):  # three election timeouts' worth of ticks
            while cluster.runtimes[follower].ticks - ticks < 3 * timeout_ticks:
                await trio.sleep(TICK_S)
        assert group.pending_ticks == raft_group.PENDING_TICKS_MAX
        sent = len(cluster.sent)
    finally:
        group.lock.release()
    await _converged(cluster, 2, cluster.node_ids)
    campaigns = [(frm, kind) for frm, _, kind, _ in cluster.sent[sent:]
                 if frm == follower and kind.name in ("PRE_VOTE", "VOTE")]
    assert campaigns == []
    assert cluster.leader("g") == leader
