"""A bounded acks=all produce stream (confluent-kafka, retries on) during which a partition
leader is SIGKILLed; shared by test_failover.py and measure.py.

The failover time is measured from just before the SIGKILL to the first delivery report of
a record that the *new* leader wrote: one whose batch, in the final log, carries a
partitionLeaderEpoch (= Raft term) above the killed leader's. It includes the client's own
reaction (noticing the dead connection, refreshing metadata, retrying).
"""

from __future__ import annotations

import dataclasses
import threading
import time

from tests.replication.cluster import Cluster, PartitionInfo, records_by_offset, wait_replicas_equal

STREAM_RECORDS = 3000
STREAM_RATE_PER_S = 1000  # paced, so the kill lands mid-stream and records keep coming after
KILL_AT_RECORD = 1000
FLUSH_TIMEOUT_S = 60.0


@dataclasses.dataclass
class StreamResult:
    topic: str
    victim: int
    partition: int          # the partition whose leader was killed
    old_epoch: int
    kill_t: float
    kill_wall_s: float        # time.time() at the kill, to compare with node log timestamps
    acked: dict[int, tuple[int, int, float]]  # record index -> (partition, offset, report time)
    errors: list[str]
    logs: dict[int, list] = dataclasses.field(default_factory=dict)  # partition -> batches

    def failover_s(self) -> float:
        """SIGKILL to the first acknowledged record written by the new leader."""
        newer = {o for b in self.logs[self.partition] if b.partition_leader_epoch > self.old_epoch
                 for o in range(b.base_offset, b.last_offset + 1)}
        times = [t for p, o, t in self.acked.values() if p == self.partition and o in newer]
        assert times, f"no acknowledged record on {self.topic}-{self.partition} was written after epoch {self.old_epoch}"
        return min(times) - self.kill_t


def key_of(i: int) -> bytes:
    return f"rec-{i:06d}".encode()


def produce_killing_leader(cluster: Cluster, topic: str, partitions: int,
                           leaders: dict[int, PartitionInfo], partition: int = 0) -> StreamResult:
    """Produce STREAM_RECORDS round-robin over the partitions; SIGKILL partition's leader
    after KILL_AT_RECORD of them; flush. The killed node is left down."""
    from confluent_kafka import Producer

    victim, old_epoch = leaders[partition].leader, leaders[partition].epoch
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                         "acks": "all", "linger.ms": 5, "enable.idempotence": False,
                         "message.timeout.ms": int(FLUSH_TIMEOUT_S * 1000),
                         "request.timeout.ms": 10_000})
    result = StreamResult(topic, victim, partition, old_epoch, 0.0, 0.0, {}, [])

    def report(i, err, msg):
        if err is not None:
            result.errors.append(f"record {i}: {err}")
        else:
            result.acked[i] = (msg.partition(), msg.offset(), time.monotonic())

    start = time.monotonic()
    for i in range(STREAM_RECORDS):
        if i == KILL_AT_RECORD:
            result.kill_wall_s = time.time()
            result.kill_t = cluster.kill(victim)
        target = start + i / STREAM_RATE_PER_S
        for _ in range(1000):  # bounded pacing
            now = time.monotonic()
            if now >= target:
                break
            producer.poll(min(target - now, 0.005))
        producer.produce(topic, value=b"value-%d" % i, key=key_of(i), partition=i % partitions,
                         on_delivery=lambda err, msg, i=i: report(i, err, msg))
        producer.poll(0)
    left = producer.flush(FLUSH_TIMEOUT_S)
    assert left == 0, f"{left} records undelivered after {FLUSH_TIMEOUT_S} s; errors {result.errors[:3]}"
    return result


def check_acknowledged_present(cluster: Cluster, result: StreamResult, partitions: int) -> int:
    """After the killed node is back: every replica holds identical logs, and every
    acknowledged record is at the offset it was told. Returns how many acknowledged records
    also appear at a second offset (a retry of a batch that had in fact been committed;
    allowed for a producer without idempotence, and counted for the report)."""
    result.logs, duplicates = check_acked_on_every_replica(cluster, result.topic, partitions, result.acked)
    return duplicates


def check_acked_on_every_replica(cluster: Cluster, topic: str, partitions: int,
                                 acked: dict[int, tuple[int, int, float]]) -> tuple[dict[int, list], int]:
    """Every replica's log identical, every acknowledged record i (key_of(i)) at the offset
    it was told; returns (the logs, how many acknowledged records appear twice)."""
    at_least: dict[int, int] = {}
    for p, o, _ in acked.values():
        at_least[p] = max(at_least.get(p, 0), o + 1)
    logs = wait_replicas_equal(cluster, topic, partitions, at_least=at_least, timeout_s=60)
    stored = {p: {o: (k, v) for o, k, v, _ in records_by_offset(b)} for p, b in logs.items()}
    for i, (p, o, _) in acked.items():
        assert stored[p].get(o) == (key_of(i), b"value-%d" % i), (
            f"{topic}-{p}: acknowledged record {i} (told offset {o}) is not there: {stored[p].get(o)}")
    copies: dict[bytes, int] = {}
    for recs in stored.values():
        for k, _ in recs.values():
            copies[k] = copies.get(k, 0) + 1
    return logs, sum(1 for i in acked if copies.get(key_of(i), 0) > 1)


class RetryingProducer:
    """confluent-kafka, acks=all, retries on (librdkafka defaults): produce key_of(i) /
    value-i records and remember what each was told."""

    def __init__(self, cluster: Cluster, topic: str) -> None:
        from confluent_kafka import Producer
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                                  "acks": "all", "linger.ms": 5, "enable.idempotence": False,
                                  "message.timeout.ms": int(FLUSH_TIMEOUT_S * 1000)})
        self.acked: dict[int, tuple[int, int, float]] = {}
        self.errors: list[str] = []

    def produce(self, indexes: range, partitions: int = 1) -> None:
        """Produce and flush; every record must be acknowledged."""
        def report(i, err, msg):
            if err is not None:
                self.errors.append(f"record {i}: {err}")
            else:
                self.acked[i] = (msg.partition(), msg.offset(), time.monotonic())
        for i in indexes:
            self.producer.produce(self.topic, value=b"value-%d" % i, key=key_of(i), partition=i % partitions,
                                  on_delivery=lambda err, msg, i=i: report(i, err, msg))
            self.producer.poll(0)
        left = self.producer.flush(FLUSH_TIMEOUT_S)
        assert left == 0 and not self.errors, f"{left} undelivered; errors {self.errors[:3]}"
        assert all(i in self.acked for i in indexes)


LOAD_RECORDS_MAX = 4000
LOAD_RATE_PER_S = 100
LOAD_S_MAX = 120.0


class PacedLoad:
    """Produce key_of(i) records round-robin over `partitions` at LOAD_RATE_PER_S from a
    thread, at most LOAD_RECORDS_MAX of them or LOAD_S_MAX seconds, until stop()."""

    def __init__(self, cluster: Cluster, topic: str, partitions: int) -> None:
        self.producer = RetryingProducer(cluster, topic)
        self.partitions = partitions
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "PacedLoad":
        self._thread.start()
        return self

    def _run(self) -> None:
        p, start = self.producer, time.monotonic()
        for i in range(LOAD_RECORDS_MAX):
            if self._stop.is_set() or time.monotonic() - start > LOAD_S_MAX:
                break
            p.producer.produce(p.topic, value=b"value-%d" % i, key=key_of(i), partition=i % self.partitions,
                               on_delivery=lambda err, msg, i=i: self._report(i, err, msg))
            self.sent = i + 1
            p.producer.poll(1 / LOAD_RATE_PER_S)

    def _report(self, i, err, msg) -> None:
        if err is not None:
            self.producer.errors.append(f"record {i}: {err}")
        else:
            self.producer.acked[i] = (msg.partition(), msg.offset(), time.monotonic())

    def stop(self) -> dict[int, tuple[int, int, float]]:
        self._stop.set()
        self._thread.join(timeout=30)
        left = self.producer.producer.flush(60)
        assert left == 0, f"{left} records undelivered; errors {self.producer.errors[:3]}"
        return self.producer.acked
