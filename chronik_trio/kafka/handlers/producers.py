"""DescribeProducers (api key 61): the idempotent producers a partition's leader knows.

The state is the leader's producer view (node/partition_group.py): per producer id, its
epoch, the last sequence and timestamp it wrote to the partition, the first offset of its open
transaction (-1: none) and the coordinator epoch of its last transaction marker.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from ..codec import build, response_schema
from .common import leader_hint
from .context import BrokerContext


def _one(ctx: BrokerContext, topic_name: str, partition: int) -> dict:
    replica = ctx.replica(topic_name, partition)
    if replica is None or not replica.is_leader:
        return {"partition_index": partition, "error_code": leader_hint(ctx, topic_name, partition)[0],
                "active_producers": []}
    producers = [{"producer_id": e.producer_id, "producer_epoch": e.epoch, "last_sequence": e.last_seq,
                  "last_timestamp": e.last_timestamp, "coordinator_epoch": coordinator_epoch,
                  "current_txn_start_offset": txn_start}
                 for e, txn_start, coordinator_epoch in replica.describe_producers()]
    return {"partition_index": partition, "error_code": ErrorCode.none, "active_producers": producers}


async def handle_describe_producers(body, ctx: BrokerContext, version: int):
    topics = [{"name": t.name, "partitions": [_one(ctx, t.name, p) for p in t.partition_indexes]}
              for t in body.topics]
    return build(response_schema(61, version), throttle_time=0, topics=topics)
