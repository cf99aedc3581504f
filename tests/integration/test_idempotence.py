"""Idempotent produce on a real node, byte for byte (raw wire client): a retried batch is
written once and answered with its original offsets; sequence gaps, fenced epochs and
transactional batches without a transactional id get Kafka's error codes; the producer state is rebuilt after a
SIGKILL and kept through retention (a snapshot carries it); DescribeProducers shows it."""

from __future__ import annotations

import time

import pytest

from tests.kafka_wire import NONE, KafkaWire, Record, build_batch, random_topic

INIT_PRODUCER_ID = 22
FIND_COORDINATOR = 10
COORDINATOR_NOT_READY = (14, 15, 16)  # COORDINATOR_LOAD_IN_PROGRESS, _NOT_AVAILABLE, NOT_COORDINATOR
DESCRIBE_PRODUCERS = 61
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


def init_producer_id(conn: KafkaWire) -> int:
    r = conn.request(INIT_PRODUCER_ID, {"transactional_id": None, "transaction_timeout": 60000,
                                        "producer_id": -1, "producer_epoch": -1})
    assert r.error_code == NONE
    return int(r.producer_id)


def idem(pid: int, seq: int, count: int = 1, *, epoch: int = 0, tag: str = "v", ts: int | None = None) -> bytes:
    return build_batch([Record(None, f"{tag}-{seq + i}".encode()) for i in range(count)],
                       producer_id=pid, producer_epoch=epoch, base_sequence=seq, base_timestamp_ms=ts)


def produce(conn, topic, batch) -> tuple[int, int]:
    r = conn.produce(topic, 0, batch)
    return int(r.error_code), int(r.base_offset)


def values(conn, topic) -> list[bytes]:
    return [r.value for b in conn.fetch_all(topic, 0) for r in b.records]


def describe(conn, topic) -> list:
    r = conn.request(DESCRIBE_PRODUCERS, {"topics": [{"name": topic, "partition_indexes": [0]}]}, version=0)
    (part,) = r.topics[0].partitions
    assert part.error_code == NONE
    return list(part.active_producers)


@pytest.mark.timeout(60)
def test_a_retry_is_answered_with_the_original_offsets_and_not_written_again(broker):
    topic = random_topic()
    with KafkaWire.connect(broker.port) as conn:
        conn.create_topics([topic])
        pid = init_producer_id(conn)
        assert produce(conn, topic, idem(pid, 0, 3)) == (NONE, 0)
        assert produce(conn, topic, idem(pid, 3, 2)) == (NONE, 3)
        assert produce(conn, topic, idem(pid, 0, 3)) == (NONE, 0)  # retry of an older one of the last five
        assert produce(conn, topic, idem(pid, 3, 2)) == (NONE, 3)  # retry of the last
        assert produce(conn, topic, idem(pid, 5, 1)) == (NONE, 5)
        assert values(conn, topic) == [f"v-{i}".encode() for i in range(6)]
        (state,) = describe(conn, topic)
        assert (state.producer_id, state.producer_epoch, state.last_sequence) == (pid, 0, 5)


@pytest.mark.timeout(60)
def test_gaps_fenced_epochs_and_transactional_batches_get_kafkas_codes(broker):
    topic = random_topic()
    with KafkaWire.connect(broker.port) as conn:
        conn.create_topics([topic])
        pid = init_producer_id(conn)
        assert produce(conn, topic, idem(pid, 0, 2, epoch=1)) == (NONE, 0)
        assert produce(conn, topic, idem(pid, 3, epoch=1))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER  # gap
        assert produce(conn, topic, idem(pid, 2, epoch=0))[0] == INVALID_PRODUCER_EPOCH  # older epoch
        assert produce(conn, topic, idem(pid, 5, epoch=2))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER  # new epoch not at 0
        txn = build_batch([Record(None, b"t")], producer_id=pid, producer_epoch=1, base_sequence=2,
                          attributes=0x10)
        assert produce(conn, topic, txn)[0] == TRANSACTIONAL_ID_AUTHORIZATION_FAILED  # no transactional id
        assert produce(conn, topic, idem(pid, 2, epoch=1)) == (NONE, 2)  # nothing refused was kept
        assert produce(conn, topic, idem(pid, 0, epoch=2)) == (NONE, 3)  # a bumped epoch starts at 0
        assert values(conn, topic) == [b"v-0", b"v-1", b"v-2", b"v-0"]


@pytest.mark.timeout(90)
def test_producer_state_is_rebuilt_from_the_log_after_sigkill(broker):
    topic = random_topic()
    with KafkaWire.connect(broker.port) as conn:
        conn.create_topics([topic])
        pid = init_producer_id(conn)
        for seq in range(0, 12, 2):
            assert produce(conn, topic, idem(pid, seq, 2)) == (NONE, seq)
    broker.kill()
    broker.start()
    with KafkaWire.connect(broker.port) as conn:
        for _ in range(100):  # the partition's leader is elected again after the restart
            code, offset = produce(conn, topic, idem(pid, 10, 2))
            if code == NONE:
                break
            time.sleep(0.1)
        assert (code, offset) == (NONE, 10)  # known: not written again
        assert produce(conn, topic, idem(pid, 13))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(conn, topic, idem(pid, 12)) == (NONE, 12)
        assert len(values(conn, topic)) == 13


@pytest.mark.timeout(120)
def test_producer_state_survives_retention_through_the_snapshot(broker_factory):
    broker = broker_factory(extra_args=["--segment-bytes", "4096", "--retention-check-interval-ms", "200"]).start()
    topic = random_topic()
    old = int(time.time() * 1000) - 3_600_000  # an hour ago: past retention.ms below
    with KafkaWire.connect(broker.port) as conn:
        r = conn.request(19, {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": -1,
                                          "assignments": [], "configs": [
                                              {"name": "retention.ms", "value": "60000"}]}],
                              "timeout": 10000, "validate_only": False})
        assert r.topics[0].error_code == NONE
        pid = init_producer_id(conn)
        seq = 0
        for _ in range(10):
            assert produce(conn, topic, idem(pid, seq, 5, tag="x" * 100, ts=old))[0] == NONE
            seq += 5
        # Other (not idempotent) writes fill segments after them, so that retention deletes
        # every segment holding this producer's batches: only the snapshot remembers it.
        for i in range(40):
            assert produce(conn, topic, build_batch([Record(None, b"y" * 500)] * 2, base_timestamp_ms=old))[0] == NONE
        deadline = time.monotonic() + 30
        while conn.list_offset(topic, 0, timestamp=-2)[1] <= seq:  # EARLIEST
            assert time.monotonic() < deadline, "retention did not delete the producer's segments"
            time.sleep(0.2)
    broker.kill()
    broker.start()
    with KafkaWire.connect(broker.port) as conn:
        for _ in range(100):
            code, _ = produce(conn, topic, idem(pid, seq + 1, ts=old))  # a gap: still known
            if code != NONE and code != OUT_OF_ORDER_SEQUENCE_NUMBER:
                time.sleep(0.1)
                continue
            break
        assert code == OUT_OF_ORDER_SEQUENCE_NUMBER, "producer state lost with the deleted segments"
        assert produce(conn, topic, idem(pid, seq - 5, 5, tag="x" * 100, ts=old)) == (NONE, seq - 5)  # a retry
        assert produce(conn, topic, idem(pid, seq, ts=old)) == (NONE, seq + 80)


@pytest.mark.timeout(60)
def test_init_producer_id_bumps_a_transactional_ids_epoch_and_fences_the_old_holder(broker):
    def init(conn, tid, pid=-1, epoch=-1, version=4):
        # The transaction coordinator answers (FindCoordinator creates __transaction_state;
        # COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS meanwhile).
        deadline = time.monotonic() + 30
        while True:
            conn.request(FIND_COORDINATOR, {"key": tid, "key_type": 1}, version=3)
            r = conn.request(INIT_PRODUCER_ID, {"transactional_id": tid, "transaction_timeout": 60000,
                                                "producer_id": pid, "producer_epoch": epoch}, version=version)
            if r.error_code not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                return int(r.error_code), int(r.producer_id), int(r.producer_epoch)
            time.sleep(0.1)

    with KafkaWire.connect(broker.port) as conn:
        tid = random_topic()
        code, pid, epoch = init(conn, tid)
        assert (code, epoch) == (NONE, 0)
        assert init(conn, tid) == (NONE, pid, 1)
        assert init(conn, tid, pid, 1) == (NONE, pid, 2)
        assert init(conn, tid, pid, 0)[0] == 90  # PRODUCER_FENCED
        assert init(conn, tid, pid, 0, version=3)[0] == INVALID_PRODUCER_EPOCH
        assert init_producer_id(conn) != pid  # idempotent producers get ids of their own
    broker.restart()
    with KafkaWire.connect(broker.port) as conn:
        for _ in range(100):  # __meta's leader is elected again
            result = init(conn, tid)
            if result[0] == NONE:
                break
            time.sleep(0.1)
        assert result == (NONE, pid, 3)  # durable through __meta
