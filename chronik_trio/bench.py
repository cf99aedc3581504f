"""`chronik-trio bench`: produce and consume throughput against any Kafka bootstrap address.

    chronik-trio bench --cluster 1 --records 1000000 --record-bytes 100
    chronik-trio bench --bootstrap 127.0.0.1:9092 --acks 1 --json out.json

With `--cluster 1` it starts its own node (a real `chronik-trio node` process on a free
loopback port with a temporary data directory) and stops it afterwards. The client is
confluent-kafka (librdkafka), installed with the `bench` or `test` extra. Every figure in
the report says how it was measured. Nothing here asserts a speed; it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

NODE_READY_TIMEOUT_S = 30.0
CONSUME_IDLE_TIMEOUT_S = 10.0  # stop consuming when nothing arrives for this long
PRODUCE_QUEUE_MESSAGES_MAX = 1_000_000  # librdkafka's local queue; a full queue is waited out


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure produce/consume throughput of a Kafka broker")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--bootstrap", help="HOST:PORT of any Kafka broker")
    target.add_argument("--cluster", type=int, choices=[1], default=None,
                        help="start a local chronik-trio node for the run (default when no --bootstrap)")
    p.add_argument("--records", type=int, default=500_000)
    p.add_argument("--record-bytes", type=int, default=100)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--acks", choices=["0", "1", "all"], default="all")
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--batch-bytes", type=int, default=1_000_000, help="librdkafka batch.size")
    p.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    p.add_argument("--repeat", type=int, default=3, help="runs; the report gives each and the median")
    p.add_argument("--json", type=pathlib.Path, help="also write the report as JSON here")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _local_node():
    """A real node process on loopback, stopped by PID at the end."""
    with tempfile.TemporaryDirectory(prefix="chronik-bench-") as tmp:
        port = _free_port()
        log_path = pathlib.Path(tmp) / "node.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "chronik_trio.cli", "node", "--listen",
                                     f"127.0.0.1:{port}", "--data-dir", f"{tmp}/data",
                                     "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + NODE_READY_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"the node exited: {log_path.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the node did not start listening") from None
                    time.sleep(0.05)
            yield f"127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _produce(bootstrap: str, topic: str, args) -> dict:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": args.acks,
                         "linger.ms": args.linger_ms, "batch.size": args.batch_bytes,
                         "compression.type": args.compression, "enable.idempotence": False,
                         "queue.buffering.max.messages": PRODUCE_QUEUE_MESSAGES_MAX})
    value = os.urandom(args.record_bytes)
    latencies_s: list[float] = []
    errors = [0]

    def delivered(err, msg) -> None:
        if err is not None:
            errors[0] += 1
        else:
            latencies_s.append(msg.latency())

    start = time.perf_counter()
    for i in range(args.records):
        while True:
            try:
                producer.produce(topic, value, partition=i % args.partitions, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.005)
        if i % 5000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    elapsed_s = time.perf_counter() - start
    latencies_s.sort()
    acked = len(latencies_s)
    return {"records": args.records, "acked": acked, "errors": errors[0], "unflushed": remaining,
            "elapsed_s": round(elapsed_s, 3),
            "records_per_s": round(acked / elapsed_s), "mb_per_s": round(acked * args.record_bytes / elapsed_s / 1e6, 1),
            "delivery_latency_ms": {k: round(_percentile(latencies_s, q) * 1000, 2)
                                    for k, q in (("p50", .5), ("p90", .9), ("p99", .99), ("max", 1.0))}}


def _consume(bootstrap: str, topic: str, args, expected: int) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chronik-bench",
                         "enable.auto.commit": False, "fetch.max.bytes": 50 << 20,
                         "max.partition.fetch.bytes": 10 << 20})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(args.partitions)])
    got = nbytes = 0
    start = last = time.perf_counter()
    while got < expected and time.perf_counter() - last < CONSUME_IDLE_TIMEOUT_S:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error() is None:
                got += 1
                nbytes += len(msg.value() or b"")
                last = time.perf_counter()
    elapsed_s = max(last - start, 1e-9)
    consumer.close()
    return {"records": got, "elapsed_s": round(elapsed_s, 3), "records_per_s": round(got / elapsed_s),
            "mb_per_s": round(nbytes / elapsed_s / 1e6, 1)}


def _one_run(bootstrap: str, args) -> dict:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(timeout=30)
    produced = _produce(bootstrap, topic, args)
    consumed = _consume(bootstrap, topic, args, produced["acked"])
    return {"topic": topic, "produce": produced, "consume": consumed}


def _method(args, target: str) -> str:
    return (f"confluent-kafka (librdkafka) producer, {args.records} records of {args.record_bytes} "
            f"bytes (random, compression {args.compression}) to {args.partitions} partitions "
            f"round-robin, acks={args.acks}, linger.ms={args.linger_ms}, batch.size={args.batch_bytes}, "
            f"idempotence off; throughput = acknowledged records / time from the first produce() to "
            f"flush() returning; delivery latency = librdkafka's per-message latency (produce() to "
            f"delivery report) at full speed, closed loop, so it includes client-side queueing. "
            f"Consume: one consumer, assign() from offset 0, until every acknowledged record is read. "
            f"Target: {target}; {args.repeat} run(s), median reported.")


def run(args: argparse.Namespace) -> int:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        print("chronik-trio bench needs confluent-kafka: pip install 'chronik-trio[bench]'", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if args.bootstrap:
            bootstrap, target = args.bootstrap, f"broker at {args.bootstrap}"
        else:
            bootstrap = stack.enter_context(_local_node())
            target = "a local single chronik-trio node started by the tool (fsync always)"
        runs = [_one_run(bootstrap, args) for _ in range(args.repeat)]
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "method": _method(args, target), "runs": runs,
              "median": {
                  "produce_records_per_s": statistics.median(r["produce"]["records_per_s"] for r in runs),
                  "produce_mb_per_s": statistics.median(r["produce"]["mb_per_s"] for r in runs),
                  "produce_latency_p50_ms": statistics.median(r["produce"]["delivery_latency_ms"]["p50"] for r in runs),
                  "produce_latency_p99_ms": statistics.median(r["produce"]["delivery_latency_ms"]["p99"] for r in runs),
                  "consume_records_per_s": statistics.median(r["consume"]["records_per_s"] for r in runs),
                  "consume_mb_per_s": statistics.median(r["consume"]["mb_per_s"] for r in runs)}}
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(r["produce"]["errors"] or r["produce"]["unflushed"] for r in runs)
    return 1 if failed else 0


def _print(report: dict) -> None:
    print(report["method"])
    print(f"{'run':>4} {'produce rec/s':>14} {'MB/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'consume rec/s':>14} {'MB/s':>7} {'errors':>7}")
    for i, r in enumerate(report["runs"], 1):
        p, c, lat = r["produce"], r["consume"], r["produce"]["delivery_latency_ms"]
        print(f"{i:>4} {p['records_per_s']:>14,} {p['mb_per_s']:>7} {lat['p50']:>8} {lat['p99']:>8} "
              f"{lat['max']:>8} {c['records_per_s']:>14,} {c['mb_per_s']:>7} {p['errors'] + p['unflushed']:>7}")
    m = report["median"]
    print(f"median: produce {m['produce_records_per_s']:,} rec/s {m['produce_mb_per_s']} MB/s "
          f"(p50 {m['produce_latency_p50_ms']} ms, p99 {m['produce_latency_p99_ms']} ms); "
          f"consume {m['consume_records_per_s']:,} rec/s {m['consume_mb_per_s']} MB/s")
