"""Config changes on a 3-node cluster: made through one node, seen by every node (they live
in __meta), in effect on the partition's leader wherever it is, and still there after a
node restarts."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigResourceType
from kafka.admin import KafkaAdminClient

from tests.kafka_wire import DESCRIBE_CONFIGS, MESSAGE_TOO_LARGE, Record
from tests.replication.cluster import NONE, produce_raw, wait_balanced, wait_for

pytestmark = pytest.mark.timeout(150)

TIMEOUT_S = 20
RESOURCE_TOPIC, RESOURCE_BROKER, RESOURCE_GROUP = 2, 4, 32
SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_GROUP = 2, 8


def _described(cluster, n: int, rtype: int, name: str) -> dict[str, tuple[str, int]]:
    """DescribeConfigs sent to node n itself: name -> (value, source)."""
    with cluster.connect(n) as conn:
        answer = conn.request(DESCRIBE_CONFIGS, {"resources": [
            {"resource_type": rtype, "resource_name": name, "configuration_keys": None}]})
    (result,) = answer.results
    assert int(result.error_code) == NONE, result
    return {c.name: (c.value, int(c.config_source)) for c in result.configs}


def _alter(bootstrap: str, rtype, name: str, ops: dict) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entries = [ConfigEntry(k, v, incremental_operation=op) for k, (op, v) in ops.items()]
    resource = ConfigResource(rtype, name, incremental_configs=entries)
    admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)


def test_a_change_through_one_node_is_seen_by_all_takes_effect_and_survives_a_restart(cluster):
    name = "cfg3-" + uuid.uuid4().hex[:6]
    everyone = ",".join(f"127.0.0.1:{cluster.port(n)}" for n in cluster.ids)
    admin = AdminClient({"bootstrap.servers": everyone})
    admin.create_topics([NewTopic(name, 1, 3)])[name].result(timeout=TIMEOUT_S)
    leader = wait_balanced(cluster, name)[0].leader

    _alter(f"127.0.0.1:{cluster.port(2)}", ResourceType.TOPIC, name, {
        "retention.ms": (AlterConfigOpType.SET, "123456"),
        "max.message.bytes": (AlterConfigOpType.SET, "1024")})
    _alter(f"127.0.0.1:{cluster.port(3)}", ResourceType.BROKER, "3", {
        "log.retention.bytes": (AlterConfigOpType.SET, "99999999")})
    group = "grp3-" + name
    _alter(f"127.0.0.1:{cluster.port(1)}", ResourceType.GROUP, group, {
        "consumer.session.timeout.ms": (AlterConfigOpType.SET, "55000")})
    for n in cluster.ids:
        wait_for(f"node {n} sees the group's change",
                 lambda: _described(cluster, n, RESOURCE_GROUP, group)["consumer.session.timeout.ms"]
                 == ("55000", SOURCE_DYNAMIC_GROUP), timeout_s=10)
        wait_for(f"node {n} sees the topic change",
                 lambda: _described(cluster, n, RESOURCE_TOPIC, name)["retention.ms"][0] == "123456",
                 timeout_s=10)
        wait_for(f"node {n} sees broker 3's change",
                 lambda: _described(cluster, n, RESOURCE_BROKER, "3")["log.retention.bytes"]
                 == ("99999999", SOURCE_DYNAMIC_BROKER), timeout_s=10)

    kp = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{cluster.port(1)}", request_timeout_ms=10000)
    try:
        result = kp.alter_configs([KpConfigResource(KpConfigResourceType.TOPIC, name,
                                                    configs={"retention.bytes": "77777777"})], incremental=True)
    finally:
        kp.close()
    assert result["topic"][name] == "OK", result
    for n in cluster.ids:
        wait_for(f"node {n} sees kafka-python's change",
                 lambda: _described(cluster, n, RESOURCE_TOPIC, name)["retention.bytes"][0] == "77777777",
                 timeout_s=10)

    big = [Record(b"k", b"x" * 3000)]
    error, _ = produce_raw(cluster, leader, name, 0, big)
    assert error == MESSAGE_TOO_LARGE
    _alter(everyone, ResourceType.TOPIC, name, {"max.message.bytes": (AlterConfigOpType.DELETE, None)})
    wait_for("the leader takes the batch once the limit is gone",
             lambda: produce_raw(cluster, leader, name, 0, big)[0] == NONE, timeout_s=10)

    follower = next(n for n in cluster.ids if n != leader)
    cluster.kill(follower)
    cluster.restart(follower)
    configs = _described(cluster, follower, RESOURCE_TOPIC, name)
    assert configs["retention.ms"][0] == "123456" and configs["max.message.bytes"][0] == "1048588"
    assert configs["retention.bytes"][0] == "77777777"
    assert _described(cluster, follower, RESOURCE_BROKER, "3")["log.retention.bytes"][0] == "99999999"
