"""Group administration with the real admin clients: confluent-kafka's AdminClient and
kafka-python's KafkaAdminClient list, describe, read, alter and delete groups and offsets."""

from __future__ import annotations

import time

import pytest

from tests.groups.harness import GROUP_CONFIG

pytestmark = pytest.mark.timeout(90)

TOPIC = "admin-topic"


@pytest.fixture
def bootstrap(broker_factory, tmp_path):
    config = tmp_path / "groups.toml"
    config.write_text(GROUP_CONFIG)
    broker = broker_factory(extra_args=["--config", str(config)]).start()
    return broker.bootstrap


def test_confluent_admin_lists_describes_reads_alters_and_deletes_groups(bootstrap):
    import confluent_kafka as ck
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    for f in admin.create_topics([NewTopic(TOPIC, 3, 1)]).values():
        f.result(30)
    c = ck.Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": "ga",
                     "session.timeout.ms": 6000, "enable.auto.commit": False, "client.id": "admin-test"})
    try:
        c.subscribe([TOPIC])
        deadline = time.monotonic() + 30
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.2)
        assert len(c.assignment()) == 3
        c.commit(offsets=[TopicPartition(TOPIC, 0, 5, metadata="m")], asynchronous=False)
        listed = admin.list_consumer_groups().result(30)
        assert [(g.group_id, g.state) for g in listed.valid] == [("ga", ConsumerGroupState.STABLE)]
        d = admin.describe_consumer_groups(["ga"])["ga"].result(30)
        assert (d.state, d.partition_assignor) == (ConsumerGroupState.STABLE, "range")
        (member,) = d.members
        assert member.client_id == "admin-test" and member.member_id.startswith("admin-test-")
        assert sorted(tp.partition for tp in member.assignment.topic_partitions) == [0, 1, 2]
        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("ga")])["ga"].result(30)
        assert [(tp.partition, tp.offset) for tp in offsets.topic_partitions] == [(0, 5)]
        assert admin.delete_consumer_groups(["ga"])["ga"].exception(30) is not None  # not Empty
    finally:
        c.close()
    assert admin.delete_consumer_groups(["ga"])["ga"].exception(30) is None
    altered = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("gb", [TopicPartition(TOPIC, 1, 9)])])["gb"].result(30)
    assert [(tp.partition, tp.offset, tp.error) for tp in altered.topic_partitions] == [(1, 9, None)]


def test_kafka_python_admin_lists_describes_reads_alters_and_deletes_groups(bootstrap):
    from kafka import KafkaAdminClient, OffsetAndMetadata, TopicPartition
    from kafka.admin import NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(TOPIC, 3, 1)])
        tp = TopicPartition(TOPIC, 2)
        assert admin.alter_group_offsets("gc", {tp: OffsetAndMetadata(3, "kept", -1)}) == {tp: _no_error()}
        assert admin.list_group_offsets("gc") == {"gc": {tp: OffsetAndMetadata(3, "kept", -1)}}
        assert [g["group_id"] for g in admin.list_groups()] == ["gc"]
        described = admin.describe_groups(["gc"])["gc"]
        assert (described["group_state"], described["members"]) == ("Empty", [])
        assert admin.delete_group_offsets("gc", [tp]) == {tp: _no_error()}
        assert admin.list_group_offsets("gc") == {"gc": {}}
        assert admin.delete_groups(["gc", "nope"]) == {"gc": "OK", "nope": "GroupIdNotFoundError"}
    finally:
        admin.close()


def _no_error():
    import kafka.errors
    return kafka.errors.NoError
