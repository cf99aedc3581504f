"""Retention: every retention_check_interval_ms, each replica deletes whole segments older
than its topic's retention.ms or beyond its retention.bytes (PartitionReplica.apply_retention
snapshots at the boundary first, so a lagging follower is sent that snapshot)."""

from __future__ import annotations

import typing

import trio

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
            retention_bytes = int(topic.config("retention.bytes"))
            retention_ms = int(topic.config("retention.ms"))
            await replica.apply_retention(now_ms, retention_bytes if retention_bytes >= 0 else None,
                                          retention_ms if retention_ms >= 0 else None)
