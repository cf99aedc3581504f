"""A Raft-transport fuzzer: mutated real transport frames against a live node's Raft port,
which must drop what it cannot use (a log line, a metric) and never exit.

The node is a one-member cluster (--peers naming itself), so its Raft port serves
/raft/v1/batch and its groups (__meta, __consumer_offsets, a topic) are live. Seeds are
well-formed frames: a RaftBatch of one message of every Raft message type for each of those
groups, the liveness group and an unknown one, and SnapshotChunks. The sender is node
NOT_A_MEMBER: messages addressed and signed consistently by a node the cluster does not
have. Each request carries one seed with one mutation: a message field set to an edge value
(type or entry type outside the enum, terms and indexes at 0 and 2^64-1, entries with
garbage data), protobuf bytes flipped or cut, the transport frame's kind or length edited,
the from-node header or the batch's from/to changed. Requests go over HTTP/2 (the sans-I/O
h2 client), RECEIVED_BATCH_FRAMES_MAX frames per request body, and the health check of the
Kafka fuzzer runs during and after the run.

Raft trusts whoever speaks for a node id: a well-formed append or snapshot from any id at a
higher term is taken as the leader's word, so it can write entries into a group's log (and
the node then fails to apply them, and stops: fail-stop). That is outside Raft's model, and
authentication between nodes (mTLS, design.md) is the defence, not input checks. So the
messages for the node's real groups carry no entries, no snapshot data and no commit index
past the seed's: they can move terms and leadership (availability, which the health check
watches), not log contents.
Entries, conf changes and snapshots go to the unknown group and the liveness group.

    python -m tests.transport.fuzz --frames 1000000          # starts its own node
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import random
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from chronik_trio.pb import raft_pb2, transport_pb2
from tests.brokers import BrokerProcess, free_port
from tests.kafka import live
from tests.kafka_wire import KafkaWire

BATCH_PATH = "/raft/v1/batch"
FROM_NODE_HEADER = "chronik-from-node"
NODE_ID = 1
NOT_A_MEMBER = 7
FRAME_KIND_RAFT_BATCH, FRAME_KIND_SNAPSHOT_CHUNK = 1, 2
FRAMES_PER_REQUEST = 8  # bodies of several frames, as a peer's sender coalesces them
READ_TIMEOUT_S = 5.0
HEALTH_INTERVAL_S = 5.0
U64_MAX = 2**64 - 1
MESSAGE_TYPES = list(raft_pb2.MessageType.values())
MUTATIONS = ("value", "value", "value", "flip", "truncate", "kind", "length", "envelope", "valid")
_INT_FIELDS = ("term", "log_term", "index", "commit", "reject_hint", "request_snapshot")


@dataclass
class Report:
    frames: int = 0
    delivered: int = 0  # frames the node's decoder took whole (the rest of a refused body is not read)
    requests: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    reconnects: int = 0
    health_checks: int = 0
    node_exits: int = 0
    seconds: float = 0.0
    mutations: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    in_flight: dict[int, bytes] = field(default_factory=dict)

    def line(self) -> str:
        return (f"frames {self.frames} (delivered whole {self.delivered}) in {self.requests} requests, "
                f"{self.seconds:.0f} s "
                f"({self.frames / max(self.seconds, 1e-9):.0f}/s): HTTP statuses {dict(self.statuses)}, "
                f"reconnects {self.reconnects}, health checks {self.health_checks}, "
                f"node exits {self.node_exits}; mutations {dict(self.mutations)}")


def start_node(root: pathlib.Path) -> tuple[BrokerProcess, int]:
    """A one-member cluster node: Kafka on one port, Raft (and /health) on another."""
    root.mkdir(parents=True, exist_ok=True)
    raft_port = free_port()
    broker = BrokerProcess(root / "data", extra_args=[
        *live.NODE_ARGS, "--config", str(live.config_file(root)), "--peers", f"{NODE_ID}@127.0.0.1:{raft_port}"])
    while broker.port == raft_port:
        broker.port = free_port()
    broker.start()
    return broker, raft_port


def groups(kafka_port: int) -> list[str]:
    """Live group ids: __meta, a partition of a topic made here, the offsets topic's first."""
    with KafkaWire.connect(kafka_port) as conn:
        if "fuzz-health" not in conn.topic_names():
            live.create_topic(conn, "fuzz-health")
        ids = [t.topic_id for t in conn.metadata(None).topics]
    real = ["__meta", *(f"{topic_id.hex}-0" for topic_id in ids)]
    REAL_GROUPS.update(real)
    return ["", "no-such-group", *real]


REAL_GROUPS: set[str] = set()  # groups the node hosts: no entries or snapshots for them


def seeds(group_ids: list[str]) -> list[tuple[int, object]]:
    """(frame kind, protobuf message) of well-formed frames from NOT_A_MEMBER."""
    out: list[tuple[int, object]] = []
    for group in group_ids:
        real = group in REAL_GROUPS
        for message_type in MESSAGE_TYPES:
            message = raft_pb2.Message(type=message_type, to=NODE_ID, term=1, log_term=1, index=1, commit=1,
                                       entries=[] if real else [raft_pb2.Entry(term=1, index=2, data=b"x")],
                                       **{"from": NOT_A_MEMBER})
            out.append((FRAME_KIND_RAFT_BATCH, transport_pb2.RaftBatch(
                from_node=NOT_A_MEMBER, to_node=NODE_ID,
                messages=[transport_pb2.GroupMessage(group=group, message=message)])))
        if real:
            continue
        snapshot = raft_pb2.Message(type=raft_pb2.MSG_SNAPSHOT, to=NODE_ID, term=1, **{"from": NOT_A_MEMBER})
        snapshot.snapshot.metadata.index = 5
        snapshot.snapshot.metadata.term = 1
        out.append((FRAME_KIND_SNAPSHOT_CHUNK, transport_pb2.SnapshotChunk(
            from_node=NOT_A_MEMBER, to_node=NODE_ID, group=group, message=snapshot, total_bytes=3,
            offset=0, data=b"abc", last=True)))
    return out


def _mutate_value(rng: random.Random, kind: int, seed) -> bytes:
    obj = type(seed)()
    obj.CopyFrom(seed)
    message = obj.message if kind == FRAME_KIND_SNAPSHOT_CHUNK else obj.messages[0].message
    group = obj.group if kind == FRAME_KIND_SNAPSHOT_CHUNK else obj.messages[0].group
    choice = rng.randrange(8)
    if group in REAL_GROUPS and choice in (2, 4, 7):  # no log contents for real groups
        choice = 1
    if choice == 0:
        message.type = rng.choice((rng.randrange(0, 40), 2**31 - 1, -1))  # open enums take any int32
    elif choice == 1:
        # A commit index past the log is a leader's broken promise (raft/ asserts on it), so
        # only the groups the node does not host get one.
        names = [n for n in _INT_FIELDS if n != "commit" or group not in REAL_GROUPS]
        setattr(message, rng.choice(names), rng.choice((0, 1, U64_MAX, rng.randrange(U64_MAX))))
    elif choice == 2:
        entry = message.entries.add() if not message.entries else message.entries[0]
        entry.type = rng.choice((rng.randrange(0, 10), 2**31 - 1))
        entry.data = rng.randbytes(rng.randrange(0, 64))
        entry.index, entry.term = rng.choice(((0, 0), (U64_MAX, U64_MAX), (3, 5)))
    elif choice == 3:
        message.context = rng.randbytes(rng.randrange(0, 32))
        message.reject = not message.reject
    elif choice == 4:
        message.snapshot.metadata.index = rng.choice((0, U64_MAX))
        message.snapshot.metadata.conf_state.voters.extend(rng.choice(([], [0], [NOT_A_MEMBER], [U64_MAX])))
        message.snapshot.data = rng.randbytes(rng.randrange(0, 32))
    elif choice == 5 and kind == FRAME_KIND_SNAPSHOT_CHUNK:
        obj.total_bytes, obj.offset = rng.choice(((0, 0), (U64_MAX, 0), (3, U64_MAX), (2**40, 2**40 - 3)))
        obj.last = rng.random() < 0.5
    elif choice == 6 and kind == FRAME_KIND_RAFT_BATCH:
        obj.messages.extend([obj.messages[0]] * rng.choice((2, 50)))
    else:
        entry = message.entries.add()
        entry.type = raft_pb2.ENTRY_CONF_CHANGE_V2
        entry.data = raft_pb2.ConfChangeV2(changes=[raft_pb2.ConfChangeSingle(
            type=rng.randrange(0, 5), node_id=rng.choice((0, NOT_A_MEMBER, U64_MAX)))]).SerializeToString()
    return obj.SerializeToString()


def mutated_frame(rng: random.Random, seed: tuple[int, object]) -> tuple[str, bytes]:
    """(mutation, one transport frame: kind u8, length u32, payload)."""
    kind, obj = seed
    mutation = rng.choice(MUTATIONS)
    payload = _mutate_value(rng, kind, obj) if mutation == "value" else obj.SerializeToString()
    if mutation == "envelope":
        copy = type(obj)()
        copy.CopyFrom(obj)
        field_name = rng.choice(("from_node", "to_node"))
        setattr(copy, field_name, rng.choice((0, NODE_ID, U64_MAX, 2, NOT_A_MEMBER)))
        payload = copy.SerializeToString()
    data = bytearray(payload)
    if mutation == "flip" and data:
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif mutation == "truncate":
        del data[rng.randrange(len(data) + 1):]
    elif mutation == "kind":
        kind = rng.choice((0, 3, 255, FRAME_KIND_SNAPSHOT_CHUNK if kind == FRAME_KIND_RAFT_BATCH else FRAME_KIND_RAFT_BATCH))
    length = len(data)
    if mutation == "length":
        length = rng.choice((length + rng.randrange(1, 16), max(length - rng.randrange(1, 16), 0), 2**32 - 1, 0))
    return mutation, struct.pack(">BI", kind, length) + bytes(data)


FRAME_BYTES_MAX = 16 << 20  # the node's default transport frame limit


def delivered(body: bytes) -> int:
    """How many frames of body the node's transport decoder yields before it refuses the body
    (a frame claiming more than FRAME_BYTES_MAX) or the body ends inside a frame."""
    pos = count = 0
    while len(body) - pos >= 5:
        kind, length = struct.unpack_from(">BI", body, pos)
        if length > FRAME_BYTES_MAX or len(body) - pos - 5 < length:
            break
        pos += 5 + length
        count += 1
    return count


class _H2:
    """One HTTP/2 connection (prior knowledge) to the Raft port, one request at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def post(self, body: bytes, from_node: str) -> int:
        """The response status, or -1 if the stream was reset."""
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [(":method", "POST"), (":path", BATCH_PATH), (":scheme", "http"),
                                        (":authority", "127.0.0.1"), (FROM_NODE_HEADER, from_node)])
        sent = 0
        while sent < len(body):
            window = min(self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size)
            if window <= 0:
                self._pump(stream)
                continue
            chunk = body[sent:sent + window]
            self.conn.send_data(stream, chunk)
            sent += len(chunk)
            self.sock.sendall(self.conn.data_to_send())
        self.conn.end_stream(stream)
        self.sock.sendall(self.conn.data_to_send())
        return self._pump(stream, until_done=True)

    def _pump(self, stream: int, until_done: bool = False) -> int:
        status = 0
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the node closed the HTTP/2 connection")
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    self.sock.sendall(self.conn.data_to_send())
                    return status
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                    return -1
                elif isinstance(event, h2.events.WindowUpdated) and not until_done:
                    self.sock.sendall(self.conn.data_to_send())
                    return status
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ConnectionError("GOAWAY")
            self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()


def _worker(raft_port: int, corpus, rng: random.Random, report: Report, lock: threading.Lock,
            stop: threading.Event, frames_left: list[int], worker: int) -> None:
    conn: _H2 | None = None
    try:
        while not stop.is_set():
            with lock:
                n = min(FRAMES_PER_REQUEST, frames_left[0])
                frames_left[0] -= n
            if n <= 0:
                return
            mutations, frames = zip(*(mutated_frame(rng, rng.choice(corpus)) for _ in range(n)))
            body = b"".join(frames)
            from_node = str(NOT_A_MEMBER) if rng.random() < 0.9 else rng.choice(("0", "-1", "x", "2", str(U64_MAX)))
            report.in_flight[worker] = body
            try:
                conn = conn or _H2(raft_port)
                status = conn.post(body, from_node)
            except (OSError, ConnectionError, h2.exceptions.ProtocolError):
                status = -2
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                report.frames += n
                report.delivered += delivered(body) if status != -2 else 0
                report.requests += 1
                report.statuses[status] += 1
                report.reconnects += status == -2
                report.mutations.update(mutations)
    finally:
        if conn is not None:
            conn.close()


def _health(kafka_port: int, raft_port: int, alive: Callable[[], bool]) -> str | None:
    if not alive():
        return "the node process exited"
    try:
        if not live.health(raft_port).get("serving_kafka"):
            return "/health says the node is not serving Kafka"
        live.round_trip(kafka_port, "fuzz-health")
    except Exception as exc:
        return f"health check failed: {type(exc).__name__}: {exc}"
    return None


def run(kafka_port: int, raft_port: int, alive: Callable[[], bool], *, frames: int, seconds: float,
        seed: int, workers: int = 4, progress: Callable[[Report], None] | None = None) -> Report:
    corpus = seeds(groups(kafka_port))
    report, lock, stop = Report(), threading.Lock(), threading.Event()
    frames_left = [frames]
    start = time.monotonic()
    threads = [threading.Thread(target=_worker, args=(raft_port, corpus, random.Random(seed * 1000 + i), report,
                                                        lock, stop, frames_left, i), daemon=True)
               for i in range(workers)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=HEALTH_INTERVAL_S / len(threads))
            report.seconds = time.monotonic() - start
            problem = _health(kafka_port, raft_port, alive)
            report.health_checks += 1
            if problem:
                report.failures.append(f"after {report.frames} frames: {problem}; bodies in flight: "
                                       + "; ".join(b.hex() for b in report.in_flight.values()))
                report.node_exits += not alive()
                break
            if progress:
                progress(report)
            if report.seconds >= seconds:
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
    report.seconds = time.monotonic() - start
    problem = _health(kafka_port, raft_port, alive)
    report.health_checks += 1
    if problem:
        report.failures.append(f"at the end: {problem}")
        report.node_exits += not alive() and not report.node_exits
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=24 * 3600.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    broker, raft_port = start_node(pathlib.Path(tempfile.mkdtemp(prefix="chronik-transport-fuzz-")))
    print(f"node pid {broker.proc.pid}, kafka port {broker.port}, raft port {raft_port}, log {broker.log_path}",
          flush=True)
    print(f"seed {seed}", flush=True)
    last = [0.0]

    def progress(report: Report) -> None:
        if report.seconds - last[0] >= 60:
            last[0] = report.seconds
            print(report.line(), flush=True)

    try:
        report = run(broker.port, raft_port, lambda: broker.proc.poll() is None, frames=args.frames,
                     seconds=args.seconds, seed=seed, workers=args.workers, progress=progress)
        if broker.proc.poll() is None:
            for name in ("chronik_transport_dropped_total", "chronik_raft_malformed_dropped_total",
                         "chronik_raft_unknown_group_dropped_total"):
                print(f"{name}: {live.metric(raft_port, name):.0f}", flush=True)
    finally:
        code = broker.stop()
    print(report.line())
    print(f"node stopped with exit code {code}")
    for failure in report.failures:
        print("FAILURE:", failure[:4000])
    return 1 if report.failures or report.node_exits else 0


if __name__ == "__main__":
    sys.exit(main())
