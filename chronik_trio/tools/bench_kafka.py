"""For `chronik-trio bench`: the Kafka-client side, with confluent-kafka (librdkafka).

- `produce_parallel`: closed-loop throughput, `producers` processes each producing its share
  as fast as librdkafka accepts it;
- `produce_transactional`: the same closed loop from as many transactional producers, in
  transactions of `txn_records` records, with the time of each commit;
- `consume`: one consumer reading a topic from offset 0; `consume_franz_go` the same with
  franz-go (the repository's tests/go program, built with the go command), to tell the
  broker's read rate from the Python client's;
- `open_loop`: records sent on a fixed schedule (record i is due at t0 + i / rate, whatever
  the broker does), each record's latency counted from when it was *due*, so a stall shows
  up in every record scheduled during it (no coordinated omission); a consumer in another
  thread reads the same partitions from their end, for the end-to-end latency (due time ->
  consumed).
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import os
import pathlib
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import typing

CONSUME_IDLE_TIMEOUT_S = 10.0  # stop consuming when nothing arrives for this long
PRODUCE_QUEUE_MESSAGES_MAX = 1_000_000  # librdkafka's local queue; a full queue is waited out
FLUSH_TIMEOUT_S = 120.0
POLL_EVERY_RECORDS = 5000  # serve delivery callbacks at least this often while producing
OPEN_LOOP_POLL_MAX_S = 0.001  # the sender's schedule is kept to about this
E2E_DRAIN_S = 5.0  # after the last send, how long the e2e consumer may take to catch up
# The end-to-end consumer's fetch.wait.max.ms: Kafka's default. The broker parks a Fetch until
# a record is committed (or this passes), so a lone record is answered when it commits, not
# when the wait ends; a short wait (5 ms, before) made each node answer about 200 empty
# Fetches a second, which the latency mode's CPU figure counted as the node's own work.
E2E_FETCH_WAIT_MS = 500
_STAMP = struct.Struct(">Qd")  # record index, due time (time.time(), shared by both threads)


def percentiles_ms(values_s: list[float]) -> dict:
    values = sorted(values_s)

    def at(q: float) -> float | None:
        if not values:
            return None
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)

    return {"count": len(values), "p50": at(.5), "p90": at(.9), "p99": at(.99), "p99_9": at(.999),
            "max": at(1.0)}


def producer_config(bootstrap: str, args, **overrides) -> dict:
    config = {"bootstrap.servers": bootstrap, "acks": args.acks, "linger.ms": args.linger_ms,
              "batch.size": args.batch_bytes, "compression.type": args.compression,
              "enable.idempotence": False,
              "queue.buffering.max.messages": PRODUCE_QUEUE_MESSAGES_MAX}
    config.update(getattr(args, "client_config", None) or {})  # TLS / SASL settings
    config.update(overrides)
    return config


# --- closed-loop throughput -------------------------------------------------------------------

def _produce_share(bootstrap: str, topic: str, args, records: int, first: int,
                   seconds: float | None = None, ready=None) -> dict:
    """Produce `records` (or for `seconds`) round-robin from partition `first`; `ready`: a
    barrier the producers pass together once created, so that none starts early."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(bootstrap, args))
    if ready is not None:
        ready.wait(FLUSH_TIMEOUT_S)
    value = os.urandom(args.record_bytes)
    latencies_s: list[float] = []
    errors = [0]

    def delivered(err, msg) -> None:
        if err is not None:
            errors[0] += 1
        else:
            latencies_s.append(msg.latency())

    start_wall, start = time.time(), time.perf_counter()
    i = 0
    while (i < records) if seconds is None else (time.perf_counter() - start < seconds):
        try:
            producer.produce(topic, value, partition=(first + i) % args.partitions, on_delivery=delivered,
                             key=b"k%d" % (i % args.keys) if getattr(args, "keys", 0) else None)
            i += 1
        except BufferError:
            producer.poll(0.005)
        if i % POLL_EVERY_RECORDS == 0:
            producer.poll(0)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    elapsed_s = time.perf_counter() - start
    return {"records": i, "acked": len(latencies_s), "errors": errors[0], "unflushed": remaining,
            "start_wall": start_wall, "end_wall": start_wall + elapsed_s,
            "latency": percentiles_ms(latencies_s)}


def _share_in_child(queue, share, *a, ready=None) -> None:
    queue.put(share(*a, ready=ready))


def _run_shares(share: typing.Callable[..., dict], n: int, records: int, *a) -> list[dict]:
    """share(*a, records_k, k, ready=...) for k < n, each its share of `records`: in this
    process when n is 1, else in n processes (so that they do not share one interpreter
    lock) that start producing together (`ready`, a barrier: starting n interpreters takes
    seconds on a busy machine, which would otherwise count in the elapsed time)."""
    shares = [records // n + (1 if k < records % n else 0) for k in range(n)]
    if n == 1:
        return [share(*a, shares[0], 0)]
    ctx = multiprocessing.get_context("spawn")
    queue, ready = ctx.Queue(), ctx.Barrier(n)
    procs = [ctx.Process(target=_share_in_child, args=(queue, share, *a, shares[k], k), kwargs={"ready": ready})
             for k in range(n)]
    for p in procs:
        p.start()
    try:
        return [queue.get(timeout=FLUSH_TIMEOUT_S * 3) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=FLUSH_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join()


def _timed_share(bootstrap: str, topic: str, args, seconds: float | None, records: int, first: int,
                 ready=None) -> dict:
    return _produce_share(bootstrap, topic, args, records, first, seconds, ready)


def produce_parallel(bootstrap: str, topic: str, args, seconds: float | None = None) -> dict:
    """Closed-loop throughput of `args.producers` producers (processes when more than one, so
    that they do not share one interpreter lock)."""
    n = args.producers
    parts = _run_shares(_timed_share, n, args.records, bootstrap, topic, args, seconds)
    elapsed_s = max(p["end_wall"] for p in parts) - min(p["start_wall"] for p in parts)
    acked = sum(p["acked"] for p in parts)
    latency = parts[0]["latency"] if n == 1 else {
        k: max(p["latency"][k] or 0 for p in parts) for k in parts[0]["latency"]} | {"note": "worst producer"}
    return {"records": sum(p["records"] for p in parts), "acked": acked,
            "errors": sum(p["errors"] for p in parts), "unflushed": sum(p["unflushed"] for p in parts),
            "producers": n, "elapsed_s": round(elapsed_s, 3),
            "records_per_s": round(acked / elapsed_s), "mb_per_s": round(acked * args.record_bytes / elapsed_s / 1e6, 1),
            "delivery_latency_ms": latency}


# --- transactional throughput -------------------------------------------------------------------

def _txn_share(bootstrap: str, topic: str, args, records: int, first: int, ready=None) -> dict:
    """One transactional producer (its own transactional.id): `records` records round-robin
    from partition `first`, in transactions of `args.txn_records`, each committed. Per
    transaction: first ack = first produce() -> its first record acknowledged (librdkafka's
    AddPartitionsToTxn, which waits for the previous transaction's markers, then the
    Produce); flush = first produce() -> every record acknowledged; commit =
    commit_transaction() after the flush (EndTxn to its answer)."""
    import uuid

    from confluent_kafka import Producer

    producer = Producer(producer_config(bootstrap, args, **{
        "enable.idempotence": True, "acks": "all", "transactional.id": f"bench-{uuid.uuid4().hex[:8]}-{first}"}))
    producer.init_transactions(FLUSH_TIMEOUT_S)
    if ready is not None:
        ready.wait(FLUSH_TIMEOUT_S)
    value = os.urandom(args.record_bytes)
    errors = [0]
    first_ack = [0.0]

    def delivered(err, msg) -> None:
        if err is not None:
            errors[0] += 1
        elif not first_ack[0]:
            first_ack[0] = time.perf_counter()

    commits_s: list[float] = []
    flushes_s: list[float] = []
    first_acks_s: list[float] = []
    start_wall, start = time.time(), time.perf_counter()
    done = 0
    while done < records:
        producer.begin_transaction()
        n = min(args.txn_records, records - done)
        first_ack[0] = 0.0
        t0 = time.perf_counter()
        for i in range(first + done, first + done + n):
            while True:
                try:
                    producer.produce(topic, value, partition=i % args.partitions, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.005)
        producer.flush(FLUSH_TIMEOUT_S)
        t1 = time.perf_counter()
        producer.commit_transaction(FLUSH_TIMEOUT_S)
        commits_s.append(time.perf_counter() - t1)
        flushes_s.append(t1 - t0)
        if first_ack[0]:
            first_acks_s.append(first_ack[0] - t0)
        done += n
    elapsed_s = time.perf_counter() - start
    return {"records": done, "errors": errors[0], "start_wall": start_wall, "end_wall": start_wall + elapsed_s,
            "commits_s": commits_s, "flushes_s": flushes_s, "first_acks_s": first_acks_s}


def produce_transactional(bootstrap: str, topic: str, args) -> dict:
    """Closed loop, `args.producers` transactional producers (processes when more than one,
    as produce_parallel; each with its own transactional.id, as Kafka Streams runs one
    transactional producer per task), idempotence on as transactions require: `args.records`
    records shared out, round-robin over the partitions, in transactions of
    `args.txn_records`, each committed (_txn_share). Throughput = committed records / time
    from the first produce() to the last commit returning. EndTxn is answered once the
    PrepareCommit record is durable; the markers and the Complete record follow, and the next
    transaction's first AddPartitionsToTxn waits for them, as with Kafka (the nodes'
    chronik_txn_*_seconds histograms time each phase)."""
    n = args.producers
    parts = _run_shares(_txn_share, n, args.records, bootstrap, topic, args)
    elapsed_s = max(p["end_wall"] for p in parts) - min(p["start_wall"] for p in parts)
    done = sum(p["records"] for p in parts)

    def pooled(key: str) -> dict:
        return percentiles_ms([v for p in parts for v in p[key]])

    return {"records": done, "producers": n, "transactions": sum(len(p["commits_s"]) for p in parts),
            "txn_records": args.txn_records, "errors": sum(p["errors"] for p in parts), "unflushed": 0,
            "elapsed_s": round(elapsed_s, 3), "records_per_s": round(done / elapsed_s),
            "mb_per_s": round(done * args.record_bytes / elapsed_s / 1e6, 1),
            "commit_latency_ms": pooled("commits_s"), "flush_latency_ms": pooled("flushes_s"),
            "first_ack_latency_ms": pooled("first_acks_s")}


# --- consume ------------------------------------------------------------------------------------

# The bench consumer's librdkafka settings (`--consumer-config` overrides any). librdkafka
# stops fetching a partition once its local queue holds queued.max.messages.kbytes (64 MiB)
# or queued.min.messages, and then waits fetch.queue.backoff.ms before it looks again; at
# the default 1000 ms, a consumer whose brokers answer faster than the application drains
# the queue (three leaders of 10 MiB answers each) sits idle for most of that second after
# the queue is drained, every time it fills. 10 ms keeps the queue's bound and drops the
# idle second (docs/bench.md, issue 20).
CONSUMER_CONFIG = {"fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 10 << 20,
                   "fetch.queue.backoff.ms": 10}


def consumer_config_text(overrides: dict | None = None) -> str:
    """The bench consumer's settings, as the report states them."""
    return ", ".join(f"{k} {v}" for k, v in {**CONSUMER_CONFIG, **(overrides or {})}.items())


# librdkafka's debug line when a partition's fetch waits because the local queue is full
_QUEUE_FULL_BACKOFF = re.compile(r"Fetch backoff for (\d+)ms: Local: Queue full")


class _BackoffCounter(logging.Handler):
    """Counts librdkafka's queue-full fetch backoffs (with debug=fetch) and their milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.count = self.ms = 0

    def emit(self, record: logging.LogRecord) -> None:
        if m := _QUEUE_FULL_BACKOFF.search(record.getMessage()):
            self.count += 1
            self.ms += int(m.group(1))


def consume(bootstrap: str, topic: str, partitions: int, expected: int, client_config: dict | None = None,
            consumer_config: dict | None = None, count_backoffs: bool = False) -> dict:
    """client_config: TLS / SASL settings; consumer_config: librdkafka settings over CONSUMER_CONFIG.
    count_backoffs: with librdkafka's fetch debug log, count its queue-full fetch backoffs."""
    from confluent_kafka import Consumer, TopicPartition

    config = {**CONSUMER_CONFIG, **(consumer_config or {}), **(client_config or {}),
              "bootstrap.servers": bootstrap, "group.id": "chronik-bench", "enable.auto.commit": False}
    counter = None
    if count_backoffs:
        counter = _BackoffCounter()
        logger = logging.getLogger(f"chronik-bench-consumer-{id(counter)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(counter)
        config.update(debug="fetch", logger=logger)
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = nbytes = 0
    start = last = time.perf_counter()
    while got < expected and time.perf_counter() - last < CONSUME_IDLE_TIMEOUT_S:
        # Never more than are still due: consume(n, t) returns at n records or after t, so
        # asking for more than the rest would add up to t to the last batch's time.
        for msg in consumer.consume(min(10_000, expected - got), 1.0):
            if msg.error() is None:
                got += 1
                nbytes += len(msg.value() or b"")
                last = time.perf_counter()
    elapsed_s = max(last - start, 1e-9)
    consumer.close()
    out = {"client": "confluent-kafka", "records": got, "elapsed_s": round(elapsed_s, 3),
           "records_per_s": round(got / elapsed_s), "mb_per_s": round(nbytes / elapsed_s / 1e6, 1)}
    if counter is not None:
        out.update(queue_full_backoffs=counter.count, queue_full_backoff_ms=counter.ms)
    return out


# franz-go: tests/go's program, built on first use into a temporary directory (not the source
# tree); `go` fetches the modules pinned in tests/go/go.mod into its own cache the first time.
GO_DIR = pathlib.Path(__file__).resolve().parents[2] / "tests" / "go"
GO_BUILD_TIMEOUT_S = 600
FRANZ_READ_TIMEOUT_S = 300
_franz_binary: list[str] = []


def _franz_go() -> str:
    if not _franz_binary:
        go = shutil.which("go")
        if go is None or not (GO_DIR / "go.mod").exists():
            raise SystemExit("chronik-trio bench: the franz-go consumer needs `go` on PATH and the repository's tests/go")
        build_dir = tempfile.mkdtemp(prefix="chronik-bench-go-")
        atexit.register(shutil.rmtree, build_dir, True)
        out = pathlib.Path(build_dir) / "franz"
        proc = subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_DIR, capture_output=True, text=True,
                              env={**os.environ, "GOFLAGS": "-mod=mod"}, timeout=GO_BUILD_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise SystemExit(f"chronik-trio bench: go build in tests/go failed:\n{proc.stderr[-3000:]}")
        _franz_binary.append(str(out))
    return _franz_binary[0]


def consume_franz_go(bootstrap: str, topic: str, partitions: int, expected: int) -> dict:
    """One franz-go consumer (own process) reading the partitions from offset 0, fetch limits as
    CONSUMER_CONFIG's (50 MiB per answer, 10 MiB per partition); plaintext only."""
    proc = subprocess.run([_franz_go(), "-bootstrap", bootstrap, "-topic", topic, "-partitions", str(partitions),
                           "-read-only", str(expected), "-fetch-max-bytes", str(CONSUMER_CONFIG["fetch.max.bytes"]),
                           "-fetch-max-partition-bytes", str(CONSUMER_CONFIG["max.partition.fetch.bytes"]),
                           "-timeout", f"{FRANZ_READ_TIMEOUT_S}s"],
                          capture_output=True, text=True, timeout=FRANZ_READ_TIMEOUT_S + 30, stdin=subprocess.DEVNULL)
    step = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"error": proc.stderr[-2000:]}
    if "error" in step:
        raise SystemExit(f"chronik-trio bench: the franz-go consumer failed: {step['error']}")
    elapsed_s = max(step["elapsed_s"], 1e-9)
    return {"client": "franz-go", "records": step["records"], "elapsed_s": round(elapsed_s, 3),
            "records_per_s": round(step["records"] / elapsed_s), "mb_per_s": round(step["value_bytes"] / elapsed_s / 1e6, 1)}


# --- open loop ------------------------------------------------------------------------------------

class _EndToEnd(threading.Thread):
    """Reads the topic from its current end and notes, per record, consumed - due."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, client_config: dict | None = None) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition, OFFSET_END

        self.consumer = Consumer({**(client_config or {}), "bootstrap.servers": bootstrap,
                                  "group.id": "chronik-bench-e2e",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": E2E_FETCH_WAIT_MS,
                                  "fetch.min.bytes": 1, "socket.nagle.disable": True})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
        self.samples: dict[int, tuple[float, float]] = {}  # index -> (due, consumed)
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            # poll() returns at the first record; consume(n, t) waits until it has n records
            # or t has passed, which at 100 records/s added up to 50 ms (25 ms median) to
            # every record's end-to-end figure. What else is there comes with it, unwaited.
            first = self.consumer.poll(0.05)
            msgs = [first, *self.consumer.consume(1000, 0)] if first is not None else []
            self.ready.set()  # a first poll has joined the partitions at their end
            now = time.time()
            for msg in msgs:
                if msg.error() is None and len(msg.value() or b"") >= _STAMP.size:
                    index, due = _STAMP.unpack_from(msg.value())
                    self.samples[index] = (due, now)
        self.consumer.close()


def open_loop(bootstrap: str, topic: str, args, rate: float, warmup_s: float, duration_s: float,
              end_to_end: bool) -> dict:
    """Records of args.record_bytes at `rate` per second for warmup_s + duration_s."""
    from confluent_kafka import Producer

    # Nagle off: a lone small record must not wait for the previous one's ACK.
    producer = Producer(producer_config(bootstrap, args, **{"socket.nagle.disable": True}))
    e2e = _EndToEnd(bootstrap, topic, args.partitions, getattr(args, "client_config", None)) if end_to_end else None
    if e2e is not None:
        e2e.start()
        e2e.ready.wait(10)
        time.sleep(0.5)  # let the consumer's first fetches reach the (empty) end
    padding = os.urandom(max(0, args.record_bytes - _STAMP.size))
    total = int(rate * (warmup_s + duration_s))
    warmup = int(rate * warmup_s)
    due_rel: list[float] = [0.0] * total
    acked_s: list[float | None] = [None] * total
    errors = [0]
    behind_max_s = 0.0

    def on_delivery(index: int):
        def cb(err, msg) -> None:
            if err is not None:
                errors[0] += 1
            else:  # delivery (librdkafka's own clock) relative to when the record was due
                acked_s[index] = msg.latency() + late[index]
        return cb

    late: list[float] = [0.0] * total
    t0_wall, t0 = time.time(), time.perf_counter()
    i = 0
    while i < total:
        now = time.perf_counter()
        due_count = min(total, int((now - t0) * rate) + 1)
        while i < due_count:
            due = t0 + i / rate
            due_rel[i] = i / rate
            late[i] = time.perf_counter() - due  # time the record waited for our loop
            behind_max_s = max(behind_max_s, late[i])
            value = _STAMP.pack(i, t0_wall + i / rate) + padding
            try:
                producer.produce(topic, value, partition=i % args.partitions, on_delivery=on_delivery(i),
                                 key=b"k%d" % (i % args.keys) if getattr(args, "keys", 0) else None)
            except BufferError:
                producer.poll(0.001)
                continue
            i += 1
        next_due = t0 + i / rate
        producer.poll(max(0.0, min(OPEN_LOOP_POLL_MAX_S, next_due - time.perf_counter())))
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    measured = [acked_s[k] for k in range(warmup, total) if acked_s[k] is not None]
    result = {"offered_rate_per_s": rate, "warmup_s": warmup_s, "duration_s": duration_s,
              "sent": total, "measured": total - warmup, "acked": sum(1 for a in acked_s if a is not None),
              "errors": errors[0], "unflushed": remaining,
              "sender_behind_max_ms": round(behind_max_s * 1000, 3),
              "produce_latency_ms": percentiles_ms(measured),
              "series": [(round(due_rel[k], 4), round(acked_s[k] * 1000, 3))
                         for k in range(total) if acked_s[k] is not None]}
    if e2e is not None:
        deadline = time.monotonic() + E2E_DRAIN_S
        while len(e2e.samples) < result["acked"] and time.monotonic() < deadline:
            time.sleep(0.05)
        e2e.stop.set()
        e2e.join(10)
        samples = {k: consumed - due for k, (due, consumed) in e2e.samples.items()}
        result["end_to_end_latency_ms"] = percentiles_ms([v for k, v in samples.items() if k >= warmup])
        result["consumed"] = len(samples)
        result["e2e_series"] = [(round(k / rate, 4), round(v * 1000, 3)) for k, v in sorted(samples.items())]
    return result
