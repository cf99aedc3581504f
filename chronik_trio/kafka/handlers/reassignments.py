"""AlterPartitionReassignments (45) and ListPartitionReassignments (46).

A request becomes a PartitionReassignmentRequested command of __meta, which validates it
(cluster/meta.py: unknown topic or partition, empty or duplicate replicas, unknown brokers);
the partition's leader then moves its Raft group there (node/reassignments.py). Answered once
the target is recorded, as Kafka's controller answers; ListPartitionReassignments shows the
moves still in progress.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import Topic
from chronik_trio.errors import BrokerError
from chronik_trio.pb import meta_pb2

from ..codec import build, response_schema
from .context import BrokerContext

ALTER_KEY = 45
LIST_KEY = 46


async def _alter_one(ctx: BrokerContext, topic: Topic | None, partition, allow_rf_change: bool) -> dict:
    out = {"partition_index": partition.partition_index, "error_code": ErrorCode.none, "error_message": None}
    if topic is None or not 0 <= partition.partition_index < topic.partition_count:
        return {**out, "error_code": ErrorCode.unknown_topic_or_partition,
                "error_message": "no such topic or partition"}
    index = partition.partition_index
    target = partition.replicas
    if target is not None and not allow_rf_change:
        known = ctx.meta.reassignments.get((topic.topic_id, index))
        rf = len(known.original if known else topic.replicas[index])
        if len(target) != rf:
            return {**out, "error_code": ErrorCode.invalid_replication_factor,
                    "error_message": f"{len(target)} replicas for a partition with {rf}, and "
                                     f"allow_replication_factor_change is false"}
    command = meta_pb2.MetaCommand(partition_reassignment_requested=meta_pb2.PartitionReassignmentRequested(
        topic_id=topic.topic_id.bytes, partition=index, target=target or (), cancel=target is None))
    try:
        applied = await ctx.propose_meta(command)
    except BrokerError as exc:
        return {**out, "error_code": exc.error_code, "error_message": str(exc)}
    if not applied.ok:
        return {**out, "error_code": applied.error.error_code, "error_message": str(applied.error)}
    return out


async def handle_alter_partition_reassignments(body, ctx: BrokerContext, version: int):
    allow_rf_change = getattr(body, "allow_replication_factor_change", True)
    responses = []
    for spec in body.topics:
        topic = ctx.meta.topics.get(spec.name)
        partitions = [await _alter_one(ctx, topic, p, allow_rf_change) for p in spec.partitions]
        responses.append({"name": spec.name, "partitions": partitions})
    return build(response_schema(ALTER_KEY, version), throttle_time=0, error_code=0, error_message=None,
                 allow_replication_factor_change=allow_rf_change, responses=responses)


def ongoing(ctx: BrokerContext, topic: Topic, partition: int) -> dict | None:
    """One partition's reassignment as Kafka lists it, or None."""
    known = ctx.meta.reassignments.get((topic.topic_id, partition))
    if known is None:
        return None
    return {"partition_index": partition, "replicas": topic.replicas[partition],
            "adding_replicas": known.adding, "removing_replicas": known.removing}


async def handle_list_partition_reassignments(body, ctx: BrokerContext, version: int):
    if body.topics is None:
        wanted = [(t, range(t.partition_count)) for t in ctx.meta.topics.values()]
    else:
        wanted = [(ctx.meta.topics[t.name], t.partition_indexes) for t in body.topics
                  if t.name in ctx.meta.topics]
    topics = []
    for topic, partitions in wanted:
        found = [o for o in (ongoing(ctx, topic, p) for p in partitions
                             if 0 <= p < topic.partition_count) if o is not None]
        if found:
            topics.append({"name": topic.name, "partitions": found})
    return build(response_schema(LIST_KEY, version), throttle_time=0, error_code=0, error_message=None,
                 topics=topics)
