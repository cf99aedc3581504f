"""Consumer group APIs: FindCoordinator (10), JoinGroup (11), Heartbeat (12), LeaveGroup (13),
SyncGroup (14), DescribeGroups (15), ListGroups (16), OffsetCommit (8), OffsetFetch (9),
DeleteGroups (42), OffsetDelete (47).

The coordinator is node/group_coordinator.py; the rules of the classic protocol are
group/group.py. These functions only translate between the versions' fields and it.
"""

from __future__ import annotations

import contextvars
import datetime

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.acls import ResourceType
from chronik_trio.group import GroupError, GroupState, JoinRequest, partition_for

from ..authorization import authorized_operations
from ..codec import build, has_field, response_schema
from ..session import current as current_session
from .common import AUTHORIZED_OPERATIONS_OMITTED
from .context import BrokerContext

# Who sent the request being handled: (client id, client host). Set by the connection
# (node/kafka_server.py); DescribeGroups shows them, and member ids start with the client id.
REQUEST_CLIENT: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "REQUEST_CLIENT", default=("", ""))



class CommitOrder:
    """The OffsetCommits of one connection, written in the order they arrived.

    Kafka handles a connection's requests one at a time; here they run as concurrent tasks,
    which trio does not run in spawn order. Two pipelined commits of one partition must not
    land in the log in the opposite order (the older offset would win), so each commit takes
    a ticket when its frame is read and writes only after the commits before it finished.
    """

    def __init__(self) -> None:
        self._issued = 0
        self._finished = 0
        self._moved = trio.Event()

    def ticket(self) -> int:
        n = self._issued
        self._issued += 1
        return n

    async def wait_turn(self, ticket: int) -> None:
        while self._finished < ticket:
            await self._moved.wait()

    def finish(self, ticket: int) -> None:
        assert ticket == self._finished, (ticket, self._finished)
        self._finished += 1
        self._moved.set()
        self._moved = trio.Event()


# The running OffsetCommit's place in its connection's order (set by the connection reader).
COMMIT_TURN: contextvars.ContextVar[tuple[CommitOrder, int] | None] = contextvars.ContextVar(
    "COMMIT_TURN", default=None)

NO_OFFSET = -1
NO_LEADER_EPOCH = -1
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1
GROUP_TYPE_CLASSIC = "classic"


def _ms(value) -> int:
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    return int(value)


# --- FindCoordinator ------------------------------------------------------------------------------

async def _find(ctx: BrokerContext, key: str, key_type: int) -> dict:
    none = {"node_id": -1, "host": "", "port": -1, "error_message": None}
    if key_type not in (KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION):
        return {**none, "error_code": ErrorCode.invalid_request, "error_message": f"unknown key type {key_type}"}
    if not key:
        return {**none, "error_code": ErrorCode.invalid_request, "error_message": "empty key"}
    # A group's coordinator leads its __consumer_offsets partition; a transactional id's its
    # __transaction_state partition (both Kafka's hash of the key).
    topic = await (ctx.groups.offsets_topic() if key_type == KEY_TYPE_GROUP else ctx.txns.txn_topic())
    if topic is None:
        return {**none, "error_code": ErrorCode.coordinator_not_available}
    leader = ctx.meta.leader_of(topic, partition_for(key, topic.partition_count))
    broker = ctx.meta.brokers.get(leader.leader) if leader is not None else None
    endpoint = broker.endpoint(current_session().listener) if broker is not None else None
    if endpoint is None or not ctx.broker_alive(leader.leader):
        return {**none, "error_code": ErrorCode.coordinator_not_available}
    return {"node_id": broker.node_id, "host": endpoint[0], "port": endpoint[1],
            "error_code": ErrorCode.none, "error_message": None}


async def handle_find_coordinator(body, ctx: BrokerContext, version: int):
    cls = response_schema(10, version)
    key_type = getattr(body, "key_type", KEY_TYPE_GROUP)
    if version >= 4:
        coordinators = [{"key": key, **await _find(ctx, key, key_type)} for key in body.coordinator_keys]
        return build(cls, throttle_time=0, coordinators=coordinators)
    return build(cls, throttle_time=0, **await _find(ctx, body.key, key_type))


# --- JoinGroup / SyncGroup / Heartbeat / LeaveGroup -----------------------------------------------

def _nullable_string(value: str | None, nullable: bool) -> str | None:
    return value if value is not None or nullable else ""


async def handle_join_group(body, ctx: BrokerContext, version: int):
    client_id, client_host = REQUEST_CLIENT.get()
    session_ms = _ms(body.session_timeout)
    request = JoinRequest(
        member_id=body.member_id, instance_id=getattr(body, "group_instance_id", None),
        client_id=client_id or "", client_host=client_host,
        protocol_type=body.protocol_type, protocols=tuple((p.name, bytes(p.metadata)) for p in body.protocols),
        session_timeout_ms=session_ms,
        # Kafka waits out a negative rebalance timeout at once; a trio deadline cannot be negative
        rebalance_timeout_ms=max(_ms(getattr(body, "rebalance_timeout", session_ms)), 0),
        require_known_member_id=version >= 4)
    result = await ctx.groups.join(body.group_id, request)
    nullable = version >= 7
    return build(response_schema(11, version), throttle_time=0, error_code=result.error,
                 generation_id=result.generation_id,
                 protocol_type=_nullable_string(result.protocol_type, nullable),
                 protocol_name=_nullable_string(result.protocol_name, nullable),
                 leader=result.leader, skip_assignment=result.skip_assignment, member_id=result.member_id,
                 members=[{"member_id": m, "group_instance_id": i, "metadata": md} for m, i, md in result.members])


async def handle_sync_group(body, ctx: BrokerContext, version: int):
    result = await ctx.groups.sync(
        body.group_id, body.member_id, body.generation_id, getattr(body, "group_instance_id", None),
        getattr(body, "protocol_type", None), getattr(body, "protocol_name", None),
        [(a.member_id, bytes(a.assignment)) for a in body.assignments])
    return build(response_schema(14, version), throttle_time=0, error_code=result.error,
                 protocol_type=result.protocol_type, protocol_name=result.protocol_name,
                 assignment=result.assignment)


async def handle_heartbeat(body, ctx: BrokerContext, version: int):
    error = await ctx.groups.heartbeat(body.group_id, body.member_id, body.generation_id,
                                 getattr(body, "group_instance_id", None))
    return build(response_schema(12, version), throttle_time=0, error_code=error)


async def handle_leave_group(body, ctx: BrokerContext, version: int):
    cls = response_schema(13, version)
    if version < 3:
        error, errors = await ctx.groups.leave(body.group_id, [(body.member_id, None)])
        return build(cls, throttle_time=0, error_code=errors[0] if error == ErrorCode.none else error)
    members = [(m.member_id, m.group_instance_id) for m in body.members]
    error, errors = await ctx.groups.leave(body.group_id, members)
    return build(cls, throttle_time=0, error_code=error, members=[
        {"member_id": m, "group_instance_id": i, "error_code": e} for (m, i), e in zip(members, errors)])


# --- OffsetCommit / OffsetFetch -------------------------------------------------------------------

async def handle_offset_commit(body, ctx: BrokerContext, version: int):
    offsets = [(t.name, p.partition_index, p.committed_offset,
                getattr(p, "committed_leader_epoch", NO_LEADER_EPOCH), p.committed_metadata)
               for t in body.topics for p in t.partitions]
    turn = COMMIT_TURN.get()
    if turn is not None:
        await turn[0].wait_turn(turn[1])
    try:
        errors = iter(await ctx.groups.commit(body.group_id, body.member_id, body.generation_id_or_member_epoch,
                                              getattr(body, "group_instance_id", None), offsets))
    finally:
        if turn is not None:
            turn[0].finish(turn[1])
    topics = [{"name": t.name, "partitions": [{"partition_index": p.partition_index, "error_code": next(errors)}
                                               for p in t.partitions]} for t in body.topics]
    return build(response_schema(8, version), throttle_time=0, topics=topics)


async def _fetch_group(ctx: BrokerContext, group_id: str, topics,
                       require_stable: bool = False) -> tuple[ErrorCode, list[dict]]:
    """(group error, topics) of one group; topics None asks for every committed offset.
    require_stable (v7+): a partition with an offset in an undecided transaction answers
    UNSTABLE_OFFSET_COMMIT with offset -1 (the client retries), as Kafka does."""
    wanted = None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
    try:
        found = await ctx.groups.fetch(group_id, wanted)
        unstable = await ctx.groups.unstable_offsets(group_id) if require_stable else set()
    except GroupError as exc:
        return exc.error_code, []
    by_topic: dict[str, list[dict]] = {}
    for (topic, partition), record in sorted(found.items()):
        if (topic, partition) in unstable:
            record = None  # Kafka answers an unstable partition with no offset (-1), not the stable one
        by_topic.setdefault(topic, []).append({
            "partition_index": partition,
            "error_code": ErrorCode.unstable_offset_commit if (topic, partition) in unstable else ErrorCode.none,
            "committed_offset": record.offset if record else NO_OFFSET,
            "committed_leader_epoch": record.leader_epoch if record else NO_LEADER_EPOCH,
            "metadata": (record.metadata or "") if record else ""})
    return ErrorCode.none, [{"name": t, "partitions": ps} for t, ps in by_topic.items()]


async def handle_offset_fetch(body, ctx: BrokerContext, version: int):
    cls = response_schema(9, version)
    if version >= 8:
        groups = []
        for g in body.groups:
            error, topics = await _fetch_group(ctx, g.group_id, g.topics, getattr(body, "require_stable", False))
            groups.append({"group_id": g.group_id, "error_code": error, "topics": topics})
        return build(cls, throttle_time=0, groups=groups)
    error, topics = await _fetch_group(ctx, body.group_id, body.topics, getattr(body, "require_stable", False))
    if error != ErrorCode.none and not has_field(cls, "error_code"):
        # v1 has no group-level error: every partition asked for carries it.
        topics = [{"name": t.name, "partitions": [
            {"partition_index": p, "committed_offset": NO_OFFSET, "metadata": "", "error_code": error}
            for p in t.partition_indexes]} for t in (body.topics or ())]
    return build(cls, throttle_time=0, error_code=error, topics=topics)


# --- DescribeGroups / ListGroups / DeleteGroups / OffsetDelete ------------------------------------

GROUP_NOT_FOUND_VERSION = 6  # KIP-1043: a group that does not exist is an error, not "Dead"


async def _describe(ctx: BrokerContext, group_id: str, version: int, with_operations: bool) -> dict:
    operations = authorized_operations(ctx, current_session(), ResourceType.GROUP, group_id) if with_operations \
        else AUTHORIZED_OPERATIONS_OMITTED
    entry = {"group_id": group_id, "group_state": "", "protocol_type": "", "protocol_data": "", "members": [],
             "authorized_operations": operations, "error_message": None}
    try:
        group = await ctx.groups.describe(group_id)
    except GroupError as exc:
        return {**entry, "error_code": exc.error_code}
    if group is None:
        if version >= GROUP_NOT_FOUND_VERSION:
            return {**entry, "error_code": ErrorCode.group_id_not_found, "group_state": GroupState.DEAD.value,
                    "error_message": f"group {group_id!r} not found"}
        return {**entry, "error_code": ErrorCode.none, "group_state": GroupState.DEAD.value}
    stable = group.state == GroupState.STABLE
    members = [{"member_id": m.member_id, "group_instance_id": m.instance_id, "client_id": m.client_id,
                "client_host": m.client_host,
                "member_metadata": m.metadata(group.protocol_name) if stable else b"",
                "member_assignment": m.assignment if stable else b""} for m in group.members.values()]
    return {**entry, "error_code": ErrorCode.none, "group_state": group.state.value,
            "protocol_type": group.protocol_type or "", "protocol_data": (group.protocol_name or "") if stable else "",
            "members": members}


async def handle_describe_groups(body, ctx: BrokerContext, version: int):
    return build(response_schema(15, version), throttle_time=0,
                 groups=[await _describe(ctx, group_id, version,
                                         bool(getattr(body, "include_authorized_operations", False)))
                         for group_id in body.groups])


async def handle_list_groups(body, ctx: BrokerContext, version: int):
    states = {s.lower() for s in getattr(body, "states_filter", ())}
    types = {t.lower() for t in getattr(body, "types_filter", ())}
    if types and GROUP_TYPE_CLASSIC not in types:
        groups = []
    else:
        groups = [{"group_id": g.group_id, "protocol_type": g.protocol_type or "", "group_state": g.state.value,
                   "group_type": GROUP_TYPE_CLASSIC}
                  for g in ctx.groups.list_groups() if not states or g.state.value.lower() in states]
    return build(response_schema(16, version), throttle_time=0, error_code=ErrorCode.none, groups=groups)


async def handle_delete_groups(body, ctx: BrokerContext, version: int):
    results = [{"group_id": g, "error_code": await ctx.groups.delete_group(g)} for g in body.groups_names]
    return build(response_schema(42, version), throttle_time=0, results=results)


async def handle_offset_delete(body, ctx: BrokerContext, version: int):
    wanted = [(t.name, p.partition_index) for t in body.topics for p in t.partitions]
    error, errors = await ctx.groups.delete_offsets(body.group_id, wanted)
    topics = []
    if error == ErrorCode.none:
        it = iter(errors)
        topics = [{"name": t.name, "partitions": [{"partition_index": p.partition_index, "error_code": next(it)}
                                                  for p in t.partitions]} for t in body.topics]
    return build(response_schema(47, version), throttle_time=0, error_code=error, topics=topics)
