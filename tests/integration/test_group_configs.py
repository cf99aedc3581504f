"""Group configs (Kafka 4's GROUP config resource) through real admin clients on one node:
confluent-kafka's DescribeConfigs / IncrementalAlterConfigs / AlterConfigs with
ResourceType.GROUP, validate_only, DELETE back to the default, the broker's bounds refused
with INVALID_CONFIG naming the key, the value kept across a restart (in __meta), and
`chronik-trio admin config --group`."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigResource, ConfigSource, ResourceType

from tests.integration.test_admin_cli import admin_here
from tests.integration.test_configs import TIMEOUT_S, _describe, _incremental

pytestmark = pytest.mark.timeout(120)

GROUP_CONFIG_KEYS = {"consumer.session.timeout.ms", "consumer.heartbeat.interval.ms", "share.session.timeout.ms",
                     "share.heartbeat.interval.ms", "share.record.lock.duration.ms", "share.auto.offset.reset",
                     "share.isolation.level", "streams.session.timeout.ms", "streams.heartbeat.interval.ms",
                     "streams.num.standby.replicas"}
INT_TYPE = 3  # DescribeConfigs' config_type INT (confluent-kafka reports the number)


def _group() -> str:
    return "grp-" + uuid.uuid4().hex[:8]


def _refusal(admin: AdminClient, name: str, ops: dict) -> KafkaError:
    with pytest.raises(KafkaException) as refused:
        _incremental(admin, ResourceType.GROUP, name, ops)
    return refused.value.args[0]


def test_a_group_resource_is_described_set_validated_and_deleted(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = _group()  # no such group: its configs can be set before it exists, as in Kafka
    configs = _describe(admin, ResourceType.GROUP, name)
    assert set(configs) == GROUP_CONFIG_KEYS
    session = configs["consumer.session.timeout.ms"]
    assert (session.value, session.source) == ("45000", ConfigSource.DEFAULT_CONFIG.value)
    assert configs["share.isolation.level"].value == "read_uncommitted"

    _incremental(admin, ResourceType.GROUP, name, {"consumer.session.timeout.ms": (AlterConfigOpType.SET, "50000")},
                 validate_only=True)
    assert _describe(admin, ResourceType.GROUP, name)["consumer.session.timeout.ms"].value == "45000"
    _incremental(admin, ResourceType.GROUP, name, {
        "consumer.session.timeout.ms": (AlterConfigOpType.SET, "50000"),
        "share.auto.offset.reset": (AlterConfigOpType.SET, "by_duration:PT1H")})
    configs = _describe(admin, ResourceType.GROUP, name)
    assert (configs["consumer.session.timeout.ms"].value,
            configs["consumer.session.timeout.ms"].source) == ("50000", ConfigSource.GROUP_CONFIG.value)
    assert configs["share.auto.offset.reset"].value == "by_duration:PT1H"
    assert _describe(admin, ResourceType.GROUP, _group())["consumer.session.timeout.ms"].value == "45000"

    # The broker's bounds (group.consumer.max.session.timeout.ms 60000, ...) and unknown keys.
    for ops, key in (({"consumer.session.timeout.ms": (AlterConfigOpType.SET, "70000")}, "consumer.session.timeout.ms"),
                     ({"consumer.heartbeat.interval.ms": (AlterConfigOpType.SET, "1000")},
                      "consumer.heartbeat.interval.ms"),
                     ({"share.isolation.level": (AlterConfigOpType.SET, "dirty")}, "share.isolation.level"),
                     ({"retention.ms": (AlterConfigOpType.SET, "1000")}, "retention.ms")):
        error = _refusal(admin, name, ops)
        assert error.code() == KafkaError.INVALID_CONFIG and key in error.str(), error
    assert _describe(admin, ResourceType.GROUP, name)["consumer.session.timeout.ms"].value == "50000"

    _incremental(admin, ResourceType.GROUP, name, {"consumer.session.timeout.ms": (AlterConfigOpType.DELETE, None)})
    configs = _describe(admin, ResourceType.GROUP, name)
    assert (configs["consumer.session.timeout.ms"].value,
            configs["consumer.session.timeout.ms"].source) == ("45000", ConfigSource.DEFAULT_CONFIG.value)
    assert configs["share.auto.offset.reset"].value == "by_duration:PT1H"

    # AlterConfigs: the given configs become the group's whole set of overrides.
    resource = ConfigResource(ResourceType.GROUP, name, set_config={"streams.num.standby.replicas": "1"})
    admin.alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    configs = _describe(admin, ResourceType.GROUP, name)
    assert configs["streams.num.standby.replicas"].value == "1"
    assert configs["share.auto.offset.reset"].source == ConfigSource.DEFAULT_CONFIG.value


def test_group_configs_survive_a_restart_and_the_admin_cli_reads_and_changes_them(broker_factory, capsys):
    broker = broker_factory().start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = _group()
    _incremental(admin, ResourceType.GROUP, name, {"consumer.heartbeat.interval.ms": (AlterConfigOpType.SET, "6000")})
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert _describe(admin, ResourceType.GROUP, name)["consumer.heartbeat.interval.ms"].value == "6000"

    done = admin_here(capsys, broker.bootstrap, "config", "set", "--group", name, "share.record.lock.duration.ms=20000")
    assert done.returncode == 0, done.stderr
    done = admin_here(capsys, broker.bootstrap, "config", "get", "--group", name, "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["configs"]}
    assert (rows["share.record.lock.duration.ms"]["value"], rows["share.record.lock.duration.ms"]["source"]) == \
        ("20000", "group")
    assert rows["consumer.heartbeat.interval.ms"]["type"] == "INT"
    done = admin_here(capsys, broker.bootstrap, "config", "delete", "--group", name, "consumer.heartbeat.interval.ms")
    assert done.returncode == 0, done.stderr
    assert _describe(admin, ResourceType.GROUP, name)["consumer.heartbeat.interval.ms"].value == "5000"
    refused = admin_here(capsys, broker.bootstrap, "config", "set", "--group", name,
                         "share.record.lock.duration.ms=1000")
    assert refused.returncode == 1 and "share.record.lock.duration.ms" in refused.stderr
