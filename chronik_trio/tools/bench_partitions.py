"""For `chronik-trio bench --modes partitions` (the tool's own 3-node cluster only).

Many partitions on few nodes: one topic of `--partitions` partitions, replication factor 3.

- **creation**: one CreateTopics request; the time until it answers, and the time until
  every partition has acknowledged one acks=all write (each node is sent, in one Produce
  request, the partitions the Metadata answer says it leads, again until each is taken);
- **idle**: once every group on every node is quiesced (each node's /health, polled every
  `QUIET_POLL_S` for at most `QUIET_TIMEOUT_S`; the time it took is reported: the writes of
  the creation woke every group, and each goes quiet after its idle ticks) and `settle_s`
  more, every node's CPU time over `idle_s` (from /proc/PID/stat), its RSS, open file
  descriptors and the files in its data directory;
- **failover**: SIGKILL the node leading the most partitions; then, from just before the
  signal, the time until each partition it led acknowledged a write (acks=all) produced
  after the kill. Every survivor is sent, in rounds, one Produce request with every
  partition not yet taken (a survivor that does not lead one answers NOT_LEADER at once),
  so the figure includes the followers noticing, the election, and the client's retry; a
  round is at most `ROUND_PAUSE_S` after the last when nothing was taken, which bounds
  the resolution.

The client is a raw Kafka client (kio codecs, one blocking socket per node, one request in
flight per socket), so thousands of partitions cost one request per node per round.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import statistics
import struct
import sys
import threading
import time
import uuid

from chronik_trio import record_batch
from chronik_trio.kafka.codec import decode_client_response, encode_client_request
from chronik_trio.tools import bench_local

PRODUCE, METADATA, CREATE_TOPICS = 0, 3, 19
PRODUCE_V, METADATA_V, CREATE_TOPICS_V = 9, 12, 7
NONE = 0
CLIENT_ID = "chronik-bench-partitions"
RESPONSE_BYTES_MAX = 256 << 20
CREATE_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = CREATE_TIMEOUT_S + 60.0  # a socket waits longer than the broker may take
WRITABLE_TIMEOUT_S = 600.0
FAILOVER_TIMEOUT_S = 300.0
PRODUCE_TIMEOUT_MS = 30_000
ROUND_PAUSE_S = 0.02
CREATE_ROUND_PAUSE_S = 0.2  # between Metadata rounds while partitions still lack a leader
PROGRESS_EVERY_S = 15.0  # a progress line while CreateTopics is not answered yet
QUIET_POLL_S = 3.0  # /health of every node, until all their groups are quiesced
QUIET_TIMEOUT_S = 300.0


class Conn:
    """One blocking connection to one node; one request at a time."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.address = address
        self.sock = socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.correlation_id = 0

    def request(self, api_key: int, version: int, body):
        self.correlation_id += 1
        self.sock.sendall(encode_client_request(api_key, version, body, self.correlation_id, CLIENT_ID))
        (size,) = struct.unpack(">i", self._recv_exact(4))
        if not 0 < size <= RESPONSE_BYTES_MAX:
            raise ValueError(f"{self.address} answered a frame of {size} bytes")
        return decode_client_response(api_key, version, self._recv_exact(size), self.correlation_id)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise OSError(f"{self.address} closed the connection")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()


def one_record_batch(value: bytes) -> bytes:
    """A v2 batch of one record (no key), offsets and epoch to be set by the broker."""
    def varint(n: int) -> bytes:
        u, out = (n << 1) ^ (n >> 63), bytearray()
        while u >= 0x80:
            out.append((u & 0x7F) | 0x80)
            u >>= 7
        out.append(u)
        return bytes(out)
    body = b"\x00" + varint(0) + varint(0) + varint(-1) + varint(len(value)) + value + varint(0)
    now_ms = int(time.time() * 1000)
    return record_batch.encode_batch(varint(len(body)) + body, record_count=1, base_timestamp_ms=now_ms,
                                     max_timestamp_ms=now_ms)


def produce(conn: Conn, topic: str, partitions, batch: bytes) -> dict[int, int]:
    """One acks=all Produce of `batch` to each partition; {partition: error code}."""
    r = conn.request(PRODUCE, PRODUCE_V, {
        "acks": -1, "timeout": PRODUCE_TIMEOUT_MS, "transactional_id": None,
        "topic_data": [{"name": topic, "partition_data": [{"index": p, "records": batch} for p in partitions]}]})
    return {int(p.index): int(p.error_code) for t in r.responses for p in t.partition_responses}


def metadata(conn: Conn, topic: str | None) -> tuple[dict[int, str], dict[int, int], int]:
    """({node id: address}, {partition: leader id or -1}, controller id)."""
    r = conn.request(METADATA, METADATA_V, {"topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}] if topic else [],
                                            "allow_auto_topic_creation": False,
                                            "include_topic_authorized_operations": False})
    brokers = {int(b.node_id): f"{b.host}:{b.port}" for b in r.brokers}
    leaders = {int(p.partition_index): int(p.leader_id) for t in r.topics for p in t.partitions}
    return brokers, leaders, int(r.controller_id)


def create_topic(conn: Conn, topic: str, partitions: int, rf: int) -> int:
    r = conn.request(CREATE_TOPICS, CREATE_TOPICS_V, {
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": rf,
                    "assignments": [], "configs": []}],
        "timeout": int(CREATE_TIMEOUT_S * 1000), "validate_only": False})
    return int(r.topics[0].error_code)


class Writer:
    """Produce one record to every pending partition until each has taken one; per
    partition the perf_counter time its acknowledgement arrived."""

    def __init__(self, topic: str, pending: set[int], value: bytes) -> None:
        self.topic, self.batch = topic, one_record_batch(value)
        self.pending = set(pending)
        self.taken: dict[int, float] = {}
        self.lock = threading.Lock()
        self.errors: dict[int, int] = {}  # error code -> count, of answers that were not NONE
        self.requests = 0
        self.longest_request_s = 0.0  # the slowest Produce's answer (to_every_node)

    def _take(self, answers: dict[int, int]) -> int:
        now, n = time.perf_counter(), 0
        with self.lock:
            for p, code in answers.items():
                if code == NONE and p in self.pending:
                    self.pending.discard(p)
                    self.taken[p] = now
                    n += 1
                elif code != NONE:
                    self.errors[code] = self.errors.get(code, 0) + 1
            self.requests += 1
        return n

    def to_leaders(self, conns: dict[int, Conn], deadline: float) -> None:
        """Each round: Metadata, then every leader gets its pending partitions (in parallel)."""
        any_conn = next(iter(conns.values()))
        while self.pending and time.perf_counter() < deadline:
            _, leaders, _ = metadata(any_conn, self.topic)
            by_node: dict[int, list[int]] = {}
            for p in self.pending:
                if leaders.get(p, -1) in conns:
                    by_node.setdefault(leaders[p], []).append(p)
            threads = [threading.Thread(target=lambda n=n, ps=ps: self._take(produce(conns[n], self.topic, ps,
                                                                                      self.batch)))
                       for n, ps in by_node.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self.pending:
                time.sleep(CREATE_ROUND_PAUSE_S)

    def to_every_node(self, conns: dict[int, Conn], deadline: float) -> None:
        """Every node gets every pending partition in rounds of its own (one thread each)."""
        def loop(conn: Conn) -> None:
            while time.perf_counter() < deadline:
                with self.lock:
                    ps = sorted(self.pending)
                if not ps:
                    return
                sent = time.perf_counter()
                try:
                    taken = self._take(produce(conn, self.topic, ps, self.batch))
                except OSError:
                    taken = 0
                with self.lock:
                    self.longest_request_s = max(self.longest_request_s, time.perf_counter() - sent)
                if not taken:
                    time.sleep(ROUND_PAUSE_S)
        threads = [threading.Thread(target=loop, args=(c,)) for c in conns.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _progress(text: str) -> None:
    print(f"bench partitions: {text}", file=sys.stderr, flush=True)


def _creation_ticker(cluster, t0: float, answered: threading.Event) -> None:
    """Until CreateTopics is answered: every PROGRESS_EVERY_S a line with each node's
    partition directories and CPU seconds so far (a creation of 10,000 takes minutes)."""
    while not answered.wait(PROGRESS_EVERY_S):
        nodes = []
        for n in cluster.group.ids:
            node = cluster.group[n]
            data = _data_dir(node)
            try:
                made = len(os.listdir(data / "partitions")) if data else None
                cpu = round(bench_local.cpu_seconds(node.pid), 1)
            except OSError:  # not made yet, or the node is gone
                made, cpu = None, None
            nodes.append(f"node {n}: {made} partition dirs, {cpu} s CPU")
        _progress(f"CreateTopics not answered after {time.perf_counter() - t0:.0f} s; " + "; ".join(nodes))


def _data_dir(node) -> pathlib.Path | None:
    args = node.command
    return pathlib.Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else None


def _node_state(cluster, node_id: int) -> dict:
    node = cluster.group[node_id]
    pid = node.pid
    data = _data_dir(node)
    files = sum(len(f) for _, _, f in os.walk(data)) if data else None
    return {"node": node_id, "rss_mb": round(bench_local.rss_bytes(pid) / 1e6, 1),
            "open_fds": len(os.listdir(f"/proc/{pid}/fd")), "data_files": files}


def _wait_quiet(cluster) -> float | None:
    """Seconds until every node's /health says all its groups are quiesced (None: not
    within QUIET_TIMEOUT_S, or a node did not answer)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < QUIET_TIMEOUT_S:
        try:
            health = [json.loads(bench_local.scrape(a, "/health")) for a in cluster.metrics_addresses]
        except (OSError, ValueError):
            return None
        if all(h["quiesced"] == h["groups"] for h in health):
            return round(time.perf_counter() - t0, 1)
        time.sleep(QUIET_POLL_S)
    return None


def _quantiles(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"count": 0}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)
    return {"count": len(values), "median_s": round(statistics.median(values), 3),
            "p90_s": at(0.9), "p99_s": at(0.99), "max_s": round(values[-1], 3), "min_s": round(values[0], 3),
            "slowest_s": [round(v, 3) for v in values[-10:][::-1]]}


def run(cluster, partitions: int, settle_s: float, idle_s: float, record_bytes: int,
        failover: bool = True) -> dict:
    value = os.urandom(record_bytes)
    ids = cluster.group.ids
    first = cluster.bootstrap.split(",")[0]
    conn0 = Conn(first)
    brokers, _, _ = metadata(conn0, None)
    conns = {n: Conn(brokers[n]) for n in ids}
    topic = f"many-{uuid.uuid4().hex[:8]}"
    out: dict = {"partitions": partitions, "replication_factor": 3, "nodes": len(ids), "topic": topic}

    # --- creation
    _progress(f"CreateTopics of {partitions} partitions sent to node {ids[0]}")
    cpu0 = {n: bench_local.cpu_seconds(cluster.group[n].pid) for n in ids}
    t0 = time.perf_counter()
    answered = threading.Event()
    ticker = threading.Thread(target=_creation_ticker, args=(cluster, t0, answered), daemon=True)
    ticker.start()
    try:
        code = create_topic(conn0, topic, partitions, 3)
    finally:
        answered.set()
        ticker.join()
    out["create_answer_s"] = round(time.perf_counter() - t0, 3)
    # The CPU each node spent until the answer: on a loaded machine the wall time is mostly
    # the nodes' share of the cores, this is their work.
    out["create_cpu_s"] = {n: round(bench_local.cpu_seconds(cluster.group[n].pid) - cpu0[n], 1) for n in ids}
    out["create_error_code"] = code
    _progress(f"CreateTopics answered in {out['create_answer_s']} s (error {code}; CPU s per node "
              f"{out['create_cpu_s']}); writing to every partition")
    writer = Writer(topic, set(range(partitions)), value)
    writer.to_leaders(conns, time.perf_counter() + WRITABLE_TIMEOUT_S)
    out["all_writable_s"] = round(time.perf_counter() - t0, 3) if not writer.pending else None
    out["not_writable"] = len(writer.pending)
    out["create_produce_requests"] = writer.requests

    _progress(f"every partition written {out['all_writable_s']} s after CreateTopics was sent; "
              f"waiting for every group to go quiet")
    # --- idle
    out["quiet_s"] = _wait_quiet(cluster)
    _progress(f"every group quiesced {out['quiet_s']} s after the writes; idle window next")
    time.sleep(settle_s)
    cpu0 = {n: bench_local.cpu_seconds(cluster.group[n].pid) for n in ids}
    w0 = time.perf_counter()
    time.sleep(idle_s)
    elapsed = time.perf_counter() - w0
    out["idle"] = [{**_node_state(cluster, n), "cpu_percent_of_a_core": round(
        (bench_local.cpu_seconds(cluster.group[n].pid) - cpu0[n]) / elapsed * 100, 2)} for n in ids]
    out["idle_window_s"] = round(elapsed, 1)
    if not failover:
        return out

    # --- failover
    _, leaders, controller = metadata(conn0, topic)
    led: dict[int, list[int]] = {}
    for p, leader in leaders.items():
        led.setdefault(leader, []).append(p)
    victim = max((n for n in ids if n in led), key=lambda n: len(led[n]))
    out["leaders_per_node"] = {n: len(led.get(n, [])) for n in ids}
    survivors = {n: c for n, c in conns.items() if n != victim}
    writer = Writer(topic, set(led[victim]), value)
    conns[victim].close()
    conn0.close()
    _progress(f"killing node {victim}, leader of {len(led[victim])} partitions")
    killed_at = cluster.kill(victim)
    writer.to_every_node(survivors, killed_at + FAILOVER_TIMEOUT_S)
    times = [t - killed_at for t in writer.taken.values()]
    out["failover"] = {"killed_node": victim, "killed_node_was_controller": victim == controller,
                       "partitions_led": len(led[victim]), "written_after_kill": len(writer.taken),
                       "not_written": len(writer.pending), "produce_requests": writer.requests,
                       "error_answers": writer.errors, "longest_request_s": round(writer.longest_request_s, 3),
                       **_quantiles(times)}
    for c in survivors.values():
        c.close()
    return out


def describe(partitions: int, settle_s: float, idle_s: float) -> str:
    return (f"one topic of {partitions} partitions, replication factor 3, on the tool's 3 nodes; raw Kafka "
            f"client (one socket per node, one request in flight each). Creation: from sending CreateTopics "
            f"to its answer, and to the last partition acknowledging one acks=all record (rounds: Metadata, "
            f"then one Produce per leader with its pending partitions). Idle: once every group on every node "
            f"is quiesced (/health) and {settle_s} s more, CPU over "
            f"{idle_s} s from /proc/PID/stat, RSS, open fds and data files per node. Failover: SIGKILL the node "
            f"leading most partitions; per partition it led, time from just before the signal to the "
            f"acknowledgement of a record produced after it (each survivor gets every pending partition in "
            f"rounds; a non-leader answers NOT_LEADER; {ROUND_PAUSE_S * 1000:g} ms pause after a round "
            f"that took nothing)")


def print_report(r: dict) -> None:
    print(f"partitions: {r['partitions']} x RF {r['replication_factor']} on {r['nodes']} nodes: CreateTopics "
          f"answered in {r['create_answer_s']} s (error {r['create_error_code']}; CPU s per node until then "
          f"{r.get('create_cpu_s')}); every partition written in "
          f"{r['all_writable_s']} s ({r['not_writable']} not); every group quiesced "
          f"{r.get('quiet_s')} s after (None: not within {QUIET_TIMEOUT_S:g} s)")
    for n in r["idle"]:
        print(f"  idle node {n['node']}: CPU {n['cpu_percent_of_a_core']} % of a core over {r['idle_window_s']} s; "
              f"RSS {n['rss_mb']} MB; {n['open_fds']} open fds; {n['data_files']} data files")
    f = r.get("failover")
    if f:
        print(f"  failover: killed node {f['killed_node']} (controller: {f['killed_node_was_controller']}), "
              f"leader of {f['partitions_led']}; first acknowledged write after the kill: median "
              f"{f.get('median_s')} s, p90 {f.get('p90_s')} s, p99 {f.get('p99_s')} s, max {f.get('max_s')} s, "
              f"min {f.get('min_s')} s (the 10 slowest: {f.get('slowest_s')}); longest Produce answer "
              f"{f.get('longest_request_s')} s; "
              f"{f['not_written']} not written; {f['produce_requests']} produce requests, errors {f['error_answers']}")
