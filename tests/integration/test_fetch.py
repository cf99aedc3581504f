"""Fetch limits across partitions, epochs, out-of-range offsets; producer ids across restarts."""

import pytest

from tests.kafka_wire import FETCH, KafkaWire, Record, build_batch, parse_batches, random_topic

pytestmark = pytest.mark.timeout(60)

INIT_PRODUCER_ID = 22
BATCH_RECORDS = 10


def _fill(conn, topic, partitions, batches_each, value_bytes=1000):
    for p in range(partitions):
        for b in range(batches_each):
            batch = build_batch([Record(None, bytes([b]) * value_bytes)] * BATCH_RECORDS)
            r = conn.produce(topic, p, batch)
            assert r.error_code == 0 and r.base_offset == b * BATCH_RECORDS


def _fetch(conn, topic, offsets, *, max_bytes, partition_max_bytes, epoch=-1):
    body = {"max_wait": 0, "min_bytes": 0, "max_bytes": max_bytes, "isolation_level": 0,
            "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [],
            "topics": [{"topic": topic, "partitions": [
                {"partition": p, "fetch_offset": o, "partition_max_bytes": partition_max_bytes,
                 "current_leader_epoch": epoch} for p, o in offsets.items()]}]}
    r = conn.request(FETCH, body)
    return {p.partition_index: p for t in r.responses for p in t.partitions}


def test_partition_and_response_byte_limits_return_whole_batches(broker):
    with KafkaWire.connect(broker.port) as conn:
        topic = random_topic()
        assert conn.create_topics([topic], partitions=3) == {topic: 0}
        _fill(conn, topic, 3, 5)
        batch_bytes = len(parse_batches(conn.fetch(topic, 0, 0, partition_max_bytes=1).records)[0].raw)
        assert batch_bytes > 10 * 1000

        # A partition limit smaller than one batch still gives that one whole batch (KIP-74).
        parts = _fetch(conn, topic, {0: 0, 1: 0, 2: 0}, max_bytes=50 << 20, partition_max_bytes=1)
        assert [len(parse_batches(parts[p].records)) for p in range(3)] == [1, 1, 1]

        # Room for two batches per partition.
        parts = _fetch(conn, topic, {0: 0, 1: 0, 2: 0}, max_bytes=50 << 20,
                       partition_max_bytes=2 * batch_bytes)
        assert [len(parse_batches(parts[p].records)) for p in range(3)] == [2, 2, 2]

        # The response limit is shared: after it is used up, later partitions get nothing.
        parts = _fetch(conn, topic, {0: 0, 1: 0, 2: 0}, max_bytes=3 * batch_bytes,
                       partition_max_bytes=10 << 20)
        counts = [len(parse_batches(parts[p].records or b"")) for p in range(3)]
        assert counts == [3, 0, 0]
        assert all(parts[p].high_watermark == 5 * BATCH_RECORDS for p in range(3))

        # A fetch from the middle of a batch returns that whole batch.
        parts = _fetch(conn, topic, {1: 13}, max_bytes=50 << 20, partition_max_bytes=batch_bytes)
        (batch,) = parse_batches(parts[1].records)
        assert batch.base_offset == 10


def test_out_of_range_and_leader_epoch_checks(broker):
    with KafkaWire.connect(broker.port) as conn:
        topic = random_topic()
        assert conn.create_topics([topic]) == {topic: 0}
        _fill(conn, topic, 1, 2)
        big = dict(max_bytes=1 << 20, partition_max_bytes=1 << 20)
        assert _fetch(conn, topic, {0: 21}, **big)[0].error_code == 1  # OFFSET_OUT_OF_RANGE
        at_end = _fetch(conn, topic, {0: 20}, **big)[0]
        assert at_end.error_code == 0 and not at_end.records
        assert _fetch(conn, topic, {0: 0}, epoch=1, **big)[0].error_code == 0
        assert _fetch(conn, topic, {0: 0}, epoch=0, **big)[0].error_code == 74  # FENCED_LEADER_EPOCH
        assert _fetch(conn, topic, {0: 0}, epoch=2, **big)[0].error_code == 75  # UNKNOWN_LEADER_EPOCH


def test_producer_ids_are_unique_and_never_reused_after_a_restart(broker):
    def init_ids(n):
        with KafkaWire.connect(broker.port) as conn:
            out = []
            for _ in range(n):
                r = conn.request(INIT_PRODUCER_ID, {"transactional_id": None, "transaction_timeout": 60000,
                                                    "producer_id": -1, "producer_epoch": -1})
                assert r.error_code == 0 and r.producer_epoch == 0
                out.append(r.producer_id)
            return out

    first = init_ids(5)
    assert len(set(first)) == 5
    broker.restart()
    second = init_ids(5)
    assert len(set(second)) == 5 and min(second) > max(first)
    broker.kill()
    broker.start()
    third = init_ids(3)
    assert min(third) > max(second)
