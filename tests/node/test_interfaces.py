"""The node implements the typed interfaces the Kafka handlers (kafka/handlers/context.py)
and the group coordinator (CoordinatorHost) are written against: every member, with the same parameters and the same
sync/async kind, so a handler's call cannot miss at run time."""

from __future__ import annotations

import inspect
import typing

import attrs
import pytest

from chronik_trio.kafka.handlers.context import BrokerConfig, BrokerContext, GroupCoordinatorApi, Replica
from chronik_trio.node.config import NodeConfig
from chronik_trio.node.group_coordinator import CoordinatorHost, GroupCoordinator, GroupSettings
from chronik_trio.node.node import Node
from chronik_trio.node.partition_group import PartitionReplica

pytestmark = pytest.mark.timeout(30)


def _members(protocol) -> dict[str, object]:
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {n for n in vars(protocol) if not n.startswith("_")}
    return {n: vars(protocol).get(n) for n in sorted(names)}


def _params(function) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()][1:]


def _check(protocol, implementation: type, instance_attributes: typing.Collection[str] = ()) -> None:
    for name, declared in _members(protocol).items():
        if inspect.isfunction(declared) and isinstance(instance_attributes, dict) and name in instance_attributes:
            actual = instance_attributes[name]  # a callable the instance was given
            assert callable(actual), (implementation.__name__, name)
            assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(declared), \
                (implementation.__name__, name)
        elif inspect.isfunction(declared):
            actual = getattr(implementation, name, None)
            assert inspect.isfunction(actual), (implementation.__name__, name)
            assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(declared), \
                (implementation.__name__, name)
            assert _params(actual) == _params(declared), (implementation.__name__, name)
        else:  # a property or a data attribute
            assert hasattr(implementation, name) or name in instance_attributes, (implementation.__name__, name)


def test_the_node_is_a_broker_context(tmp_path):
    node = Node(NodeConfig(data_dir=tmp_path))
    _check(BrokerContext, Node, instance_attributes=vars(node))


def test_the_node_hosts_the_group_coordinator(tmp_path):
    node = Node(NodeConfig(data_dir=tmp_path))
    _check(CoordinatorHost, Node, instance_attributes=vars(node))
    _check(GroupSettings, NodeConfig, instance_attributes=attrs.fields_dict(NodeConfig))


def test_partition_replicas_are_replicas():
    _check(Replica, PartitionReplica, instance_attributes=["log"])


def test_the_group_coordinator_serves_the_group_apis():
    _check(GroupCoordinatorApi, GroupCoordinator)


def test_the_node_config_has_every_broker_setting():
    _check(BrokerConfig, NodeConfig, instance_attributes=attrs.fields_dict(NodeConfig))
