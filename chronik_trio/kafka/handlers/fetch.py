"""Fetch (api key 1): whole batches below the high watermark, with long polling.

Limits: partition_max_bytes per partition and max_bytes per response, except that the first
batch found is always returned whole (KIP-74) so a consumer can never get stuck behind a
large batch. Fetch sessions (KIP-227, v7+): the rules and the cache are in
kafka/fetch_sessions.py; an incremental fetch reads every partition of its session and
answers only those with news. isolation_level 1 (read_committed) serves up to the last
stable offset, with the aborted transactions of the range served (docs/transactions.md).
A partition's batches are answered as they lie in the log (codec.RecordChunks), never joined.
"""

from __future__ import annotations

import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.acls import Operation, ResourceType
from chronik_trio.errors import BrokerError
from chronik_trio.record_batch import read_header

from ..authorization import allowed
from ..codec import RecordChunks, build, has_field, response_schema
from ..fetch_sessions import FINAL_EPOCH, NO_SESSION, FetchContext, FetchSessionError, PartitionRequest
from ..session import current as current_session
from .common import error_code_of, leader_hint, node_endpoints

log = logging.getLogger(__name__)

FOLLOWER_FETCH_MIN_VERSION = 11  # KIP-392: consumers may fetch from followers from v11

MAX_WAIT_S_CAP = 30.0
READ_COMMITTED = 1  # isolation_level  # never park a request longer than this, whatever the client asks


def _epoch_error(current_leader_epoch: int, leader_epoch: int) -> ErrorCode | None:
    if current_leader_epoch < 0:
        return None
    if current_leader_epoch < leader_epoch:
        return ErrorCode.fenced_leader_epoch
    if current_leader_epoch > leader_epoch:
        return ErrorCode.unknown_leader_epoch
    return None


def _requested(body, by_id: bool) -> tuple[list[PartitionRequest], list[tuple]]:
    """The partitions the request names (added or changed, in a session) and those it forgets."""
    requested = [PartitionRequest((topic.topic_id if by_id else topic.topic, p.partition), p.fetch_offset,
                                  p.partition_max_bytes, getattr(p, "current_leader_epoch", -1),
                                  getattr(p, "last_fetched_epoch", -1))
                 for topic in body.topics for p in topic.partitions]
    forgotten = [(topic.topic_id if by_id else topic.topic, index)
                 for topic in getattr(body, "forgotten_topics_data", ()) for index in topic.partitions]
    return requested, forgotten


def _resolve(ctx, fctx: FetchContext, by_id: bool) -> list[tuple]:
    """[(topic key for the answer, topic name or None, partition, CachedPartition, denied)]
    in the order to read them. A partition of a session whose topic the principal may no longer
    READ gets TOPIC_AUTHORIZATION_FAILED (a full fetch was checked whole before the handler)."""
    wanted, names, denied = [], {}, {}
    check = fctx.incremental and ctx.config.authorizer_enabled
    for (key, index), cached in fctx.partitions:
        if key not in names:
            if by_id:
                meta_topic = ctx.meta.topics_by_id.get(key)
                names[key] = meta_topic.name if meta_topic else None
            else:
                names[key] = key
            denied[key] = check and names[key] is not None and not allowed(
                ctx, current_session(), Operation.READ, ResourceType.TOPIC, names[key], "Fetch")
        wanted.append((key, names[key], index, cached, denied[key]))
    return wanted


def _preferred_replica(ctx, name: str, partition: int, replica, client_rack: str) -> int | None:
    """KIP-392: the leader names an in-sync replica in the consumer's rack when it is not
    in that rack itself; None: serve from here."""
    if not client_rack or not replica.is_leader:
        return None
    me = ctx.meta.brokers.get(ctx.node_id)
    if me is not None and me.rack == client_rack:
        return None
    for node_id in replica.isr:
        broker = ctx.meta.brokers.get(node_id)
        if node_id != ctx.node_id and broker is not None and broker.rack == client_rack:
            return node_id
    return None


def _read_committed(entry: dict, views: list[memoryview], replica, fetch_offset: int) -> None:
    """read_committed (isolation_level 1): the last stable offset, and the aborted
    transactions with records in what is served, so the consumer can drop them."""
    lso = replica.last_stable_offset
    # views are whole batches, one each: what is served ends where the last one does
    end = read_header(views[-1]).end_offset if views else fetch_offset
    entry["last_stable_offset"] = lso
    entry["aborted_transactions"] = [{"producer_id": a.producer_id, "first_offset": a.first_offset}
                                     for a in replica.aborted_transactions(fetch_offset, end)]


def _collect(ctx, wanted, by_id: bool, max_bytes: int, version: int, client_rack: str = "",
             committed_only: bool = False):
    """Read every wanted partition once. Returns (per-partition entries, bytes, replicas,
    whether to answer at once: an error or a redirect to a preferred replica).
    committed_only (read_committed): up to each partition's last stable offset."""
    entries, total, replicas, any_error = [], 0, [], False
    for key, name, index, p, denied in wanted:
        entry = {"partition_index": index, "high_watermark": -1, "last_stable_offset": -1,
                 "log_start_offset": -1, "aborted_transactions": None, "records": b""}
        replica = ctx.replica(name, index) if name is not None and not denied else None
        error = None
        if denied:
            error = ErrorCode.topic_authorization_failed
        elif replica is None or (not replica.is_leader and version < FOLLOWER_FETCH_MIN_VERSION):
            if by_id and name is None:
                error = ErrorCode.unknown_topic_id
            else:
                error, leader = leader_hint(ctx, name, index)
                if leader:
                    entry["current_leader"] = leader
            replica = None
        else:
            # v9+ (KIP-320); an older client does not fence by epoch
            error = _epoch_error(p.current_leader_epoch, replica.leader_epoch)
        preferred = None if error is not None else _preferred_replica(ctx, name, index, replica, client_rack)
        if preferred is not None:
            hw = replica.high_watermark
            entry.update(high_watermark=hw, last_stable_offset=replica.last_stable_offset if committed_only else hw,
                         log_start_offset=replica.log_start_offset, preferred_read_replica=preferred)
            entry["error_code"] = ErrorCode.none
            entries.append((key, entry))
            any_error = True  # a redirect is answered at once, like an error
            continue
        if error is None:
            hw = replica.high_watermark
            entry.update(high_watermark=hw, last_stable_offset=hw, log_start_offset=replica.log_start_offset)
            budget = min(p.partition_max_bytes, max_bytes - total)
            views = []
            if budget > 0 or total == 0:
                try:
                    views = replica.read(p.fetch_offset, max(budget, 1), committed_only=committed_only)
                except BrokerError as exc:
                    error = error_code_of(exc)
                else:
                    if views:
                        data = views[0] if len(views) == 1 else RecordChunks(views)
                        entry["records"] = data
                        total += len(data)
            if committed_only and error is None:
                _read_committed(entry, views, replica, p.fetch_offset)
            replicas.append(replica)
        entry["error_code"] = error if error is not None else ErrorCode.none
        any_error = any_error or error is not None
        entries.append((key, entry))
    return entries, total, replicas, any_error


async def handle_fetch(body, ctx, version: int):
    by_id = version >= 13
    committed_only = body.isolation_level == READ_COMMITTED
    requested, forgotten = _requested(body, by_id)
    session_id, epoch = getattr(body, "session_id", NO_SESSION), getattr(body, "session_epoch", FINAL_EPOCH)
    try:
        fctx = ctx.fetch_sessions.new_context(session_id, epoch, requested, forgotten, uses_topic_ids=by_id,
                                              principal=current_session().principal,
                                              now_ms=int(trio.current_time() * 1000))
    except FetchSessionError as exc:
        log.debug("fetch session refused (%s): %s", exc.error_code.name, exc)
        return build(response_schema(1, version), throttle_time=0, error_code=exc.error_code,
                     session_id=NO_SESSION, responses=[], node_endpoints=[])
    wanted = _resolve(ctx, fctx, by_id)
    max_bytes = body.max_bytes if has_field(type(body), "max_bytes") else 2**31 - 1
    deadline = trio.current_time() + min(body.max_wait.total_seconds(), MAX_WAIT_S_CAP)
    stats = ctx.fetch_sessions.stats
    parked = False
    while True:
        entries, total, replicas, any_error = _collect(ctx, wanted, by_id, max_bytes, version,
                                                       getattr(body, "rack_id", "") or "", committed_only)
        # answered at once when any partition has min_bytes (a consumer's 1): never waits
        # for max_wait while some of its partitions have data
        if total >= body.min_bytes or any_error or trio.current_time() >= deadline or not replicas:
            break
        if not parked:
            parked = True
            stats.parked += 1
        moved = trio.Event()
        for replica in replicas:
            replica.watch(moved)
        try:
            with trio.move_on_at(deadline):
                await moved.wait()
        finally:
            for replica in replicas:
                replica.unwatch(moved)
    topic_field = "topic_id" if by_id else "topic"
    responses: list[dict] = []
    for (key, _, index, cached, _), (_, entry) in zip(wanted, entries):
        if not fctx.respond((key, index), cached, has_records=bool(entry["records"]),
                            error=entry["error_code"] != ErrorCode.none, high_watermark=entry["high_watermark"],
                            last_stable_offset=entry["last_stable_offset"],
                            log_start_offset=entry["log_start_offset"],
                            redirect="preferred_read_replica" in entry):
            continue
        if not responses or responses[-1][topic_field] != key:
            responses.append({topic_field: key, "partitions": []})
        responses[-1]["partitions"].append(entry)
    fctx.finish()
    stats.record_bytes += total
    leaders = [e["current_leader"]["leader_id"] for _, e in entries if "current_leader" in e]
    return build(response_schema(1, version), throttle_time=0, error_code=0, session_id=fctx.session_id,
                 responses=responses, node_endpoints=node_endpoints(ctx, leaders))
