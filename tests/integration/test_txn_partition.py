"""Transactions, the partition side, on a real node byte for byte (raw wire client, the
node's own coordinator): an open transaction holds the last stable offset for
read_committed Fetch and ListOffsets while read_uncommitted sees everything; the commit or
abort marker (EndTxn) releases it, as a control batch in Kafka's format, and an abort lands
in the aborted transactions of read_committed fetches; DescribeProducers shows the
transaction's first offset; what Kafka refuses is refused with its codes (a plain batch
inside a transaction, a control batch from a client, a partition not in the transaction,
WriteTxnMarkers from a client); the open transaction survives a SIGKILL and, through the
partition snapshot, retention of the segment that held it.

Real transactional clients on three nodes: tests/replication/test_txn_rf3.py."""

from __future__ import annotations

import time

import pytest

from tests.kafka_wire import NONE, KafkaWire, Record, build_batch, parse_batches, random_topic

PRODUCE, FETCH, LIST_OFFSETS, CREATE_TOPICS, INIT_PRODUCER_ID = 0, 1, 2, 19, 22
FIND_COORDINATOR, ADD_PARTITIONS_TO_TXN, END_TXN = 10, 24, 26
WRITE_TXN_MARKERS, DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS = 27, 61, 65
INVALID_RECORD, INVALID_TXN_STATE, CLUSTER_AUTHORIZATION_FAILED = 87, 48, 31
TRANSACTIONAL, CONTROL = 0x10, 0x20
TXN_ID = "txn-part-test"


def init_producer_id(conn: KafkaWire) -> tuple[int, int]:
    deadline = time.monotonic() + 30
    while True:  # FindCoordinator creates __transaction_state: COORDINATOR_NOT_AVAILABLE meanwhile
        found = conn.request(FIND_COORDINATOR, {"key": TXN_ID, "key_type": 1}, version=3)
        r = found if found.error_code != NONE else conn.request(INIT_PRODUCER_ID, {"transactional_id": TXN_ID, "transaction_timeout": 60000,
                                            "producer_id": -1, "producer_epoch": -1})
        if r.error_code == NONE or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.error_code == NONE, r
    return int(r.producer_id), int(r.producer_epoch)


def add_partition(conn: KafkaWire, topic: str, pid: int, epoch: int) -> None:
    r = conn.request(ADD_PARTITIONS_TO_TXN, {"v3_and_below_transactional_id": TXN_ID,
                                             "v3_and_below_producer_id": pid, "v3_and_below_producer_epoch": epoch,
                                             "v3_and_below_topics": [{"name": topic, "partitions": [0]}]},
                     version=3)
    assert r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == NONE, r


def end_txn(conn: KafkaWire, pid: int, epoch: int, commit: bool) -> None:
    """EndTxn, then until the transaction is complete: EndTxn is answered once its prepare
    record is durable, the markers follow (as with Kafka)."""
    r = conn.request(END_TXN, {"transactional_id": TXN_ID, "producer_id": pid, "producer_epoch": epoch,
                               "committed": commit}, version=3)
    assert r.error_code == NONE, r
    deadline = time.monotonic() + 30
    while True:
        (state,) = conn.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [TXN_ID]}, version=0).transaction_states
        if state.transaction_state == ("CompleteCommit" if commit else "CompleteAbort"):
            return
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def produce(conn: KafkaWire, topic: str, batch: bytes, transactional_id: str | None = TXN_ID, *,
            version: int = 11) -> tuple[int, int]:
    """Produce v11 by default: before KIP-890 part 2 (v12), where a partition is added to the
    transaction by the produce itself."""
    r = conn.request(PRODUCE, {"transactional_id": transactional_id, "acks": -1, "timeout": 10000,
                               "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]},
                     version=version)
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
    """The data records' values (control batches left out)."""
    return [r.value for b in parse_batches(partition_data.records or b"") if not b.attributes & CONTROL
            for r in b.records]


def controls(partition_data) -> list[tuple[int, int, int, bytes, bytes]]:
    """(offset, attributes, producer id, key, value) of each control batch."""
    return [(b.base_offset, b.attributes, b.producer_id, b.records[0].key, b.records[0].value)
            for b in parse_batches(partition_data.records or b"") if b.attributes & CONTROL]


def wait_produced(conn: KafkaWire, topic: str, batch: bytes, **kw) -> tuple[int, int]:
    """Produce until the partition has a leader again (after a restart)."""
    deadline = time.monotonic() + 30
    while True:
        code, offset = produce(conn, topic, batch, **kw)
        if code == NONE or time.monotonic() > deadline:
            return code, offset
        time.sleep(0.1)


@pytest.mark.timeout(60)
def test_an_open_transaction_holds_the_last_stable_offset_until_its_marker(broker):
    topic = random_topic()
    with KafkaWire.connect(broker.port) as conn:
        conn.create_topics([topic])
        pid, epoch = init_producer_id(conn)
        assert produce(conn, topic, build_batch([Record(None, b"plain")]), None) == (NONE, 0)
        add_partition(conn, topic, pid, epoch)
        assert produce(conn, topic, txn_batch(pid, epoch, 0, b"t0", b"t1")) == (NONE, 1)
        assert produce(conn, topic, txn_batch(pid, epoch, 2, b"t2")) == (NONE, 3)

        committed = fetch(conn, topic, 0, isolation_level=1)
        assert (committed.high_watermark, committed.last_stable_offset) == (4, 1)
        assert values(committed) == [b"plain"]
        assert list(committed.aborted_transactions) == []
        assert fetch(conn, topic, 1, isolation_level=1).records in (None, b"")
        assert values(fetch(conn, topic, 0, isolation_level=0)) == [b"plain", b"t0", b"t1", b"t2"]
        assert (latest(conn, topic, 1), latest(conn, topic, 0)) == (1, 4)
        r = conn.request(DESCRIBE_PRODUCERS, {"topics": [{"name": topic, "partition_indexes": [0]}]}, version=0)
        (state,) = r.topics[0].partitions[0].active_producers
        assert (state.producer_id, state.current_txn_start_offset, state.last_sequence) == (pid, 1, 2)

        end_txn(conn, pid, epoch, commit=True)  # the coordinator writes the commit marker at 4
        committed = fetch(conn, topic, 0, isolation_level=1)
        assert (committed.high_watermark, committed.last_stable_offset) == (5, 5)
        assert values(committed) == [b"plain", b"t0", b"t1", b"t2"]
        ((offset, attributes, marker_pid, key, value),) = controls(committed)
        assert (offset, attributes, marker_pid, key) == (4, 0x30, pid, b"\x00\x00\x00\x01")  # v0, COMMIT
        assert value[:2] == b"\x00\x00" and len(value) == 6  # v0, coordinator epoch
        r = conn.request(DESCRIBE_PRODUCERS, {"topics": [{"name": topic, "partition_indexes": [0]}]}, version=0)
        assert r.topics[0].partitions[0].active_producers[0].current_txn_start_offset == -1

        _, epoch = init_producer_id(conn)  # a new epoch: sequences start over
        add_partition(conn, topic, pid, epoch)
        assert produce(conn, topic, txn_batch(pid, epoch, 0, b"a0", b"a1")) == (NONE, 5)
        end_txn(conn, pid, epoch, commit=False)
        assert (latest(conn, topic, 1), latest(conn, topic, 0)) == (8, 8)
        read = fetch(conn, topic, 0, isolation_level=1)
        assert [(a.producer_id, a.first_offset) for a in read.aborted_transactions] == [(pid, 5)]
        assert controls(read)[-1][:4] == (7, 0x30, pid, b"\x00\x00\x00\x00")  # ABORT
        assert list(fetch(conn, topic, 8, isolation_level=1).aborted_transactions) == []


@pytest.mark.timeout(60)
def test_what_kafka_refuses_in_a_transaction_is_refused_and_nothing_is_written(broker):
    topic = random_topic()
    with KafkaWire.connect(broker.port) as conn:
        conn.create_topics([topic])
        pid, epoch = init_producer_id(conn)
        assert produce(conn, topic, txn_batch(pid, epoch, 0, b"t0"))[0] == INVALID_TXN_STATE  # not added
        add_partition(conn, topic, pid, epoch)
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
        pid, epoch = init_producer_id(conn)
        add_partition(conn, topic, pid, epoch)
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
        end_txn(conn, pid, epoch, commit=True)  # the marker after the restart releases it
        assert latest(conn, topic, 1) == latest(conn, topic, 0) == 84
