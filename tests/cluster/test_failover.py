"""SIGKILL the __meta leader: a new one is elected and commits; the old one, restarted,
catches up by log, and (with forced compaction) by snapshot (issue 4)."""

from __future__ import annotations

import time

import pytest

from tests.cluster.cluster import (META_GROUP, POLL_S, SNAPSHOT_LINE, ClusterProcesses,
                                   create_until_committed, wait_topics_equal)
from tests.cluster.test_election import assert_one_leader_per_term, latest_leader_seen

# Small enough that the topics created while a node is down are compacted away: each
# creation is two __meta entries (the topic, then its partition leader's report).
COMPACTING_CONFIG = "meta_snapshot_entries = 10\nmeta_segment_bytes = 2048\n"
TOPICS_WHILE_DOWN = 30
SNAPSHOT_WAIT_S = 15.0  # the node checks for a snapshot every second


def kill_meta_leader_and_commit(cluster: ClusterProcesses, name: str) -> tuple[int, int, float]:
    """Kill the __meta leader, create `name` through the survivors; returns
    (old leader, new leader, seconds from SIGKILL to the committed CreateTopics)."""
    old = cluster.wait_meta_leader()
    survivors = [n for n in cluster.ids if n != old]
    killed_at = cluster.kill(old)
    create_until_committed(cluster, survivors, name)
    failover_s = time.monotonic() - killed_at
    new = cluster.wait_meta_leader(survivors)
    assert new != old
    assert_one_leader_per_term(cluster)
    return old, new, failover_s


def assert_all_agree_on_leader(cluster: ClusterProcesses) -> None:
    leader = cluster.wait_meta_leader(cluster.ids)
    latest = latest_leader_seen(cluster.leader_lines(META_GROUP))
    assert {s.leader for s in latest.values()} == {leader}, latest


@pytest.mark.timeout(150)
def test_killed_meta_leader_is_replaced_and_catches_up_by_log(cluster_factory):
    cluster = cluster_factory(3).start()
    old, new, failover_s = kill_meta_leader_and_commit(cluster, "created-while-down")
    print(f"__meta leader {old} SIGKILLed; node {new} leads and committed after {failover_s:.2f} s")

    cluster.restart(old)
    topics = wait_topics_equal(cluster, cluster.ids)
    assert "created-while-down" in topics
    assert_all_agree_on_leader(cluster)


@pytest.mark.timeout(150)
def test_killed_meta_leader_catches_up_by_snapshot_after_compaction(cluster_factory):
    cluster = cluster_factory(3, config_text=COMPACTING_CONFIG).start()
    old, new, failover_s = kill_meta_leader_and_commit(cluster, "down-0")
    print(f"__meta leader {old} SIGKILLed; node {new} leads and committed after {failover_s:.2f} s")
    survivors = [n for n in cluster.ids if n != old]
    for i in range(1, TOPICS_WHILE_DOWN):
        create_until_committed(cluster, survivors, f"down-{i}")

    deadline = time.monotonic() + SNAPSHOT_WAIT_S
    while not SNAPSHOT_LINE.search(cluster.current_log(new)) and time.monotonic() < deadline:
        time.sleep(POLL_S * 4)
    assert SNAPSHOT_LINE.search(cluster.current_log(new)), f"leader {new} logged no __meta snapshot"

    cluster.restart(old)
    topics = wait_topics_equal(cluster, cluster.ids)
    assert {f"down-{i}" for i in range(TOPICS_WHILE_DOWN)} <= set(topics)
    # The leader no longer had the entries the old node missed: it was sent a snapshot.
    received = cluster.raft_metric(old, "chronik_transport_received_snapshots_total")
    assert received >= 1, f"node {old} caught up without a snapshot"
    assert_all_agree_on_leader(cluster)
