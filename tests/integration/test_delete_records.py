"""DeleteRecords and DescribeLogDirs through real admin clients (confluent-kafka's
delete_records, kafka-python's describe_log_dirs) on one node: the log start offset moves
through Raft, ListOffsets earliest and Fetch follow it, the segments below it go, and all of
it survives a restart."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import KafkaAdminClient

from tests.kafka_wire import EARLIEST_TIMESTAMP, NONE, KafkaWire

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 15
OFFSET_OUT_OF_RANGE = 1
RECORDS = 40


def _filled_topic(broker) -> str:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = "del-" + uuid.uuid4().hex[:8]
    admin.create_topics([NewTopic(name, 1, 1, config={"segment.bytes": "4096"})])[name].result(timeout=TIMEOUT_S)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(RECORDS):
        producer.produce(name, b"v%03d" % i + b"." * 1000)
        producer.flush(TIMEOUT_S)  # one batch each: many small segments
    return name


def _delete_records(broker, name: str, offset: int) -> int:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.delete_records([TopicPartition(name, 0, offset)])
    (future,) = futures.values()
    return future.result(timeout=TIMEOUT_S).low_watermark


def _segments(broker, name: str) -> int:
    return len(list((broker.data_dir / "partitions" / f"{name}-0").glob("*.seg")))


def _log_size(broker, name: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        (answer,) = admin.describe_log_dirs()
    finally:
        admin.close()
    (log_dir,) = answer["log_dirs"]
    (topic,) = [t for t in log_dir["topics"] if t["name"] == name]
    return topic["partitions"][0]["partition_size"]


def _check_start(broker, name: str, start: int) -> None:
    with KafkaWire.connect(broker.port) as conn:
        assert conn.list_offset(name, 0, EARLIEST_TIMESTAMP) == (NONE, start)
        below = conn.fetch(name, 0, start - 1)
        assert int(below.error_code) == OFFSET_OUT_OF_RANGE and int(below.log_start_offset) == start
        at = conn.fetch(name, 0, start)
        assert int(at.error_code) == NONE and at.records


def test_delete_records_moves_the_log_start_deletes_segments_and_survives_a_restart(broker):
    name = _filled_topic(broker)
    segments_before, size_before = _segments(broker, name), _log_size(broker, name)
    assert segments_before > 5 and size_before > RECORDS * 1000

    assert _delete_records(broker, name, 30) == 30
    _check_start(broker, name, 30)
    deadline = time.monotonic() + 10
    while _segments(broker, name) >= segments_before - 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _segments(broker, name) < segments_before - 3  # the segments wholly below 30 went
    assert _log_size(broker, name) < size_before

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-" + uuid.uuid4().hex[:6],
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(name, 0, 0)])  # below the start: reset to earliest
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < RECORDS - 30 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.offset())
        assert got == list(range(30, RECORDS))
        assert consumer.get_watermark_offsets(TopicPartition(name, 0), timeout=TIMEOUT_S) == (30, RECORDS)
    finally:
        consumer.close()

    broker.restart()
    _check_start(broker, name, 30)
    assert _delete_records(broker, name, 10) == 30  # below the start: nothing moves


def test_delete_records_above_the_high_watermark_is_offset_out_of_range(broker):
    name = _filled_topic(broker)
    with pytest.raises(KafkaException) as caught:
        _delete_records(broker, name, RECORDS + 5)
    assert caught.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    assert _delete_records(broker, name, -1) == RECORDS  # -1: up to the high watermark
    _check_start_empty(broker, name)


def _check_start_empty(broker, name: str) -> None:
    with KafkaWire.connect(broker.port) as conn:
        assert conn.list_offset(name, 0, EARLIEST_TIMESTAMP) == (NONE, RECORDS)
        assert int(conn.fetch(name, 0, 0).error_code) == OFFSET_OUT_OF_RANGE


def test_kafka_python_and_aiokafka_delete_records(broker):
    name = _filled_topic(broker)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        answer = admin.delete_records({KpTopicPartition(name, 0): 10})
    finally:
        admin.close()
    assert answer[KpTopicPartition(name, 0)]["low_watermark"] == 10
    _check_start(broker, name, 10)

    async def aio_delete():
        aio = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
        await aio.start()
        try:
            return await aio.delete_records({AioTopicPartition(name, 0): RecordsToDelete(20)})
        finally:
            await aio.close()

    assert asyncio.run(aio_delete()) == {AioTopicPartition(name, 0): 20}
    _check_start(broker, name, 20)
