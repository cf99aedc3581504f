"""Retention: every retention_check_interval_ms, each replica of a topic whose cleanup.policy
includes delete deletes whole segments older than its retention.ms or beyond its
retention.bytes (PartitionReplica.apply_retention snapshots at the boundary first, so a
lagging follower is sent that snapshot). The configs are read at each pass: a change made
with AlterConfigs takes effect at the next one."""

from __future__ import annotations

import typing

import trio

from chronik_trio.cluster.configs import parse_list

from .meta_group import MetaMachine
from .replicas import HostedReplicas


async def retention_loop(replicas: HostedReplicas, meta: MetaMachine, interval_s: float,
                         wall_clock_ms: typing.Callable[[], int]) -> None:
    while True:
        await trio.sleep(interval_s)
        now_ms = wall_clock_ms()
        for (name, _), replica in replicas.items():
            topic = meta.state.topics.get(name)
            if topic is None or replica.closed:
                continue
            if "delete" not in parse_list(replicas.topic_config(name, "cleanup.policy")):
                continue  # compact alone keeps every segment (no cleaner yet)
            retention_bytes = int(replicas.topic_config(name, "retention.bytes"))
            retention_ms = int(replicas.topic_config(name, "retention.ms"))
            await replica.apply_retention(now_ms, retention_bytes if retention_bytes >= 0 else None,
                                          retention_ms if retention_ms >= 0 else None)
