"""Admin APIs through a real client (confluent-kafka's AdminClient) against a real node."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, IsolationLevel, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec, ResourceType

pytestmark = pytest.mark.timeout(90)


def _admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def _create(admin, name, partitions=3, config=None):
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=15)


def test_create_describe_and_delete_topics(broker):
    admin = _admin(broker)
    _create(admin, "orders", 4, {"retention.ms": "3600000"})
    md = admin.list_topics(timeout=10)
    assert sorted(md.topics["orders"].partitions) == [0, 1, 2, 3]
    assert all(p.leader == 1 and p.replicas == [1] and p.isrs == [1]
               for p in md.topics["orders"].partitions.values())

    res = ConfigResource(ResourceType.TOPIC, "orders")
    configs = admin.describe_configs([res])[res].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"
    assert configs["retention.ms"].source != configs["cleanup.policy"].source  # set vs default

    with pytest.raises(KafkaException) as exists:
        _create(admin, "orders")
    assert exists.value.args[0].name() == "TOPIC_ALREADY_EXISTS"

    admin.delete_topics(["orders"])["orders"].result(timeout=15)
    assert "orders" not in admin.list_topics(timeout=10).topics
    assert not (broker.data_dir / "partitions" / "orders-0").exists()


def test_a_recreated_topic_starts_empty(broker):
    admin = _admin(broker)
    _create(admin, "again", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce("again", b"old%d" % i, partition=0)
    assert p.flush(15) == 0
    admin.delete_topics(["again"])["again"].result(timeout=15)
    _create(admin, "again", 1)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    low, high = c.get_watermark_offsets(TopicPartition("again", 0), timeout=10)
    c.close()
    assert (low, high) == (0, 0)


@pytest.mark.parametrize("config,error", [
    ({"no.such.config": "1"}, "INVALID_CONFIG"),
    ({"retention.ms": "soon"}, "INVALID_CONFIG"),
])
def test_bad_topic_configs_are_refused(broker, config, error):
    with pytest.raises(KafkaException) as refused:
        _create(_admin(broker), "cfg-" + uuid.uuid4().hex[:6], 1, config)
    assert refused.value.args[0].name() == error


def test_replication_factor_beyond_the_cluster_is_refused(broker):
    admin = _admin(broker)
    fut = admin.create_topics([NewTopic("rf3", 1, 3)])["rf3"]
    with pytest.raises(KafkaException) as refused:
        fut.result(timeout=15)
    assert refused.value.args[0].name() == "INVALID_REPLICATION_FACTOR"


def test_describe_cluster_and_broker_configs(broker):
    admin = _admin(broker)
    cluster = admin.describe_cluster().result(timeout=10)
    assert [n.id for n in cluster.nodes] == [1] and cluster.controller.id == 1
    assert cluster.cluster_id
    res = ConfigResource(ResourceType.BROKER, "1")
    configs = admin.describe_configs([res])[res].result(timeout=10)
    assert configs["message.max.bytes"].value == "1048588"


def test_the_cluster_id_and_topics_survive_a_restart(broker):
    admin = _admin(broker)
    _create(admin, "durable-topic", 2)
    before = admin.describe_cluster().result(timeout=10).cluster_id
    broker.restart()
    admin = _admin(broker)
    assert admin.describe_cluster().result(timeout=10).cluster_id == before
    assert sorted(admin.list_topics(timeout=10).topics["durable-topic"].partitions) == [0, 1]


def test_retention_by_size_deletes_whole_old_segments(broker_factory):
    broker = broker_factory(extra_args=["--retention-check-interval-ms", "200"]).start()
    admin = _admin(broker)
    _create(admin, "short", 1, {"segment.bytes": "20000", "retention.bytes": "30000"})
    # One record per batch, so there are many entries to spread over segments.
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for i in range(200):
        p.produce("short", b"x" * 1000, partition=0)
        p.poll(0)
    assert p.flush(15) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    directory = broker.data_dir / "partitions" / "short-0"

    def on_disk() -> int:
        return sum(s.stat().st_size for s in directory.glob("*.seg"))

    deadline = time.monotonic() + 15  # retention runs every 200 ms; it may first run mid-produce
    while time.monotonic() < deadline:
        low, high = c.get_watermark_offsets(TopicPartition("short", 0), timeout=10)
        if low > 0 and on_disk() <= 30000 + 20000:
            break
        time.sleep(0.2)
    c.close()
    assert high == 200
    assert 0 < low < 200  # whole segments went; the active one (and the newest data) stays
    assert on_disk() <= 30000 + 20000  # over retention.bytes by less than one segment


def test_create_partitions_adds_partitions_that_take_writes(broker):
    from confluent_kafka.admin import NewPartitions
    admin = _admin(broker)
    _create(admin, "grow", 2)
    admin.create_partitions([NewPartitions("grow", 5)])["grow"].result(timeout=15)
    assert sorted(admin.list_topics(timeout=10).topics["grow"].partitions) == [0, 1, 2, 3, 4]
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for part in range(5):
        p.produce("grow", b"x", partition=part)
    assert p.flush(15) == 0
    with pytest.raises(KafkaException) as shrink:
        admin.create_partitions([NewPartitions("grow", 3)])["grow"].result(timeout=15)
    assert shrink.value.args[0].name() == "INVALID_PARTITIONS"


def test_authorized_operations_are_every_supported_one_without_an_authorizer(broker):
    """KIP-430 (librdkafka's test 0081 asks for them): DescribeTopics (Metadata), DescribeCluster
    and DescribeConsumerGroups with include_authorized_operations answer each resource's
    supported operations, as Kafka without an authorizer does; without it, none."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = "ops-" + uuid.uuid4().hex[:8]
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=15)
    group = "ops-group-" + uuid.uuid4().hex[:8]
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(name, 0, 0)], asynchronous=False)
    finally:
        consumer.close()
    topic = admin.describe_topics(TopicCollection([name]), include_authorized_operations=True)[name].result(timeout=15)
    assert {op.name for op in topic.authorized_operations} == {
        "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=15)
    assert {op.name for op in cluster.authorized_operations} == {
        "CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
    described = admin.describe_consumer_groups([group], include_authorized_operations=True)[group].result(timeout=15)
    assert {op.name for op in described.authorized_operations} == {
        "READ", "DESCRIBE", "DELETE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
    assert admin.describe_topics(TopicCollection([name]))[name].result(timeout=15).authorized_operations is None
    assert admin.describe_cluster().result(timeout=15).authorized_operations is None


def test_list_offsets_max_timestamp_is_the_record_with_the_largest_timestamp(broker):
    """KIP-734 (OffsetSpec.max_timestamp, librdkafka's test 0081): the offset and timestamp of
    the first record with the largest timestamp, inside a batch, under both isolation levels."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = "maxts-" + uuid.uuid4().hex[:8]
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=15)
    tp = TopicPartition(name, 0)
    assert admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=15).offset == -1  # empty
    base = int(time.time() * 1000) - 60_000
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 100})
    for ts in (base + 100, base + 400, base + 250, base + 400):
        producer.produce(name, b"v", timestamp=ts)
    assert producer.flush(15) == 0
    for isolation in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
        info = admin.list_offsets({tp: OffsetSpec.max_timestamp()}, isolation_level=isolation)[tp].result(timeout=15)
        assert (info.offset, info.timestamp) == (1, base + 400)
