"""EndTxn is answered once its PrepareCommit record is durable, before the markers (as
Kafka's coordinator answers), with real nodes and a real client (confluent-kafka).

3 nodes. The transaction writes to a partition P whose two replicas are the coordinator C
and another node Y; Y is paused (SIGSTOP) before the commit, so P has no quorum and its
commit marker cannot be written. Then:

- commit_transaction() returns; the coordinator's /metrics count the EndTxn answered and no
  marker written, DescribeTransactions says PrepareCommit;
- a read_committed Fetch of P (from C, its leader) serves nothing of the transaction (the
  last stable offset stays at its first record) while read_uncommitted sees all 5 records;
- the id's next transaction waits: AddPartitionsToTxn is answered CONCURRENT_TRANSACTIONS
  and the client's next record is not delivered;
- Y resumes: the marker lands, the transaction completes, the next one goes through, and
  read_committed readers see both whole.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from chronik_trio.tools.bench_local import scrape
from tests.cluster.conftest import cluster_factory  # noqa: F401  (the fixture, by PID)
from tests.kafka_wire import NONE, parse_batches

pytestmark = pytest.mark.timeout(240)

CONFIG = "transaction_state_log_num_partitions = 2\noffsets_topic_num_partitions = 2\n"
FIND_COORDINATOR, ADD_PARTITIONS_TO_TXN, CREATE_TOPICS, FETCH = 10, 24, 19, 1
DESCRIBE_TRANSACTIONS = 65
CONCURRENT_TRANSACTIONS = 51
TXN_ID, BLOCKED, NEXT = "early-txn", "early-blocked", "early-next"


def _until(what: str, probe, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = probe()
        except (OSError, ConnectionError, TimeoutError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _txn_metrics(cluster, n: int) -> dict[str, float]:
    text = scrape(f"127.0.0.1:{cluster.raft_ports[n]}")
    out = {m.group(1): float(m.group(2))
           for m in re.finditer(r"^chronik_txn_(end_txn|markers|completion)_seconds_count (\S+)$", text, re.M)}
    out.update({m.group(1): float(m.group(2)) for m in re.finditer(
        r'^chronik_txn_requests_total\{kind="(\w+)"\} (\S+)$', text, re.M)})
    return out


def _describe(cluster, n: int):
    with cluster.connect(n) as wire:
        (state,) = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [TXN_ID]}, version=0).transaction_states
    assert state.error_code == NONE, state
    return state


def _read_committed(bootstrap: str, topics: list[str], want: int, timeout_s: float = 60.0) -> list[str]:
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "group.id": f"reader-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.subscribe(topics)
    values: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(values) < want:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value().decode())
    finally:
        consumer.close()
    return values


def test_end_txn_is_answered_before_its_markers_and_the_next_transaction_waits(cluster_factory):
    from confluent_kafka import Producer

    cluster = cluster_factory(3, config_text=CONFIG).start()

    def coordinator():
        with cluster.connect(1) as wire:
            r = wire.request(FIND_COORDINATOR, {"key": TXN_ID, "key_type": 1}, version=3)
            return r.node_id if r.error_code == NONE else None
    c = _until("the transaction coordinator", coordinator)
    y = next(n for n in cluster.ids if n != c)
    with cluster.connect(c) as wire:
        r = wire.request(CREATE_TOPICS, {"topics": [
            {"name": BLOCKED, "num_partitions": -1, "replication_factor": -1,
             "assignments": [{"partition_index": 0, "broker_ids": [c, y]}]},  # C leads (first replica)
            {"name": NEXT, "num_partitions": 1, "replication_factor": 3}], "timeout": 10000})
        assert [t.error_code for t in r.topics] == [NONE, NONE], r

    def led_by_c():
        md = cluster.metadata(c, [BLOCKED])
        return md.topics[0].partitions[0].leader_id == c
    _until("the blocked partition led by the coordinator", led_by_c)

    bootstrap = ",".join(f"127.0.0.1:{cluster.nodes[n].port}" for n in cluster.ids)
    producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "transactional.id": TXN_ID, "transaction.timeout.ms": 120000, "linger.ms": 5})
    producer.init_transactions(60)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(BLOCKED, b"first-%d" % i, partition=0)
    assert producer.flush(60) == 0

    cluster.pause(y)  # P has 1 replica of 2: its commit marker cannot be written
    try:
        producer.commit_transaction(60)
        # Answered with the marker not written: the coordinator observed one EndTxn answer and
        # no marker; the transaction is prepared, not complete.
        counts = _txn_metrics(cluster, c)
        assert counts.get("end_txn") == 1 and counts.get("markers") == 0 and counts.get("completion") == 0, counts
        state = _describe(cluster, c)
        assert state.transaction_state == "PrepareCommit" and [t.topic for t in state.topics] == [BLOCKED]

        # read_committed sees nothing of it before the marker; read_uncommitted all 5.
        with cluster.connect(c) as wire:
            body = wire.fetch_request_body(BLOCKED, 0, 0)
            body["isolation_level"] = 1
            p = wire.request(FETCH, body).responses[0].partitions[0]
            assert p.error_code == NONE and p.last_stable_offset == 0 and p.high_watermark == 5, p
            assert not [r for b in parse_batches(p.records or b"") for r in b.records]
            p = wire.request(FETCH, wire.fetch_request_body(BLOCKED, 0, 0)).responses[0].partitions[0]
            assert len([r for b in parse_batches(p.records or b"") for r in b.records]) == 5

        # The next transaction waits for the completion: its add is CONCURRENT_TRANSACTIONS
        # (retriable), and the client's record is not delivered meanwhile.
        with cluster.connect(c) as wire:
            r = wire.request(ADD_PARTITIONS_TO_TXN, {
                "v3_and_below_transactional_id": TXN_ID, "v3_and_below_producer_id": state.producer_id,
                "v3_and_below_producer_epoch": state.producer_epoch,
                "v3_and_below_topics": [{"name": NEXT, "partitions": [0]}]}, version=3)
            code = r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
            assert code == CONCURRENT_TRANSACTIONS, r
        producer.begin_transaction()
        producer.produce(NEXT, b"second", partition=0)
        assert producer.flush(3) == 1  # not delivered: the partition cannot join the transaction yet
        assert _describe(cluster, c).transaction_state == "PrepareCommit"
        assert _txn_metrics(cluster, c).get("concurrent_transactions", 0) >= 2
    finally:
        cluster.resume(y)

    # The marker lands, the transaction completes, the waiting one proceeds.
    assert producer.flush(60) == 0
    producer.commit_transaction(60)
    _until("both transactions complete", lambda: _describe(cluster, c).transaction_state == "CompleteCommit"
           and _txn_metrics(cluster, c).get("completion") == 2)
    counts = _txn_metrics(cluster, c)
    assert counts["end_txn"] == 2 and counts["markers"] == 2, counts
    values = _read_committed(bootstrap, [BLOCKED, NEXT], 6)
    assert sorted(values) == sorted([f"first-{i}" for i in range(5)] + ["second"]), values
