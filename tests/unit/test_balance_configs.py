"""Leader balancing's broker configs (Kafka's names): dynamic, validated, and resolved over the
node's static settings (node/preferred_leaders.py reads them this way)."""

import pytest

from chronik_trio.cluster.configs import InvalidConfig, resolve_broker, validate_broker_configs
from chronik_trio.node.config import ConfigError, NodeConfig


def test_the_balancing_configs_are_dynamic_broker_configs_with_kafkas_names():
    validate_broker_configs({"auto.leader.rebalance.enable": "false", "leader.imbalance.check.interval.seconds": "30",
                             "leader.imbalance.per.broker.percentage": "0"})
    for bad in ({"leader.imbalance.per.broker.percentage": "101"}, {"auto.leader.rebalance.enable": "maybe"},
                {"leader.imbalance.check.interval.seconds": "0"}):
        with pytest.raises(InvalidConfig):
            validate_broker_configs(bad)


def test_a_dynamic_value_wins_over_the_nodes_own_setting():
    static = NodeConfig(node_id=2, auto_leader_rebalance_enable=False, leader_balance_interval_ms=7000).kafka_configs()
    assert resolve_broker("auto.leader.rebalance.enable", {}, 2, static).value == "false"
    assert resolve_broker("leader.imbalance.check.interval.seconds", {}, 2, static).value == "7"
    cluster_wide = {"": {"auto.leader.rebalance.enable": "true"}}
    assert resolve_broker("auto.leader.rebalance.enable", cluster_wide, 2, static).value == "true"


def test_join_needs_a_member_address_and_this_nodes_raft_address():
    with pytest.raises(ConfigError, match="join: expected HOST:PORT"):
        NodeConfig(node_id=4, peers="4@127.0.0.1:9099", join="nohost")
    with pytest.raises(ConfigError, match="join needs peers"):
        NodeConfig(node_id=4, join="127.0.0.1:9092")
    assert NodeConfig(node_id=4, peers="4@127.0.0.1:9099", join="127.0.0.1:9092").join_target == \
        (None, ("127.0.0.1", 9092))


def test_join_through_a_members_raft_address_names_another_node():
    config = NodeConfig(node_id=4, peers="4@127.0.0.1:9099", join="2@10.0.0.2:9093")
    assert config.join_target == (2, ("10.0.0.2", 9093))
    for bad in ("4@127.0.0.1:9093", "x@127.0.0.1:9093", "0@127.0.0.1:9093", "2@nohost"):
        with pytest.raises(ConfigError, match="join: expected"):
            NodeConfig(node_id=4, peers="4@127.0.0.1:9099", join=bad)
