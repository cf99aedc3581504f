"""Topic and broker configuration through real admin clients (confluent-kafka, kafka-python):
IncrementalAlterConfigs, AlterConfigs, DescribeConfigs, and changes taking effect live."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AioConfigResourceType
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewTopic, ResourceType)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigResourceType
from kafka.admin import KafkaAdminClient

from tests.kafka_wire import KafkaWire

INCREMENTAL_ALTER_CONFIGS = 44
RESOURCE_BROKER = 4

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 15


def _admin(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def _topic(admin: AdminClient, config=None, partitions=1) -> str:
    name = "cfg-" + uuid.uuid4().hex[:8]
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=TIMEOUT_S)
    return name


def _incremental(admin: AdminClient, rtype, name: str, ops: dict, validate_only=False):
    entries = [ConfigEntry(k, v, incremental_operation=op) for k, (op, v) in ops.items()]
    resource = ConfigResource(rtype, name, incremental_configs=entries)
    return admin.incremental_alter_configs([resource], validate_only=validate_only)[resource].result(
        timeout=TIMEOUT_S)


def _describe(admin: AdminClient, rtype, name: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(rtype, name)
    return admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)


def test_incremental_set_append_delete_and_validate_only_on_a_topic(broker):
    admin = _admin(broker)
    name = _topic(admin)
    _incremental(admin, ResourceType.TOPIC, name, {"retention.ms": (AlterConfigOpType.SET, "3600000")},
                 validate_only=True)
    assert _describe(admin, ResourceType.TOPIC, name)["retention.ms"].value == "604800000"
    _incremental(admin, ResourceType.TOPIC, name, {
        "retention.ms": (AlterConfigOpType.SET, "3600000"),
        "cleanup.policy": (AlterConfigOpType.APPEND, "compact"),
        "message.timestamp.difference.max.ms": (AlterConfigOpType.SET, "60000")})
    configs = _describe(admin, ResourceType.TOPIC, name)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].value == "delete,compact"
    assert configs["message.timestamp.difference.max.ms"].value == "60000"
    assert configs["compression.type"].value == "producer"  # every Kafka topic config is listed
    _incremental(admin, ResourceType.TOPIC, name, {"retention.ms": (AlterConfigOpType.DELETE, None),
                                                   "cleanup.policy": (AlterConfigOpType.SUBTRACT, "delete")})
    configs = _describe(admin, ResourceType.TOPIC, name)
    assert configs["retention.ms"].value == "604800000"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["cleanup.policy"].value == "compact"


@pytest.mark.parametrize("key,value", [("no.such.config", "1"), ("retention.ms", "soon"),
                                       ("min.insync.replicas", "0")])
def test_a_bad_alter_is_invalid_config_naming_the_key(broker, key, value):
    admin = _admin(broker)
    name = _topic(admin)
    with pytest.raises(KafkaException) as caught:
        _incremental(admin, ResourceType.TOPIC, name, {key: (AlterConfigOpType.SET, value)})
    error = caught.value.args[0]
    assert error.code() == KafkaError.INVALID_CONFIG and key in error.str()


def test_alter_configs_replaces_the_topics_overrides(broker):
    admin = _admin(broker)
    name = _topic(admin, {"retention.ms": "1000", "segment.bytes": "1048576"})
    resource = ConfigResource(ResourceType.TOPIC, name, set_config={"retention.bytes": "999999"})
    admin.alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    configs = _describe(admin, ResourceType.TOPIC, name)
    assert configs["retention.bytes"].value == "999999"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["segment.bytes"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def test_create_topics_accepts_every_kafka_topic_config(broker):
    admin = _admin(broker)
    given = {"message.timestamp.difference.max.ms": "5000", "compression.type": "zstd",
             "min.cleanable.dirty.ratio": "0.3", "unclean.leader.election.enable": "false",
             "segment.ms": "3600000", "delete.retention.ms": "1000", "preallocate": "false"}
    name = _topic(admin, given)
    configs = _describe(admin, ResourceType.TOPIC, name)
    assert {k: configs[k].value for k in given} == given


def test_a_broker_config_set_cluster_wide_becomes_every_topics_default(broker):
    admin = _admin(broker)
    name = _topic(admin)
    # The cluster-wide default (broker name ""): librdkafka and kafka-python refuse an empty
    # name, as the Java admin's kafka-configs --entity-default does not, so it is sent raw.
    with KafkaWire.connect(broker.port) as conn:
        answer = conn.request(INCREMENTAL_ALTER_CONFIGS, {"validate_only": False, "resources": [
            {"resource_type": RESOURCE_BROKER, "resource_name": "", "configs": [
                {"name": "log.retention.ms", "config_operation": 0, "value": "7200000"}]}]}, version=1)
    assert [r.error_code for r in answer.responses] == [0], answer
    configs = _describe(admin, ResourceType.TOPIC, name)
    assert configs["retention.ms"].value == "7200000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    _incremental(admin, ResourceType.BROKER, "1", {"log.retention.ms": (AlterConfigOpType.SET, "1800000")})
    broker_configs = _describe(admin, ResourceType.BROKER, "1")
    assert broker_configs["log.retention.ms"].value == "1800000"
    assert broker_configs["log.retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert broker_configs["advertised.listeners"].value == f"PLAINTEXT://{broker.bootstrap}"
    assert broker_configs["broker.id"].is_read_only
    assert _describe(admin, ResourceType.TOPIC, name)["retention.ms"].value == "1800000"
    # Kafka's dynamic broker configs that clients set by name (librdkafka's test 0081)
    assert (broker_configs["background.threads"].value, broker_configs["background.threads"].is_read_only,
            broker_configs["background.threads"].is_sensitive) == ("10", False, False)
    _incremental(admin, ResourceType.BROKER, "1", {"sasl.kerberos.min.time.before.relogin":
                                                   (AlterConfigOpType.SET, "58000"),
                                                   "background.threads": (AlterConfigOpType.SET, "9")})
    broker_configs = _describe(admin, ResourceType.BROKER, "1")
    assert broker_configs["sasl.kerberos.min.time.before.relogin"].value == "58000"
    assert broker_configs["background.threads"].value == "9"
    with pytest.raises(KafkaException) as caught:
        _incremental(admin, ResourceType.BROKER, "1", {"broker.id": (AlterConfigOpType.SET, "7")})
    assert caught.value.args[0].code() == KafkaError.INVALID_CONFIG and "broker.id" in caught.value.args[0].str()


def _produce(bootstrap: str, topic: str, value: bytes) -> KafkaError | None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.max.bytes": 1 << 20,
                         "enable.idempotence": False, "retries": 0, "message.timeout.ms": 10000})
    outcome = []
    producer.produce(topic, value, on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(TIMEOUT_S)
    assert outcome, "no delivery report"
    return outcome[0]


def test_max_message_bytes_and_min_insync_replicas_take_effect_live(broker):
    admin = _admin(broker)
    name = _topic(admin, {"max.message.bytes": "2048"})
    error = _produce(broker.bootstrap, name, b"x" * 4000)
    assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    _incremental(admin, ResourceType.TOPIC, name, {"max.message.bytes": (AlterConfigOpType.SET, "100000"),
                                                   "min.insync.replicas": (AlterConfigOpType.SET, "2")})
    error = _produce(broker.bootstrap, name, b"x" * 4000)
    assert error is not None and error.code() == KafkaError.NOT_ENOUGH_REPLICAS
    _incremental(admin, ResourceType.TOPIC, name, {"min.insync.replicas": (AlterConfigOpType.DELETE, None)})
    assert _produce(broker.bootstrap, name, b"x" * 4000) is None


def test_retention_bytes_set_while_running_deletes_old_segments(broker_factory):
    broker = broker_factory(extra_args=["--retention-check-interval-ms", "200"]).start()
    admin = _admin(broker)
    name = _topic(admin, {"segment.bytes": "4096"})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for _ in range(40):
        producer.produce(name, b"v" * 1000)
        producer.flush(TIMEOUT_S)
    segments = list((broker.data_dir / "partitions" / f"{name}-0").glob("*.seg"))
    assert len(segments) > 3
    _incremental(admin, ResourceType.TOPIC, name, {"retention.bytes": (AlterConfigOpType.SET, "8192")})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = list((broker.data_dir / "partitions" / f"{name}-0").glob("*.seg"))
        if len(left) <= 3:
            break
        time.sleep(0.2)
    assert len(left) <= 3, left


def test_kafka_python_admin_reads_types_and_alters(broker):
    name = _topic(_admin(broker))
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        result = admin.alter_configs([KpConfigResource(KpConfigResourceType.TOPIC, name,
                                                       configs={"retention.ms": "86400000"})])
        assert result["topic"][name] == "OK", result
        described = admin.describe_configs([KpConfigResource(KpConfigResourceType.TOPIC, name)],
                                           include_synonyms=True, config_filter="all")
        retention = described["topic"][name]["retention.ms"]
        assert retention["value"] == "86400000" and retention["config_type"] == "LONG"
        assert [s["name"] for s in retention["synonyms"]] == ["retention.ms", "log.retention.ms"]
        assert described["topic"][name]["cleanup.policy"]["config_type"] == "LIST"
    finally:
        admin.close()


def test_aiokafka_admin_alters_and_describes(broker):
    name = _topic(_admin(broker))

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
        await admin.start()
        try:
            await admin.alter_configs([AioConfigResource(AioConfigResourceType.TOPIC, name,
                                                         configs={"retention.bytes": "123456789"})])
            return await admin.describe_configs([AioConfigResource(AioConfigResourceType.TOPIC, name)])
        finally:
            await admin.close()

    (response,) = asyncio.run(run())
    (resource,) = response.to_object()["resources"]
    assert resource["error_code"] == 0, resource
    entries = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    assert entries["retention.bytes"] == "123456789" and entries["retention.ms"] == "604800000"


def _old_segments(broker, admin, producer, hour_ago_ms: int) -> str:
    name = _topic(admin, {"segment.bytes": "4096"})
    for _ in range(20):
        producer.produce(name, b"v" * 1000, timestamp=hour_ago_ms)
        producer.flush(TIMEOUT_S)
    return name


def _segment_count(broker, name: str) -> int:
    return len(list((broker.data_dir / "partitions" / f"{name}-0").glob("*.seg")))


def _until_trimmed(broker, name: str) -> None:
    deadline = time.monotonic() + 20
    while _segment_count(broker, name) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _segment_count(broker, name) == 1


def test_retention_ms_and_cleanup_policy_take_effect_live(broker_factory):
    """retention.ms lowered while running deletes a topic's old segments at the next pass;
    a topic switched to cleanup.policy=compact keeps them (retention is off; the cleaner
    rewrites segments but never deletes one)
    until it is switched back. Two sentinel topics, each changed after the previous one was
    trimmed, show that retention passes ran after `kept` was switched."""
    broker = broker_factory(extra_args=["--retention-check-interval-ms", "100"]).start()
    admin = _admin(broker)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    kept, first, second = (_old_segments(broker, admin, producer, hour_ago_ms) for _ in range(3))
    segments = _segment_count(broker, kept)
    assert segments > 3
    short = {"retention.ms": (AlterConfigOpType.SET, "60000")}
    _incremental(admin, ResourceType.TOPIC, kept, {**short, "cleanup.policy": (AlterConfigOpType.SET, "compact")})
    for sentinel in (first, second):
        _incremental(admin, ResourceType.TOPIC, sentinel, short)
        _until_trimmed(broker, sentinel)
    assert _segment_count(broker, kept) == segments
    _incremental(admin, ResourceType.TOPIC, kept, {"cleanup.policy": (AlterConfigOpType.DELETE, None)})
    _until_trimmed(broker, kept)


def test_segment_bytes_changed_while_running_rolls_smaller_segments(broker):
    admin = _admin(broker)
    name = _topic(admin)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})

    def produce(count: int) -> None:
        for _ in range(count):
            producer.produce(name, b"v" * 1000)
            producer.flush(TIMEOUT_S)

    produce(5)
    assert _segment_count(broker, name) == 1
    _incremental(admin, ResourceType.TOPIC, name, {"segment.bytes": (AlterConfigOpType.SET, "4096")})
    produce(20)
    assert _segment_count(broker, name) >= 5  # about 20 KB more in segments of 4 KB
