"""Idempotent producers across failovers (issue 7), on the shared 3-node cluster.

librdkafka (enable.idempotence=true) and kafka-python (idempotent by default) each produce
RECORDS records, max 5 requests in flight, to one RF=3 partition, paced so that the faults
land mid-stream: the partition's leader is SIGKILLed, later a follower is paused
(SIGSTOP/SIGCONT), later the leader is SIGKILLed again. Afterwards every replica holds the
same log, and in it each producer's records appear exactly once, in the order it sent
them, with no gap, each at the offset its producer was told. Retries during the failovers
are exactly when a broker without sequence checks writes duplicates (the same stream
without idempotence writes hundreds: test_failover.py prints them)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.replication.cluster import NONE, Cluster, records_by_offset, wait_balanced, wait_for, \
    wait_replicas_equal

RECORDS = 50_000
RATE_PER_S = 2_500  # per producer: about 20 s of producing, the faults in the middle
PAUSE_S = 3.0
DELIVERY_TIMEOUT_S = 120.0


class Stream:
    """One producer's paced stream; value = f"{name}-{i:06d}"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.acked: dict[int, int] = {}  # i -> offset told
        self.errors: list[str] = []
        self.sent = 0
        self.lock = threading.Lock()

    def value(self, i: int) -> bytes:
        return f"{self.name}-{i:06d}".encode()

    def ack(self, i: int, offset: int | None, error: object | None) -> None:
        with self.lock:
            if error is not None:
                self.errors.append(f"record {i}: {error}")
            else:
                self.acked[i] = offset

    def pace(self, start: float, i: int) -> None:
        delay = start + i / RATE_PER_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def run_librdkafka(cluster: Cluster, topic: str, stream: Stream) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                         "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "max.in.flight.requests.per.connection": 5,
                         "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000)})
    start = time.monotonic()
    for i in range(RECORDS):
        stream.pace(start, i)
        producer.produce(topic, value=stream.value(i), partition=0,
                         on_delivery=lambda err, msg, i=i: stream.ack(i, msg.offset(), err))
        producer.poll(0)
        stream.sent = i + 1
    left = producer.flush(DELIVERY_TIMEOUT_S)
    if left:
        stream.errors.append(f"{left} records undelivered after {DELIVERY_TIMEOUT_S} s")


def run_kafka_python(cluster: Cluster, topic: str, stream: Stream) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap().split(","), linger_ms=5,
                             max_in_flight_requests_per_connection=5,
                             delivery_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000), request_timeout_ms=10_000)
    assert producer.config["enable_idempotence"], "kafka-python is idempotent by default"
    try:
        start = time.monotonic()
        for i in range(RECORDS):
            stream.pace(start, i)
            future = producer.send(topic, value=stream.value(i), partition=0)
            future.add_callback(lambda md, i=i: stream.ack(i, md.offset, None))
            future.add_errback(lambda exc, i=i: stream.ack(i, None, exc))
            stream.sent = i + 1
        producer.flush(timeout=DELIVERY_TIMEOUT_S)
    finally:
        producer.close(timeout=10)


def _leader(cluster: Cluster, topic: str) -> int:
    def known():
        for n in cluster.running():
            info = cluster.partitions(n, topic).get(0)
            if info is not None and info.leader > 0 and info.leader in cluster.running():
                return info
        return None
    return wait_for(f"a live leader of {topic}-0", known, timeout_s=30).leader


@pytest.mark.timeout(240)
def test_every_record_once_in_order_through_two_leader_kills_and_a_paused_follower(cluster):
    topic = "idempotent-failover"
    assert cluster.create_topic(1, topic, 1).error_code == NONE
    wait_balanced(cluster, topic)
    streams = [Stream("rdkafka"), Stream("kafkapy")]
    runners = [threading.Thread(target=run, args=(cluster, topic, s), daemon=True)
               for run, s in zip((run_librdkafka, run_kafka_python), streams)]
    for t in runners:
        t.start()

    def at(fraction: float) -> None:
        wait_for(f"{fraction:.0%} of the records sent", lambda: min(s.sent for s in streams) >= RECORDS * fraction
                 or not all(t.is_alive() for t in runners), timeout_s=120, poll_s=0.05)

    faults = []
    at(0.2)
    victim = _leader(cluster, topic)
    cluster.kill(victim)
    faults.append(f"SIGKILL leader {victim}")
    at(0.35)
    cluster.restart(victim)
    leader = _leader(cluster, topic)
    follower = next(n for n in cluster.running() if n != leader)
    at(0.45)
    cluster.pause(follower)
    faults.append(f"SIGSTOP follower {follower} for {PAUSE_S} s")
    time.sleep(PAUSE_S)
    cluster.resume(follower)
    at(0.65)
    victim = _leader(cluster, topic)
    cluster.kill(victim)
    faults.append(f"SIGKILL leader {victim}")
    for t in runners:
        t.join(timeout=DELIVERY_TIMEOUT_S + 60)
        assert not t.is_alive(), "a producer did not finish"
    cluster.restart(victim)

    for s in streams:
        assert not s.errors, f"{s.name}: {s.errors[:3]}"
        assert len(s.acked) == RECORDS, f"{s.name}: {len(s.acked)} of {RECORDS} acknowledged"
    (batches,) = wait_replicas_equal(cluster, topic, 1, at_least={0: 2 * RECORDS}, timeout_s=60).values()
    stored = records_by_offset(batches)
    report = []
    for s in streams:
        mine = [(offset, value) for offset, _, value, _ in stored if value.startswith(s.name.encode() + b"-")]
        written = [int(value.rsplit(b"-", 1)[1]) for _, value in mine]
        duplicates = len(written) - len(set(written))
        report.append(f"{s.name}: {len(written)} records stored, {duplicates} duplicates")
        assert duplicates == 0, f"{s.name}: {duplicates} records written twice"
        assert written == list(range(RECORDS)), f"{s.name}: records out of order or missing"
        told = {s.value(i): offset for i, offset in s.acked.items()}
        wrong = [(value, offset, told[value]) for offset, value in mine if told[value] != offset]
        assert not wrong, f"{s.name}: records not at the offset acknowledged: {wrong[:3]}"
    print(f"{topic}: {'; '.join(faults)}; {'; '.join(report)}")


INIT_PRODUCER_ID = 22
REQUEST_TIMED_OUT = 7


@pytest.mark.timeout(120)
def test_a_retry_of_a_batch_still_in_flight_in_raft_is_not_written_again(cluster):
    """The leader cannot commit while both followers are paused: the first attempt times
    out with its entry proposed but not committed, and retries arrive meanwhile (and, after
    the followers wake, at whichever node leads then, which holds the entry only as part
    of the uncommitted tail its term commits). One copy is written, and the retry that
    succeeds is told its offset."""
    from tests.kafka_wire import Record, build_batch

    topic = "idempotent-in-flight"
    assert cluster.create_topic(1, topic, 1).error_code == NONE
    info = wait_balanced(cluster, topic)[0]
    leader, followers = info.leader, [n for n in info.replicas if n != info.leader]
    with cluster.connect(leader) as conn:
        r = conn.request(INIT_PRODUCER_ID, {"transactional_id": None, "transaction_timeout": 60000,
                                            "producer_id": -1, "producer_epoch": -1})
        pid = int(r.producer_id)

        def batch(seq):
            return build_batch([Record(None, b"seq-%d" % seq)], producer_id=pid, producer_epoch=0, base_sequence=seq)

        assert int(conn.produce(topic, 0, batch(0)).error_code) == NONE
        for n in followers:
            cluster.pause(n)
        try:
            answers = [int(conn.produce(topic, 0, batch(1), timeout_ms=300).error_code) for _ in range(3)]
        finally:
            for n in followers:
                cluster.resume(n)
    assert NONE not in answers, answers  # no quorum: nothing can have been acknowledged
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "the retry was never acknowledged"
        target = _leader(cluster, topic)
        try:
            with cluster.connect(target, timeout_s=5) as conn:
                p = conn.produce(topic, 0, batch(1), timeout_ms=3000)
        except OSError:
            continue
        if int(p.error_code) == NONE:
            break
        time.sleep(0.1)
    (batches,) = wait_replicas_equal(cluster, topic, 1, at_least={0: 2}, timeout_s=30).values()
    stored = [(offset, value) for offset, _, value, _ in records_by_offset(batches)]
    assert stored == [(0, b"seq-0"), (1, b"seq-1")], (stored, answers)
    assert int(p.base_offset) == 1
