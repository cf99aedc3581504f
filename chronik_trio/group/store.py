"""GroupStore: the groups and committed offsets of one `__consumer_offsets` partition, as
every replica derives them from the partition's committed batches (a BatchState,
partition/state.py). A new coordinator starts from it; OffsetFetch answers from it, so only
committed offsets are ever served. Expiry is decided here too, from the records' own
timestamps, so every replica agrees on what is expired.

Offsets in transactions (TxnOffsetCommit) arrive as a transactional batch of the
transaction's producer id: they are held as pending, per producer, and become committed
offsets only when that producer's commit marker (a control batch) is applied; its abort
marker drops them. So OffsetFetch never serves an offset of an undecided or aborted
transaction.
"""

from __future__ import annotations

import base64
import json
import logging
import typing

import attrs

from chronik_trio.partition.transactions import MalformedControlBatch, read_control
from chronik_trio.record_batch import ATTR_CONTROL, ATTR_TRANSACTIONAL, HEADER_BYTES, read_header

from .records import RecordError, batch_records, build_batch, group_key, offset_key, parse_key

log = logging.getLogger(__name__)

VALUE_VERSION = 1
NO_LEADER_EPOCH = -1


@attrs.frozen(slots=True)
class OffsetRecord:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int

    def to_value(self) -> bytes:
        return json.dumps({"v": VALUE_VERSION, "offset": self.offset, "leader_epoch": self.leader_epoch,
                           "metadata": self.metadata, "commit_ts": self.commit_timestamp_ms},
                          separators=(",", ":")).encode()

    @classmethod
    def from_value(cls, value: bytes) -> "OffsetRecord":
        d = json.loads(value)
        return cls(int(d["offset"]), int(d.get("leader_epoch", NO_LEADER_EPOCH)), d.get("metadata"),
                   int(d["commit_ts"]))


@attrs.frozen(slots=True)
class MemberRecord:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    subscription: bytes
    assignment: bytes

    def to_json(self) -> dict:
        return {"id": self.member_id, "instance": self.instance_id, "client": self.client_id,
                "host": self.client_host, "session_ms": self.session_timeout_ms,
                "rebalance_ms": self.rebalance_timeout_ms,
                "subscription": base64.b64encode(self.subscription).decode(),
                "assignment": base64.b64encode(self.assignment).decode()}

    @classmethod
    def from_json(cls, d: dict) -> "MemberRecord":
        return cls(d["id"], d.get("instance"), d.get("client", ""), d.get("host", ""), int(d["session_ms"]),
                   int(d["rebalance_ms"]), base64.b64decode(d["subscription"]),
                   base64.b64decode(d["assignment"]))


@attrs.frozen(slots=True)
class GroupRecord:
    """What Kafka keeps of a group across coordinators: its generation, protocol, leader and
    members with their assignments, and when it entered its state (for expiry)."""
    protocol_type: str | None
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    state_timestamp_ms: int
    members: tuple[MemberRecord, ...]

    def to_value(self) -> bytes:
        return json.dumps({"v": VALUE_VERSION, "protocol_type": self.protocol_type,
                           "generation": self.generation_id, "protocol": self.protocol_name,
                           "leader": self.leader_id, "state_ts": self.state_timestamp_ms,
                           "members": [m.to_json() for m in self.members]},
                          separators=(",", ":")).encode()

    @classmethod
    def from_value(cls, value: bytes) -> "GroupRecord":
        d = json.loads(value)
        return cls(d.get("protocol_type"), int(d["generation"]), d.get("protocol"), d.get("leader"),
                   int(d["state_ts"]), tuple(MemberRecord.from_json(m) for m in d.get("members", ())))


_DECODE_ERRORS = (RecordError, ValueError, KeyError, TypeError)


class GroupStore:
    """The BatchState of an offsets partition (see the module docstring)."""

    name = "groups"

    def __init__(self) -> None:
        self.groups: dict[str, GroupRecord] = {}
        self.offsets: dict[str, dict[tuple[str, int], OffsetRecord]] = {}
        # producer id -> group -> (topic, partition) -> offset: TxnOffsetCommits not decided yet
        self.pending: dict[int, dict[str, dict[tuple[str, int], OffsetRecord]]] = {}
        self.skipped_records = 0  # records this broker could not read (not written by it)

    # --- BatchState ------------------------------------------------------------------------------

    def apply(self, data: memoryview, index: int) -> None:
        header = read_header(data) if len(data) >= HEADER_BYTES else None
        if header is not None and header.attributes & ATTR_CONTROL:
            if not header.record_count:  # a marker the log cleaner removed: nothing pending is left
                return
            self._apply_marker(data, header.producer_id, index)
            return
        try:
            records = batch_records(data)
        except RecordError as exc:
            self.skipped_records += 1
            log.warning("__consumer_offsets entry %d is not a coordinator batch, skipped: %s", index, exc)
            return
        transactional = header is not None and header.attributes & ATTR_TRANSACTIONAL
        for key, value in records:
            try:
                if transactional:
                    self._apply_pending(header.producer_id, key, value)
                else:
                    self._apply_record(key, value)
            except _DECODE_ERRORS as exc:
                self.skipped_records += 1
                log.warning("__consumer_offsets entry %d: a record does not decode, skipped: %s", index, exc)

    def _apply_marker(self, data: memoryview, producer_id: int, index: int) -> None:
        """A control batch, read by the partition's own marker reader (partition/transactions.py):
        a commit marker makes the producer's pending offsets the group's, an abort drops them;
        a control batch of another type says nothing about them."""
        try:
            marker = read_control(data)
        except MalformedControlBatch as exc:
            self.skipped_records += 1
            log.warning("__consumer_offsets entry %d: a control batch that does not decode, skipped: %s", index, exc)
            return
        if marker is None:
            log.warning("__consumer_offsets entry %d: a control batch that is not a transaction marker, ignored",
                        index)
            return
        pending = self.pending.pop(producer_id, {})
        if marker.commit:
            for group_id, offsets in pending.items():
                self.offsets.setdefault(group_id, {}).update(offsets)

    def _apply_pending(self, producer_id: int, key: bytes, value: bytes | None) -> None:
        kind, group_id, topic, partition = parse_key(key)
        if kind != "offset" or value is None:
            raise RecordError(f"a transactional batch holds only offset commits, not {kind}")
        self.pending.setdefault(producer_id, {}).setdefault(group_id, {})[(topic, partition)] = \
            OffsetRecord.from_value(value)

    def _apply_record(self, key: bytes, value: bytes | None) -> None:
        kind, group_id, topic, partition = parse_key(key)
        if kind == "group":
            if value is None:
                self.groups.pop(group_id, None)
            else:
                self.groups[group_id] = GroupRecord.from_value(value)
            return
        if value is None:
            offsets = self.offsets.get(group_id)
            if offsets is not None:
                offsets.pop((topic, partition), None)
                if not offsets:
                    del self.offsets[group_id]
            return
        self.offsets.setdefault(group_id, {})[(topic, partition)] = OffsetRecord.from_value(value)

    def encode(self) -> bytes:
        return json.dumps({
            "v": VALUE_VERSION,
            "groups": {g: r.to_value().decode() for g, r in self.groups.items()},
            "offsets": {g: [[t, p, r.to_value().decode()] for (t, p), r in offsets.items()]
                        for g, offsets in self.offsets.items()},
            "pending": {str(pid): {g: [[t, p, r.to_value().decode()] for (t, p), r in offsets.items()]
                                   for g, offsets in groups.items()} for pid, groups in self.pending.items()},
        }, separators=(",", ":")).encode()

    def decode(self, data: bytes) -> None:
        d = json.loads(data)
        self.groups = {g: GroupRecord.from_value(v.encode()) for g, v in d["groups"].items()}
        self.offsets = {g: {(t, int(p)): OffsetRecord.from_value(v.encode()) for t, p, v in offsets}
                        for g, offsets in d["offsets"].items()}
        self.pending = {int(pid): {g: {(t, int(p)): OffsetRecord.from_value(v.encode()) for t, p, v in offsets}
                                   for g, offsets in groups.items()}
                        for pid, groups in d.get("pending", {}).items()}

    # --- reading ---------------------------------------------------------------------------------

    def group_ids(self) -> set[str]:
        return set(self.groups) | set(self.offsets)

    def committed(self, group_id: str) -> dict[tuple[str, int], OffsetRecord]:
        return self.offsets.get(group_id, {})

    def unstable(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions of the group with an offset in a transaction not decided yet."""
        return {tp for groups in self.pending.values() for tp in groups.get(group_id, {})}

    # --- expiry (offsets.retention.minutes) -------------------------------------------------------

    def expired(self, now_ms: int, retention_ms: int,
                empty: typing.Callable[[str], bool]) -> list[tuple[bytes, None]]:
        """Tombstones for what has expired, Kafka's rules (KIP-211): the offsets of a group that
        has been Empty for retention_ms (a group that only stores offsets, with no protocol
        type: each offset retention_ms after its commit), and then the Empty group itself.
        empty(group_id) tells whether the live group (on the coordinator) is Empty."""
        tombstones: list[tuple[bytes, None]] = []
        for group_id in sorted(self.group_ids()):
            if not empty(group_id):
                continue
            record = self.groups.get(group_id)
            offsets = self.offsets.get(group_id, {})
            gone = []
            for (topic, partition), offset in offsets.items():
                since = record.state_timestamp_ms if record is not None and record.protocol_type \
                    else offset.commit_timestamp_ms
                if now_ms - since >= retention_ms:
                    gone.append((topic, partition))
            tombstones += [(offset_key(group_id, t, p), None) for t, p in sorted(gone)]
            if record is not None and len(gone) == len(offsets) and not record.members and \
                    now_ms - record.state_timestamp_ms >= retention_ms:
                tombstones.append((group_key(group_id), None))
        return tombstones


def offsets_batch(group_id: str, commits: typing.Sequence[tuple[str, int, OffsetRecord]],
                  timestamp_ms: int, *, producer: tuple[int, int] | None = None) -> bytes:
    """producer: (id, epoch) of the transaction the offsets belong to (TxnOffsetCommit)."""
    return build_batch([(offset_key(group_id, t, p), r.to_value()) for t, p, r in commits], timestamp_ms,
                       producer=producer)


def group_batch(group_id: str, record: GroupRecord | None, timestamp_ms: int) -> bytes:
    return build_batch([(group_key(group_id), None if record is None else record.to_value())], timestamp_ms)
