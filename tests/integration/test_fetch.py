"""Fetch limits across partitions, epochs, out-of-range offsets; producer ids across restarts."""

import threading
import time

import pytest

from tests.brokers import fetch_session_counters
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


def _session_fetch(conn, session_id, epoch, parts, forgotten=(), *, topic, version=12, max_bytes=1 << 20):
    """A Fetch at version (v12: topics by name); parts {partition: offset}; forgotten [partition]."""
    body = {"max_wait": 0, "min_bytes": 0, "max_bytes": max_bytes, "isolation_level": 0,
            "session_id": session_id, "session_epoch": epoch,
            "topics": [{"topic": topic, "partitions": [
                {"partition": p, "fetch_offset": o, "partition_max_bytes": 1 << 20} for p, o in parts.items()]}]
            if parts else [],
            "forgotten_topics_data": [{"topic": topic, "partitions": list(forgotten)}] if forgotten else []}
    r = conn.request(FETCH, body, version)
    return r, {p.partition_index: p for t in r.responses for p in t.partitions}


def test_fetch_sessions_answer_only_what_changed_and_refuse_bad_sessions(broker):
    """KIP-227 over the wire: a full fetch opens a session, incremental ones name only changes
    and are answered only with partitions that have news; bad ids, epochs and partitions get
    Kafka's codes and the node keeps serving."""
    with KafkaWire.connect(broker.port) as conn:
        topic = random_topic()
        assert conn.create_topics([topic], partitions=4) == {topic: 0}
        _fill(conn, topic, 4, 2)
        end = 2 * BATCH_RECORDS
        r, parts = _session_fetch(conn, 0, 0, {p: 0 for p in range(4)}, topic=topic)
        sid = r.session_id
        assert r.error_code == 0 and sid != 0 and sorted(parts) == [0, 1, 2, 3]
        assert all(len(parse_batches(parts[p].records)) == 2 for p in range(4))

        # Every partition read to its end: nothing new, so nothing in the answer.
        r, parts = _session_fetch(conn, sid, 1, {p: end for p in range(4)}, topic=topic)
        assert (r.error_code, r.session_id, parts) == (0, sid, {})
        # New records on partition 2 only: the answer (to a request naming nothing) has just it.
        assert conn.produce(topic, 2, build_batch([Record(None, b"new")])).base_offset == end
        r, parts = _session_fetch(conn, sid, 2, {}, topic=topic)
        assert list(parts) == [2] and parts[2].high_watermark == end + 1
        assert [b.base_offset for b in parse_batches(parts[2].records)] == [end]

        # A partition that does not exist joins the session with its error; the rest is served.
        r, parts = _session_fetch(conn, sid, 3, {2: end + 1, 9: 0}, topic=topic)
        assert r.error_code == 0 and list(parts) == [9] and parts[9].error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
        r, parts = _session_fetch(conn, sid, 4, {}, [9], topic=topic)  # forgotten: no more error
        assert (r.error_code, parts) == (0, {})

        # Bad input: unknown id (70), wrong epoch (71), a by-name session used by id (106).
        assert _session_fetch(conn, sid + 1 if sid < 2**31 - 1 else 1, 1, {}, topic=topic)[0].error_code == 70
        assert _session_fetch(conn, sid, 9, {}, topic=topic)[0].error_code == 71
        assert _session_fetch(conn, sid, 4, {}, topic=topic)[0].error_code == 71  # an epoch already used
        by_id = conn.request(FETCH, {"max_wait": 0, "min_bytes": 0, "session_id": sid, "session_epoch": 5,
                                     "topics": [], "forgotten_topics_data": []}, 13)
        assert (by_id.error_code, by_id.session_id, by_id.responses) == (106, 0, ())
        r, parts = _session_fetch(conn, sid, 5, {0: 0}, topic=topic)  # the session survived all of them
        assert r.error_code == 0 and list(parts) == [0]

        # Epoch -1 closes it: answered as a full fetch without a session, then the id is gone.
        r, parts = _session_fetch(conn, sid, -1, {1: 0}, topic=topic)
        assert (r.error_code, r.session_id, list(parts)) == (0, 0, [1])
        assert _session_fetch(conn, sid, 6, {}, topic=topic)[0].error_code == 70
    counters = fetch_session_counters(broker)
    assert counters["fetch_sessions_created"] == 1 and counters["fetch_sessions_closed"] == 1
    assert counters["fetch_incremental"] == 5 and counters["fetch_session_errors"] == 5
    assert counters["fetch_partitions_left_out"] >= 4 + 3 + 3 and counters["fetch_sessions"] == 0


def _wait_counter(broker, name: str, value: float, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while fetch_session_counters(broker)[name] != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}: {fetch_session_counters(broker)}"
        time.sleep(0.05)


def test_a_fetch_is_answered_at_once_when_any_partition_has_data_and_parks_only_when_none_has(broker):
    """Long poll (max_wait, min_bytes 1) over three partitions: data on one of them is answered
    without waiting (the node's parked-fetch counter does not move) with every byte counted;
    with none, the fetch parks (counted once) and is answered by the first record produced."""
    topic = random_topic()
    long_poll = {"max_wait": 30_000, "min_bytes": 1, "max_bytes": 50 << 20, "isolation_level": 0,
                 "session_id": 0, "session_epoch": -1, "forgotten_topics_data": []}

    def body(offsets):
        return {**long_poll, "topics": [{"topic": topic, "partitions": [
            {"partition": p, "fetch_offset": o, "partition_max_bytes": 10 << 20} for p, o in offsets.items()]}]}

    with KafkaWire.connect(broker.port) as conn:
        assert conn.create_topics([topic], partitions=3) == {topic: 0}
        _fill(conn, topic, 1, 2)  # partition 0 only
        before = fetch_session_counters(broker)
        r = conn.request(FETCH, body({0: 0, 1: 0, 2: 0}))
        parts = {p.partition_index: p for t in r.responses for p in t.partitions}
        assert len(parse_batches(parts[0].records)) == 2 and not parts[1].records and not parts[2].records
        after = fetch_session_counters(broker)
        assert after["fetch_parked"] == before["fetch_parked"]
        assert after["fetch_record_bytes"] - before["fetch_record_bytes"] == len(parts[0].records)

        answer = {}

        def parked_fetch():
            with KafkaWire.connect(broker.port) as other:
                answer["r"] = other.request(FETCH, body({1: 0, 2: 0}))

        waiter = threading.Thread(target=parked_fetch, daemon=True)
        waiter.start()
        _wait_counter(broker, "fetch_parked", before["fetch_parked"] + 1)
        assert conn.produce(topic, 2, build_batch([Record(None, b"wake")])).base_offset == 0
        waiter.join(40)
        assert not waiter.is_alive()
        parts = {p.partition_index: p for t in answer["r"].responses for p in t.partitions}
        assert [b.base_offset for b in parse_batches(parts[2].records)] == [0] and not parts[1].records
        assert fetch_session_counters(broker)["fetch_parked"] == before["fetch_parked"] + 1
