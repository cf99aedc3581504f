"""A cluster that changes shape (issue 17): a node joins a running 3-node cluster with
`--join`, becomes a voter of __meta, appears in Metadata and DescribeCluster, is given new
partitions, restarts and rejoins, and is removed again with `admin remove-node`, while a
confluent-kafka producer (acks=all, bounded) writes to a topic of the first three nodes and
loses no acknowledged record. Bad input: an id already in use, an unknown id, a node that
still hosts replicas, the last voter."""

from __future__ import annotations

import json
import subprocess

import pytest

from nodeharness import free_port
from tests.brokers import CHRONIK_TRIO, BrokerProcess
from tests.kafka_wire import CREATE_TOPICS
from tests.replication.cluster import Cluster, wait_for
from tests.replication.failover import PacedLoad, RetryingProducer, check_acked_on_every_replica

pytestmark = pytest.mark.timeout(300)

def admin(cluster: Cluster, n: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", cluster.bootstrap(n), *args],
                          capture_output=True, text=True, timeout=90)


def brokers_seen(cluster: Cluster, n: int) -> set[int]:
    return {int(b.node_id) for b in cluster.metadata(n).brokers}


def meta_voters(cluster: Cluster, n: int) -> list[int] | None:
    health = cluster.nodes[n].process.health()
    return health and health.get("meta_voters")


def test_a_cluster_grows_to_four_and_shrinks_back_to_three_under_load(tmp_path):
    cluster = Cluster(tmp_path).start()
    try:
        assert int(cluster.create_topic(1, "load", 2).error_code) == 0
        wait_for("leaders of load", lambda: all(p.leader > 0 for p in cluster.partitions(1, "load").values())
                 and len(cluster.partitions(1, "load")) == 2, timeout_s=30)
        load = PacedLoad(cluster, "load", 2).start()

        # Grow: node 4 joins through node 2's Kafka address.
        cluster.join_node(4, via=2, timeout_s=60)
        for n in cluster.ids:
            wait_for(f"node {n} lists 4 brokers", lambda n=n: brokers_seen(cluster, n) == {1, 2, 3, 4}, timeout_s=30)
            wait_for(f"node {n}: __meta voters 1-4", lambda n=n: meta_voters(cluster, n) == [1, 2, 3, 4], timeout_s=30)
        described = admin(cluster, 4, "cluster", "--json")
        assert described.returncode == 0, described.stderr
        assert [b["id"] for b in json.loads(described.stdout)["brokers"]] == [1, 2, 3, 4]
        assert "joining the cluster through" in cluster.log(4) and "bootstrapped __meta" not in cluster.log(4)

        # It can be given partitions: one whose preferred leader is node 4.
        with cluster.connect(1, timeout_s=45) as conn:
            r = conn.request(CREATE_TOPICS, {"topics": [{"name": "fresh", "num_partitions": -1,
                                                         "replication_factor": -1,
                                                         "assignments": [{"partition_index": 0, "broker_ids": [4, 1, 2]}],
                                                         "configs": []}], "timeout": 30_000})
        assert int(r.topics[0].error_code) == 0, r.topics[0]
        wait_for("node 4 leads fresh-0", lambda: cluster.partitions(1, "fresh").get(0)
                 and cluster.partitions(1, "fresh")[0].leader == 4, timeout_s=30)
        fresh = RetryingProducer(cluster, "fresh")
        fresh.produce(range(20))

        # A restarted joined node finds its peers again (from __meta on its disk).
        cluster.nodes[4].process.stop()
        cluster.restart(4, timeout_s=60)
        wait_for("node 4 lists 4 brokers again", lambda: brokers_seen(cluster, 4) == {1, 2, 3, 4}, timeout_s=30)
        wait_for("fresh-0 in sync on every replica",
                 lambda: len(cluster.partitions(1, "fresh")[0].isr) == 3, timeout_s=60)

        # Bad input: refused with a Kafka error naming the cause.
        refused = admin(cluster, 1, "remove-node", "4")
        assert refused.returncode == 1 and "INVALID_REQUEST" in refused.stderr and "fresh-0" in refused.stderr, refused
        unknown = admin(cluster, 1, "remove-node", "99")
        assert unknown.returncode == 1 and "BROKER_ID_NOT_REGISTERED" in unknown.stderr, unknown
        alive = admin(cluster, 1, "remove-node", "3", "--force")
        assert alive.returncode == 1 and "alive" in alive.stderr, alive
        duplicate = BrokerProcess(tmp_path / "dup" / "data", node_id=2, extra_args=[
            "--peers", f"2@127.0.0.1:{free_port()}", "--join", cluster.bootstrap(1)])
        duplicate.process.expect_exit()
        duplicate.start(wait=False)
        wait_for("the duplicate id exits", lambda: not duplicate.process.running, timeout_s=60)
        assert duplicate.process.returncode == 1 and "DUPLICATE_VOTER" in duplicate.process.log_text(), \
            duplicate.process.log_text()[-2000:]

        # Shrink: node 4 hosts nothing once fresh is deleted, and is removed.
        delete = admin(cluster, 1, "delete-topic", "fresh")
        assert delete.returncode == 0, delete.stderr
        removed = admin(cluster, 1, "remove-node", "4")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        cluster.nodes[4].process.stop()
        cluster.ids.remove(4)
        for n in cluster.ids:
            wait_for(f"node {n} lists 3 brokers", lambda n=n: brokers_seen(cluster, n) == {1, 2, 3}, timeout_s=30)
            wait_for(f"node {n}: __meta voters 1-3", lambda n=n: meta_voters(cluster, n) == [1, 2, 3], timeout_s=30)

        acked = load.stop()
        assert len(acked) >= 100 and not load.producer.errors, (len(acked), load.producer.errors[:3])
        check_acked_on_every_replica(cluster, "load", 2, acked)
    finally:
        cluster.close()


def test_the_last_voter_cannot_be_removed(tmp_path):
    cluster = Cluster(tmp_path, size=1).start()
    try:
        refused = admin(cluster, 1, "remove-node", "1")
        assert refused.returncode == 1 and "last voter" in refused.stderr, refused
    finally:
        cluster.close()
