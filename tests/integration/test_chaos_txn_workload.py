"""The chaos harness's transactional workload against a real node: a transaction whose
outcome the producer never learned, left open when the workload stops, is ended by one more
instance of the producer (chaos/workload.py end_abandoned_txn), so the final read is not held
behind it until the coordinator's timeout (a chaos run of transactions.yaml, seed 4, failed
lost_writes and torn_transactions that way: a committed transaction stood behind an
abandoned one, whose timeout abort came 40 s after the final read)."""

from __future__ import annotations

import logging
import time
import types
import uuid

import pytest

from chaos import workload
from chaos.history import History, read_history


def _read_committed(bootstrap: str, topic: str, timeout_s: float) -> list[str]:
    """Values a read_committed consumer gets from the start within timeout_s (stops 1 s after
    the first one)."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "group.id": f"reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                values.append(msg.value().decode())
                deadline = min(deadline, time.monotonic() + 1.0)
    finally:
        consumer.close()
    return values


@pytest.mark.timeout(120)
def test_a_transaction_left_open_at_the_end_is_ended_before_the_final_read(broker, tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "chaos"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    spec = types.SimpleNamespace(acks="all", idempotence=True, request_timeout_s=5, delivery_timeout_s=15)
    config = workload.txn_producer_config(broker.bootstrap, spec, logging.getLogger("test"), "chaos-p0")
    assert config["transaction.timeout.ms"] == 60_000  # what holds readers if nothing ends it

    abandoned = Producer(config)  # the instance whose commit outcome was unknown
    abandoned.init_transactions(30)
    abandoned.begin_transaction()
    abandoned.produce(topic, b"open", partition=0)
    assert abandoned.flush(30) == 0
    other = Producer({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4",
                      "transactional.id": "chaos-p1"})
    other.init_transactions(30)
    other.begin_transaction()
    other.produce(topic, b"committed", partition=0)
    other.commit_transaction(30)
    # The open transaction holds the committed one back from read_committed readers.
    assert _read_committed(broker.bootstrap, topic, 3.0) == []

    history = History(tmp_path / "history.jsonl")
    assert workload.end_abandoned_txn(config, 30, history, "p0")
    history.flush()
    assert [e["type"] for e in read_history(tmp_path / "history.jsonl")] == ["txn-fence"]
    # Well within the transaction timeout: the open one aborted, the committed one readable.
    assert _read_committed(broker.bootstrap, topic, 20.0) == ["committed"]
