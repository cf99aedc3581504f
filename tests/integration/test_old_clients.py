"""Clients pinned to older broker versions speak the older protocol versions to us: kafka-python
told the broker is Kafka 1.1 / 2.0 / 0.11 fetches with Fetch v7 / v8 / v5 (before KIP-320's
current_leader_epoch, v9) and produces with older Produce versions. One such Fetch used to
stop the node (issue 21). The node's debug log shows the versions really used."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.timeout(120)

RECORDS = 20


@pytest.mark.parametrize("api_version,fetch_version", [((0, 11), 5), ((1, 1), 7), ((2, 0), 8)])
def test_kafka_python_pinned_to_an_old_broker_version_produces_and_consumes(broker_factory, api_version,
                                                                            fetch_version):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    broker = broker_factory(extra_args=["--log-level", "debug"]).start()
    topic = f"old-{'-'.join(map(str, api_version))}"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, api_version=api_version, acks="all",
                             max_block_ms=20000)
    try:
        for i in range(RECORDS):
            producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0)
        producer.flush(30)
    finally:
        producer.close(10)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=api_version, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=15000, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got = []
        for message in consumer:
            got.append((message.offset, message.key, message.value))
            if len(got) == RECORDS:
                break
    finally:
        consumer.close()
    assert got == [(i, b"k%d" % i, b"v%d" % i) for i in range(RECORDS)]
    log = broker.log_text()
    used = set(map(int, re.findall(r"request FetchRequest v(\d+)", log)))
    assert used == {fetch_version}, used
    assert broker.proc.poll() is None and "UNKNOWN_SERVER_ERROR" not in log
