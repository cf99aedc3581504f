"""Metadata (api key 3): brokers, and per topic its partitions' leader, epoch, replicas, ISR."""

from __future__ import annotations

import logging

from chronik_trio.cluster.meta import ClusterError, INTERNAL_TOPIC_PREFIX

from ..codec import build, has_field, response_schema
from .common import AUTHORIZED_OPERATIONS_OMITTED, error_code_of, topic_for_request

log = logging.getLogger(__name__)


def _topic_entry(ctx, topic) -> dict:
    partitions = []
    for index, replicas in enumerate(topic.replicas):
        leader = ctx.meta.leader_of(topic, index)  # as reported to __meta by the leader
        offline = [r for r in replicas if r not in ctx.meta.brokers or not ctx.broker_alive(r)]
        if leader and leader.leader in offline:
            # Its process is gone (as Kafka's controller would have moved leadership by now):
            # "no leader" makes clients query again soon (librdkafka: every 100 ms, growing),
            # where a dead leader's id only makes them retry its connection.
            leader = None
        partitions.append({
            "error_code": 0 if leader else 5,  # LEADER_NOT_AVAILABLE
            "partition_index": index,
            "leader_id": leader.leader if leader else -1,
            "leader_epoch": leader.epoch if leader else -1,
            "replica_nodes": replicas,
            "isr_nodes": (leader.isr or replicas) if leader else (),
            "offline_replicas": offline,
        })
    return {"error_code": 0, "name": topic.name, "topic_id": topic.topic_id,
            "is_internal": topic.name.startswith(INTERNAL_TOPIC_PREFIX),
            "partitions": partitions,
            "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}


async def handle_metadata(body, ctx, version: int):
    requested = body.topics
    if requested is not None and version == 0 and len(requested) == 0:
        requested = None  # v0: an empty list means every topic
    allow_auto = body.allow_auto_topic_creation if has_field(type(body), "allow_auto_topic_creation") else True
    topics = []
    if requested is None:
        topics = [_topic_entry(ctx, t) for t in ctx.meta.topics.values()]
    else:
        for wanted in requested:
            name = wanted.name
            if name is None:  # v10+: a lookup by topic id
                topic = ctx.meta.topics_by_id.get(wanted.topic_id)
                if topic is None:
                    topics.append({"error_code": 100, "name": None, "topic_id": wanted.topic_id})
                    continue
            else:
                try:
                    topic = await topic_for_request(ctx, name, allow_auto_create=allow_auto)
                except ClusterError as exc:
                    topics.append({"error_code": error_code_of(exc), "name": name})
                    continue
            topics.append(_topic_entry(ctx, topic))
    brokers = [{"node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack}
               for b in sorted(ctx.meta.brokers.values(), key=lambda b: b.node_id)]
    return build(response_schema(3, version), brokers=brokers,
                 cluster_id=ctx.cluster_id, controller_id=ctx.meta_leader_id(), topics=topics,
                 cluster_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED)
