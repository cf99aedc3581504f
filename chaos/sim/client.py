"""In-process Kafka clients for the simulation: the wire protocol (kio) over the simulated
network, recording the same history events as `chaos run`'s clients (history.py).

Producers send `planned_send` values (workload.py) one at a time, to the partition leader
from Metadata, with retries until the delivery timeout, and record the outcome with the
rules of `chaos run`: ok (with its offset) when acknowledged; info when some attempt may
have written it (the request was sent and no answer came, or the answer says it may have:
REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND); fail otherwise. An idempotent producer
(InitProducerId, one sequence per partition) retries a batch with the same sequence, so a
retry of a write that happened is answered as a duplicate with the original offset.
Consumers read every partition from offset 0 by assignment and record every poll. Group
consumers (`run_group_consumer`) share the partitions through the classic group protocol.
The copier (`run_copier`) is chaos run's consume-transform-produce stage: read_committed
input, each batch one transaction carrying its input offsets (TxnOffsetCommit).
"""

from __future__ import annotations

import io
import random
import struct
import uuid

import kio.serial
import trio
from kio.schema.errors import ErrorCode

from chronik_trio.kafka.codec import build, request_schema, response_schema
from chronik_trio.record_batch import ATTR_CONTROL, ATTR_TRANSACTIONAL, encode_batch
from chronik_trio.varint import read_varint as _read_varint, write_uvarint

from ..workload import (COPIER_IDLE_S, COPY_PREFIX, planned_send, planned_txn, read_value, record_payload,
                        record_seeks, record_txn, txn_timeout_s)

PRODUCE, FETCH, LIST_OFFSETS, METADATA, CREATE_TOPICS, INIT_PRODUCER_ID = 0, 1, 2, 3, 19, 22
ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN, TXN_OFFSET_COMMIT = 24, 25, 26, 28
ALTER_PARTITION_REASSIGNMENTS, LIST_PARTITION_REASSIGNMENTS = 45, 46
REMOVE_RAFT_VOTER = 81
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = \
    8, 9, 10, 11, 12, 13, 14
VERSION = {PRODUCE: 9, FETCH: 12, LIST_OFFSETS: 7, METADATA: 12, CREATE_TOPICS: 7, INIT_PRODUCER_ID: 4,
           OFFSET_COMMIT: 7, OFFSET_FETCH: 7, FIND_COORDINATOR: 3, JOIN_GROUP: 5, HEARTBEAT: 3,
           LEAVE_GROUP: 3, SYNC_GROUP: 3, ADD_PARTITIONS_TO_TXN: 3, END_TXN: 3,
           ADD_OFFSETS_TO_TXN: 3, TXN_OFFSET_COMMIT: 3,
           ALTER_PARTITION_REASSIGNMENTS: 0, LIST_PARTITION_REASSIGNMENTS: 0, REMOVE_RAFT_VOTER: 0}
INDETERMINATE = {ErrorCode.request_timed_out, ErrorCode.not_enough_replicas_after_append}
RETRY_BACKOFF_S = 0.1
REMOVE_NODE_WAIT_S = 40.0  # a broker answers RemoveRaftVoter once __meta's voters changed (admin.py)
REMOVE_NODE_TIMEOUT_S = 90.0  # retried while unanswered, as nemesis._remove_node does
CONSUMER_POLL_WAIT_MS = 200


class Unanswered(Exception):
    """The connection broke or timed out with the request sent: it may have been acted on."""


class Connection:
    """One connection; one request at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buf = bytearray()
        self._corr = 0

    async def request(self, api_key: int, body: dict):
        version = VERSION[api_key]
        cls = request_schema(api_key, version)
        self._corr += 1
        header = cls.__header_schema__(request_api_key=api_key, request_api_version=version,
                                       correlation_id=self._corr, client_id="sim")
        sink = io.BytesIO()
        kio.serial.entity_writer(type(header))(sink, header)
        kio.serial.entity_writer(cls)(sink, build(cls, body))
        payload = sink.getvalue()
        try:
            await self.stream.send_all(struct.pack(">i", len(payload)) + payload)
            frame = await self._read_frame()
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError) as exc:
            raise Unanswered(f"connection lost: {exc or type(exc).__name__}") from None
        resp = response_schema(api_key, version)
        header, n = kio.serial.entity_reader(resp.__header_schema__)(frame, 0)
        assert header.correlation_id == self._corr, (header.correlation_id, self._corr)
        return kio.serial.entity_reader(resp)(frame, n)[0]

    async def _read_frame(self) -> bytes:
        while True:
            if len(self._buf) >= 4:
                (size,) = struct.unpack_from(">i", self._buf, 0)
                if len(self._buf) >= 4 + size:
                    frame = bytes(self._buf[4:4 + size])
                    del self._buf[:4 + size]
                    return frame
            data = await self.stream.receive_some(1 << 20)
            if not data:
                raise EOFError("EOF")
            self._buf += data

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


class Client:
    """Connections to brokers by node id, and the metadata that says where leaders are."""

    def __init__(self, net, bootstrap: list[tuple[str, int]], rng: random.Random,
                 request_timeout_s: float) -> None:
        self.net = net
        self.bootstrap = bootstrap
        self.rng = rng
        self.request_timeout_s = request_timeout_s
        self.conns: dict[tuple[str, int], Connection] = {}
        self.brokers: dict[int, tuple[str, int]] = {}
        self.leaders: dict[tuple[str, int], int] = {}
        self.read_committed = False  # Fetch with isolation_level read_committed

    async def call(self, address: tuple[str, int], api_key: int, body: dict):
        """One request to `address`; raises Unanswered (maybe acted on) or OSError (not sent)."""
        conn = self.conns.get(address)
        if conn is None:
            with trio.move_on_after(self.request_timeout_s) as scope:
                stream = await self.net.connect(*address)
            if scope.cancelled_caught:
                raise OSError(f"connect to {address[0]}:{address[1]} timed out")
            conn = self.conns[address] = Connection(stream)
        answered = False
        try:
            with trio.move_on_after(self.request_timeout_s):
                answer = await conn.request(api_key, body)
                answered = True
                return answer
            raise Unanswered("request timed out")
        finally:
            if not answered:  # timed out, broken or cancelled: an answer may still come on it
                self.conns.pop(address, None)
                await conn.aclose()

    async def refresh(self, topics: list[str]) -> None:
        addresses = list(self.brokers.values()) or self.bootstrap
        address = addresses[self.rng.randrange(len(addresses))]
        try:
            r = await self.call(address, METADATA, {"topics": [{"name": t} for t in topics],
                                                    "allow_auto_topic_creation": False})
        except (OSError, Unanswered):
            self.brokers = {}
            return
        self.brokers = {b.node_id: (b.host, b.port) for b in r.brokers} or self.brokers
        for t in r.topics:
            for p in t.partitions:
                if p.error_code == ErrorCode.none and p.leader_id >= 0:
                    self.leaders[(t.name, p.partition_index)] = int(p.leader_id)
                else:
                    self.leaders.pop((t.name, p.partition_index), None)

    def leader_address(self, topic: str, partition: int) -> tuple[str, int] | None:
        leader = self.leaders.get((topic, partition))
        return self.brokers.get(leader) if leader is not None else None

    async def aclose(self) -> None:
        for conn in self.conns.values():
            await conn.aclose()
        self.conns.clear()


def _varint(value: int) -> bytes:
    return write_uvarint((value << 1) ^ (value >> 63))


def _record(key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None = None,
            offset_delta: int = 0) -> bytes:
    """One v2 record (timestamp delta 0); value None is a tombstone."""
    body = b"\x00" + _varint(0) + _varint(offset_delta) + _varint(len(key)) + key + \
        (_varint(-1) if value is None else _varint(len(value)) + value) + _varint(len(headers or ()))
    for k, v in headers or ():
        body += _varint(len(k)) + k.encode() + _varint(len(v)) + v
    return _varint(len(body)) + body


def parse_batches(data: bytes):
    """(base offset, last offset, attributes, producer id, records) of every whole v2 batch
    of `data` (uncompressed); records are (offset, history value), none for a control batch
    (its records are markers, not values)."""
    pos = 0
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if end > len(data):
            break
        attributes, last_delta = struct.unpack_from(">hi", data, pos + 21)
        producer_id = struct.unpack_from(">q", data, pos + 43)[0]
        count = struct.unpack_from(">i", data, pos + 57)[0]
        records = []
        p = pos + 61
        for _ in range(0 if attributes & ATTR_CONTROL else count):
            _length, p = _read_varint(data, p)
            p += 1
            _ts, p = _read_varint(data, p)
            delta, p = _read_varint(data, p)
            klen, p = _read_varint(data, p)
            p += max(klen, 0)
            vlen, p = _read_varint(data, p)
            value = data[p:p + vlen] if vlen >= 0 else None
            p += max(vlen, 0)
            count_headers, p = _read_varint(data, p)
            headers = []
            for _ in range(count_headers):
                hk, p = _read_varint(data, p)
                name = data[p:p + hk].decode()
                p += hk
                hv, p = _read_varint(data, p)
                headers.append((name, data[p:p + hv] if hv >= 0 else None))
                p += max(hv, 0)
            records.append((base + delta, read_value(value, headers)))
        yield base, base + last_delta, attributes, producer_id, records
        pos = end


def parse_records(data: bytes, aborted=None) -> tuple[list[tuple[int, str]], int | None]:
    """(offset, history value) of the records of `data` (a partial tail is ignored), and the
    offset after its last whole batch (None without one). With `aborted` (a read_committed
    Fetch's aborted transactions: (producer id, first offset)), what a read_committed client
    delivers: no control records, and no record of a transactional batch of a producer
    between an aborted transaction's first offset and that producer's next control marker
    (the Java consumer's rule)."""
    pending = sorted(((int(a.first_offset), int(a.producer_id)) for a in aborted or ()), reverse=True)
    active: set[int] = set()
    out: list[tuple[int, str]] = []
    next_offset = None
    for _base, last, attributes, producer_id, records in parse_batches(data):
        next_offset = last + 1
        while pending and pending[-1][0] <= last:
            active.add(pending.pop()[1])
        if attributes & ATTR_CONTROL:
            active.discard(producer_id)
        elif not (attributes & ATTR_TRANSACTIONAL and producer_id in active):
            out += records
    return out, next_offset


async def create_topics(client: Client, topics, deadline_s: float) -> None:
    """CreateTopics through any broker until every topic exists (bounded)."""
    with trio.move_on_after(deadline_s):
        while True:
            address = client.bootstrap[client.rng.randrange(len(client.bootstrap))]
            try:
                r = await client.call(address, CREATE_TOPICS, {"timeout": 30000, "topics": [
                    {"name": t.name, "num_partitions": t.partitions,
                     "replication_factor": t.replication_factor,
                     "configs": [{"name": k, "value": v} for k, v in t.configs]} for t in topics]})
                if all(x.error_code in (ErrorCode.none, ErrorCode.topic_already_exists) for x in r.topics):
                    return
            except (OSError, Unanswered):
                pass
            await trio.sleep(0.5)
    raise RuntimeError("could not create the topics")


async def run_producer(name: str, client: Client, spec, topics: list[tuple[str, int]], history,
                       stop: trio.Event) -> None:
    """Paced sends until `stop`, each recorded once with its outcome."""
    interval = 1.0 / spec.rate_per_s
    pid = epoch = -1
    sequences: dict[tuple[str, int], int] = {}
    seq = 0
    next_at = trio.current_time()
    while not stop.is_set():
        if spec.idempotence and pid < 0:
            pid, epoch = await _init_producer_id(client, stop)
            if pid < 0:
                return
        event = planned_send(name, seq, topics, spec.keys, spec.tombstone_every)
        part = (event["topic"], event["partition"])
        base_seq = sequences.get(part, 0)
        batch = encode_batch(_record(event["key"].encode(), *record_payload(event)), record_count=1,
                             base_timestamp_ms=0, max_timestamp_ms=0, producer_id=pid,
                             producer_epoch=epoch, base_sequence=base_seq if pid >= 0 else -1)
        event = {**event, "t_start": round(history.now(), 6)}
        outcome = await _send_one(client, spec, part, batch)
        if outcome[0] == "ok":
            history.record({**event, "t_end": round(history.now(), 6), "outcome": "ok", "offset": outcome[1]})
        else:
            history.record({**event, "t_end": round(history.now(), 6), "outcome": outcome[0],
                            "error": outcome[1]})
        if pid >= 0:
            if outcome[0] == "info":
                pid = epoch = -1  # a sequence gap would follow: start over with a new id
                sequences.clear()
            else:
                sequences[part] = base_seq + 1 if outcome[0] == "ok" else base_seq
        seq += 1
        next_at = max(next_at + interval, trio.current_time())
        await trio.sleep_until(next_at)


async def _init_producer_id(client: Client, stop: trio.Event) -> tuple[int, int]:
    while not stop.is_set():
        addresses = list(client.brokers.values()) or client.bootstrap
        address = addresses[client.rng.randrange(len(addresses))]
        try:
            r = await client.call(address, INIT_PRODUCER_ID, {"transactional_id": None,
                                                             "transaction_timeout": 60000,
                                                             "producer_id": -1, "producer_epoch": -1})
            if r.error_code == ErrorCode.none:
                return int(r.producer_id), int(r.producer_epoch)
        except (OSError, Unanswered):
            client.brokers = {}
        await trio.sleep(RETRY_BACKOFF_S)
    return -1, -1


async def _send_one(client: Client, spec, part: tuple[str, int], batch: bytes,
                    transactional_id: str | None = None) -> tuple[str, object]:
    topic, partition = part
    maybe = None  # why the write may have happened
    last = "no attempt"
    with trio.move_on_after(spec.delivery_timeout_s):
        while True:
            address = client.leader_address(topic, partition)
            if address is None:
                await client.refresh([topic])
                address = client.leader_address(topic, partition)
            if address is not None:
                try:
                    r = await client.call(address, PRODUCE, {
                        "acks": -1 if spec.acks == "all" else int(spec.acks),
                        "timeout": int(spec.request_timeout_s * 1000), "transactional_id": transactional_id,
                        "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": batch}]}]})
                    p = r.responses[0].partition_responses[0]
                    if p.error_code == ErrorCode.none:
                        return "ok", int(p.base_offset)
                    last = p.error_code.name
                    if p.error_code in INDETERMINATE:
                        maybe = maybe or last
                    elif p.error_code in (ErrorCode.out_of_order_sequence_number,
                                          ErrorCode.invalid_producer_epoch, ErrorCode.unknown_producer_id):
                        return ("info" if maybe else "fail"), f"{last} (after {maybe})" if maybe else last
                except Unanswered as exc:
                    last = str(exc)
                    maybe = maybe or last
                except OSError as exc:
                    last = str(exc)
                client.leaders.pop(part, None)
            await trio.sleep(RETRY_BACKOFF_S)
    if maybe:
        return "info", f"delivery timed out ({last}; may have been written: {maybe})"
    return "fail", f"delivery timed out ({last})"


# --- transactions ---------------------------------------------------------------------------

TXN_RETRIABLE = {ErrorCode.coordinator_load_in_progress, ErrorCode.coordinator_not_available,
                 ErrorCode.not_coordinator, ErrorCode.concurrent_transactions}


class _TxnFailed(Exception):
    """The transaction cannot go on (its outcome so far is unknown)."""


class _Coordinator:
    """Requests to the coordinator of one key (a transactional id, key type 1, or a group,
    key type 0): found by FindCoordinator, forgotten when lost."""

    def __init__(self, client: Client, key: str, key_type: int, spec) -> None:
        self.client, self.key, self.key_type, self.spec = client, key, key_type, spec
        self.address: tuple[str, int] | None = None

    async def call(self, api_key: int, body: dict, error_of, retriable=TXN_RETRIABLE) -> object:
        """A request to the coordinator, retried on a retriable error or a lost coordinator
        until the delivery timeout; raises _TxnFailed with what went wrong."""
        last = "no attempt"
        with trio.move_on_after(self.spec.delivery_timeout_s):
            while True:
                try:
                    if self.address is None:
                        addresses = list(self.client.brokers.values()) or self.client.bootstrap
                        r = await self.client.call(addresses[self.client.rng.randrange(len(addresses))],
                                                   FIND_COORDINATOR, {"key": self.key, "key_type": self.key_type})
                        if r.error_code != ErrorCode.none:
                            raise OSError(f"find coordinator: {r.error_code.name}")
                        self.address = (r.host, int(r.port))
                    r = await self.client.call(self.address, api_key, body)
                    error = error_of(r)
                    if error == ErrorCode.none:
                        return r
                    last = error.name
                    if error not in retriable:
                        raise _TxnFailed(last)
                    if error in (ErrorCode.not_coordinator, ErrorCode.coordinator_not_available):
                        self.address = None
                except (OSError, Unanswered) as exc:
                    last = str(exc)
                    self.address = None
                    self.client.brokers = {}
                await trio.sleep(RETRY_BACKOFF_S)
        raise _TxnFailed(f"timed out ({last})")


class _TxnSession:
    """A transactional id's producer: its coordinator, producer id and epoch, and one
    sequence per partition (reset by every InitProducerId)."""

    def __init__(self, client: Client, transactional_id: str, spec) -> None:
        self.client, self.id, self.spec = client, transactional_id, spec
        self.coordinator = _Coordinator(client, transactional_id, 1, spec)
        self.pid = self.epoch = -1
        self.sequences: dict[tuple[str, int], int] = {}

    async def call(self, api_key: int, body: dict, error_of) -> object:
        return await self.coordinator.call(api_key, body, error_of)

    async def init(self) -> None:
        r = await self.call(INIT_PRODUCER_ID, {"transactional_id": self.id,
                                               "transaction_timeout": int(txn_timeout_s(self.spec) * 1000),
                                               "producer_id": -1, "producer_epoch": -1}, lambda r: r.error_code)
        self.pid, self.epoch = int(r.producer_id), int(r.producer_epoch)
        self.sequences.clear()

    async def add_partitions(self, parts: list[tuple[str, int]]) -> None:
        topics: dict[str, list[int]] = {}
        for t, p in parts:
            topics.setdefault(t, []).append(p)

        def error_of(r):
            errors = [x.partition_error_code for t in r.results_by_topic_v3_and_below
                      for x in t.results_by_partition if x.partition_error_code != ErrorCode.none]
            return errors[0] if errors else ErrorCode.none
        await self.call(ADD_PARTITIONS_TO_TXN, {
            "v3_and_below_transactional_id": self.id, "v3_and_below_producer_id": self.pid,
            "v3_and_below_producer_epoch": self.epoch,
            "v3_and_below_topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]}, error_of)

    async def send(self, part: tuple[str, int], send: dict) -> int:
        """The record written in the transaction: its offset."""
        return await self.write(part, _record(send["key"].encode(), *record_payload(send)), 1)

    async def write(self, part: tuple[str, int], records: bytes, count: int) -> int:
        """One transactional batch of `count` encoded records: its base offset."""
        batch = encode_batch(records, record_count=count, base_timestamp_ms=0, max_timestamp_ms=0,
                             attributes=ATTR_TRANSACTIONAL, producer_id=self.pid, producer_epoch=self.epoch,
                             base_sequence=self.sequences.get(part, 0))
        outcome = await _send_one(self.client, self.spec, part, batch, transactional_id=self.id)
        if outcome[0] != "ok":
            raise _TxnFailed(f"send to {part[0]}-{part[1]}: {outcome[1]}")
        self.sequences[part] = self.sequences.get(part, 0) + count
        return int(outcome[1])

    async def add_offsets(self, group: str) -> None:
        """AddOffsetsToTxn: the group's offsets partition joins the transaction."""
        await self.call(ADD_OFFSETS_TO_TXN, {"transactional_id": self.id, "producer_id": self.pid,
                                             "producer_epoch": self.epoch, "group_id": group},
                        lambda r: r.error_code)

    async def end(self, commit: bool) -> None:
        await self.call(END_TXN, {"transactional_id": self.id, "producer_id": self.pid,
                                  "producer_epoch": self.epoch, "committed": commit}, lambda r: r.error_code)


async def run_txn_producer(name: str, client: Client, spec, topics: list[tuple[str, int]], history,
                           stop: trio.Event) -> None:
    """Transactions until `stop`, as chaos run's transactional producer
    (workload.run_producer_txn): spec.txn_records planned sends each (so across partitions),
    every spec.abort_every-th aborted on purpose, recorded by workload.record_txn. On any
    error the transaction is aborted if the coordinator takes the abort (outcome abort),
    else its outcome is unknown (info); either way the session starts over with a new
    InitProducerId (which fences the old epoch and ends whatever it left open)."""
    session = _TxnSession(client, f"chaos-{name}", spec)
    seq = n = 0
    next_at = trio.current_time()
    while not stop.is_set():
        if session.pid < 0:
            try:
                await session.init()
            except _TxnFailed as exc:
                history.record({"type": "txn-init-failed", "process": name, "t": round(history.now(), 6),
                                "error": str(exc)})
                await trio.sleep(0.5)
                continue
        sends, abort = planned_txn(name, seq, n + 1, topics, spec)
        seq += len(sends)
        n += 1
        offsets: dict[int, int] = {}
        t_start, t_commit = history.now(), None
        try:
            await session.add_partitions(sorted({(s["topic"], s["partition"]) for s in sends}))
            for send in sends:
                offsets[send["seq"]] = await session.send((send["topic"], send["partition"]), send)
            t_commit = history.now()
            await session.end(commit=not abort)
            outcome = "abort" if abort else "commit"
        except _TxnFailed as exc:
            outcome = "info"
            if t_commit is None:
                try:
                    await session.end(commit=False)
                    outcome = "abort"
                except _TxnFailed:
                    pass
            session.pid = -1
            history.record({"type": "txn-error", "process": name, "txn": n, "t": round(history.now(), 6),
                            "error": str(exc)})
        record_txn(history, name, n, sends, outcome, offsets, t_start, t_commit)
        next_at = max(next_at + len(sends) / spec.rate_per_s, trio.current_time())
        await trio.sleep_until(next_at)


async def fetch_once(client: Client, topic: str, partition: int, offset: int, wait_ms: int
                     ) -> tuple[int, int, list[tuple[int, str]], int]:
    """(error code, high watermark, records at or after offset, the offset to fetch next)
    from the leader, read_committed when the client is (`Client.read_committed`: aborted
    records and markers dropped, so the next offset may pass records it does not return);
    raises OSError/Unanswered."""
    address = client.leader_address(topic, partition)
    if address is None:
        await client.refresh([topic])
        address = client.leader_address(topic, partition)
        if address is None:
            raise OSError(f"no leader known for {topic}-{partition}")
    r = await client.call(address, FETCH, {
        "replica_id": -1, "max_wait": wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 1 if client.read_committed else 0,
        "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
        "topics": [{"topic": topic, "partitions": [{"partition": partition, "fetch_offset": offset,
                                                    "partition_max_bytes": 1 << 20, "current_leader_epoch": -1,
                                                    "log_start_offset": -1, "last_fetched_epoch": -1}]}]})
    p = r.responses[0].partitions[0]
    if p.error_code != ErrorCode.none:
        client.leaders.pop((topic, partition), None)
        return int(p.error_code), -1, [], offset
    records, after = parse_records(p.records or b"", p.aborted_transactions if client.read_committed else None)
    return 0, int(p.high_watermark), [(o, v) for o, v in records if o >= offset], max(after or offset, offset)


async def run_consumer(name: str, client: Client, topics: list[tuple[str, int]], history,
                       stop: trio.Event, target: dict) -> None:
    """Assign every partition from 0; poll in turn until `stop` and, once `target` (the
    final read's high watermarks) is known, until every position reached it."""
    parts = [(t, p) for t, n in topics for p in range(n)]
    record_seeks(history, name, [_TP(t, p) for t, p in parts])
    positions = {tp: 0 for tp in parts}
    while not (stop.is_set() and all(positions[tp] >= target.get(tp, 0) for tp in parts)):
        progressed = False
        for tp in parts:
            try:
                code, _high, records, after = await fetch_once(client, tp[0], tp[1], positions[tp], 0)
            except (OSError, Unanswered) as exc:
                client.leaders.pop(tp, None)
                history.record({"type": "consumer-error", "process": name, "error": str(exc)})
                continue
            if records:
                progressed = True
                history.record({"type": "poll", "process": name, "topic": tp[0], "partition": tp[1],
                                "records": [[o, v] for o, v in records]})
            positions[tp] = max(positions[tp], after)
        if not progressed:
            await trio.sleep(CONSUMER_POLL_WAIT_MS / 1000)


async def final_read(client: Client, topic: str, partition: int, timeout_s: float
                     ) -> tuple[int, list[tuple[int, str]]]:
    """Every record below the high watermark (read at the start), retried until timeout."""
    with trio.fail_after(timeout_s):
        while True:
            try:
                code, high, _, _ = await fetch_once(client, topic, partition, 0, 0)
                if code == 0:
                    break
            except (OSError, Unanswered):
                pass
            await trio.sleep(0.2)
        records: list[tuple[int, str]] = []
        offset = 0
        while offset < high:
            try:
                code, _, got, after = await fetch_once(client, topic, partition, offset, 0)
            except (OSError, Unanswered):
                await trio.sleep(0.2)
                continue
            if code or after <= offset:
                await trio.sleep(0.2)
                continue
            records += [(o, v) for o, v in got if o < high]
            offset = after
    return high, records


class _TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


# --- consumers in a group -------------------------------------------------------------------

GROUP_SESSION_TIMEOUT_MS = 10_000
GROUP_REBALANCE_TIMEOUT_MS = 10_000
GROUP_HEARTBEAT_S = 1.0
GROUP_COMMIT_S = 1.0
REJOIN = {ErrorCode.rebalance_in_progress, ErrorCode.illegal_generation, ErrorCode.unknown_member_id,
          ErrorCode.not_coordinator, ErrorCode.coordinator_not_available,
          ErrorCode.coordinator_load_in_progress, ErrorCode.fenced_instance_id}


class GroupView:
    """What each group consumer holds now (generation, partitions, since when): the driver's
    liveness check reads it to tell when the group has settled."""

    def __init__(self, group: str, members: list[str], partitions: list[tuple[str, int]]) -> None:
        self.group = group
        self.partitions = frozenset(partitions)
        self.held: dict[str, tuple[int, frozenset, float]] = {m: (-1, frozenset(), 0.0) for m in members}

    def settled_at(self) -> float | None:
        """When the last member took its share, if every member is in one generation and
        their shares are disjoint and cover every partition; else None."""
        generations = {g for g, _, _ in self.held.values()}
        shares = [parts for _, parts, _ in self.held.values()]
        if len(generations) != 1 or -1 in generations or sum(map(len, shares)) != len(self.partitions) \
                or frozenset().union(*shares) != self.partitions:
            return None
        return max(t for _, _, t in self.held.values())


def assign_range(members: list[str], partitions: list[tuple[str, int]]) -> dict[str, list[tuple[str, int]]]:
    """Contiguous shares of the partitions in member-id order (the range assignor's idea)."""
    members = sorted(members)
    out: dict[str, list[tuple[str, int]]] = {m: [] for m in members}
    for i, tp in enumerate(sorted(partitions)):
        out[members[i * len(members) // len(partitions)]].append(tp)
    return out


def _encode_share(share: list[tuple[str, int]]) -> bytes:
    return ",".join(f"{t}:{p}" for t, p in share).encode()  # only these clients read it


def _decode_share(data: bytes | None) -> list[tuple[str, int]]:
    text = (data or b"").decode()
    return [(t, int(p)) for t, _, p in (x.rpartition(":") for x in text.split(",") if x)]


class _GroupMember:
    """One member's session with the coordinator; every error sends it back to join."""

    def __init__(self, name: str, client: Client, group: str) -> None:
        self.name, self.client, self.group = name, client, group
        self.coordinator: tuple[str, int] | None = None
        self.member_id = ""
        self.generation = -1

    async def call(self, api_key: int, body: dict):
        if self.coordinator is None:
            addresses = list(self.client.brokers.values()) or self.client.bootstrap
            r = await self.client.call(addresses[self.client.rng.randrange(len(addresses))],
                                       FIND_COORDINATOR, {"key": self.group, "key_type": 0})
            if r.error_code != ErrorCode.none:
                raise OSError(f"find coordinator: {r.error_code.name}")
            self.coordinator = (r.host, int(r.port))
        try:
            return await self.client.call(self.coordinator, api_key, {"group_id": self.group, **body})
        except (OSError, Unanswered):
            self.coordinator = None
            raise

    def check(self, error: ErrorCode) -> None:
        """Raise _Rejoin on an error that ends the member's generation."""
        if error == ErrorCode.none:
            return
        if error in (ErrorCode.not_coordinator, ErrorCode.coordinator_not_available):
            self.coordinator = None
        if error in (ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id):
            self.member_id = ""
        raise _Rejoin(error.name)

    async def join(self, partitions: list[tuple[str, int]]) -> list[tuple[str, int]]:
        while True:
            r = await self.call(JOIN_GROUP, {
                "session_timeout": GROUP_SESSION_TIMEOUT_MS, "rebalance_timeout": GROUP_REBALANCE_TIMEOUT_MS,
                "member_id": self.member_id, "group_instance_id": None, "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": b""}]})
            if r.error_code == ErrorCode.member_id_required:
                self.member_id = r.member_id
                continue
            self.check(r.error_code)
            self.member_id, self.generation = r.member_id, int(r.generation_id)
            assignments = []
            if r.leader == self.member_id:
                shares = assign_range([m.member_id for m in r.members], partitions)
                assignments = [{"member_id": m, "assignment": _encode_share(share)} for m, share in shares.items()]
            r = await self.call(SYNC_GROUP, {"generation_id": self.generation, "member_id": self.member_id,
                                             "group_instance_id": None, "assignments": assignments})
            self.check(r.error_code)
            return _decode_share(r.assignment)

    async def committed(self, share: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        topics: dict[str, list[int]] = {}
        for t, p in share:
            topics.setdefault(t, []).append(p)
        r = await self.call(OFFSET_FETCH, {"topics": [{"name": t, "partition_indexes": ps}
                                                      for t, ps in topics.items()], "require_stable": False})
        self.check(r.error_code)
        out = {}
        for t in r.topics:
            for p in t.partitions:
                self.check(p.error_code)
                out[(t.name, p.partition_index)] = max(int(p.committed_offset), 0)
        return out

    async def commit(self, positions: dict[tuple[str, int], int]) -> list[tuple[str, int]]:
        """The partitions whose commit was acknowledged."""
        topics: dict[str, list[dict]] = {}
        for (t, p), offset in positions.items():
            topics.setdefault(t, []).append({"partition_index": p, "committed_offset": offset,
                                             "committed_leader_epoch": -1, "committed_metadata": None})
        r = await self.call(OFFSET_COMMIT, {"generation_id_or_member_epoch": self.generation,
                                            "member_id": self.member_id, "group_instance_id": None,
                                            "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]})
        done, error = [], ErrorCode.none
        for t in r.topics:
            for p in t.partitions:
                if p.error_code == ErrorCode.none:
                    done.append((t.name, p.partition_index))
                else:
                    error = p.error_code
        if not done:
            self.check(error)
        return done

    async def heartbeat(self) -> None:
        r = await self.call(HEARTBEAT, {"generation_id": self.generation, "member_id": self.member_id,
                                        "group_instance_id": None})
        self.check(r.error_code)

    async def leave(self) -> None:
        with trio.move_on_after(self.client.request_timeout_s):
            try:
                await self.call(LEAVE_GROUP, {"members": [{"member_id": self.member_id,
                                                            "group_instance_id": None}]})
            except (OSError, Unanswered):
                pass


class _Rejoin(Exception):
    """The member's generation is over (or its coordinator is gone): join again."""


async def run_group_consumer(name: str, client: Client, view: GroupView, history, stop: trio.Event,
                             target: dict) -> None:
    """A member of `view.group`: joins, reads its share of the partitions from the group's
    committed offsets (a `seek` in the history, and `offsets-fetched`), commits its positions
    every GROUP_COMMIT_S (`commit` events for the acknowledged ones), heartbeats, and joins
    again on any error that ends its generation. Stops (and leaves) once `stop` is set and its
    share reached `target`."""
    member = _GroupMember(name, client, view.group)
    partitions = sorted(view.partitions)
    while True:
        try:
            share = await member.join(partitions)
            start = history.now()
            positions = await member.committed(share)
            history.record({"type": "offsets-fetched", "process": name, "group": view.group,
                            "generation": member.generation, "t_start": round(start, 6),
                            "offsets": [[t, p, o] for (t, p), o in sorted(positions.items())]})
            for (t, p), offset in sorted(positions.items()):
                history.record({"type": "seek", "process": name, "topic": t, "partition": p,
                                "offset": offset})
            view.held[name] = (member.generation, frozenset(share), history.now())
            history.record({"type": "group-assigned", "process": name, "group": view.group,
                            "generation": member.generation, "partitions": [[t, p] for t, p in share]})
            await _consume_share(member, positions, history, stop, target)
            await member.leave()
            return
        except _Rejoin as exc:
            history.record({"type": "consumer-error", "process": name, "error": f"rejoin: {exc}"})
        except (OSError, Unanswered) as exc:
            history.record({"type": "consumer-error", "process": name, "error": str(exc)})
            await trio.sleep(RETRY_BACKOFF_S)
        view.held[name] = (-1, frozenset(), history.now())


async def _consume_share(member: _GroupMember, positions: dict, history, stop: trio.Event,
                         target: dict) -> None:
    """Poll the share until stop (and target reached); heartbeat and commit on the way."""
    next_beat = next_commit = trio.current_time()
    committed = dict(positions)
    while not (stop.is_set() and all(o >= target.get(tp, 0) for tp, o in positions.items())):
        progressed = False
        for tp in sorted(positions):
            try:
                _code, _high, records, after = await fetch_once(member.client, tp[0], tp[1], positions[tp], 0)
            except (OSError, Unanswered) as exc:
                member.client.leaders.pop(tp, None)
                history.record({"type": "consumer-error", "process": member.name, "error": str(exc)})
                continue
            if records:
                progressed = True
                history.record({"type": "poll", "process": member.name, "topic": tp[0], "partition": tp[1],
                                "records": [[o, v] for o, v in records]})
            positions[tp] = max(positions[tp], after)
        now = trio.current_time()
        if now >= next_beat:
            next_beat = now + GROUP_HEARTBEAT_S
            await member.heartbeat()
        if now >= next_commit:
            next_commit = now + GROUP_COMMIT_S
            await _commit(member, positions, committed, history)
        if not progressed:
            await trio.sleep(CONSUMER_POLL_WAIT_MS / 1000)
    await _commit(member, positions, committed, history)


async def _commit(member: _GroupMember, positions: dict, committed: dict, history) -> None:
    """Commit the positions that moved; a `commit` event for each acknowledged one."""
    changed = {tp: o for tp, o in positions.items() if committed.get(tp) != o}
    if not changed:
        return
    start = history.now()
    for tp in await member.commit(changed):
        committed[tp] = changed[tp]
        history.record({"type": "commit", "process": member.name, "group": member.group,
                        "topic": tp[0], "partition": tp[1], "offset": changed[tp],
                        "t_start": round(start, 6), "t_end": round(history.now(), 6)})


# --- the copier (consume-transform-produce) -------------------------------------------------

COPIER_ID = "chaos-copier"  # its transactional id and its group, as chaos run's copier's
COPIER_BATCH_MAX = 100  # records a copy transaction takes (about: whole fetches); chaos run's consumes 100
# OffsetFetch with require_stable: an offset of an undecided transaction is answered
# UNSTABLE_OFFSET_COMMIT until its marker lands; the copier waits for it.
OFFSETS_RETRIABLE = TXN_RETRIABLE | {ErrorCode.unstable_offset_commit}


def _first_error(r) -> ErrorCode:
    """The first error of an answer with topics of partitions (TxnOffsetCommit, OffsetFetch)."""
    errors = [getattr(r, "error_code", ErrorCode.none)] + [p.error_code for t in r.topics for p in t.partitions]
    return next((e for e in errors if e != ErrorCode.none), ErrorCode.none)


class _Copier:
    """chaos run's copier (workload.run_copier) on the wire: reads `sources` read_committed
    from the group's committed offsets and copies each batch in one transaction with its
    offsets (TxnOffsetCommit as a producer outside the group: generation -1, no member id,
    which the coordinator does not check against the group, as in Kafka)."""

    def __init__(self, client: Client, spec, sources: list[tuple[str, int]], out: tuple[str, int]) -> None:
        self.client, self.out = client, out
        self.session = _TxnSession(client, COPIER_ID, spec)
        self.group = _Coordinator(client, COPIER_ID, 0, spec)
        self.parts = [(t, p) for t, n in sources for p in range(n)]

    async def committed(self) -> dict[tuple[str, int], int]:
        """The group's committed offsets of the sources (0 where none), once none of them is
        in an undecided transaction (OffsetFetch require_stable). Raises _TxnFailed."""
        topics: dict[str, list[int]] = {}
        for t, p in self.parts:
            topics.setdefault(t, []).append(p)
        r = await self.group.call(OFFSET_FETCH, {"group_id": COPIER_ID, "require_stable": True, "topics": [
            {"name": t, "partition_indexes": ps} for t, ps in topics.items()]}, _first_error, OFFSETS_RETRIABLE)
        positions = {tp: 0 for tp in self.parts}
        for t in r.topics:
            for p in t.partitions:
                positions[(t.name, p.partition_index)] = max(int(p.committed_offset), 0)
        return positions

    async def poll(self, positions: dict) -> tuple[list[tuple[tuple[str, int], str]], dict]:
        """Records read from the positions on (whole fetches, until COPIER_BATCH_MAX), and
        the positions after them (past aborted records and markers too)."""
        taken: list[tuple[tuple[str, int], str]] = []
        after = dict(positions)
        for tp in self.parts:
            if len(taken) >= COPIER_BATCH_MAX:
                break
            try:
                _code, _high, records, next_offset = await fetch_once(self.client, tp[0], tp[1], positions[tp], 0)
            except (OSError, Unanswered):
                self.client.leaders.pop(tp, None)
                continue
            taken += [(tp, value) for _offset, value in records]
            after[tp] = max(after[tp], next_offset)
        return taken, after

    async def copy(self, records: list[tuple[tuple[str, int], str]], positions: dict) -> None:
        """One transaction: the positions after `records` as the group's offsets (sent
        first), each record as COPY_PREFIX + value to the same partition number of the output
        (one batch per output partition), then the commit. Raises _TxnFailed."""
        by_part: dict[tuple[str, int], list[str]] = {}
        for (_topic, partition), value in records:
            by_part.setdefault((self.out[0], partition % self.out[1]), []).append(value)
        session = self.session
        await session.add_partitions(sorted(by_part))
        await session.add_offsets(COPIER_ID)
        topics: dict[str, list[dict]] = {}
        for (t, p), offset in sorted(positions.items()):
            topics.setdefault(t, []).append({"partition_index": p, "committed_offset": offset,
                                             "committed_leader_epoch": -1, "committed_metadata": None})
        await self.group.call(TXN_OFFSET_COMMIT, {
            "transactional_id": session.id, "group_id": COPIER_ID, "producer_id": session.pid,
            "producer_epoch": session.epoch, "generation_id": -1, "member_id": "", "group_instance_id": None,
            "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]}, _first_error)
        for part, values in sorted(by_part.items()):
            body = b"".join(_record(b"", (COPY_PREFIX + v).encode(), offset_delta=i) for i, v in enumerate(values))
            await session.write(part, body, len(values))
        await session.end(commit=True)


async def run_copier(client: Client, spec, sources: list[tuple[str, int]], out: tuple[str, int], history,
                     producers_stopped: trio.Event, stop: trio.Event, done: trio.Event) -> None:
    """The consume-transform-produce stage, as chaos run's (workload.run_copier): reads
    `sources` (client: read_committed) and writes COPY_PREFIX + value to the same partition
    number (mod the output's partitions) of `out`, each batch one transaction with its input
    offsets; a `copy` event per committed one. A failed transaction is aborted (if the
    coordinator still takes the abort) and, either way, the copier starts over with a new
    InitProducerId (a new epoch: whatever the old one left open is ended, and no sequence of
    the failed transaction is reused) and rewinds to the group's committed offsets; a
    `copier-error` event says what failed and whether the abort was taken. Ends (setting
    `done`) once `producers_stopped` is set and nothing new came for COPIER_IDLE_S."""
    copier = _Copier(client, spec, sources, out)
    positions: dict | None = None
    idle_since = None

    def failed(error: str) -> None:
        history.record({"type": "copier-error", "t": round(history.now(), 6), "error": error})
    try:
        while not stop.is_set():
            try:
                if copier.session.pid < 0:
                    positions = None
                    await copier.session.init()
                if positions is None:
                    positions = await copier.committed()
            except _TxnFailed as exc:
                failed(f"{'init' if copier.session.pid < 0 else 'rewind'}: {exc}")
                await trio.sleep(0.5)
                continue
            records, after = await copier.poll(positions)
            if not records:
                positions = after
                if producers_stopped.is_set():
                    idle_since = trio.current_time() if idle_since is None else idle_since
                    if trio.current_time() - idle_since > COPIER_IDLE_S:
                        return
                await trio.sleep(CONSUMER_POLL_WAIT_MS / 1000)
                continue
            idle_since = None
            try:
                await copier.copy(records, after)
            except _TxnFailed as exc:
                try:
                    await copier.session.end(commit=False)
                    outcome = "aborted"
                except _TxnFailed as refused:
                    outcome = f"abort refused ({refused}): fenced by a new producer id"
                copier.session.pid = -1
                failed(f"{exc}; {outcome}")
                continue
            positions = after
            history.record({"type": "copy", "t": round(history.now(), 6), "records": len(records)})
    finally:
        done.set()


# --- the nemesis's admin requests (membership faults) ---------------------------------------

class Admin:
    """What the nemesis's membership fault asks of the cluster (nemesis.ThreadAdmin does it
    with kafka-python's admin client for `chaos run`), over the simulated network: a
    partition's replicas (Metadata), a move (AlterPartitionReassignments), and whether it
    is complete (ListPartitionReassignments, then Metadata)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def _any(self, api_key: int, body: dict):
        addresses = list(self.client.brokers.values()) or self.client.bootstrap
        return await self.client.call(addresses[self.client.rng.randrange(len(addresses))], api_key, body)

    async def replicas(self, topic: str, partition: int) -> list[int]:
        try:
            r = await self._any(METADATA, {"topics": [{"name": topic}], "allow_auto_topic_creation": False})
        except (OSError, Unanswered):
            self.client.brokers = {}
            return []
        self.client.brokers = {b.node_id: (b.host, b.port) for b in r.brokers} or self.client.brokers
        for t in r.topics:
            for p in t.partitions:
                if t.name == topic and p.partition_index == partition:
                    return [int(n) for n in p.replica_nodes]
        return []

    async def alter(self, topic: str, partition: int, target: list[int]) -> str | None:
        """None once a broker accepted the move; else the error's name."""
        try:
            r = await self._any(ALTER_PARTITION_REASSIGNMENTS, {"timeout": 15000, "topics": [
                {"name": topic, "partitions": [{"partition_index": partition, "replicas": target}]}]})
        except (OSError, Unanswered) as exc:
            self.client.brokers = {}
            return repr(exc)
        errors = [r.error_code] + [p.error_code for t in r.responses for p in t.partitions]
        bad = [e for e in errors if e != ErrorCode.none]
        return bad[0].name if bad else None

    async def remove_node(self, node_id: int) -> tuple[int, str]:
        """What `chronik-trio admin remove-node` does (RemoveRaftVoter to any broker, which
        answers once __meta's voters changed), retried while no broker answers, as
        nemesis._remove_node retries the command; (exit code as the command's, output)."""
        body = {"cluster_id": None, "voter_id": node_id, "voter_directory_id": uuid.UUID(int=0)}
        reason = "no broker answered"
        saved, self.client.request_timeout_s = self.client.request_timeout_s, REMOVE_NODE_WAIT_S
        try:
            with trio.move_on_after(REMOVE_NODE_TIMEOUT_S):
                while True:
                    try:
                        r = await self._any(REMOVE_RAFT_VOTER, body)
                    except (OSError, Unanswered) as exc:
                        self.client.brokers = {}
                        reason = repr(exc)
                        await trio.sleep(1.0)
                        continue
                    if r.error_code == ErrorCode.none:
                        return 0, f"node {node_id} removed"
                    return 1, f"{r.error_code.name}: {r.error_message}"
            return 2, f"no answer within {REMOVE_NODE_TIMEOUT_S:g} s ({reason})"
        finally:
            self.client.request_timeout_s = saved

    async def moved(self, topic: str, partition: int, target: list[int], timeout_s: float) -> bool:
        """Whether, within timeout_s, no move of the partition is ongoing and it has target."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    r = await self._any(LIST_PARTITION_REASSIGNMENTS, {
                        "timeout": 15000, "topics": [{"name": topic, "partition_indexes": [partition]}]})
                    ongoing = r.error_code != ErrorCode.none or any(t.partitions for t in r.topics)
                    if not ongoing and await self.replicas(topic, partition) == target:
                        return True
                except (OSError, Unanswered):
                    self.client.brokers = {}
                await trio.sleep(0.5)
        return False
