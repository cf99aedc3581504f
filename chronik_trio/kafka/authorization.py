"""What each API needs authorized, and the check run before its handler (docs/security.md).

`refusal()` runs before every request's handler when the node's authorizer is enabled: it
lists the (operation, resource) pairs the request needs, asks cluster/acls.py about each
for the connection's principal and host, and on the first denial answers the whole request
with the resource type's Kafka code (TOPIC_AUTHORIZATION_FAILED, GROUP_..., CLUSTER_...,
TRANSACTIONAL_ID_...) through codec.error_response, with an audit log line. Kafka answers
the denied resources of a mixed request one by one; here a request is refused whole (a
client that may use every resource it names is unaffected). Metadata is the exception:
its handler lists only the topics the principal may describe (handlers/metadata.py).

Every decision is an audit line on the `chronik_trio.audit` logger: denials at INFO, grants
at DEBUG (as Kafka's authorizer logs them).

May import: the standard library, kio, cluster.acls and this package.
"""

from __future__ import annotations

import logging
import typing

from kio.schema.errors import ErrorCode

from chronik_trio.cluster.acls import CLUSTER_NAME, Operation, ResourceType, authorize, may_write_some_topic

from . import codec
from .errors import ProtocolViolation
from .session import Session

audit = logging.getLogger("chronik_trio.audit")

ERROR_CODES = {ResourceType.TOPIC: ErrorCode.topic_authorization_failed,
               ResourceType.GROUP: ErrorCode.group_authorization_failed,
               ResourceType.CLUSTER: ErrorCode.cluster_authorization_failed,
               ResourceType.TRANSACTIONAL_ID: ErrorCode.transactional_id_authorization_failed}
FIND_COORDINATOR_GROUP, FIND_COORDINATOR_TRANSACTION = 0, 1
DESCRIBE_CONFIGS_TOPIC, DESCRIBE_CONFIGS_GROUP = 2, 32
IDEMPOTENT_PRODUCER = "idempotent producer"  # InitProducerId without a transactional id (KIP-679)

PRODUCE_KEY = 0


class UnansweredDenial(ProtocolViolation):
    """A denied request that gets no answer (acks=0 Produce): its connection is closed."""


Check = tuple[Operation, ResourceType, str]
# A requirement holds when any one of its checks is allowed (CreateTopics: CREATE on the
# cluster or on the topic); a request needs all of its requirements.
Requirement = tuple[Check, ...]

T, G, C, X = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER, ResourceType.TRANSACTIONAL_ID
_NO_CHECK = object()


def _names(entries, field: str = "name") -> list[str]:
    return [getattr(e, field) for e in entries or ()]


def _each(operation: Operation, kind: ResourceType, names) -> list[Requirement]:
    return [((operation, kind, name),) for name in dict.fromkeys(names)]


def _cluster(operation: Operation) -> list[Requirement]:
    return [((operation, C, CLUSTER_NAME),)]


def _fetch_topics(body, meta) -> list[str]:
    names = []
    for t in body.topics:
        name = getattr(t, "topic", None)
        if name is None:  # v13+: by id; an unknown id is answered UNKNOWN_TOPIC_ID by the handler
            topic = meta.topics_by_id.get(t.topic_id)
            name = topic.name if topic is not None else None
        if name is not None:
            names.append(name)
    return names


def _offset_fetch(body) -> list[Requirement]:
    groups = body.groups if hasattr(body, "groups") else [body]
    needs = []
    for g in groups:
        needs += _each(Operation.DESCRIBE, G, [g.group_id])
        needs += _each(Operation.DESCRIBE, T, _names(g.topics))
    return needs


def _find_coordinator(body) -> list[Requirement]:
    keys = body.coordinator_keys if hasattr(body, "coordinator_keys") else [body.key]
    kind = X if getattr(body, "key_type", FIND_COORDINATOR_GROUP) == FIND_COORDINATOR_TRANSACTION else G
    return _each(Operation.DESCRIBE, kind, keys)


def _add_partitions_to_txn(body) -> list[Requirement]:
    if hasattr(body, "transactions"):
        return _cluster(Operation.CLUSTER_ACTION)
    return (_each(Operation.WRITE, X, [body.v3_and_below_transactional_id])
            + _each(Operation.WRITE, T, _names(body.v3_and_below_topics)))


def _init_producer_id(body) -> list[Requirement]:
    if body.transactional_id:
        return _each(Operation.WRITE, X, [body.transactional_id])
    return [((Operation.IDEMPOTENT_WRITE, C, CLUSTER_NAME), (Operation.WRITE, T, IDEMPOTENT_PRODUCER))]


def _configs(operation: Operation, body) -> list[Requirement]:
    """DescribeConfigs, AlterConfigs, IncrementalAlterConfigs: the operation on each topic or
    group, or on the cluster for a broker resource (as Kafka's ConfigAdminManager)."""
    return [((operation, T, r.resource_name),) if r.resource_type == DESCRIBE_CONFIGS_TOPIC
            else ((operation, G, r.resource_name),) if r.resource_type == DESCRIBE_CONFIGS_GROUP
            else ((operation, C, CLUSTER_NAME),) for r in body.resources]


# api key -> (body, meta) -> requirements. An API missing here needs ALTER on the cluster
# (a new API is closed until someone says what it needs); _NO_CHECK: none (or its handler checks).
REQUIREMENTS: dict[int, typing.Any] = {
    0: lambda b, m: _each(Operation.WRITE, T, _names(b.topic_data))
    + (_each(Operation.WRITE, X, [b.transactional_id]) if b.transactional_id else []),
    1: lambda b, m: _each(Operation.READ, T, _fetch_topics(b, m)),
    2: lambda b, m: _each(Operation.DESCRIBE, T, _names(b.topics)),
    3: _NO_CHECK,  # handlers/metadata.py lists only describable topics
    8: lambda b, m: _each(Operation.READ, G, [b.group_id]) + _each(Operation.READ, T, _names(b.topics)),
    9: lambda b, m: _offset_fetch(b),
    10: lambda b, m: _find_coordinator(b),
    11: lambda b, m: _each(Operation.READ, G, [b.group_id]),
    12: lambda b, m: _each(Operation.READ, G, [b.group_id]),
    13: lambda b, m: _each(Operation.READ, G, [b.group_id]),
    14: lambda b, m: _each(Operation.READ, G, [b.group_id]),
    15: lambda b, m: _each(Operation.DESCRIBE, G, b.groups),
    16: lambda b, m: _cluster(Operation.DESCRIBE),
    17: _NO_CHECK, 18: _NO_CHECK, 36: _NO_CHECK,  # before authentication: the SASL exchange
    19: lambda b, m: [((Operation.CREATE, T, t.name), (Operation.CREATE, C, CLUSTER_NAME)) for t in b.topics],
    20: lambda b, m: _each(Operation.DELETE, T, getattr(b, "topic_names", None) or [
        t.name or (m.topics_by_id[t.topic_id].name if t.topic_id in m.topics_by_id else "")
        for t in getattr(b, "topics", ())]),
    21: lambda b, m: _each(Operation.DELETE, T, _names(b.topics)),
    22: lambda b, m: _init_producer_id(b),
    23: lambda b, m: _each(Operation.DESCRIBE, T, _names(b.topics, "topic")),
    27: lambda b, m: _cluster(Operation.CLUSTER_ACTION),  # Kafka's; the handler refuses every client anyway
    29: lambda b, m: _cluster(Operation.DESCRIBE),
    30: lambda b, m: _cluster(Operation.ALTER),
    31: lambda b, m: _cluster(Operation.ALTER),
    32: lambda b, m: _configs(Operation.DESCRIBE_CONFIGS, b),
    33: lambda b, m: _configs(Operation.ALTER_CONFIGS, b),
    35: lambda b, m: _cluster(Operation.DESCRIBE),
    44: lambda b, m: _configs(Operation.ALTER_CONFIGS, b),
    45: lambda b, m: _cluster(Operation.ALTER),  # Kafka: ALTER on the cluster
    46: lambda b, m: _cluster(Operation.DESCRIBE),  # Kafka: DESCRIBE on the cluster
    37: lambda b, m: _each(Operation.ALTER, T, _names(b.topics)),
    42: lambda b, m: _each(Operation.DELETE, G, b.groups_names),
    43: lambda b, m: _cluster(Operation.ALTER),
    47: lambda b, m: _each(Operation.DELETE, G, [b.group_id]) + _each(Operation.READ, T, _names(b.topics)),
    50: lambda b, m: _cluster(Operation.DESCRIBE),
    51: lambda b, m: _cluster(Operation.ALTER),
    60: lambda b, m: _cluster(Operation.DESCRIBE),
    61: lambda b, m: _each(Operation.READ, T, _names(b.topics)),
    55: lambda b, m: _cluster(Operation.DESCRIBE),
    64: lambda b, m: _cluster(Operation.ALTER),  # membership (node/membership.py)
    80: lambda b, m: _cluster(Operation.ALTER),
    81: lambda b, m: _cluster(Operation.ALTER),
    # Transactions, Kafka's rules: a producer writes its transactional id and the topics it
    # adds; AddPartitionsToTxn v4+ (verifyOnly, batched) is between brokers (CLUSTER_ACTION).
    24: lambda b, m: _add_partitions_to_txn(b),
    25: lambda b, m: _each(Operation.WRITE, X, [b.transactional_id]) + _each(Operation.READ, G, [b.group_id]),
    26: lambda b, m: _each(Operation.WRITE, X, [b.transactional_id]),
    28: lambda b, m: _each(Operation.WRITE, X, [b.transactional_id]) + _each(Operation.READ, G, [b.group_id])
    + _each(Operation.READ, T, _names(b.topics)),
    65: lambda b, m: _each(Operation.DESCRIBE, X, b.transactional_ids),
    66: _NO_CHECK,  # handlers/transactions.py lists only describable transactional ids
}


def allowed(ctx, session: Session, operation: Operation, kind: ResourceType, name: str, api: str, *,
            audited: bool = True) -> bool:
    """One decision, audited (unless audited=False). True whenever the node's authorizer is off."""
    if not ctx.config.authorizer_enabled:
        return True
    acls = ctx.meta.acls
    if kind == T and name == IDEMPOTENT_PRODUCER:
        ok = session.principal in ctx.config.super_user_principals or may_write_some_topic(
            acls, session.principal, session.host)
    else:
        ok = authorize(acls, ctx.config.super_user_principals, session.principal, session.host, operation, kind, name)
    if audited and (not ok or audit.isEnabledFor(logging.DEBUG)):
        audit.log(logging.INFO if not ok else logging.DEBUG,
                  "%s principal=%s host=%s operation=%s resource=%s:%s api=%s listener=%s",
                  "ALLOWED" if ok else "DENIED", session.principal, session.host, operation.name, kind.name,
                  name, api, session.listener)
    return ok


# The operations each resource type has (Kafka's AclEntry.supportedOperations, 4.x: a group's
# configs can be described and altered), reported as a bit field (1 << operation) where a
# request asks for authorized operations (Metadata, DescribeCluster, DescribeGroups; KIP-430).
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[Operation, ...]] = {
    T: (Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DESCRIBE, Operation.DELETE, Operation.ALTER,
        Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS),
    G: (Operation.READ, Operation.DESCRIBE, Operation.DELETE, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS),
    C: (Operation.CREATE, Operation.CLUSTER_ACTION, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS,
        Operation.IDEMPOTENT_WRITE, Operation.ALTER, Operation.DESCRIBE),
    X: (Operation.DESCRIBE, Operation.WRITE),
}


def authorized_operations(ctx, session: Session, kind: ResourceType, name: str) -> int:
    """The operations of the resource the session's principal is allowed, as KIP-430's bit
    field (every supported operation when the authorizer is off, as Kafka without one)."""
    bits = 0
    for operation in SUPPORTED_OPERATIONS[kind]:
        if allowed(ctx, session, operation, kind, name, "authorized operations", audited=False):
            bits |= 1 << operation
    return bits


def refusal(api_key: int, api_version: int, body, ctx, session: Session):
    """None when the request may be handled; else the error answer to send instead."""
    if not ctx.config.authorizer_enabled:
        return None
    needs = REQUIREMENTS.get(api_key, lambda b, m: _cluster(Operation.ALTER))
    if needs is _NO_CHECK:
        return None
    api = type(body).__name__.removesuffix("Request")
    for alternatives in needs(body, ctx.meta):
        if len(alternatives) > 1 and any(allowed(ctx, session, *check, api, audited=False) for check in alternatives):
            continue
        if not allowed(ctx, session, *alternatives[0], api):  # the first alternative is the one audited
            _, kind, _ = alternatives[0]
            if api_key == PRODUCE_KEY and body.acks == 0:
                raise UnansweredDenial(f"an acks=0 Produce by {session.principal} was denied: closing the "
                                       f"connection, as Kafka does (no answer can carry the error)")
            return codec.error_response(api_key, api_version, body, ERROR_CODES[kind])
    return None
