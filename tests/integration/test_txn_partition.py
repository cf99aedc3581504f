"""Transactions, the partition side, on a real node byte for byte (raw wire client): an open
transaction holds the last stable offset for read_committed Fetch and ListOffsets while
read_uncommitted sees everything; DescribeProducers shows the transaction's first offset;
what Kafka refuses is refused with its codes (a plain batch inside a transaction, a control
batch from a client, WriteTxnMarkers from a client); the open transaction survives a
SIGKILL and, through the partition snapshot, retention of the segment that held it.

Markers written by the coordinator, and real transactional clients, are in
tests/integration/test_txn_clients.py."""

from __future__ import annotations

import time

import pytest

from tests.kafka_wire import NONE, KafkaWire, Record, build_batch, parse_batches, random_topic

PRODUCE, FETCH, LIST_OFFSETS, CREATE_TOPICS, INIT_PRODUCER_ID = 0, 1, 2, 19, 22
WRITE_TXN_MARKERS, DESCRIBE_PRODUCERS = 27, 61
FIND_COORDINATOR, ADD_PARTITIONS_TO_TXN = 10, 24
INVALID_RECORD, INVALID_TXN_STATE, CLUSTER_AUTHORIZATION_FAILED = 87, 48, 31
TRANSACTIONAL = 0x10
TXN_ID = "txn-part-test"


def init_producer_id(conn: KafkaWire, topic: str) -> tuple[int, int]:
    """As a transactional client begins: find the coordinator (creating __transaction_state),
    InitProducerId, and add partition 0 of topic to the transaction (AddPartitionsToTxn)."""
    deadline = time.monotonic() + 30
    while True:
        r = conn.request(FIND_COORDINATOR, {"key": TXN_ID, "key_type": 1}, version=3)
        if r.error_code == NONE:
            r = conn.request(INIT_PRODUCER_ID, {"transactional_id": TXN_ID, "transaction_timeout": 60000,
                                                "producer_id": -1, "producer_epoch": -1})
            if r.error_code == NONE:
                break
        assert time.monotonic() < deadline, r
        time.sleep(0.1)
    pid, epoch = int(r.producer_id), int(r.producer_epoch)
    r = conn.request(ADD_PARTITIONS_TO_TXN, {
        "v3_and_below_transactional_id": TXN_ID, "v3_and_below_producer_id": pid,
        "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": [{"name": topic, "partitions": [0]}]},
        version=3)
    assert r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == NONE, r
    return pid, epoch


def produce(conn: KafkaWire, topic: str, batch: bytes, transactional_id: str | None = TXN_ID) -> tuple[int, int]:
    r = conn.request(PRODUCE, {"transactional_id": transactional_id, "acks": -1, "timeout": 10000,
                               "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]})
    (p,) = r.responses[0].partition_responses
    return int(p.error_code), int(p.base_offset)


def txn_batch(pid: int, epoch: int, seq: int, *values: bytes, ts: int | None = None) -> bytes:
    return build_batch([Record(None, v) for v in values], producer_id=pid, producer_epoch=epoch,
                       base_sequence=seq, attributes=TRANSACTIONAL, base_timestamp_ms=ts)


def fetch(conn: KafkaWire, topic: str, offset: int, isolation_level: int):
    body = conn.fetch_request_body(topic, 0, offset)
    body["isolation_level"] = isolation_level
    r = conn.request(FETCH, body)
    (p,) = r.responses[0].partitions
    assert p.error_code == NONE, p
    return p


def latest(conn: KafkaWire, topic: str, isolation_level: int) -> int:
    r = conn.request(LIST_OFFSETS, {"replica_id": -1, "isolation_level": isolation_level, "timeout": 10000,
                                    "topics": [{"name": topic, "partitions": [
                                        {"partition_index": 0, "timestamp": -1, "current_leader_epoch": -1}]}]})
    (p,) = r.topics[0].partitions
    assert p.error_code == NONE, p
    return int(p.offset)


def values(partition_data) -> list[bytes]:
    return [r.value for b in parse_batches(partition_data.records or b"") for r in b.records]


def wait_produced(conn: KafkaWire, topic: str, batch: bytes, **kw) -> tuple[int, int]:
    """Produce until the partition has a leader again (after a restart)."""
    deadline = time.monotonic() + 30
    while True:
        code, offset = produce(conn, topic, batch, **kw)
        if code == NONE or time.monotonic() > deadline:
            return code, offset
        time.sleep(0.1)


@pytest.mark.timeout(60)
def test_an_open_transaction_holds_the_last_stable_offset_for_read_committed(broker):
    topic = random_topic()
    with KafkaWire.connect(broker.port) as conn:
        conn.create_topics([topic])
        pid, epoch = init_producer_id(conn, topic)
        assert produce(conn, topic, build_batch([Record(None, b"plain")]), None) == (NONE, 0)
        assert produce(conn, topic, txn_batch(pid, epoch, 0, b"t0", b"t1")) == (NONE, 1)
        assert produce(conn, topic, txn_batch(pid, epoch, 2, b"t2")) == (NONE, 3)

        committed = fetch(conn, topic, 0, isolation_level=1)
        assert (committed.high_watermark, committed.last_stable_offset) == (4, 1)
        assert values(committed) == [b"plain"]
        assert list(committed.aborted_transactions) == []
        assert fetch(conn, topic, 1, isolation_level=1).records in (None, b"")
        uncommitted = fetch(conn, topic, 0, isolation_level=0)
        assert values(uncommitted) == [b"plain", b"t0", b"t1", b"t2"]
        assert (latest(conn, topic, 1), latest(conn, topic, 0)) == (1, 4)

        r = conn.request(DESCRIBE_PRODUCERS, {"topics": [{"name": topic, "partition_indexes": [0]}]}, version=0)
        (state,) = r.topics[0].partitions[0].active_producers
        assert (state.producer_id, state.current_txn_start_offset, state.last_sequence) == (pid, 1, 2)


@pytest.mark.timeout(60)
def test_what_kafka_refuses_in_a_transaction_is_refused_and_nothing_is_written(broker):
    topic = random_topic()
    with KafkaWire.connect(broker.port) as conn:
        conn.create_topics([topic])
        pid, epoch = init_producer_id(conn, topic)
        assert produce(conn, topic, txn_batch(pid, epoch, 0, b"t0")) == (NONE, 0)
        plain = build_batch([Record(None, b"x")], producer_id=pid, producer_epoch=epoch, base_sequence=1)
        assert produce(conn, topic, plain, None)[0] == INVALID_TXN_STATE  # plain write inside a transaction
        control = build_batch([Record(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00")], producer_id=pid,
                              producer_epoch=epoch, attributes=TRANSACTIONAL | 0x20)
        assert produce(conn, topic, control)[0] == INVALID_RECORD  # a forged commit marker
        no_pid = build_batch([Record(None, b"x")], attributes=TRANSACTIONAL)
        assert produce(conn, topic, no_pid)[0] == INVALID_RECORD
        assert produce(conn, topic, txn_batch(pid, epoch, 1, b"t1")) == (NONE, 1)
        assert values(fetch(conn, topic, 0, isolation_level=0)) == [b"t0", b"t1"]

        r = conn.request(WRITE_TXN_MARKERS, {"markers": [{
            "producer_id": pid, "producer_epoch": epoch, "transaction_result": True, "coordinator_epoch": 0,
            "topics": [{"name": topic, "partition_indexes": [0]}]}]}, version=1)
        assert r.markers[0].topics[0].partitions[0].error_code == CLUSTER_AUTHORIZATION_FAILED
        assert fetch(conn, topic, 0, isolation_level=1).last_stable_offset == 0  # still open
    assert "WriteTxnMarkers from a client refused" in broker.log_text()


@pytest.mark.timeout(120)
def test_an_open_transaction_survives_restart_and_retention_through_the_snapshot(broker_factory):
    broker = broker_factory(extra_args=["--segment-bytes", "4096", "--retention-check-interval-ms", "200"]).start()
    topic = random_topic()
    old = int(time.time() * 1000) - 3_600_000  # an hour ago: past retention.ms below
    with KafkaWire.connect(broker.port) as conn:
        r = conn.request(CREATE_TOPICS, {"topics": [{
            "name": topic, "num_partitions": 1, "replication_factor": -1, "assignments": [],
            "configs": [{"name": "retention.ms", "value": "60000"}]}], "timeout": 10000, "validate_only": False})
        assert r.topics[0].error_code == NONE
        pid, epoch = init_producer_id(conn, topic)
        assert produce(conn, topic, build_batch([Record(None, b"y" * 500)], base_timestamp_ms=old), None) == (NONE, 0)
        assert produce(conn, topic, txn_batch(pid, epoch, 0, b"t" * 500, ts=old)) == (NONE, 1)
        # Plain writes fill segments after it, so that retention deletes the segment that
        # holds the transaction's first batch: only the snapshot remembers it is open.
        for _ in range(40):
            assert produce(conn, topic, build_batch([Record(None, b"y" * 500)] * 2, base_timestamp_ms=old),
                           None)[0] == NONE
        deadline = time.monotonic() + 30
        while conn.list_offset(topic, 0, timestamp=-2)[1] <= 1:  # EARLIEST
            assert time.monotonic() < deadline, "retention did not delete the transaction's segment"
            time.sleep(0.2)
        assert latest(conn, topic, 1) == 1
    broker.kill()
    broker.start()
    with KafkaWire.connect(broker.port) as conn:
        assert wait_produced(conn, topic, build_batch([Record(None, b"after")]), transactional_id=None)[0] == NONE
        assert (latest(conn, topic, 1), latest(conn, topic, 0)) == (1, 83)
        plain = build_batch([Record(None, b"x")], producer_id=pid, producer_epoch=epoch, base_sequence=1)
        assert produce(conn, topic, plain, None)[0] == INVALID_TXN_STATE  # still in its transaction
