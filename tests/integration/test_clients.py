"""Real-client compatibility: confluent-kafka (librdkafka), kafka-python, aiokafka and kafkajs
produce to and consume from a real single `chronik-trio node` process on 127.0.0.1.

For each client, 10,000 records with keys, headers and null values go over 3 partitions in
every compression codec the client supports, with acks=all, and every record must come
back exactly once, in order per partition, at the offset the producer was told. Also:
acks=0 and acks=1, idempotent producers, ListOffsets (earliest, latest, by timestamp), topic
creation through the admin API and by auto-creation (and its refusal when turned off),
900 kB records under small fetch limits, seeking into batches across segments and past the
end, concurrent producers with a tailing consumer, and live clients across a SIGKILL and
restart. No consumer groups yet: consumers are assigned partitions by hand and never
commit. See docs/clients.md.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import tests.kafkajs
from tests.integration.clients_common import (
    PARTITIONS, Rec, check_roundtrip, make_records, split_evenly)
from tests.integration.clients_python import PY_DRIVERS, ConfluentDriver

ROUNDTRIP_RECORDS = 10_000
CONSUME_TIMEOUT_S = 60.0
AUTO_CREATE = ["--default-partitions", str(PARTITIONS)]
JS_DIR = Path(__file__).resolve().parents[1] / "js"


@contextlib.contextmanager
def broker_log_on_failure(*brokers):
    """On failure, print the tail of each broker's log (pytest shows it with the failure)."""
    try:
        yield
    except BaseException:
        for b in brokers:
            print(f"----- tail of {b.log_path} -----")
            print(b.log_text()[-6000:])
        raise


def roundtrip(driver, *, tag: str, via_admin: bool, total: int = ROUNDTRIP_RECORDS) -> None:
    """`total` records split over one fresh 3-partition topic per codec, acks=all, read back."""
    topics = {codec: f"{tag}-{codec}" for codec in driver.codecs}
    if via_admin:
        driver.create_topics(list(topics.values()), PARTITIONS)
    base_ts = int(time.time() * 1000) - 60_000
    sent = {}
    for (codec, topic), n in zip(topics.items(), split_evenly(total, len(topics))):
        recs = make_records(topic, n, base_ts_ms=base_ts)
        sent[topic] = (recs, driver.produce(topic, recs, codec=codec, acks="all"))
    for topic, (recs, told) in sent.items():
        # Whether created by CreateTopics or auto-created, the topic has 3 partitions.
        assert driver.partitions_for(topic) == set(range(PARTITIONS)), topic
        begins, ends = driver.list_offsets(topic, range(PARTITIONS))
        got = driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S)
        check_roundtrip(topic, recs, told, begins, ends, got)


@pytest.mark.timeout(150)
def test_confluent_kafka_roundtrip_all_codecs(broker):
    with broker_log_on_failure(broker):
        roundtrip(ConfluentDriver(broker.bootstrap), tag="ck", via_admin=True)


@pytest.mark.timeout(150)
def test_kafka_python_roundtrip_all_codecs(broker):
    with broker_log_on_failure(broker):
        roundtrip(PY_DRIVERS["kafka-python"](broker.bootstrap), tag="kp", via_admin=True)


@pytest.mark.timeout(150)
def test_aiokafka_roundtrip_all_codecs_auto_created(broker_factory):
    # aiokafka is asyncio: the driver runs each step with asyncio.run, so this is a plain
    # sync test (pytest runs in trio mode). Its topics are auto-created by the producer's
    # Metadata request, with the broker's --default-partitions.
    broker = broker_factory(name="aio", extra_args=AUTO_CREATE).start()
    with broker_log_on_failure(broker):
        roundtrip(PY_DRIVERS["aiokafka"](broker.bootstrap), tag="aio", via_admin=False)


def wait_for_end_offsets(driver, topic: str, expected_total: int, timeout_s: float = 20.0):
    """acks=0 gets no answer: poll ListOffsets until the records are all there (bounded)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(1000):
        begins, ends = driver.list_offsets(topic, range(PARTITIONS))
        if sum(ends.values()) >= expected_total or time.monotonic() > deadline:
            return begins, ends
        time.sleep(0.2)
    return begins, ends


@pytest.mark.timeout(90)
@pytest.mark.parametrize("client", list(PY_DRIVERS))
def test_acks_0_and_1_auto_created(broker_factory, client):
    broker = broker_factory(name=f"acks-{client}", extra_args=AUTO_CREATE).start()
    driver = PY_DRIVERS[client](broker.bootstrap)
    with broker_log_on_failure(broker):
        for acks, codec in (("1", "gzip"), ("0", "none")):
            topic = f"acks{acks}-{client}"
            recs = make_records(topic, 600)
            told = driver.produce(topic, recs, codec=codec, acks=acks)
            assert driver.partitions_for(topic) == set(range(PARTITIONS))
            if acks == "0":
                assert told == [None] * len(recs)
                begins, ends = wait_for_end_offsets(driver, topic, len(recs))
            else:
                begins, ends = driver.list_offsets(topic, range(PARTITIONS))
            got = driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S)
            check_roundtrip(topic, recs, told, begins, ends, got)


def produce_timed_records(driver, topic: str, t0: int) -> tuple[list[Rec], list]:
    """30 records on partition 0 of an auto-created 3-partition topic: 20 sent one batch
    each at t0, t0+1s, ..., t0+19s, then 10 in one produce call (one batch when the client
    batches them, which it does within its linger time) at t0+20s, ..., t0+29s."""
    singles = [Rec(0, f"s{i}".encode(), f"v{i}".encode(), (), t0 + 1000 * i) for i in range(20)]
    burst = [Rec(0, f"b{j}".encode(), None if j % 2 else b"x", (("j", bytes([j])),),
                 t0 + 20_000 + 1000 * j) for j in range(10)]
    told = driver.produce(topic, singles, acks="all", flush_every=1)
    told += driver.produce(topic, burst, acks="all")
    assert [o for _, o in told] == list(range(30))
    return singles + burst, told


def offsets_for_times_cases(driver, topic: str, t0: int, cases) -> None:
    answers = []
    for ts, _ in cases:
        res = driver.offsets_for_times(topic, {0: ts, 1: ts})
        assert res.get(1) is None, f"empty partition 1 answered {res.get(1)} for ts {ts}"
        answers.append((ts - t0, res.get(0)))
    assert answers == [(ts - t0, want) for ts, want in cases]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("client", list(PY_DRIVERS))
def test_list_offsets_earliest_latest_by_timestamp(broker_factory, client):
    """ListOffsets: earliest and latest on filled and empty partitions, and by timestamp the
    earliest offset whose timestamp is >= the one asked for (None past the last record)."""
    broker = broker_factory(name=f"lo-{client}", extra_args=AUTO_CREATE).start()
    driver = PY_DRIVERS[client](broker.bootstrap)
    topic = f"times-{client}"
    t0 = (int(time.time() * 1000) - 300_000) // 1000 * 1000
    with broker_log_on_failure(broker):
        recs, told = produce_timed_records(driver, topic, t0)
        begins, ends = driver.list_offsets(topic, range(PARTITIONS))
        assert begins == {0: 0, 1: 0, 2: 0}
        assert ends == {0: 30, 1: 0, 2: 0}
        offsets_for_times_cases(driver, topic, t0, [
            (t0 - 10_000, 0),            # before everything: the first offset
            (t0, 0),
            (t0 + 1, 1),                 # between two records: the later one
            (t0 + 7_000, 7),
            (t0 + 7_500, 8),
            (t0 + 19_999, 20),           # just before the burst: its first record
            (t0 + 20_000, 20),
            (t0 + 29_001, None),         # past the last record: no offset
        ])
        got = driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S)
        check_roundtrip(topic, recs, told, begins, ends, got)


@pytest.mark.timeout(60)
def test_list_offsets_by_timestamp_inside_a_batch(broker_factory):
    broker = broker_factory(name="lo-in-batch", extra_args=AUTO_CREATE).start()
    driver = ConfluentDriver(broker.bootstrap)
    topic = "times-in-batch"
    t0 = (int(time.time() * 1000) - 300_000) // 1000 * 1000
    with broker_log_on_failure(broker):
        produce_timed_records(driver, topic, t0)
        offsets_for_times_cases(driver, topic, t0, [
            (t0 + 25_000, 25),           # inside the burst batch: that record, not the batch
            (t0 + 25_001, 26),
            (t0 + 29_000, 29),
        ])


@pytest.mark.timeout(60)
def test_no_auto_create_topics(broker_factory):
    """With --no-auto-create-topics a producer's Metadata request for an unknown topic gets
    UNKNOWN_TOPIC_OR_PART and creates nothing; its records fail rather than vanish; once the
    topic is created with the admin API the same records go through."""
    from confluent_kafka import KafkaError, Producer
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    broker = broker_factory(name="no-auto", extra_args=["--no-auto-create-topics"]).start()
    topic = "never-auto-created"
    with broker_log_on_failure(broker):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                             "message.timeout.ms": 3000})
        md = producer.list_topics(topic, timeout=10)   # allow_auto_topic_creation=true
        assert md.topics[topic].error is not None
        assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        errors = []
        producer.produce(topic, b"v", key=b"k", on_delivery=lambda err, msg: errors.append(err))
        assert producer.flush(15) == 0
        assert len(errors) == 1 and errors[0] is not None, errors

        kp = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=2000)
        try:
            with pytest.raises(KafkaTimeoutError):
                kp.send(topic, b"v", key=b"k").get(timeout=10)
        finally:
            kp.close(timeout=10)

        driver = ConfluentDriver(broker.bootstrap)
        assert topic not in driver_topics(driver)
        driver.create_topics([topic], PARTITIONS)
        recs = make_records(topic, 90)
        told = driver.produce(topic, recs, acks="all")
        begins, ends = driver.list_offsets(topic, range(PARTITIONS))
        check_roundtrip(topic, recs, told, begins, ends,
                        driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S))


def driver_topics(driver: ConfluentDriver) -> set[str]:
    from confluent_kafka.admin import AdminClient
    return set(AdminClient({"bootstrap.servers": driver.bootstrap}).list_topics(timeout=10).topics)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("client", ["confluent-kafka", "aiokafka"])
def test_idempotent_producer(broker, client):
    """The clients' idempotent producers (InitProducerId, then sequenced batches) work too.
    kafka-python's producer is idempotent by default, so its round trip already covers it."""
    driver = PY_DRIVERS[client](broker.bootstrap)
    topic = f"idem-{client}"
    with broker_log_on_failure(broker):
        driver.create_topics([topic], PARTITIONS)
        recs = make_records(topic, 2000)
        told = driver.produce(topic, recs, codec="lz4", acks="all", idempotent=True)
        begins, ends = driver.list_offsets(topic, range(PARTITIONS))
        got = driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S)
        check_roundtrip(topic, recs, told, begins, ends, got)


def large_records(topic: str, n: int, size: int) -> list[Rec]:
    """Incompressible values of `size` bytes (a whole batch each), plus a small one between."""
    import random
    rnd = random.Random(topic)
    t = int(time.time() * 1000) - 60_000
    out = []
    for i in range(n):
        value = rnd.randbytes(size) if i % 2 == 0 else b"small-%d" % i
        out.append(Rec(i % PARTITIONS, f"big-{i}".encode(), value, (("size", str(len(value)).encode()),),
                       t + i))
    return out


@pytest.mark.timeout(90)
@pytest.mark.parametrize("client", list(PY_DRIVERS))
def test_large_records_with_small_fetch_limits(broker_factory, client):
    """Records of 900 kB (below the broker's message.max.bytes) go through, and a consumer
    whose per-partition and per-response fetch limits are far smaller still reads them:
    the broker must return the first whole batch even when it is over the limits (KIP-74)."""
    broker = broker_factory(name=f"big-{client}", extra_args=AUTO_CREATE).start()
    driver = PY_DRIVERS[client](broker.bootstrap)
    topic = f"big-{client}"
    recs = large_records(topic, 12, 900_000)
    with broker_log_on_failure(broker):
        told = driver.produce(topic, recs, codec="none", acks="all")
        begins, ends = driver.list_offsets(topic, range(PARTITIONS))
        got = driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S, small_fetches=True)
        check_roundtrip(topic, recs, told, begins, ends, got)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("client", list(PY_DRIVERS))
def test_seek_into_batches_across_segments_and_out_of_range(broker, client):
    """Reading from any offset: the partitions are split into many small gzip batches over
    several segments (topic config segment.bytes=8 KiB), and a consumer assigned at an
    offset in the middle of a batch, at a segment's start or at the last records gets
    exactly the records from there. Past the end, the broker's OFFSET_OUT_OF_RANGE makes
    the client reset to the earliest offset (auto.offset.reset=earliest)."""
    driver = PY_DRIVERS[client](broker.bootstrap)
    topic = f"seek-{client}"
    with broker_log_on_failure(broker):
        driver.create_topics([topic], PARTITIONS, {"segment.bytes": str(8 * 1024)})
        recs = make_records(topic, 3000)
        told = driver.produce(topic, recs, codec="gzip", flush_every=60)  # ~20 per batch
        begins, ends = driver.list_offsets(topic, range(PARTITIONS))
        segments = sorted((broker.data_dir / "partitions" / f"{topic}-0").glob("*.seg"))
        assert len(segments) >= 2, f"expected several segments, found {segments}"
        got = driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S)
        check_roundtrip(topic, recs, told, begins, ends, got)
        at = {(p, o): r for r, (p, o) in zip(recs, told)}
        for p in range(PARTITIONS):
            n = ends[p]
            for start in sorted({0, 1, 7, 19, 21, n // 2, n // 2 + 3, n - 5}):
                read = driver.read_from(topic, p, start, 5)
                assert [g.offset for g in read] == list(range(start, start + 5)), (p, start)
                for g in read:
                    r = at[(p, g.offset)]
                    assert (g.key, g.value, g.headers) == (r.key, r.value, r.headers), (p, g.offset)
        read = driver.read_from(topic, 0, ends[0] + 100, 3)
        assert [g.offset for g in read] == [0, 1, 2], "no reset to earliest after out of range"


@pytest.mark.timeout(120)
def test_concurrent_producers_and_a_tailing_consumer(broker):
    """confluent-kafka, kafka-python and aiokafka produce into the same three partitions at
    the same time (each on its own connections, in its own thread) while a confluent-kafka
    consumer tails the topic. Offsets told are unique and gap-free per partition, each
    producer's records keep its order, and the tailing consumer reads every record once at
    its told offset."""
    import threading

    from confluent_kafka import Consumer, TopicPartition

    from tests.integration.clients_common import Got
    topic = "shared"
    reader = ConfluentDriver(broker.bootstrap)
    per_producer = 1500
    codec = {"confluent-kafka": "zstd", "kafka-python": "lz4", "aiokafka": "snappy"}
    sent = {name: make_records(f"{topic}-{name}", per_producer) for name in PY_DRIVERS}
    told: dict[str, list] = {}
    failures: list[str] = []
    total_per_partition = {p: sum(1 for recs in sent.values() for r in recs if r.partition == p)
                           for p in range(PARTITIONS)}
    tailed: dict[int, list[Got]] = {p: [] for p in range(PARTITIONS)}
    stop = threading.Event()

    def produce(name):
        try:
            told[name] = PY_DRIVERS[name](broker.bootstrap).produce(
                topic, sent[name], codec=codec[name], acks="all")
        except BaseException as exc:   # reported below, in the test's thread
            failures.append(f"{name}: {exc!r}")

    def tail():
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "never-joined",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 90
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                if all(len(tailed[p]) >= n for p, n in total_per_partition.items()):
                    return
                for m in c.consume(num_messages=1000, timeout=0.2):
                    if m.error() is not None:
                        failures.append(f"tail: {m.error()}")
                        return
                    tailed[m.partition()].append(Got(m.partition(), m.offset(), m.key(), m.value(),
                                                     tuple(m.headers() or ()), m.timestamp()[1]))
        except BaseException as exc:
            failures.append(f"tail: {exc!r}")
        finally:
            c.close()

    with broker_log_on_failure(broker):
        reader.create_topics([topic], PARTITIONS)
        threads = [threading.Thread(target=tail)] + [
            threading.Thread(target=produce, args=(name,)) for name in sent]
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join(timeout=100)
        threads[0].join(timeout=30)
        stop.set()
        assert not any(t.is_alive() for t in threads), "a producer or the consumer hung"
        assert not failures, failures

        begins, ends = reader.list_offsets(topic, range(PARTITIONS))
        assert begins == {p: 0 for p in range(PARTITIONS)}
        assert ends == total_per_partition
        at: dict[tuple[int, int], Rec] = {}
        for name, recs in sent.items():
            last = {}
            for r, (p, o) in zip(recs, told[name]):
                assert p == r.partition
                assert (p, o) not in at, f"offset {p}/{o} told to two records"
                assert o > last.get(p, -1), f"{name}: order lost in partition {p} at offset {o}"
                last[p] = o
                at[(p, o)] = r
        for p in range(PARTITIONS):
            assert [g.offset for g in tailed[p]] == list(range(ends[p])), f"tail of partition {p}"
            for g in tailed[p]:
                r = at[(p, g.offset)]
                assert (g.key, g.value, g.headers, g.timestamp_ms) == \
                    (r.key, r.value, r.headers, r.timestamp_ms), (p, g.offset)


@pytest.mark.timeout(120)
def test_clients_carry_on_across_a_broker_kill_and_restart(broker):
    """A long-lived confluent-kafka producer and kafka-python consumer keep working when the
    node is SIGKILLed and restarted on the same port: every acknowledged record is still
    there, the producer's next records follow at the next offsets, and the consumer goes on
    reading from where it was, without duplicates or gaps."""
    from confluent_kafka import Producer
    from kafka import KafkaConsumer, TopicPartition

    from tests.integration.clients_common import Got, drain
    topic = "restart"
    reader = ConfluentDriver(broker.bootstrap)
    recs = make_records(topic, 1800)
    first, second = recs[:900], recs[900:]
    told: list = [None] * len(recs)
    failed: list = []

    def report(i, err, msg):
        if err is not None:
            failed.append(f"record {i}: {err}")
        else:
            told[i] = (msg.partition(), msg.offset())

    def produce(producer, part, start):
        for i, r in enumerate(part, start):
            producer.produce(topic, value=r.value, key=r.key, partition=r.partition,
                             headers=list(r.headers) or None, timestamp=r.timestamp_ms,
                             on_delivery=lambda err, msg, i=i: report(i, err, msg))
        assert producer.flush(60) == 0, f"undelivered after 60 s; failures {failed[:3]}"
        assert not failed, failed[:3]

    with broker_log_on_failure(broker):
        reader.create_topics([topic], PARTITIONS)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                             "linger.ms": 5, "compression.type": "zstd",
                             "message.timeout.ms": 60_000, "reconnect.backoff.max.ms": 500})
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=100,
                                 reconnect_backoff_max_ms=500, request_timeout_ms=30_000)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)

        def poll():
            return [Got(tp.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp)
                    for tp, ms in consumer.poll(timeout_ms=500, max_records=2000).items()
                    for m in ms]
        try:
            produce(producer, first, 0)
            ends_before = {p: sum(1 for r in first if r.partition == p) for p in range(PARTITIONS)}
            got = drain(poll, ends_before, timeout_s=CONSUME_TIMEOUT_S)

            broker.kill()
            broker.start()

            produce(producer, second, len(first))
            begins, ends = reader.list_offsets(topic, range(PARTITIONS))
            more = drain(poll, {p: ends[p] for p in range(PARTITIONS)}, timeout_s=CONSUME_TIMEOUT_S)
            for p in range(PARTITIONS):
                got[p].extend(more[p])
        finally:
            consumer.close()
        check_roundtrip(topic, recs, told, begins, ends, got)


# ---------------------------------------------------------------- kafkajs (Node.js) --

@pytest.fixture(scope="session")
def kafkajs_dir() -> Path:
    """tests/js with kafkajs 2.2.4 installed from the committed package-lock.json."""
    return tests.kafkajs.kafkajs_dir()


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def _js_records(recs: list[Rec]) -> list[dict]:
    return [{"p": r.partition, "k": _b64(r.key), "v": _b64(r.value),
             "h": [[k, _b64(v)] for k, v in r.headers], "t": r.timestamp_ms} for r in recs]


@pytest.mark.timeout(240)
def test_kafkajs_produce_roundtrip(broker_factory, kafkajs_dir, tmp_path):
    """kafkajs produces (admin-created topics in none/gzip/snappy with acks=all, plus
    auto-created topics with an idempotent producer, acks=1 and acks=0) and asks for offsets;
    confluent-kafka reads everything back. kafkajs' consumer needs consumer groups, which
    the broker lacks."""
    broker = broker_factory(name="kafkajs", extra_args=AUTO_CREATE).start()
    base_ts = int(time.time() * 1000) - 60_000
    codecs = ("none", "gzip", "snappy")   # kafkajs: gzip built in, snappy via kafkajs-snappy
    jobs = []
    for codec, n in zip(codecs, split_evenly(ROUNDTRIP_RECORDS, len(codecs))):
        jobs.append({"topic": f"js-{codec}", "codec": codec, "acks": -1,
                     "recs": make_records(f"js-{codec}", n, base_ts_ms=base_ts)})
    jobs.append({"topic": "js-idempotent", "codec": "gzip", "acks": -1, "idempotent": True,
                 "recs": make_records("js-idempotent", 600)})
    jobs.append({"topic": "js-acks1", "codec": "gzip", "acks": 1,
                 "recs": make_records("js-acks1", 300)})
    jobs.append({"topic": "js-acks0", "codec": "none", "acks": 0,
                 "recs": make_records("js-acks0", 300)})
    # On js-none, sent in chunks of 500 (one batch per partition per chunk): the first
    # records at or after base_ts + 500 are #501 (p0, offset 167), #502 (p1, offset 167)
    # and #500 (p2, offset 166), each the first of its partition's batch in chunk 2.
    ts_query = base_ts + 500
    spec = {
        "brokers": [broker.bootstrap], "chunk": 500,
        "create": [{"topic": j["topic"], "partitions": PARTITIONS} for j in jobs[:3]],
        "produce": [{"topic": j["topic"], "codec": j["codec"], "acks": j["acks"],
                     "idempotent": j.get("idempotent", False),
                     "records": _js_records(j["recs"])} for j in jobs],
        "offsetsByTimestamp": [{"topic": "js-none", "ts": ts_query},
                               {"topic": "js-none", "ts": base_ts + 10 * ROUNDTRIP_RECORDS}],
    }
    spec_path, out_path = tmp_path / "kafkajs-spec.json", tmp_path / "kafkajs-out.json"
    spec_path.write_text(json.dumps(spec))
    with broker_log_on_failure(broker):
        proc = subprocess.run([shutil.which("node"), str(kafkajs_dir / "kafkajs_client.js"), str(spec_path),
                               str(out_path)], capture_output=True, text=True, timeout=150)
        assert proc.returncode == 0, f"kafkajs run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        out = json.loads(out_path.read_text())
        assert out["created"] is True, out["created"]
        md = {t["name"]: t for t in out["metadata"]["topics"]}
        reader = ConfluentDriver(broker.bootstrap)
        for j in jobs:
            topic, recs = j["topic"], j["recs"]
            assert sorted(p["partitionId"] for p in md[topic]["partitions"]) == list(range(PARTITIONS))
            if j["acks"] == 0:
                assert out["produced"][topic] == [None] * len(recs)
                told = [None] * len(recs)
                begins, ends = wait_for_end_offsets(reader, topic, len(recs))
            else:
                told = [(r.partition, o) for r, o in zip(recs, out["produced"][topic])]
                begins, ends = reader.list_offsets(topic, range(PARTITIONS))
                js = {o["partition"]: (o["low"], o["high"]) for o in out["topicOffsets"][topic]}
                assert js == {p: (begins[p], ends[p]) for p in range(PARTITIONS)}, topic
            got = reader.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S)
            check_roundtrip(topic, recs, told, begins, ends, got)
        # ListOffsets by timestamp through kafkajs' admin (it maps "none" to the latest).
        by_ts = {q["ts"]: {o["partition"]: o["offset"] for o in q["offsets"]}
                 for q in out["offsetsByTimestamp"]}
        _, ends_none = reader.list_offsets("js-none", range(PARTITIONS))
        assert by_ts[ts_query] == {0: 167, 1: 167, 2: 166}
        assert by_ts[base_ts + 10 * ROUNDTRIP_RECORDS] == ends_none
