"""The admin clients of kafka-python and aiokafka (topics, configs, cluster, groups) against a
real `chronik-trio node`, to fill those cells of docs/clients.md's matrix; confluent-kafka's
AdminClient is in tests/integration/test_admin.py and tests/groups/test_group_admin.py."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewTopic as AioNewTopic
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AioConfigResourceType
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

pytestmark = pytest.mark.timeout(120)


def test_kafka_python_admin_creates_describes_grows_and_deletes_a_topic(node):
    admin = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=30_000)
    topic = "kp-admin"
    try:
        (created,) = admin.create_topics([NewTopic(topic, 2, 1)])["topics"]
        assert created["error_code"] == 0, created
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        assert configs["topic"][topic]["cleanup.policy"]["value"] == "delete"
        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 1 and [b["broker_id"] for b in cluster["brokers"]] == [1]
        (described,) = admin.describe_topics([topic])
        assert [(p["partition_index"], p["leader_id"]) for p in described["partitions"]] == [(0, 1), (1, 1)]
        grown = admin.create_partitions({topic: NewPartitions(3)})
        assert [r.error_code for r in grown.results] == [0]
        (described,) = admin.describe_topics([topic])
        assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2]
        (deleted,) = admin.delete_topics([topic])["topics"]
        assert deleted["error_code"] == 0
        assert topic not in admin.list_topics()
    finally:
        admin.close()


async def _aiokafka_admin(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    topic = "aio-admin"
    try:
        created = await admin.create_topics([AioNewTopic(topic, 2, 1)])
        assert [e[1] for e in created.topic_errors] == [0], created
        (configs,) = await admin.describe_configs([AioConfigResource(AioConfigResourceType.TOPIC, topic)])
        (resource,) = configs.resources
        assert resource[0] == 0 and ("cleanup.policy", "delete") in [(e[0], e[1]) for e in resource[4]]
        cluster = await admin.describe_cluster()
        assert cluster["controller_id"] == 1 and [b["node_id"] for b in cluster["brokers"]] == [1]
        assert isinstance(await admin.list_consumer_groups(), list)
        deleted = await admin.delete_topics([topic])
        assert [e[1] for e in deleted.topic_error_codes] == [0], deleted
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()


def test_aiokafka_admin_creates_describes_and_deletes_a_topic(node):
    # aiokafka runs on asyncio; the suite's async tests run on trio, so this one is plain.
    asyncio.run(_aiokafka_admin(node.bootstrap))
