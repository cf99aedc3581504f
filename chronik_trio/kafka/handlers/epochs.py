"""OffsetForLeaderEpoch (api key 23): where a leader epoch ended in the leader's log.

Consumers ask it after a leader change (KIP-320) to detect that the log they read was
truncated. Epochs are Raft terms; the answer comes from the log's term boundaries.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from ..codec import build, response_schema
from .common import leader_hint
from .context import BrokerContext
from .fetch import _epoch_error


def _one(ctx: BrokerContext, topic_name: str, p) -> dict:
    entry = {"partition": p.partition, "leader_epoch": -1, "end_offset": -1}
    replica = ctx.replica(topic_name, p.partition)
    if replica is None or not replica.is_leader:
        return {**entry, "error_code": leader_hint(ctx, topic_name, p.partition)[0]}
    error = _epoch_error(p.current_leader_epoch, replica.leader_epoch)
    if error is not None:
        return {**entry, "error_code": error}
    epoch, end_offset = replica.end_offset_for_epoch(p.leader_epoch)
    return {**entry, "error_code": ErrorCode.none, "leader_epoch": epoch, "end_offset": end_offset}


async def handle_offset_for_leader_epoch(body, ctx: BrokerContext, version: int):
    topics = [{"topic": t.topic, "partitions": [_one(ctx, t.topic, p) for p in t.partitions]}
              for t in body.topics]
    return build(response_schema(23, version), throttle_time=0, topics=topics)
