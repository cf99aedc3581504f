"""What a handler may use from the node (implemented by chronik_trio.node.node.Node)."""

from __future__ import annotations

import typing

from chronik_trio.cluster.meta import MetaState, Topic


class BrokerContext(typing.Protocol):
    node_id: int
    cluster_id: str
    config: typing.Any  # node.config.NodeConfig
    meta: MetaState

    def replica(self, topic: str, partition: int) -> typing.Any | None: ...
    async def create_topic(self, name: str, partitions: int, configs: dict[str, str],
                           *, validate_only: bool = False) -> Topic: ...
    async def delete_topic(self, name: str) -> Topic: ...
    async def auto_create(self, name: str) -> Topic: ...
    async def allocate_producer_id(self) -> int: ...
