"""What a handler may use from the node (implemented by chronik_trio.node.node.Node)."""

from __future__ import annotations

import typing

from chronik_trio.cluster.meta import MetaState, Topic


class BrokerContext(typing.Protocol):
    node_id: int
    cluster_id: str
    config: typing.Any  # node.config.NodeConfig
    meta: MetaState  # this node's applied copy of __meta
    groups: typing.Any  # node.group_coordinator.GroupCoordinator: the group APIs

    def meta_leader_id(self) -> int: ...
    def broker_alive(self, node_id: int) -> bool: ...
    async def meta_changed(self) -> None:
        """Until this node applies the next change to __meta."""
    def replica(self, topic: str, partition: int) -> typing.Any | None:
        """This node's replica (node.partition_group.PartitionReplica), or None."""
    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           validate_only: bool = False, replication_factor: int = -1,
                           assignment: list[list[int]] | None = None,
                           timeout_s: float = ...) -> Topic: ...
    async def delete_topic(self, name: str) -> Topic: ...
    async def add_partitions(self, name: str, count: int, *, assignment=None,
                             validate_only: bool = False, timeout_s: float = ...) -> Topic: ...
    async def auto_create(self, name: str) -> Topic: ...
    async def allocate_producer_id(self) -> int: ...
    async def elect_preferred_leader(self, topic: Topic, partition: int, timeout_s: float) -> bool: ...
