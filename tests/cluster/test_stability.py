"""An idle 3-node cluster with 300 partition groups keeps its leaders (issue 4).

After creation settles, over the idle window (CHRONIK_CLUSTER_IDLE_S seconds; 60 by default
to keep CI short; the issue's 2-minute run is `CHRONIK_CLUSTER_IDLE_S=120`, its result is in
docs/cluster-measurements.md), no node logs a leadership change of any group, no follower forgets and re-learns
its unchanged leader (a flap), and the leader epochs (Raft terms) in every node's Metadata
stay put. Each node's CPU use over the window is
printed, not asserted (performance is measured, never asserted: design.md).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.cluster.cluster import (ClusterProcesses, LeaderSeen, cpu_seconds, create_topics,
                                   leader_epochs, parse_leader_lines)

IDLE_S = float(os.environ.get("CHRONIK_CLUSTER_IDLE_S", "60"))
TOPICS = 3
PARTITIONS_PER_TOPIC = 100  # x RF 3 on 3 nodes: 300 partition groups on every node
SETTLE_QUIET_S = 5.0  # creation has settled once no leader line was logged for this long
# ... or this long while some partition is not led by its preferred replica: the nodes hand
# leadership back every leader_balance_interval_ms (5 s), so a shorter quiet spell proves
# nothing then.
SETTLE_QUIET_UNBALANCED_S = 12.0
SETTLE_MAX_S = 90.0


def wait_settled(cluster: ClusterProcesses, partitions: int, max_s: float = SETTLE_MAX_S
                 ) -> dict[int, dict]:
    """Until every node's Metadata has a leader for every partition, the nodes agree, and no
    node logged a leader line for SETTLE_QUIET_S (SETTLE_QUIET_UNBALANCED_S while a partition
    is not led by its first replica); returns each node's leaders and epochs."""
    deadline = time.monotonic() + max_s
    lines, quiet_since, epochs = -1, time.monotonic(), {}
    while time.monotonic() < deadline:
        now_lines = sum(len(parse_leader_lines(cluster.log(n))) for n in cluster.ids)
        if now_lines != lines:
            lines, quiet_since = now_lines, time.monotonic()
        answers = {n: cluster.metadata(n) for n in cluster.ids}
        epochs = {n: leader_epochs(m) for n, m in answers.items()}
        complete = all(len(e) == partitions and all(le[0] > 0 for le in e.values())
                       for e in epochs.values())
        agreed = all(e == epochs[cluster.ids[0]] for e in epochs.values())
        balanced = all(p.leader_id == p.replica_nodes[0]
                       for t in answers[cluster.ids[0]].topics for p in t.partitions)
        quiet_needed_s = SETTLE_QUIET_S if balanced else SETTLE_QUIET_UNBALANCED_S
        if complete and agreed and time.monotonic() - quiet_since >= quiet_needed_s:
            return epochs
        time.sleep(0.5)
    raise AssertionError(f"partition leaders did not settle within {max_s} s")


def latest_per_group(cluster: ClusterProcesses, lines_upto: dict[int, int]) -> dict[str, tuple[int, int]]:
    """group -> (leader, term) of the highest term any node had logged a leader for, among
    each node's first lines_upto[node] leader lines."""
    known: dict[str, tuple[int, int]] = {}
    for n in cluster.ids:
        for s in parse_leader_lines(cluster.log(n))[:lines_upto[n]]:
            if s.group not in known or s.term > known[s.group][1]:
                known[s.group] = (s.leader, s.term)
    return known


def split_changes(new_lines: dict[int, list[LeaderSeen]], known: dict[str, tuple[int, int]]
                  ) -> tuple[list[LeaderSeen], list[LeaderSeen]]:
    """(leader lines naming another leader or term than known, lines naming the known one)."""
    changes, relearnt = [], []
    for lines in new_lines.values():
        for s in lines:
            (relearnt if known.get(s.group) == (s.leader, s.term) else changes).append(s)
    return changes, relearnt


@pytest.mark.slow
@pytest.mark.timeout(IDLE_S + 200)
def test_idle_cluster_with_300_groups_keeps_leaders_and_terms(cluster_factory):
    cluster = cluster_factory(3).start()
    with cluster.connect(1, timeout_s=120) as conn:
        for t in range(TOPICS):
            name = f"idle-{t}"
            answer = create_topics(conn, [name], partitions=PARTITIONS_PER_TOPIC,
                                   replication_factor=3, timeout_ms=60_000)
            assert answer[name][0] == 0, answer
    before = wait_settled(cluster, TOPICS * PARTITIONS_PER_TOPIC)
    lines_before = {n: len(parse_leader_lines(cluster.log(n))) for n in cluster.ids}
    cpu_before = {n: cpu_seconds(cluster.pid(n)) for n in cluster.ids}
    started = time.monotonic()

    time.sleep(IDLE_S)

    elapsed_s = time.monotonic() - started
    cpu = {n: (cpu_seconds(cluster.pid(n)) - cpu_before[n]) / elapsed_s * 100 for n in cluster.ids}
    print(f"idle {elapsed_s:.0f} s with {TOPICS * PARTITIONS_PER_TOPIC} groups: CPU "
          + ", ".join(f"node {n} {pct:.1f} %" for n, pct in cpu.items()) + " of a core")
    new_lines = {n: parse_leader_lines(cluster.log(n))[lines_before[n]:] for n in cluster.ids}
    known = latest_per_group(cluster, lines_before)
    changes, relearnt = split_changes(new_lines, known)
    excerpt = cluster.log_excerpt("silent|heard again|connection to node")
    assert not changes, f"leadership changed while idle: {changes[:10]}\n{excerpt}"
    # A flap: a follower that stopped hearing its quiesced leader, became a pre-candidate
    # (forgetting the leader) and re-learnt the same leader at the same term. The pause
    # test shows a woken follower goes quiet again without that; idle, none may happen.
    assert not relearnt, (f"{len(relearnt)} follower(s) re-learnt their unchanged leader while "
                          f"idle: {relearnt[:10]}\n{excerpt}")
    after = {n: leader_epochs(cluster.metadata(n)) for n in cluster.ids}
    for n in cluster.ids:
        moved = {k: (before[n][k], v) for k, v in after[n].items() if v != before[n][k]}
        assert not moved, f"node {n}: leaders or epochs moved while idle: {dict(list(moved.items())[:5])}"


@pytest.mark.timeout(180)
def test_a_short_pause_of_one_node_changes_no_leader(cluster_factory):
    """One node stopped for 0.8 s (SIGSTOP, as a loaded machine or a GC pause might): past
    the 0.75 s after which the others wake the groups it leads, short of an election. Once
    it runs again every node hears the others as the same processes, and the woken
    followers go quiet again: no group changes leader or term, and none flaps. The paused
    node does not take its own stall for its peers' silence (what they sent meanwhile is
    unread behind the stall), so it wakes nothing."""
    cluster = cluster_factory(3).start()
    partitions = 30
    with cluster.connect(1, timeout_s=120) as conn:
        answer = create_topics(conn, ["paused"], partitions=partitions, replication_factor=3,
                               timeout_ms=60_000)
        assert answer["paused"][0] == 0, answer
    before = wait_settled(cluster, partitions)
    lines_before = {n: len(parse_leader_lines(cluster.log(n))) for n in cluster.ids}
    for n in cluster.ids:
        cluster.forget_log_so_far(n)

    cluster.pause(2)
    try:
        time.sleep(0.8)  # less than silence (0.75 s) + the shortest election timeout (0.5 s)
    finally:
        cluster.resume(2)
    time.sleep(5)  # several election timeouts

    new_lines = {n: parse_leader_lines(cluster.log(n))[lines_before[n]:] for n in cluster.ids}
    changes, relearnt = split_changes(new_lines, latest_per_group(cluster, lines_before))
    excerpt = cluster.log_excerpt("silent|heard again|connection to node")
    print(f"after the pause: {len(relearnt)} follower(s) re-learnt their leader\n{excerpt}")
    assert not changes, f"leadership changed after a 0.8 s pause: {changes[:10]}\n{excerpt}"
    after = {n: leader_epochs(cluster.metadata(n)) for n in cluster.ids}
    assert after == before, "leaders or epochs moved after a 0.8 s pause"
    # The paused node's loop ran late by the pause: forgiven, not its peers' silence.
    assert "silent" not in cluster.current_log(2), excerpt
    assert not relearnt, f"followers forgot their leader after a 0.8 s pause: {relearnt[:10]}\n{excerpt}"
