"""Compacted topics on one node, produced by every client library the suite drives
(confluent-kafka, kafka-python with gzip, aiokafka, kafkajs) and read back by it: after
cleaning, each key's latest value at the offset its producer was told, tombstones served
until delete.retention.ms (lowered live) and then gone; a node killed in the middle of a
throttled clean restarts with a readable log that the next pass finishes."""

from __future__ import annotations

import functools
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from tests.integration.clients_python import PY_DRIVERS, ConfluentDriver
from tests.integration.compaction_common import (CLEANER_ARGS, create_compacted, kafkajs_produce,
                                                 keyed_records, latest, reader, set_topic_config, settle)
from tests.kafka.live import wait_for
from tests.kafka_wire import KafkaWire
from tests.kafkajs import kafkajs_dir

pytestmark = pytest.mark.timeout(180)

RECORDS = 120
CODEC = {"kafka-python": "gzip"}  # one library's batches compressed: the cleaner rewrites gzip too


@pytest.mark.parametrize("client", [*PY_DRIVERS, "kafkajs"])
def test_compacted_topic_keeps_latest_value_per_key_and_tombstones_until_expired(
        broker_factory, tmp_path, client):
    broker = broker_factory(extra_args=CLEANER_ARGS).start()
    topic = "compact-" + uuid.uuid4().hex[:8]
    create_compacted(broker.bootstrap, topic, 1)
    recs = keyed_records(topic, RECORDS)
    if client == "kafkajs":
        told = kafkajs_produce(kafkajs_dir(), [broker.bootstrap], topic, recs, tmp_path)
        driver = ConfluentDriver(broker.bootstrap)
    else:
        driver = PY_DRIVERS[client](broker.bootstrap)
        told = driver.produce(topic, recs, codec=CODEC.get(client, "none"), flush_every=4)
    assert [t[1] for t in told] == list(range(RECORDS))

    compacted = settle(broker.bootstrap, topic, [reader(driver, topic)],
                       latest(recs, told, tombstones=True), f"{client}: {topic}")
    _, ends = driver.list_offsets(topic, [0])
    assert ends[0] == compacted[-1][0] + 1  # the log end offset does not move

    set_topic_config(broker.bootstrap, topic, "delete.retention.ms", "0")
    settle(broker.bootstrap, topic, [reader(driver, topic)], latest(recs, told, tombstones=False),
           f"{client}: {topic} without tombstones")


def _set_broker_config(bootstrap: str, key: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=20)


def test_kill_in_the_middle_of_a_clean_leaves_a_readable_log(broker_factory):
    broker = broker_factory(extra_args=CLEANER_ARGS).start()
    topic = "crash-" + uuid.uuid4().hex[:8]
    # A throttled cleaner: one pass takes seconds, so the kill lands inside one.
    _set_broker_config(broker.bootstrap, "log.cleaner.io.max.bytes.per.second", "40000")
    create_compacted(broker.bootstrap, topic, 1)
    driver = ConfluentDriver(broker.bootstrap)
    recs = keyed_records(topic, 150, keys=15)
    told = driver.produce(topic, recs, flush_every=3)
    partition_dir = broker.data_dir / "partitions" / f"{topic}-0"
    deadline = time.monotonic() + 30
    while not list(partition_dir.glob("*.seg.cleaned")):
        assert time.monotonic() < deadline, "no clean in progress within 30 s"
        time.sleep(0.02)
    broker.kill()
    broker.start()
    assert not list(partition_dir.glob("*.seg.cleaned")), "the interrupted clean's copy is removed"
    # Readable at once: whatever was or was not swapped in, every key's latest record is
    # there at its offset, and nothing is served that was not produced at that offset.
    produced = {t[1]: (r.key, r.value) for r, t in zip(recs, told)}
    got = [(g.offset, g.key, g.value) for g in driver.read_from(topic, 0, 0, len(recs), timeout_s=5)]
    assert all(produced[o] == (k, v) for o, k, v in got)
    assert set(latest(recs, told, tombstones=True)) <= set(got)
    _set_broker_config(broker.bootstrap, "log.cleaner.io.max.bytes.per.second", "1e12")
    settle(broker.bootstrap, topic, [reader(driver, topic)], latest(recs, told, tombstones=True), topic)


def test_a_compacted_topic_refuses_records_without_a_key(broker):
    """As Kafka (and librdkafka's test 0011): a batch holding a keyless record fails whole
    with INVALID_RECORD, the record errors (KIP-467) naming the keyless records, so
    librdkafka fails those with INVALID_RECORD and the rest of the batch with
    _INVALID_DIFFERENT_RECORD; a batch of keyed records is written."""
    topic = "compact-" + uuid.uuid4().hex[:8]
    create_compacted(broker.bootstrap, topic, 1)
    errors: list = []

    def produce(keys, **conf) -> list:
        errors.clear()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50, "retries": 0, **conf})
        for key in keys:
            producer.produce(topic, value=b"v", key=key, partition=0,
                             on_delivery=lambda err, msg: errors.append(err and err.code()))
        assert producer.flush(30) == 0
        return list(errors)

    got = produce([b"a", None, b"b", None, b"c"])  # one batch
    assert got == [KafkaError._INVALID_DIFFERENT_RECORD, KafkaError.INVALID_RECORD,
                   KafkaError._INVALID_DIFFERENT_RECORD, KafkaError.INVALID_RECORD,
                   KafkaError._INVALID_DIFFERENT_RECORD], got
    assert produce([b"a", b"b"]) == [None, None]
    got = produce([b"a", None, b"b"], **{"batch.size": 1})  # one record a batch
    assert got == [None, KafkaError.INVALID_RECORD, None], got


def _consume(bootstrap: str, topic: str, isolation: str, count: int) -> list[tuple[int, bytes | None, bytes | None]]:
    """The first `count` records of partition 0 read with `isolation` (read_committed or
    read_uncommitted), as (offset, key, value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-" + uuid.uuid4().hex[:8],
                         "isolation.level": isolation, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list = []
    deadline = time.monotonic() + 3
    try:
        while len(out) < count and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=count, timeout=0.5):
                assert m.error() is None, m.error()
                out.append((m.offset(), m.key(), m.value()))
        return out[:count]
    finally:
        consumer.close()


def test_the_cleaner_removes_aborted_records_then_markers_past_their_delete_horizon(broker_factory):
    """A transactional producer (confluent-kafka) commits, aborts and commits on a compacted
    topic. After cleaning, read_uncommitted and read_committed both read each key's latest
    committed value and nothing of the aborted transaction (its records removed). The abort
    marker and the commit marker of a transaction whose only record was superseded get a
    delete horizon (KIP-534: attributes bit 6, baseTimestamp = clean time +
    delete.retention.ms) and are removed once it has passed, never before; the markers of
    transactions with records left stay. The reads are unchanged, the last stable offset is
    the high watermark (the aborted index forgot the removed abort marker's transaction:
    librdkafka's read_committed consumer, told of it, would skip the producer's later
    transactions waiting for that marker), and after a SIGKILL and restart (the state rebuilt from the cleaned
    log) the same holds and the same producer commits another transaction."""
    broker = broker_factory(extra_args=CLEANER_ARGS).start()
    topic = "compact-txn-" + uuid.uuid4().hex[:8]
    create_compacted(broker.bootstrap, topic, 1)
    retention_ms = 5000
    set_topic_config(broker.bootstrap, topic, "delete.retention.ms", str(retention_ms))
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-" + topic})
    producer.init_transactions(20)
    told: dict[tuple[bytes, bytes], int] = {}

    def txn(pairs, commit: bool) -> None:
        producer.begin_transaction()
        for key, value in pairs:
            producer.produce(topic, value=value, key=key, partition=0,
                             on_delivery=lambda err, msg: told.__setitem__((msg.key(), msg.value()), msg.offset()))
        producer.flush(20)
        (producer.commit_transaction if commit else producer.abort_transaction)(20)

    started_ms = int(time.time() * 1000)
    txn([(b"k%d" % i, b"a%d" % i) for i in range(4)], commit=True)
    txn([(b"k%d" % i, b"b%d" % i) for i in range(4)] + [(b"only-aborted", b"b")], commit=False)
    txn([(b"k1", b"c1")], commit=True)
    txn([(b"k9", b"x")], commit=True)  # superseded by the next: its marker may go
    txn([(b"k9", b"y")], commit=True)
    want = sorted((told[(k, v)], k, v) for k, v in
                  [(b"k0", b"a0"), (b"k1", b"c1"), (b"k2", b"a2"), (b"k3", b"a3"), (b"k9", b"y")])
    # EndTxn is answered once the prepare is durable; the markers follow it (docs/transactions.md),
    # so the last one may not be written yet: wait for all five, well within delete.retention.ms.
    wait_for(lambda: len(_markers(broker.port, topic)) >= 5, what="the five markers written", timeout_s=20)
    markers = _markers(broker.port, topic)
    assert len(markers) == 5, markers
    # The abort marker (after the aborted records) and k9=x's commit marker (before k9=y).
    going = {offset for offset, _, _ in markers[1:2] + markers[3:4]}
    full = settle(broker.bootstrap, topic,
                  [functools.partial(_consume, broker.bootstrap, topic, isolation)
                   for isolation in ("read_uncommitted", "read_committed")], want, topic)
    assert _last_stable_offset(broker.bootstrap, topic) == full[-1][0] + 1

    horizons: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while True:
        now_ms = int(time.time() * 1000)
        seen = _markers(broker.port, topic)
        for offset, attributes, base_timestamp in seen:
            if attributes & 0x40:
                assert offset in going, seen
                assert base_timestamp >= started_ms + retention_ms, seen
                horizons[offset] = base_timestamp
        left = {offset for offset, _, _ in seen}
        gone = going - left
        for offset in gone:  # never before its horizon (if it was seen with one)
            assert offset not in horizons or now_ms >= horizons[offset], (offset, horizons, now_ms)
        if not (going & left):
            break
        assert time.monotonic() < deadline, f"markers {sorted(going & left)} still served: {seen}"
        time.sleep(0.2)
    assert [m[0] for m in _markers(broker.port, topic)] == [m[0] for m in markers if m[0] not in going]
    for isolation in ("read_uncommitted", "read_committed"):
        assert _consume(broker.bootstrap, topic, isolation, len(full)) == full
    assert _last_stable_offset(broker.bootstrap, topic) == full[-1][0] + 1
    # A restart rebuilds the partition's state from the cleaned log: emptied batches and
    # removed markers open no transaction, so the LSO is the high watermark again.
    broker.kill()
    broker.start()
    assert _last_stable_offset(broker.bootstrap, topic) == full[-1][0] + 1
    for isolation in ("read_uncommitted", "read_committed"):
        assert _consume(broker.bootstrap, topic, isolation, len(full)) == full
    txn([(b"k0", b"after-restart")], commit=True)
    after = _consume(broker.bootstrap, topic, "read_committed", len(full) + 1)
    assert after[-1] == (told[(b"k0", b"after-restart")], b"k0", b"after-restart"), after
    producer.flush(5)


def _markers(port: int, topic: str) -> list[tuple[int, int, int]]:
    """(offset, attributes, baseTimestamp) of each transaction marker served from offset 0."""
    with KafkaWire.connect(port) as conn:
        return [(b.base_offset, b.attributes, b.base_timestamp) for b in conn.fetch_all(topic, 0)
                if b.attributes & 0x20]


def _last_stable_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "w", "isolation.level": "read_committed"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()
