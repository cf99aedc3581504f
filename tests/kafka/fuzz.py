"""A Kafka-wire fuzzer: mutated real requests of every advertised API and version against a
live node, which must answer or close the connection, and never exit.

Seeds are the conformance requests (conformance.py) of every (API, version) the node
advertises, for a topic that exists and one that does not. Each frame is one seed with one
mutation: a field set to an edge value by its type and re-encoded with kio (ints at their
bounds, strings empty, long or null, arrays empty, null or repeated, records garbage), a
header rewritten to another version or API, bytes flipped, the frame truncated or extended,
a length-sized window overwritten with -1 / 0x7fffffff / varint garbage, or the size prefix
edited. Each mutated frame is followed by a probe (ApiVersions v0) on the same connection,
so every frame is read by the node before the next is sent: an answered probe means the
node went on serving the connection, a closed connection that it refused the frame. Where an
edited prefix leaves the node waiting for more of a frame, the fuzzer sends those bytes
(zeros) first, so the probe is never swallowed.

A health check runs every HEALTH_INTERVAL_S and at the end: the process is alive, /health
answers serving_kafka, and a produce and a fetch on a fresh connection round-trip.

    python -m tests.kafka.fuzz --frames 1000000          # starts its own node
    python -m tests.kafka.fuzz --port 9092 --admin-port 9644 --seconds 600
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import io
import pathlib
import random
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from kio.serial import entity_writer
from kio.serial._introspect import EntityField, EntityTupleField, classify_field

from tests.kafka import conformance, live
from tests.kafka_wire import API_VERSIONS, KafkaWire, encode, request_class

PROBE_CORRELATION_ID = 0x7EADBEEF
PROBE = struct.pack(">i", 10) + struct.pack(">hhih", API_VERSIONS, 0, PROBE_CORRELATION_ID, -1)
READ_TIMEOUT_S = 0.5  # a frame's answers; past it the node is waiting as told (a long poll)
PAD_BYTES_MAX = 1 << 20  # a prefix claiming more than this: the fuzzer gives the connection up
REQUEST_BYTES_MAX = 100 << 20  # the node's default request_max_bytes: above it, it closes
HEALTH_INTERVAL_S = 5.0
# Fields whose edge values make the node do legitimate, unbounded work (create 2^31
# partitions, long-poll 30 s) rather than exercise its decoding and handlers.
CALM_FIELDS = {"num_partitions", "count", "replication_factor", "validate_only", "max_wait",
               "timeout", "timeout_ms", "rebalance_timeout", "session_timeout", "min_bytes"}
MUTATIONS = ("value", "value", "value", "flip", "flip", "truncate", "extend", "version", "length",
             "length", "prefix", "valid")
INT_BOUNDS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


@dataclass
class Report:
    frames: int = 0
    probes_answered: int = 0
    closed_by_node: int = 0
    gave_up: int = 0  # prefix too large to pad, or no answer within READ_TIMEOUT_S
    timeouts: int = 0
    health_checks: int = 0
    node_exits: int = 0
    seconds: float = 0.0
    mutations: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    # Each worker's frame in flight: (api_key, version, mutation, wire bytes), to replay a failure.
    in_flight: dict[int, tuple[int, int, str, bytes]] = field(default_factory=dict)

    def line(self) -> str:
        return (f"frames {self.frames} in {self.seconds:.0f} s ({self.frames / max(self.seconds, 1e-9):.0f}/s): "
                f"probes answered {self.probes_answered}, connections closed by the node "
                f"{self.closed_by_node}, given up {self.gave_up} (timeouts {self.timeouts}), "
                f"health checks {self.health_checks}, node exits {self.node_exits}; "
                f"mutations {dict(self.mutations)}")


def seeds(port: int) -> list[tuple[int, int, Any]]:
    """(api_key, version, request) for every advertised pair, for an existing and a missing topic."""
    with KafkaWire.connect(port) as conn:
        name = "fuzz-exists"
        if name not in conn.topic_names():
            live.create_topic(conn, name, partitions=2)
        (topic,) = conn.metadata([name]).topics
        records = conformance.records()
        targets = [conformance.Target(name, topic.topic_id, records),
                   conformance.Target("fuzz-missing", uuid.uuid4(), records)]
        return [(key, v, conformance.request_for(key, v, dataclasses.replace(t, group=f"fuzz-{key}-{v}")))
                for key, v in conformance.advertised(conn) for t in targets]


# --------------------------------------------------------------------------- mutations


def _edge_value(rng: random.Random, f: dataclasses.Field, value: Any) -> Any:
    shape = classify_field(f)
    kafka_type = f.metadata.get("kafka_type", "")
    if shape.is_array:
        choice = rng.randrange(4)
        if choice == 0 or value is None:
            return ()
        if choice == 1:
            return None
        return tuple(value) * rng.choice((2, 3, 17))
    if kafka_type in INT_BOUNDS:
        bits = INT_BOUNDS[kafka_type]
        return rng.choice((0, -1, 1, 2**(bits - 1) - 1, -(2**(bits - 1)), rng.randrange(-(2**(bits - 1)), 2**(bits - 1))))
    if kafka_type.startswith("uint"):
        return rng.choice((0, 1, 2**int(kafka_type[4:]) - 1))
    if kafka_type.startswith("timedelta"):
        return datetime.timedelta(milliseconds=rng.choice((0, 1, -1, 100)))
    if kafka_type == "string":
        return rng.choice(("", None, "x" * rng.randrange(1, 400), "\u00e9\u4e2d\U0001f600", ".", "..",
                           "__consumer_offsets", "a/b"))
    if kafka_type in ("bytes", "records"):
        return rng.choice((b"", None, rng.randbytes(rng.randrange(1, 200)),
                           bytes(b ^ (1 << rng.randrange(8)) if i == 20 else b
                                 for i, b in enumerate(conformance.records()))))
    if kafka_type == "bool":
        return not value
    if kafka_type == "uuid":
        return rng.choice((uuid.UUID(int=0), uuid.uuid4(), None))
    if kafka_type == "float64":
        return rng.choice((0.0, -1.0, float("inf"), float("nan")))
    return value


def mutate_value(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    """obj with one field (maybe nested) set to an edge value of its type."""
    fields = [f for f in dataclasses.fields(obj) if f.name not in CALM_FIELDS]
    if not fields:
        return obj
    f = rng.choice(fields)
    shape = classify_field(f)
    value = getattr(obj, f.name)
    if depth < 4 and rng.random() < 0.6:
        if isinstance(shape, EntityField) and value is not None:
            return dataclasses.replace(obj, **{f.name: mutate_value(rng, value, depth + 1)})
        if isinstance(shape, EntityTupleField) and value:
            i = rng.randrange(len(value))
            items = list(value)
            items[i] = mutate_value(rng, items[i], depth + 1)
            return dataclasses.replace(obj, **{f.name: tuple(items)})
    return dataclasses.replace(obj, **{f.name: _edge_value(rng, f, value)})


def _header(api_key: int, version: int, correlation_id: int) -> bytes:
    cls = request_class(api_key, version).__header_schema__
    return encode(cls(request_api_key=api_key, request_api_version=version,
                      correlation_id=correlation_id, client_id="fuzz"))


def _encode_body(body: Any) -> bytes:
    sink = io.BytesIO()
    entity_writer(type(body))(sink, body)
    return sink.getvalue()


def mutated_frame(rng: random.Random, seed: tuple[int, int, Any], correlation_id: int) -> tuple[str, bytes]:
    """(mutation, wire bytes with size prefix) of one seed request."""
    api_key, version, body = seed
    if isinstance(getattr(body, "group_id", None), str):
        # A group of its own: a JoinGroup into a shared group waits for its other members
        # (up to the rebalance timeout), which would measure patience, not robustness.
        body = dataclasses.replace(body, group_id=f"fuzz-{api_key}-{version}-{correlation_id}-{rng.randrange(10**6)}")
    kind = rng.choice(MUTATIONS)
    header = _header(api_key, version, correlation_id)
    if kind == "value":
        try:
            payload = header + _encode_body(mutate_value(rng, body))
        except Exception:  # kio would not write that value (a null where none may be): flip instead
            kind = "flip"
    if kind != "value":
        payload = header + _encode_body(body)
    data = bytearray(payload)
    if kind == "flip":
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    elif kind == "extend":
        data += rng.randbytes(rng.randrange(1, 64))
    elif kind == "version":
        struct.pack_into(">h", data, 2, rng.choice((version - 1, version + 1, rng.randrange(0, 20), -1, 32767)))
        if rng.random() < 0.3:
            struct.pack_into(">h", data, 0, rng.choice((rng.randrange(0, 80), -1, 32767)))
    elif kind == "length" and len(data) >= 8:
        at = rng.randrange(8, len(data) - 1)
        pattern = rng.choice((b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x00\x00",
                              b"\xff\xff", b"\x7f\xff", b"\x00", b"\xff", b"\x80\x80\x80\x80\x80", b"\x01"))
        data[at:at + len(pattern)] = pattern
    prefix = len(data)
    if kind == "prefix":
        prefix = rng.choice((prefix - rng.randrange(1, 8), prefix + rng.randrange(1, 8), -1, 0, 2**31 - 1,
                             REQUEST_BYTES_MAX + 1, rng.randrange(0, 4096)))
    return kind, struct.pack(">i", prefix) + bytes(data)


def _pending(stream: bytes) -> int | None:
    """How many more bytes the node needs to finish the size prefix or frame it is reading
    after stream (0: at a frame boundary), or None when it refuses the stream (a size out
    of range)."""
    pos = 0
    while True:
        left = len(stream) - pos
        if left < 4:
            return 0 if left == 0 else 4 - left
        (size,) = struct.unpack_from(">i", stream, pos)
        if size < 0 or size > REQUEST_BYTES_MAX:
            return None
        if left - 4 < size:
            return size - (left - 4)
        pos += 4 + size


def padding(wire: bytes) -> int | None:
    """Zero bytes to send after wire so the node is at a frame boundary; None when the node
    refuses the stream, -1 when more than PAD_BYTES_MAX would be needed."""
    total = 0
    while (need := _pending(wire + bytes(total))) != 0:
        if need is None:
            return None
        if total + need > PAD_BYTES_MAX:
            return -1
        total += need
    return total


# --------------------------------------------------------------------------- the run


class _Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def get(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=READ_TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return self.sock

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _await_probe(sock: socket.socket) -> str:
    """'answered' once the probe's answer arrives, 'closed' on EOF/reset, 'timeout'."""
    buf = b""
    try:
        while True:
            while len(buf) >= 8:
                (size,) = struct.unpack_from(">i", buf, 0)
                if len(buf) < 4 + size:
                    break
                (correlation_id,) = struct.unpack_from(">i", buf, 4)
                buf = buf[4 + size:]
                if correlation_id == PROBE_CORRELATION_ID:
                    return "answered"
            chunk = sock.recv(1 << 20)
            if not chunk:
                return "closed"
            buf += chunk
    except socket.timeout:
        return "timeout"
    except OSError:
        return "closed"


def _worker(port: int, corpus, rng: random.Random, report: Report, lock: threading.Lock,
            stop: threading.Event, frames_left: list[int], worker: int) -> None:
    conn = _Conn(port)
    correlation_id = 0
    try:
        while not stop.is_set():
            with lock:
                if frames_left[0] <= 0:
                    return
                frames_left[0] -= 1
            correlation_id = (correlation_id + 1) % 2**30
            seed = rng.choice(corpus)
            kind, wire = mutated_frame(rng, seed, correlation_id)
            report.in_flight[worker] = (seed[0], seed[1], kind, wire)
            need = padding(wire)
            try:
                sock = conn.get()
                if need is None:  # the node refuses the stream: it must close the connection
                    sock.sendall(wire)
                    outcome = _await_probe(sock)
                elif need < 0:  # a claim too big to pad: the node waits for it; give up
                    sock.sendall(wire)
                    outcome = "gave_up"
                else:
                    sock.sendall(wire + bytes(need) + PROBE)
                    outcome = _await_probe(sock)
            except OSError:
                outcome = "closed"
            if outcome != "answered":
                conn.drop()
            with lock:
                report.frames += 1
                report.mutations[kind] += 1
                if outcome == "answered":
                    report.probes_answered += 1
                elif outcome == "closed":
                    report.closed_by_node += 1
                else:
                    report.gave_up += 1
                    report.timeouts += outcome == "timeout"
    finally:
        conn.drop()


def check_health(port: int, admin_port: int, alive: Callable[[], bool]) -> str | None:
    """None if the node is alive, says it serves, and round-trips a record; else why not."""
    if not alive():
        return "the node process exited"
    try:
        if not live.health(admin_port).get("serving_kafka"):
            return "/health says the node is not serving Kafka"
        live.round_trip(port, "fuzz-health")
    except Exception as exc:
        return f"health check failed: {type(exc).__name__}: {exc}"
    return None


def run(port: int, admin_port: int, alive: Callable[[], bool], *, frames: int, seconds: float,
        seed: int, workers: int = 4, progress: Callable[[Report], None] | None = None) -> Report:
    """Fuzz until `frames` frames were sent or `seconds` passed; health checks throughout."""
    with KafkaWire.connect(port) as conn:
        if "fuzz-health" not in conn.topic_names():
            live.create_topic(conn, "fuzz-health")
    corpus = seeds(port)
    report, lock, stop = Report(), threading.Lock(), threading.Event()
    frames_left = [frames]
    start = time.monotonic()
    threads = [threading.Thread(target=_worker, args=(port, corpus, random.Random(seed * 1000 + i), report,
                                                        lock, stop, frames_left, i), daemon=True)
               for i in range(workers)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=HEALTH_INTERVAL_S / len(threads))
            report.seconds = time.monotonic() - start
            problem = check_health(port, admin_port, alive)
            report.health_checks += 1
            if problem:
                report.failures.append(f"after {report.frames} frames: {problem}; frames in flight: "
                                       + "; ".join(f"api {k} v{v} {m} {w.hex()}"
                                                   for k, v, m, w in report.in_flight.values()))
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
    problem = check_health(port, admin_port, alive)
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
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--port", type=int, help="fuzz a running node (default: start one)")
    parser.add_argument("--admin-port", type=int, help="its /health port (with --port)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    broker = None
    if args.port is None:
        broker, admin_port = live.start_node(pathlib.Path(tempfile.mkdtemp(prefix="chronik-fuzz-")))
        port, alive = broker.port, lambda: broker.proc.poll() is None
        print(f"node pid {broker.proc.pid} on port {port}, log {broker.log_path}", flush=True)
    else:
        port, admin_port, alive = args.port, args.admin_port, lambda: True
    print(f"seed {seed}", flush=True)
    last = [0.0]

    def progress(report: Report) -> None:
        if report.seconds - last[0] >= 60:
            last[0] = report.seconds
            print(report.line(), flush=True)

    try:
        report = run(port, admin_port, alive, frames=args.frames, seconds=args.seconds, seed=seed,
                     workers=args.workers, progress=progress)
        if alive():
            print(f"contained handler errors (chronik_kafka_request_errors_total): "
                  f"{live.metric(admin_port, live.REQUEST_ERRORS_METRIC):.0f}", flush=True)
    finally:
        code = broker.stop() if broker is not None else None
    print(report.line())
    if broker is not None:
        print(f"node stopped with exit code {code}; contained handler errors are logged at ERROR in "
              f"{broker.log_path}")
    for failure in report.failures:
        print("FAILURE:", failure)
    return 1 if report.failures or report.node_exits else 0


if __name__ == "__main__":
    sys.exit(main())
