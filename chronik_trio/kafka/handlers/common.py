"""Helpers shared by handlers: error codes of expected failures, topic lookups."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import ClusterError, validate_topic_name

from ..errors import KafkaError

AUTHORIZED_OPERATIONS_OMITTED = -(2**31)  # Kafka's "not requested" value


def error_code_of(exc: BaseException) -> ErrorCode:
    assert isinstance(exc, (KafkaError, ClusterError)), exc
    return exc.error_code


async def topic_for_request(ctx, name: str, *, allow_auto_create: bool):
    """The Topic, auto-created if allowed; or raise the ClusterError that explains why not."""
    topic = ctx.meta.topics.get(name)
    if topic is not None:
        return topic
    validate_topic_name(name)
    if allow_auto_create and ctx.config.auto_create_topics:
        return await ctx.auto_create(name)
    from chronik_trio.cluster.meta import UnknownTopic

    raise UnknownTopic(f"topic {name!r} does not exist")
