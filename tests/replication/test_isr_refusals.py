"""NOT_ENOUGH_REPLICAS only when the ISR really is smaller than min.insync.replicas.

With all three nodes up, and with one follower down (2 of 3 in sync, min.insync.replicas 2),
no acks=all produce may be refused with NOT_ENOUGH_REPLICAS. Each produce here is a first
attempt: no retries (confluent-kafka with retries=0; raw Produce requests).

Written against a bug fixed in 0b0424b: the ISR rule counted a follower in sync only while
Raft's Progress.recent_active was set, and check-quorum clears recent_active on every
follower each election timeout (raft.py _leader_check_quorum) until it answers again, so an
acks=all produce in that window saw an ISR of the leader alone. The ISR now follows node
liveness.
"""

from __future__ import annotations

import time

import pytest

from tests.kafka_wire import Record
from tests.replication.cluster import NONE, produce_raw, wait_balanced, wait_for

HEALTHY_RECORDS = 20_000
ONE_DOWN_PROBE_S = 5.0


@pytest.mark.timeout(120)
def test_healthy_cluster_never_refuses_acks_all(cluster):
    from confluent_kafka import Producer
    topic = "isr-healthy"
    assert cluster.create_topic(1, topic, 6).error_code == NONE
    wait_balanced(cluster, topic)
    errors: list[str] = []
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "linger.ms": 5,
                         "retries": 0, "enable.idempotence": False,
                         "queue.buffering.max.messages": 200_000})
    for i in range(HEALTHY_RECORDS):
        producer.produce(topic, b"v%d" % i, partition=i % 6,
                         on_delivery=lambda err, msg: err is None or errors.append(str(err)))
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, f"{len(errors)} of {HEALTHY_RECORDS} records refused on a healthy cluster: {errors[:3]}"


@pytest.mark.timeout(120)
def test_one_follower_down_never_refuses_acks_all(cluster):
    topic = "isr-one-down"
    assert cluster.create_topic(2, topic, 1).error_code == NONE
    info = wait_balanced(cluster, topic)[0]
    leader, follower, other = info.replicas
    cluster.kill(follower)
    wait_for(f"ISR of {topic}-0 without node {follower}",
             lambda: follower not in cluster.partitions(leader, topic)[0].isr, timeout_s=20, poll_s=0.2)
    answers: list[int] = []
    deadline = time.monotonic() + ONE_DOWN_PROBE_S
    with cluster.connect(leader) as conn:
        for i in range(2000):  # bounded
            if time.monotonic() > deadline:
                break
            answers.append(produce_raw(cluster, leader, topic, 0, [Record(b"k", b"v%d" % i)], conn=conn)[0])
            time.sleep(0.01)
    refused = [a for a in answers if a != NONE]
    assert not refused, (f"{len(refused)} of {len(answers)} acks=all produces refused (codes {sorted(set(refused))}) "
                         f"with the ISR at {sorted((leader, other))} >= min.insync.replicas 2")
