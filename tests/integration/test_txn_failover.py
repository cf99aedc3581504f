"""A transaction coordinator that fails between PrepareCommit and its markers: the next
leader of its `__transaction_state` partition finds the prepared transaction when it loads
and writes the markers itself (3 nodes, raw wire).

The partition written to is led by another node X than the coordinator C; X is paused
(SIGSTOP) so the markers cannot land; EndTxn commits PrepareCommit and answers; C is
SIGKILLed; X resumes. The new coordinator (X or the third node) must commit the
transaction: a read_committed reader then sees its records, and DescribeTransactions says
CompleteCommit."""

from __future__ import annotations

import time

import pytest

from tests.cluster.conftest import cluster_factory  # noqa: F401  (the fixture, by PID)
from tests.kafka_wire import NONE, KafkaWire, Record, build_batch, parse_batches

pytestmark = pytest.mark.timeout(240)

CONFIG = "transaction_state_log_num_partitions = 2\noffsets_topic_num_partitions = 2\n"
FIND_COORDINATOR, INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, END_TXN, PRODUCE, FETCH = 10, 22, 24, 26, 0, 1
DESCRIBE_TRANSACTIONS = 65
TXN_ID, TOPIC = "failover-txn", "failover-out"
TRANSACTIONAL = 0x10


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


def _coordinator(cluster, via: int) -> int:
    def probe():
        with cluster.connect(via) as wire:
            r = wire.request(FIND_COORDINATOR, {"key": TXN_ID, "key_type": 1}, version=3)
            return r.node_id if r.error_code == NONE else None
    return _until("the transaction coordinator", probe)


def _leader(cluster, via: int, partition: int) -> int:
    def probe():
        md = cluster.metadata(via, [TOPIC])
        (t,) = md.topics
        (p,) = [p for p in t.partitions if p.partition_index == partition]
        return p.leader_id if p.leader_id > 0 else None
    return _until("a leader", probe)


def test_a_new_coordinator_writes_the_markers_of_a_prepared_transaction(cluster_factory):
    cluster = cluster_factory(3, config_text=CONFIG).start()
    with cluster.connect(1) as wire:
        assert wire.create_topics([TOPIC], partitions=3) == {TOPIC: 0}
    coordinator = _coordinator(cluster, 1)
    partition = next(p for p in range(3) if _leader(cluster, 1, p) != coordinator)
    leader = _leader(cluster, 1, partition)
    third = next(n for n in cluster.ids if n not in (coordinator, leader))

    with cluster.connect(coordinator) as wire:
        r = wire.request(INIT_PRODUCER_ID, {"transactional_id": TXN_ID, "transaction_timeout": 120000,
                                            "producer_id": -1, "producer_epoch": -1})
        assert r.error_code == NONE, r
        pid, epoch = r.producer_id, r.producer_epoch
        r = wire.request(ADD_PARTITIONS_TO_TXN, {
            "v3_and_below_transactional_id": TXN_ID, "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": [{"name": TOPIC, "partitions": [partition]}]},
            version=3)
        assert r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == NONE
    batch = build_batch([Record(None, b"v%d" % i) for i in range(5)], producer_id=pid, producer_epoch=epoch,
                        base_sequence=0, attributes=TRANSACTIONAL)
    with cluster.connect(leader) as wire:
        r = wire.request(PRODUCE, {"transactional_id": TXN_ID, "acks": -1, "timeout": 10000, "topic_data": [
            {"name": TOPIC, "partition_data": [{"index": partition, "records": batch}]}]}, version=9)
        assert r.responses[0].partition_responses[0].error_code == NONE, r

    cluster.pause(leader)  # the markers cannot land
    try:
        with cluster.connect(coordinator) as wire:
            r = wire.request(END_TXN, {"transactional_id": TXN_ID, "producer_id": pid, "producer_epoch": epoch,
                                       "committed": True}, version=3)
            assert r.error_code == NONE, r  # PrepareCommit is committed: the outcome is decided
            r = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [TXN_ID]}, version=0)
            assert r.transaction_states[0].transaction_state == "PrepareCommit"
        cluster.kill(coordinator)
    finally:
        cluster.resume(leader)

    new = _coordinator(cluster, third)
    assert new != coordinator

    def committed_values():
        owner = _leader(cluster, third, partition)
        with cluster.connect(owner) as wire:
            body = wire.fetch_request_body(TOPIC, partition, 0)
            body["isolation_level"] = 1
            p = wire.request(FETCH, body).responses[0].partitions[0]
            if p.error_code != NONE or p.last_stable_offset < 6:  # 5 records + the marker
                return None
            return [r.value for b in parse_batches(p.records or b"") for r in b.records
                    if not b.attributes & 0x20]
    assert _until("the commit marker", committed_values) == [b"v%d" % i for i in range(5)]

    def complete():
        with cluster.connect(new) as wire:
            r = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [TXN_ID]}, version=0)
            return r.transaction_states[0].transaction_state == "CompleteCommit"
    _until("CompleteCommit", complete)
    assert "resuming the markers of 1 prepared transaction" in cluster.log(new)
    cluster.restart(coordinator)
