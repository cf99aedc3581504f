"""Helpers shared by handlers: error codes of expected failures, topic lookups."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import Topic, UnknownTopic, validate_topic_name
from chronik_trio.errors import BrokerError

from ..session import current as current_session
from .context import BrokerContext

AUTHORIZED_OPERATIONS_OMITTED = -(2**31)  # Kafka's "not requested" value


def error_code_of(exc: BaseException) -> ErrorCode:
    assert isinstance(exc, BrokerError), exc
    return exc.error_code


async def topic_for_request(ctx: BrokerContext, name: str, *, allow_auto_create: bool) -> Topic:
    """The Topic, auto-created if allowed; or raise the BrokerError that explains why not."""
    topic = ctx.meta.topics.get(name)
    if topic is not None:
        return topic
    validate_topic_name(name)
    if allow_auto_create and ctx.config.auto_create_topics:
        return await ctx.auto_create(name)
    raise UnknownTopic(f"topic {name!r} does not exist")


def leader_hint(ctx: BrokerContext, topic_name: str, partition: int) -> tuple[ErrorCode, dict]:
    """The error for a partition this node cannot serve, and the current_leader fields
    (KIP-951): NOT_LEADER_OR_FOLLOWER with the leader __meta knows, LEADER_NOT_AVAILABLE
    when there is none, UNKNOWN_TOPIC_OR_PARTITION when the partition does not exist."""
    topic = ctx.meta.topics.get(topic_name)
    if topic is None or not 0 <= partition < topic.partition_count:
        return ErrorCode.unknown_topic_or_partition, {}
    leader = ctx.meta.leader_of(topic, partition)
    if leader is None:
        return ErrorCode.leader_not_available, {}
    return ErrorCode.not_leader_or_follower, {"leader_id": leader.leader, "leader_epoch": leader.epoch}


def node_endpoints(ctx: BrokerContext, leader_ids) -> list[dict]:
    """Broker endpoints of the leaders named in current_leader fields (KIP-951)."""
    out = []
    for node_id in sorted(set(leader_ids)):
        broker = ctx.meta.brokers.get(node_id)
        endpoint = broker.endpoint(current_session().listener) if broker is not None else None
        if endpoint is not None:
            out.append({"node_id": node_id, "host": endpoint[0], "port": endpoint[1], "rack": broker.rack})
    return out
