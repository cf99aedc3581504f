"""Transactions with a real client on the shared 3-node cluster (issue 15, partition side):
librdkafka's transactional producer (confluent-kafka) commits and aborts transactions over two
RF=3 partitions, and a read_committed consumer sees every committed record and no aborted one
(a read_uncommitted consumer sees the aborted ones too: they are in the log). Then a
transaction is left open while its partition's leader is SIGKILLed: the new leader holds the
last stable offset at the transaction's first record (every replica derived it from the
log), and the commit, written through the new leader's Raft group, releases it."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.replication.cluster import NONE, Cluster, wait_balanced, wait_for

LIST_OFFSETS = 2
READ_COMMITTED, READ_UNCOMMITTED = 1, 0
CLIENT_TIMEOUT_S = 60


def transactional_producer(cluster: Cluster):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                         "transactional.id": f"txn-rf3-{uuid.uuid4().hex[:8]}", "linger.ms": 5,
                         "transaction.timeout.ms": 60_000})
    producer.init_transactions(CLIENT_TIMEOUT_S)
    return producer


def send(producer, topic: str, values: list[bytes], partitions: int) -> None:
    errors = []
    for i, value in enumerate(values):
        producer.produce(topic, value=value, partition=i % partitions,
                         on_delivery=lambda err, msg: errors.append(err) if err is not None else None)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    assert not errors, errors[:3]


def consume_until(cluster: Cluster, topic: str, partitions: int, isolation: str, last: set[bytes]) -> list[bytes]:
    """Every value a consumer of that isolation reads from the start until it has read
    every value in `last` (which the producer wrote after everything else)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                         "group.id": f"txn-rf3-{uuid.uuid4().hex[:8]}", "isolation.level": isolation,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        seen: list[bytes] = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while not last <= set(seen):
            assert time.monotonic() < deadline, f"{isolation}: read {len(seen)} records, not the last ones"
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
        return seen
    finally:
        consumer.close()


def latest(cluster: Cluster, n: int, topic: str, isolation_level: int) -> int | None:
    """ListOffsets latest on node n (None unless it leads the partition)."""
    with cluster.connect(n, timeout_s=10) as conn:
        r = conn.request(LIST_OFFSETS, {"replica_id": -1, "isolation_level": isolation_level, "timeout": 10000,
                                        "topics": [{"name": topic, "partitions": [
                                            {"partition_index": 0, "timestamp": -1, "current_leader_epoch": -1}]}]})
    (p,) = r.topics[0].partitions
    return int(p.offset) if int(p.error_code) == NONE else None


def live_leader(cluster: Cluster, topic: str) -> int:
    def known():
        for n in cluster.running():
            info = cluster.partitions(n, topic).get(0)
            if info is not None and info.leader in cluster.running():
                return info.leader
        return None
    return wait_for(f"a live leader of {topic}-0", known, timeout_s=30)


@pytest.mark.timeout(180)
def test_read_committed_sees_committed_transactions_and_never_aborted_ones(cluster):
    topic = "txn-committed-aborted"
    assert cluster.create_topic(1, topic, 2).error_code == NONE
    wait_balanced(cluster, topic)
    producer = transactional_producer(cluster)
    first = [b"commit-1-%d" % i for i in range(20)]
    aborted = [b"abort-%d" % i for i in range(20)]
    second = [b"commit-2-%d" % i for i in range(20)]
    for values, commit in ((first, True), (aborted, False), (second, True)):
        producer.begin_transaction()
        send(producer, topic, values, partitions=2)
        if commit:
            producer.commit_transaction(CLIENT_TIMEOUT_S)
        else:
            producer.abort_transaction(CLIENT_TIMEOUT_S)

    committed = consume_until(cluster, topic, 2, "read_committed", set(second))
    assert sorted(committed) == sorted(first + second)  # each once, no aborted one
    uncommitted = consume_until(cluster, topic, 2, "read_uncommitted", set(second))
    assert set(aborted) <= set(uncommitted)  # the aborted records are in the log


@pytest.mark.timeout(180)
def test_an_open_transaction_holds_the_lso_across_a_leader_kill_until_its_commit(cluster):
    topic = "txn-leader-kill"
    assert cluster.create_topic(1, topic, 1).error_code == NONE
    wait_balanced(cluster, topic)
    producer = transactional_producer(cluster)
    producer.begin_transaction()
    values = [b"open-%d" % i for i in range(10)]
    send(producer, topic, values, partitions=1)

    leader = live_leader(cluster, topic)
    assert (latest(cluster, leader, topic, READ_COMMITTED), latest(cluster, leader, topic, READ_UNCOMMITTED)) == \
           (0, 10)
    cluster.kill(leader)
    successor = wait_for("a new leader", lambda: (n := live_leader(cluster, topic)) != leader and n, timeout_s=30)
    # The new leader answers once it has applied its predecessor's entries: the LSO is held
    # at the open transaction's first record all along, never at the high watermark.
    hw = wait_for("the new leader's high watermark",
                  lambda: latest(cluster, successor, topic, READ_UNCOMMITTED) == 10 or None, timeout_s=30)
    assert hw and latest(cluster, successor, topic, READ_COMMITTED) == 0

    producer.commit_transaction(CLIENT_TIMEOUT_S)  # the marker goes through the new leader
    # (EndTxn is answered once the commit is decided; the marker follows, as with Kafka)
    assert wait_for("the commit marker", lambda: latest(cluster, successor, topic, READ_COMMITTED) == 11,
                    timeout_s=30)
    assert latest(cluster, successor, topic, READ_UNCOMMITTED) == 11
    assert consume_until(cluster, topic, 1, "read_committed", set(values)) == values
