"""A fresh 3-node and 5-node cluster each elect exactly one __meta leader (issue 4).

Election safety is checked on the nodes' own log lines: across every node, no term of
__meta names two different leaders, and every node's latest line names the leader that
all nodes report as Metadata's controller.
"""

from __future__ import annotations

import collections

import pytest

from tests.cluster.cluster import META_GROUP, ClusterProcesses, LeaderSeen


def assert_one_leader_per_term(cluster: ClusterProcesses, group: str = META_GROUP) -> list[LeaderSeen]:
    seen = cluster.leader_lines(group)
    leaders_by_term: dict[int, set[int]] = collections.defaultdict(set)
    for s in seen:
        leaders_by_term[s.term].add(s.leader)
    two = {term: leaders for term, leaders in leaders_by_term.items() if len(leaders) > 1}
    assert not two, f"two leaders in one term of {group}: {two}\n" + cluster.log_excerpt("leader is node")
    return seen


def latest_leader_seen(seen: list[LeaderSeen]) -> dict[int, LeaderSeen]:
    """node -> the highest-term leader line it logged."""
    latest: dict[int, LeaderSeen] = {}
    for s in seen:
        if s.seen_by not in latest or s.term > latest[s.seen_by].term:
            latest[s.seen_by] = s
    return latest


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", [3, 5])
def test_fresh_cluster_elects_exactly_one_meta_leader(cluster_factory, size):
    cluster = cluster_factory(size).start()
    leader = cluster.wait_meta_leader()

    seen = assert_one_leader_per_term(cluster)
    latest = latest_leader_seen(seen)
    assert set(latest) == set(cluster.ids), f"nodes that logged no __meta leader: {set(cluster.ids) - set(latest)}"
    assert {s.leader for s in latest.values()} == {leader}, latest
    assert len({s.term for s in latest.values()}) == 1, latest
    print(f"{size} nodes: __meta leader node {leader} at term {latest[leader].term}, "
          f"{len({s.term for s in seen})} term(s) with a leader")
