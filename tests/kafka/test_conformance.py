"""Every (API, version) the node advertises answers a well-formed request correctly.

The pairs come from the node's own ApiVersions answer and the requests from kio's schemas
(conformance.py), so a new API or version is swept without new code. Each pair gets a
request for a topic that exists and one for a topic that does not; the answer must decode
at that version with nothing left over, carry no UNKNOWN_SERVER_ERROR, answer the missing
topic with UNKNOWN_TOPIC_OR_PARTITION (UNKNOWN_TOPIC_ID by id) and the existing one with 0
(NOT_LEADER_OR_FOLLOWER from a follower, where only the leader serves). The node's count of
contained handler failures must stay 0: a handler that crashed and was answered for is
still a bug.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid

import pytest

from tests.cluster.cluster import ClusterProcesses, create_topics
from tests.kafka import conformance, live
from tests.kafka_wire import CREATE_TOPICS, FETCH, METADATA, NONE, KafkaWire, encode_request, frame

JOIN_GROUP = 11
DELETE_TOPICS = 20
CREATE_PARTITIONS = 37
DESCRIBE_GROUPS = 15
INVALID_PARTITIONS = 37
GROUP_ID_NOT_FOUND = 69

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    broker, admin_port = live.start_node(tmp_path_factory.mktemp("conformance"))
    try:
        yield broker, admin_port
    finally:
        broker.stop()


def _targets(conn: KafkaWire, name: str) -> tuple[conformance.Target, conformance.Target]:
    topic_id = live.create_topic(conn, name)
    records = conformance.records()
    return (conformance.Target(name, topic_id, records),
            conformance.Target(f"missing-{uuid.uuid4().hex[:8]}", uuid.uuid4(), records))


def test_every_advertised_version_answers_correctly_on_one_node(node):
    broker, admin_port = node
    with KafkaWire.connect(broker.port) as conn:
        existing, missing = _targets(conn, "conformance-one")
        result = conformance.sweep(conn, existing, missing)
    assert not result.failures, "\n".join(result.failures)
    assert len(result.pairs) >= 157, result.pairs  # every advertised pair (each for two topics)
    assert broker.proc.poll() is None
    assert live.metric(admin_port, live.REQUEST_ERRORS_METRIC) == 0, broker.log_text()[-4000:]


@pytest.mark.parametrize("version", range(4, 9))
def test_fetch_v4_to_v8_without_a_leader_epoch_serves_records(node, version):
    """The versions before KIP-320's current_leader_epoch (v9) once stopped the node."""
    broker, _ = node
    with KafkaWire.connect(broker.port) as conn:
        name = f"old-fetch-{version}"
        live.create_topic(conn, name)
        assert conn.produce(name, 0, conformance.records()).error_code == NONE
        answer = conn.request(FETCH, conn.fetch_request_body(name, 0, 0), version=version)
    (part,) = answer.responses[0].partitions
    assert part.error_code == NONE and part.high_watermark == 1 and part.records


def test_a_null_where_the_schema_allows_none_closes_only_that_connection(node):
    """A Fetch whose topics array has length -1 (the schema's array is not nullable) once
    stopped the node; Kafka refuses such a request, and so do we: the connection is closed
    with a log line naming the peer and the field, and the node keeps serving."""
    broker, admin_port = node
    with KafkaWire.connect(broker.port) as conn:
        live.create_topic(conn, "null-arrays")
    payload = encode_request(FETCH, 8, 7, {"max_wait": 0, "topics": [], "forgotten_topics_data": []})
    topics_at = len(payload) - 8  # topics (int32 count), then forgotten_topics_data (int32)
    assert payload[topics_at:] == b"\x00" * 8
    bad = payload[:topics_at] + struct.pack(">i", -1) + payload[topics_at + 4:]
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(frame(bad))
        assert sock.recv(64) == b""  # closed, no answer
    assert "field topics is null" in broker.log_text()
    live.round_trip(broker.port, "null-arrays")
    assert live.health(admin_port)["serving_kafka"] is True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance-cluster")
    cluster = ClusterProcesses(root, 3, config_text=live.NODE_CONFIG, extra_args=live.NODE_ARGS)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def test_every_advertised_version_answers_correctly_on_leader_and_follower(cluster):
    name = "conformance-three"
    with cluster.connect(1) as conn:
        assert create_topics(conn, [name], replication_factor=3)[name][0] == NONE
    leader = _wait_leader(cluster, name)
    follower = next(n for n in cluster.ids if n != leader)
    pairs = 0
    for n, is_leader in ((leader, True), (follower, False)):
        with cluster.connect(n) as conn:
            (topic,) = conn.metadata([name]).topics
            records = conformance.records()
            existing = conformance.Target(name, topic.topic_id, records)
            missing = conformance.Target(f"missing-{uuid.uuid4().hex[:8]}", uuid.uuid4(), records)
            result = conformance.sweep(conn, existing, missing, leader=is_leader)
        assert not result.failures, f"node {n} (leader {is_leader}):\n" + "\n".join(result.failures)
        pairs = len(result.pairs)
    assert pairs >= 157
    assert cluster.running() == cluster.ids
    for n in cluster.ids:
        assert cluster.raft_metric(n, live.REQUEST_ERRORS_METRIC) == 0, cluster.log(n)[-4000:]


def _wait_leader(cluster: ClusterProcesses, name: str, timeout_s: float = 60.0) -> int:
    """The node every running node names as leader of name-0, once all agree and it is the
    preferred leader (the first replica): the automatic leader balancing moves leadership
    there, and the sweep needs it to stay put."""
    deadline = time.monotonic() + timeout_s
    seen: set = set()
    while time.monotonic() < deadline:
        seen = set()
        for n in cluster.ids:
            (topic,) = cluster.metadata(n, [name]).topics
            p = topic.partitions[0] if topic.partitions else None
            seen.add(p.leader_id if p is not None and p.replica_nodes and p.leader_id == p.replica_nodes[0] else -1)
        if len(seen) == 1 and -1 not in seen:
            return seen.pop()
        time.sleep(0.1)
    raise TimeoutError(f"nodes do not agree on {name}-0's preferred leader leading: {seen}")


# --------------------------------------------------------------------------- found by the fuzzer


def test_an_array_claiming_2_31_entries_closes_only_that_connection(node):
    """kio reserved memory for the claimed length before reading (264 GB) and aborted the
    process; the node now checks every length against the bytes left first."""
    broker, admin_port = node
    payload = encode_request(METADATA, 4, 1, {"topics": [], "allow_auto_topic_creation": False})
    assert payload[-5:] == b"\x00\x00\x00\x00\x00"  # topics: int32 count; then a bool
    bad = payload[:-5] + struct.pack(">i", 2**31 - 1) + payload[-1:]
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(frame(bad))
        assert sock.recv(64) == b""
    assert "claims 2147483647 entries" in broker.log_text()
    assert broker.proc.poll() is None and live.health(admin_port)["serving_kafka"] is True


def test_a_topic_of_2_31_partitions_is_refused_at_once(node):
    """Building its replica list held the event loop (and memory) until the node was killed."""
    broker, _ = node
    with KafkaWire.connect(broker.port) as conn:
        answer = conn.request(CREATE_TOPICS, {"topics": [{"name": "huge", "num_partitions": 2**31 - 1,
                                                          "replication_factor": -1}],
                                              "timeout": 5000, "validate_only": True}, version=5)
        assert [int(t.error_code) for t in answer.topics] == [INVALID_PARTITIONS]
        assert conn.topic_names() is not None  # still answering


def test_a_join_with_a_negative_rebalance_timeout_is_answered(node):
    broker, admin_port = node
    before = live.metric(admin_port, live.REQUEST_ERRORS_METRIC)
    with KafkaWire.connect(broker.port) as conn:
        answer = conn.request(JOIN_GROUP, {"group_id": "negative-rebalance", "session_timeout": 10000,
                                           "rebalance_timeout": -1, "member_id": "", "protocol_type": "consumer",
                                           "protocols": [{"name": "range", "metadata": b""}]}, version=1)
    assert int(answer.error_code) == NONE and answer.member_id
    assert live.metric(admin_port, live.REQUEST_ERRORS_METRIC) == before


@pytest.mark.parametrize("version", [10, 11, 12])
def test_metadata_by_an_unknown_topic_id_answers_unknown_topic_id(node, version):
    """v10-v11 ask by id but answer a non-nullable name: the null name did not encode."""
    broker, _ = node
    with KafkaWire.connect(broker.port) as conn:
        answer = conn.request(METADATA, {"topics": [{"name": None, "topic_id": uuid.uuid4()}]}, version=version)
    (topic,) = answer.topics
    assert int(topic.error_code) == conformance.UNKNOWN_TOPIC_ID
    assert topic.name == ("" if version < 12 else None)


def test_describe_groups_v6_says_a_missing_group_is_not_found(node):
    broker, _ = node
    with KafkaWire.connect(broker.port) as conn:
        v5 = conn.request(DESCRIBE_GROUPS, {"groups": ["never-made"]}, version=5).groups[0]
        v6 = conn.request(DESCRIBE_GROUPS, {"groups": ["never-made"]}, version=6).groups[0]
    assert (int(v5.error_code), v5.group_state) == (NONE, "Dead")
    assert int(v6.error_code) == GROUP_ID_NOT_FOUND and v6.error_message


@pytest.mark.parametrize("round_", range(5))
def test_a_topic_deleted_while_its_partitions_are_added_is_answered(node, round_):
    """Found by the long fuzz run: both proposals applied in one Ready pass, and the
    CreatePartitions that resumed after its own looked the deleted topic up (KeyError)."""
    broker, admin_port = node
    before = live.metric(admin_port, live.REQUEST_ERRORS_METRIC)
    name = f"grow-and-go-{round_}"
    with KafkaWire.connect(broker.port) as conn:
        live.create_topic(conn, name)
        conn.send(CREATE_PARTITIONS, 3, {"topics": [{"name": name, "count": 2, "assignments": None}],
                                         "timeout": 5000, "validate_only": False})
        conn.send(DELETE_TOPICS, 4, {"topic_names": [name], "timeout": 5000})
        (grown,), (deleted,) = conn.recv()[1].results, conn.recv()[1].responses
    assert int(deleted.error_code) == NONE
    assert int(grown.error_code) in (NONE, conformance.UNKNOWN_TOPIC_OR_PARTITION), grown
    assert live.metric(admin_port, live.REQUEST_ERRORS_METRIC) == before, broker.log_text()[-3000:]
