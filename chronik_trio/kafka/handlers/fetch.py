"""Fetch (api key 1): whole batches below the high watermark, with long polling.

Limits: partition_max_bytes per partition and max_bytes per response, except that the first
batch found is always returned whole (KIP-74) so a consumer can never get stuck behind a
large batch. No fetch sessions (KIP-227): we answer session_id 0, so clients send full fetches.
isolation_level 1 (read_committed) serves up to the last stable offset, with the aborted
transactions of the range served (docs/transactions.md).
"""

from __future__ import annotations

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError
from chronik_trio.record_batch import HEADER_BYTES, read_header

from ..codec import build, has_field, response_schema
from .common import error_code_of, leader_hint, node_endpoints

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


def _resolve(ctx, body, by_id: bool) -> list[tuple]:
    """[(topic key for the answer, topic name or None, partition request)] in request order."""
    wanted = []
    for topic in body.topics:
        if by_id:
            meta_topic = ctx.meta.topics_by_id.get(topic.topic_id)
            name, key = (meta_topic.name if meta_topic else None), topic.topic_id
        else:
            name = key = topic.topic
        for p in topic.partitions:
            wanted.append((key, name, p))
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


def _end_offset(data: bytes | memoryview) -> int:
    """The offset after the last batch of whole batches (bounded by their count)."""
    pos, end = 0, -1
    while pos + HEADER_BYTES <= len(data):
        header = read_header(data, pos)
        end = header.end_offset
        pos += header.size_bytes
    return end


def _read_committed(entry: dict, replica, fetch_offset: int) -> None:
    """read_committed (isolation_level 1): the last stable offset, and the aborted
    transactions with records in what is served, so the consumer can drop them."""
    lso = replica.last_stable_offset
    end = _end_offset(entry["records"]) if entry["records"] else fetch_offset
    entry["last_stable_offset"] = lso
    entry["aborted_transactions"] = [{"producer_id": a.producer_id, "first_offset": a.first_offset}
                                     for a in replica.aborted_transactions(fetch_offset, end)]


def _collect(ctx, wanted, by_id: bool, max_bytes: int, version: int, client_rack: str = "",
             committed_only: bool = False):
    """Read every wanted partition once. Returns (per-partition entries, bytes, replicas,
    whether to answer at once: an error or a redirect to a preferred replica).
    committed_only (read_committed): up to each partition's last stable offset."""
    entries, total, replicas, any_error = [], 0, [], False
    for key, name, p in wanted:
        entry = {"partition_index": p.partition, "high_watermark": -1, "last_stable_offset": -1,
                 "log_start_offset": -1, "aborted_transactions": None, "records": b""}
        replica = ctx.replica(name, p.partition) if name is not None else None
        error = None
        if replica is None or (not replica.is_leader and version < FOLLOWER_FETCH_MIN_VERSION):
            if by_id and name is None:
                error = ErrorCode.unknown_topic_id
            else:
                error, leader = leader_hint(ctx, name, p.partition)
                if leader:
                    entry["current_leader"] = leader
            replica = None
        else:
            # v9+ (KIP-320); an older client does not fence by epoch
            error = _epoch_error(getattr(p, "current_leader_epoch", -1), replica.leader_epoch)
        preferred = None if error is not None else _preferred_replica(ctx, name, p.partition, replica, client_rack)
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
            if budget > 0 or total == 0:
                try:
                    views = replica.read(p.fetch_offset, max(budget, 1), committed_only=committed_only)
                except BrokerError as exc:
                    error = error_code_of(exc)
                else:
                    if views:
                        data = views[0] if len(views) == 1 else b"".join(views)
                        entry["records"] = data
                        total += len(data)
            if committed_only and error is None:
                _read_committed(entry, replica, p.fetch_offset)
            replicas.append(replica)
        entry["error_code"] = error if error is not None else ErrorCode.none
        any_error = any_error or error is not None
        entries.append((key, entry))
    return entries, total, replicas, any_error


async def handle_fetch(body, ctx, version: int):
    by_id = version >= 13
    committed_only = body.isolation_level == READ_COMMITTED
    wanted = _resolve(ctx, body, by_id)
    max_bytes = body.max_bytes if has_field(type(body), "max_bytes") else 2**31 - 1
    deadline = trio.current_time() + min(body.max_wait.total_seconds(), MAX_WAIT_S_CAP)
    while True:
        entries, total, replicas, any_error = _collect(ctx, wanted, by_id, max_bytes, version,
                                                       getattr(body, "rack_id", "") or "", committed_only)
        if total >= body.min_bytes or any_error or trio.current_time() >= deadline or not replicas:
            break
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
    for key, entry in entries:
        if not responses or responses[-1][topic_field] != key:
            responses.append({topic_field: key, "partitions": []})
        responses[-1]["partitions"].append(entry)
    leaders = [e["current_leader"]["leader_id"] for _, e in entries if "current_leader" in e]
    return build(response_schema(1, version), throttle_time=0, error_code=0, session_id=0,
                 responses=responses, node_endpoints=node_endpoints(ctx, leaders))
