"""Measure moving one partition with a large log (docs/bench.md, issue 17): the time a new
replica takes to catch up (MB/s) with and without leader.replication.throttled.rate, and the
produce latency on that partition meanwhile.

    .venv/bin/python -m tests.replication.measure_move [--mb 100] [--throttle-mb 5]

A 3-node cluster of real processes in a temporary directory; a replication-factor-1 topic is
filled with 10 KiB records (confluent-kafka, acks=1), then a paced acks=all producer runs (50
records/s, 1 KiB) while the partition gains a replica on a second node (unthrottled), and
then moves that replica to the third node with the throttle set. Prints one JSON object.
Not a test: no assertion on the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import threading
import time

from tests.brokers import CHRONIK_TRIO
from tests.replication.cluster import Cluster, wait_for

TOPIC = "move-bench"
FILL_RECORD_BYTES = 10 * 1024
PACED_PER_S = 50
MOVE_TIMEOUT_S = 1800


def _fill(cluster: Cluster, megabytes: int) -> None:
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4", "acks": 1,
                         "linger.ms": 20, "batch.size": 1 << 20, "enable.idempotence": False})
    value = os.urandom(FILL_RECORD_BYTES)
    for _ in range(megabytes * 1024 * 1024 // FILL_RECORD_BYTES):
        while True:
            try:
                producer.produce(TOPIC, value=value, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0


class Paced:
    """acks=all, PACED_PER_S records/s; latency of each acknowledged record."""

    def __init__(self, cluster: Cluster) -> None:
        from confluent_kafka import Producer
        self.producer = Producer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                                  "acks": "all", "linger.ms": 0})
        self.latencies: list[tuple[float, float]] = []  # (sent at, seconds)
        self.errors = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)  # never outlives a failed run
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()

            def done(err, msg, sent=sent):
                if err is None:
                    self.latencies.append((sent, time.monotonic() - sent))
                else:
                    self.errors += 1
            self.producer.produce(TOPIC, value=b"x" * 1024, partition=0, on_delivery=done)
            self.producer.poll(1 / PACED_PER_S)
        self.producer.flush(30)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)

    def p99_ms(self, start: float, end: float) -> float | None:
        window = sorted(s for t, s in self.latencies if start <= t <= end)
        return round(1000 * window[int(0.99 * (len(window) - 1))], 1) if window else None

    def p50_ms(self, start: float, end: float) -> float | None:
        window = [s for t, s in self.latencies if start <= t <= end]
        return round(1000 * statistics.median(window), 1) if window else None


def _admin(cluster: Cluster, *args: str, timeout_s: float = 60) -> None:
    subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", cluster.bootstrap(), *args], check=True,
                   capture_output=True, timeout=timeout_s)


def _move(cluster: Cluster, replicas: list[int], paced: Paced, megabytes: int) -> dict:
    started = time.monotonic()
    _admin(cluster, "reassign", TOPIC, "0", ",".join(map(str, replicas)), "--wait", "--wait-timeout",
           str(MOVE_TIMEOUT_S), timeout_s=MOVE_TIMEOUT_S + 60)
    took = time.monotonic() - started
    return {"replicas": replicas, "seconds": round(took, 1), "catch_up_mb_per_s": round(megabytes / took, 1),
            "produce_p50_ms": paced.p50_ms(started, started + took),
            "produce_p99_ms": paced.p99_ms(started, started + took)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--throttle-mb", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(pathlib.Path(root)).start()
        try:
            assert int(cluster.create_topic(1, TOPIC, 1, replication_factor=1).error_code) == 0
            home = wait_for("a leader", lambda: cluster.partitions(1, TOPIC)[0].leader, timeout_s=30)
            second, third = [n for n in cluster.ids if n != home]
            fill_started = time.monotonic()
            _fill(cluster, args.mb)
            fill_s = time.monotonic() - fill_started
            paced = Paced(cluster)
            time.sleep(5)
            before = (paced.p50_ms(0, time.monotonic()), paced.p99_ms(0, time.monotonic()))
            unthrottled = _move(cluster, [home, second], paced, args.mb)
            _admin(cluster, "config", "set", "--broker-default",
                   f"leader.replication.throttled.rate={int(args.throttle_mb * 1024 * 1024)}")
            throttled = _move(cluster, [home, third], paced, args.mb)
            paced.stop()
            print(json.dumps({"log_mb": args.mb, "fill_mb_per_s": round(args.mb / fill_s, 1),
                              "before_move": {"produce_p50_ms": before[0], "produce_p99_ms": before[1]},
                              "unthrottled": unthrottled, "throttle_mb_per_s": args.throttle_mb,
                              "throttled": throttled, "paced_errors": paced.errors,
                              "loadavg": open("/proc/loadavg").read().split()[:3]}))
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
