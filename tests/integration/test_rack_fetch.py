"""KIP-392 on a real 3-node cluster: a consumer in another rack is sent to a replica in its rack."""

import time

import pytest

from tests.brokers import free_ports
from tests.kafka_wire import FETCH, KafkaWire, Record, build_batch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def racked_cluster(broker_factory):
    raft_ports = free_ports(3)
    peers = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(raft_ports))
    nodes = [broker_factory(f"n{i}", node_id=i, extra_args=["--peers", peers, "--rack", f"rack-{i}"])
             for i in (1, 2, 3)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    return nodes


def _fetch(conn, topic, rack):
    body = {"max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20, "isolation_level": 0,
            "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": rack,
            "topics": [{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": 0,
                                                        "partition_max_bytes": 1 << 20,
                                                        "current_leader_epoch": -1}]}]}
    r = conn.request(FETCH, body)
    return r.responses[0].partitions[0]


def test_the_leader_sends_a_consumer_to_an_in_sync_replica_in_its_rack(racked_cluster):
    first = racked_cluster[0]
    with KafkaWire.connect(first.port) as conn:
        deadline = time.monotonic() + 30
        while len(conn.metadata(None).brokers) < 3:
            assert time.monotonic() < deadline, "brokers did not register"
            time.sleep(0.2)
        assert conn.create_topics(["racked"], partitions=1) == {"racked": 0}
        md = conn.metadata(["racked"]).topics[0].partitions[0]
    leader = racked_cluster[md.leader_id - 1]
    other = next(n for n in racked_cluster if n is not leader)
    with KafkaWire.connect(leader.port) as conn:
        assert conn.produce("racked", 0, build_batch([Record(b"k", b"v")])).error_code == 0
        # Wait until every replica is in sync, as the leader sees it.
        deadline = time.monotonic() + 30
        while len(conn.metadata(["racked"]).topics[0].partitions[0].isr_nodes) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        own_rack = _fetch(conn, "racked", f"rack-{leader.node_id}")
        assert own_rack.preferred_read_replica == -1 and own_rack.records
        redirected = _fetch(conn, "racked", f"rack-{other.node_id}")
        assert redirected.preferred_read_replica == other.node_id and not redirected.records
        assert _fetch(conn, "racked", "nowhere").preferred_read_replica == -1
    # The follower in that rack serves the consumer up to its high watermark.
    with KafkaWire.connect(other.port) as conn:
        deadline = time.monotonic() + 10
        while not (p := _fetch(conn, "racked", f"rack-{other.node_id}")).records:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert p.error_code == 0 and p.high_watermark == 1
