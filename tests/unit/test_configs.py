"""cluster/configs.py: validation, resolution order and the incremental operations."""

from __future__ import annotations

import pytest

from chronik_trio.cluster import configs
from chronik_trio.cluster.configs import AlterOp, ConfigSource, InvalidConfig


@pytest.mark.parametrize("key,value", [
    ("retention.ms", "-1"), ("retention.ms", str(2**63 - 1)), ("cleanup.policy", "compact,delete"),
    ("message.timestamp.difference.max.ms", "1000"), ("compression.type", "zstd"),
    ("min.cleanable.dirty.ratio", "0.1"), ("preallocate", "TRUE"), ("segment.bytes", "1048576")])
def test_legal_topic_configs_pass(key, value):
    configs.validate_topic_configs({key: value})


@pytest.mark.parametrize("key,value", [
    ("no.such.config", "1"), ("retention.ms", "soon"), ("retention.ms", "-2"),
    ("min.insync.replicas", "0"), ("cleanup.policy", "purge"), ("cleanup.policy", ""),
    ("preallocate", "yes"), ("min.cleanable.dirty.ratio", "1.5"), ("min.cleanable.dirty.ratio", "nan"), ("max.message.bytes", str(2**31)),
    ("compression.type", "brotli")])
def test_bad_topic_configs_name_the_key(key, value):
    with pytest.raises(InvalidConfig, match=key.replace(".", r"\.")) as caught:
        configs.validate_topic_configs({key: value})
    assert caught.value.error_code == 40  # INVALID_CONFIG


def test_static_broker_settings_cannot_change_while_running():
    with pytest.raises(InvalidConfig, match="broker.id"):
        configs.validate_broker_configs({"broker.id": "3"})
    configs.validate_broker_configs({"log.retention.ms": "1000", "message.max.bytes": "2048"})


def test_every_topic_config_has_a_typed_default_that_validates():
    for definition in configs.TOPIC_CONFIGS.values():
        configs.validate(definition, definition.default)
    assert configs.TOPIC_CONFIGS["retention.ms"].type == configs.ConfigType.LONG


def test_a_topic_value_resolves_topic_then_broker_then_cluster_then_static_then_default():
    static = {"message.max.bytes": "2000"}
    broker_configs = {"": {"log.retention.ms": "5000"}, "2": {"log.retention.ms": "6000"}}
    r = configs.resolve_topic("retention.ms", {}, broker_configs, 1, static)
    assert (r.value, r.source) == ("5000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    r = configs.resolve_topic("retention.ms", {}, broker_configs, 2, static)
    assert (r.value, r.source) == ("6000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert [s[2] for s in r.synonyms] == [ConfigSource.DYNAMIC_BROKER_CONFIG,
                                          ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
                                          ConfigSource.DEFAULT_CONFIG]
    r = configs.resolve_topic("retention.ms", {"retention.ms": "7"}, broker_configs, 2, static)
    assert (r.value, r.source, r.synonyms[1][0]) == ("7", ConfigSource.DYNAMIC_TOPIC_CONFIG, "log.retention.ms")
    r = configs.resolve_topic("max.message.bytes", {}, broker_configs, 1, static)
    assert (r.value, r.source) == ("2000", ConfigSource.STATIC_BROKER_CONFIG)
    r = configs.resolve_topic("segment.ms", {}, {}, 1, static)
    assert (r.value, r.source) == ("604800000", ConfigSource.DEFAULT_CONFIG)


def test_incremental_set_delete_append_subtract():
    catalog = configs.TOPIC_CONFIGS
    current = {"retention.ms": "1000", "min.insync.replicas": "2"}
    change = configs.incremental_change(catalog, current, lambda key: catalog[key].default, [
        ("retention.ms", AlterOp.SET, "2000"), ("min.insync.replicas", AlterOp.DELETE, None),
        ("cleanup.policy", AlterOp.APPEND, "compact")])
    assert change.set == {"retention.ms": "2000", "cleanup.policy": "delete,compact"}
    assert change.removed == ("min.insync.replicas",)
    change = configs.incremental_change(catalog, {"cleanup.policy": "delete,compact"},
                                        lambda key: catalog[key].default,
                                        [("cleanup.policy", AlterOp.SUBTRACT, "delete")])
    assert change.set == {"cleanup.policy": "compact"}


@pytest.mark.parametrize("ops,match", [
    ([("retention.ms", AlterOp.APPEND, "5")], "retention.ms"),
    ([("cleanup.policy", AlterOp.SUBTRACT, "delete")], "cleanup.policy"),
    ([("nope", AlterOp.SET, "1")], "nope"),
    ([("retention.ms", 9, "1")], "retention.ms"),
    ([("retention.ms", AlterOp.SET, "1"), ("retention.ms", AlterOp.DELETE, None)], "retention.ms")])
def test_incremental_refusals_name_the_key(ops, match):
    catalog = configs.TOPIC_CONFIGS
    with pytest.raises(InvalidConfig, match=match.replace(".", r"\.")):
        configs.incremental_change(catalog, {}, lambda key: catalog[key].default, ops)


def test_alter_configs_replaces_the_whole_set_of_overrides():
    change = configs.replace_change(configs.TOPIC_CONFIGS, {"retention.ms": "1", "segment.bytes": "1024"},
                                    [("retention.ms", "5")])
    assert change.set == {"retention.ms": "5"} and change.removed == ("segment.bytes",)
    with pytest.raises(InvalidConfig, match="retention.ms"):
        configs.replace_change(configs.TOPIC_CONFIGS, {}, [("retention.ms", "5"), ("retention.ms", "6")])


def test_kafka_dynamic_broker_configs_clients_ask_by_name():
    """Kafka 4's dynamic broker configs that admin clients set by name (librdkafka's test
    0081: sasl.kerberos.min.time.before.relogin, background.threads) are accepted with
    Kafka's defaults and bounds; every dynamic broker config's default validates."""
    for definition in configs.DYNAMIC_BROKER_CONFIGS.values():
        configs.validate(definition, definition.default)
    configs.validate_broker_configs({"sasl.kerberos.min.time.before.relogin": "58000",
                                     "background.threads": "9", "num.io.threads": "4"})
    assert configs.resolve_broker("background.threads", {}, 1, {}).value == "10"
    assert configs.DYNAMIC_BROKER_CONFIGS["sasl.login.refresh.buffer.seconds"].type == configs.ConfigType.SHORT
    for key, value in [("background.threads", "0"), ("sasl.login.refresh.buffer.seconds", "40000"),
                       ("sasl.kerberos.ticket.renew.jitter", "x"), ("sasl.jaas.config", "secret")]:
        with pytest.raises(InvalidConfig, match=key.replace(".", r"\.")):
            configs.validate_broker_configs({key: value})


def test_group_configs_stay_within_the_brokers_bounds_and_resolve_to_their_synonyms():
    static = dict(configs.GROUP_BROKER_SETTINGS)
    configs.validate_group_configs({"consumer.session.timeout.ms": "60000", "streams.num.standby.replicas": "2",
                                    "share.auto.offset.reset": "by_duration:P1DT2H"}, static)
    for bad, match in (({"consumer.session.timeout.ms": "44999"}, "group.consumer.min.session.timeout.ms"),
                       ({"share.heartbeat.interval.ms": "15001"}, "group.share.max.heartbeat.interval.ms"),
                       ({"streams.num.standby.replicas": "3"}, "group.streams.max.standby.replicas"),
                       ({"share.auto.offset.reset": "by_duration:1h"}, "share.auto.offset.reset")):
        with pytest.raises(InvalidConfig, match=match):
            configs.validate_group_configs(bad, static)
    # A broker whose bounds let the heartbeat reach the session timeout: refused, as Kafka does.
    loose = {**static, "group.consumer.max.heartbeat.interval.ms": "50000"}
    with pytest.raises(InvalidConfig, match="consumer.session.timeout.ms .* greater than consumer.heartbeat"):
        configs.validate_group_configs({"consumer.heartbeat.interval.ms": "45000"}, loose)
    resolved = configs.resolve_group("consumer.session.timeout.ms", {"consumer.session.timeout.ms": "50000"}, static)
    assert (resolved.value, resolved.source) == ("50000", ConfigSource.DYNAMIC_GROUP_CONFIG)
    assert resolved.synonyms[1] == ("group.consumer.session.timeout.ms", "45000", ConfigSource.DEFAULT_CONFIG)
    assert configs.resolve_group("share.isolation.level", {}, static).value == "read_uncommitted"
