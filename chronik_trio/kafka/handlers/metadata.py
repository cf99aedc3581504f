"""Metadata (api key 3): brokers, and per topic its partitions' leader, epoch, replicas, ISR."""

from __future__ import annotations

import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.acls import CLUSTER_NAME, Operation, ResourceType
from chronik_trio.cluster.meta import INTERNAL_TOPIC_PREFIX
from chronik_trio.errors import BrokerError

from ..authorization import allowed, authorized_operations
from ..codec import build, has_field, response_schema
from ..session import current as current_session
from .common import AUTHORIZED_OPERATIONS_OMITTED, error_code_of, topic_for_request
from .context import BrokerContext

log = logging.getLogger(__name__)

NULLABLE_NAME_VERSION = 12  # MetadataResponse's topic name may be null from this version


def _topic_entry(ctx: BrokerContext, topic, alive: dict[int, bool], with_operations: bool) -> dict:
    """alive: broker id -> ctx.broker_alive, asked once per request; with_operations: the
    request asked for the topic's authorized operations (v8+)."""
    partitions = []
    for index, replicas in enumerate(topic.replicas):
        leader = ctx.meta.leader_of(topic, index)  # as reported to __meta by the leader
        offline = [r for r in replicas if not alive.get(r, False)]
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
            "topic_authorized_operations": authorized_operations(ctx, current_session(), ResourceType.TOPIC, topic.name)
            if with_operations else AUTHORIZED_OPERATIONS_OMITTED}


# A Metadata request that finds a partition without a leader while a majority of its
# replicas is alive waits up to this long for the election's result to reach __meta here:
# the leader of a killed node's partitions is known 0.2-0.3 s after the kill, and an answer
# with "no leader" sends librdkafka back only after growing intervals (100 ms, 200 ms, 400 ms
# ...), so its first ask after the kill got "-1" and its retried produce came ~1 s later.
LEADERLESS_WAIT_S = 0.5


def _electing(topics: list[dict]) -> bool:
    """Whether some partition has no leader while a majority of its replicas is alive (an
    election can end soon; with no majority alive none will, and waiting would only delay)."""
    return any(p["error_code"] == 5
               and 2 * (len(p["replica_nodes"]) - len(p["offline_replicas"])) > len(p["replica_nodes"])
               for t in topics for p in t.get("partitions", ()))


async def _requested_topics(body, ctx: BrokerContext, version: int) -> list[dict]:
    requested = body.topics
    if requested is not None and version == 0 and len(requested) == 0:
        requested = None  # v0: an empty list means every topic
    allow_auto = body.allow_auto_topic_creation if has_field(type(body), "allow_auto_topic_creation") else True
    with_operations = bool(getattr(body, "include_topic_authorized_operations", False))
    topics = []
    alive = {b: ctx.broker_alive(b) for b in ctx.meta.brokers}
    session = current_session()
    if requested is None:  # every topic the principal may describe
        return [_topic_entry(ctx, t, alive, with_operations) for t in ctx.meta.topics.values()
                if allowed(ctx, session, Operation.DESCRIBE, ResourceType.TOPIC, t.name, "Metadata", audited=False)]
    for wanted in requested:
        name = wanted.name
        if name is not None and not allowed(ctx, session, Operation.DESCRIBE, ResourceType.TOPIC, name, "Metadata"):
            topics.append({"error_code": ErrorCode.topic_authorization_failed, "name": name})
            continue
        if name is None:  # v10+: a lookup by topic id
            topic = ctx.meta.topics_by_id.get(wanted.topic_id)
            if topic is None:
                # the answer's name is nullable from v12 only (v10-v11 ask by id, answer by name)
                topics.append({"error_code": 100, "name": None if version >= NULLABLE_NAME_VERSION else "",
                               "topic_id": wanted.topic_id})
                continue
        else:
            try:
                topic = await topic_for_request(ctx, name, allow_auto_create=allow_auto and _may_create(ctx, session, name))
            except BrokerError as exc:
                topics.append({"error_code": error_code_of(exc), "name": name})
                continue
        topics.append(_topic_entry(ctx, topic, alive, with_operations))
    return topics


def _may_create(ctx, session, name: str) -> bool:
    return any(allowed(ctx, session, Operation.CREATE, kind, resource, "Metadata", audited=False)
               for kind, resource in ((ResourceType.TOPIC, name), (ResourceType.CLUSTER, CLUSTER_NAME)))


async def handle_metadata(body, ctx: BrokerContext, version: int):
    topics = await _requested_topics(body, ctx, version)
    deadline = trio.current_time() + LEADERLESS_WAIT_S
    while _electing(topics) and trio.current_time() < deadline:
        with trio.move_on_at(deadline):
            await ctx.meta_changed()
        topics = await _requested_topics(body, ctx, version)
    listener = current_session().listener  # each client is told the listener it came in on
    brokers = [{"node_id": b.node_id, "host": host, "port": port, "rack": b.rack}
               for b in sorted(ctx.meta.brokers.values(), key=lambda b: b.node_id)
               for host, port in [b.endpoint(listener) or (None, None)] if host is not None]
    return build(response_schema(3, version), brokers=brokers,
                 cluster_id=ctx.cluster_id, controller_id=ctx.meta_leader_id(), topics=topics,
                 cluster_authorized_operations=authorized_operations(
                     ctx, current_session(), ResourceType.CLUSTER, CLUSTER_NAME)
                 if getattr(body, "include_cluster_authorized_operations", False) else AUTHORIZED_OPERATIONS_OMITTED)
