"""A 3-node chronik-trio cluster of real processes for the replication tests (issue 5).

Built on tests.cluster.cluster.ClusterProcesses (the node-process harness): every process is
started, signalled and reaped by its PID, ready when its /health says so; close() stops them
all and fails on any exit nobody caused.

Also here: reading one replica's log as that broker serves it (Fetch v11+ sent to the broker
directly, which a follower answers up to its own high watermark, KIP-392), and Metadata as
plain tuples.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tests.cluster.cluster import CONNECTION_ERRORS, READY_TIMEOUT_S, ClusterProcesses
from tests.kafka_wire import (CREATE_TOPICS, FETCH, Batch, KafkaWire, Record, build_batch,
                              parse_batches)

FOLLOWER_FETCH_VERSION = 12  # >= 11: a follower serves reads up to its high watermark

# Kafka error codes the tests look at.
NONE = 0
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
INVALID_REPLICATION_FACTOR = 38

__all__ = ["CONNECTION_ERRORS", "Cluster"]

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], *, timeout_s: float, poll_s: float = 0.1,
              tolerate: tuple[type[BaseException], ...] = CONNECTION_ERRORS) -> T:
    """Call probe() until it returns something truthy (returned); AssertionError naming
    `what` and the last value after timeout_s. Exceptions in `tolerate` count as falsy."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = probe()
        except tolerate as exc:
            last = repr(exc)
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not after {timeout_s:.0f} s; last: {last!r}"[:3000])
        time.sleep(poll_s)


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as one broker's Metadata reports it."""
    leader: int
    epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    error: int


class Cluster(ClusterProcesses):
    """ClusterProcesses with node n alone in rack "rack<n>" (so a consumer can pick a replica
    by rack, KIP-392), started once every broker is registered in __meta."""

    def __init__(self, root: pathlib.Path, size: int = 3, *, config_text: str = "") -> None:
        super().__init__(root, size, config_text=config_text or None)
        for n in self.ids:
            self.nodes[n].extra_args += ["--rack", self.rack(n)]

    @staticmethod
    def rack(n: int) -> str:
        return f"rack{n}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "Cluster":
        """Start every node; return once all are ready and Metadata lists every broker."""
        deadline = time.monotonic() + timeout_s
        super().start(timeout_s)
        self.wait_brokers(max(deadline - time.monotonic(), 0.1))
        return self

    def wait_brokers(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every running node's Metadata lists all the cluster's brokers (a topic with
        replication factor 3 is refused before that)."""
        want = set(self.ids)
        wait_for("every broker registered",
                 lambda: all({int(b.node_id) for b in self.metadata(n).brokers} == want
                             for n in self.running()), timeout_s=timeout_s)

    def log_tails(self, chars: int = 4000, pattern: str | None = None) -> str:
        out = []
        for n in self.ids:
            text = self.nodes[n].log_text()
            if pattern is not None:
                text = "\n".join(line for line in text.splitlines() if pattern in line)
            out.append(f"----- node {n} ({self.nodes[n].log_path}) -----\n{text[-chars:]}")
        return "\n".join(out)

    # --- Kafka -----------------------------------------------------------------------------

    def bootstrap(self, n: int | None = None) -> str:
        ids = self.ids if n is None else [n]
        return ",".join(self.nodes[i].bootstrap for i in ids)

    def partitions(self, n: int, topic: str) -> dict[int, PartitionInfo]:
        """partition -> PartitionInfo as node n's Metadata reports it ({} if unknown)."""
        for t in self.metadata(n, [topic]).topics:
            if t.name == topic and int(t.error_code) == NONE:
                return {int(p.partition_index): PartitionInfo(
                    int(p.leader_id), int(p.leader_epoch), tuple(p.replica_nodes),
                    tuple(p.isr_nodes), int(p.error_code)) for p in t.partitions}
        return {}

    def create_topic(self, n: int, topic: str, partitions: int, *, replication_factor: int = 3,
                     configs: dict[str, str] | None = None, timeout_ms: int = 30_000) -> Any:
        """One CreateTopics request to node n; returns the answer's topic entry."""
        with self.connect(n, timeout_s=timeout_ms / 1000 + 15) as conn:
            r = conn.request(CREATE_TOPICS, {"topics": [{
                "name": topic, "num_partitions": partitions,
                "replication_factor": replication_factor,
                "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}],
                "timeout": timeout_ms})
        (entry,) = r.topics
        return entry


def fetch_from(conn: KafkaWire, topic: str, partition: int, offset: int,
               max_wait_ms: int = 0) -> Any:
    """One Fetch v12 (follower fetch allowed) for one partition; its PartitionData."""
    r = conn.request(FETCH, conn.fetch_request_body(topic, partition, offset, max_wait_ms=max_wait_ms),
                     version=FOLLOWER_FETCH_VERSION)
    assert int(r.error_code) == NONE, f"fetch top-level error {r.error_code}"
    (part,) = [p for t in r.responses if t.topic == topic for p in t.partitions
               if p.partition_index == partition]
    return part


def read_replica(cluster: Cluster, n: int, topic: str, partition: int, *,
                 deadline_s: float = 30.0) -> tuple[int, list[Batch]]:
    """(high watermark, every batch below it) of node n's replica, as node n serves it."""
    batches: list[Batch] = []
    offset = 0
    deadline = time.monotonic() + deadline_s
    with cluster.connect(n) as conn:
        for _ in range(100_000):
            assert time.monotonic() < deadline, f"reading {topic}-{partition} on node {n}: at {offset}"
            p = fetch_from(conn, topic, partition, offset)
            assert int(p.error_code) == NONE, f"node {n} fetch {topic}-{partition}@{offset}: {p.error_code}"
            new = [b for b in parse_batches(p.records or b"") if b.last_offset >= offset]
            if not new:
                assert offset >= p.high_watermark, (n, topic, partition, offset, p.high_watermark)
                return int(p.high_watermark), batches
            batches.extend(new)
            offset = new[-1].last_offset + 1
    raise AssertionError("read_replica: too many rounds")


def records_by_offset(batches: list[Batch]) -> list[tuple[int, bytes | None, bytes | None, tuple]]:
    """[(offset, key, value, headers)] of uncompressed batches, in order."""
    out = []
    for b in batches:
        assert b.attributes & 0x07 == 0, "read_replica compares uncompressed batches only"
        for r in b.records:
            out.append((b.base_offset + r.offset_delta, r.key, r.value, r.headers))
    return out


def high_watermark(cluster: Cluster, n: int, topic: str, partition: int) -> int | None:
    """Node n's high watermark of its replica; None if it cannot serve it (yet): a node
    restarted a moment ago may not have caught up with __meta (UNKNOWN_TOPIC_OR_PARTITION)."""
    with cluster.connect(n, timeout_s=5) as conn:
        p = fetch_from(conn, topic, partition, 0)
    return int(p.high_watermark) if int(p.error_code) == NONE else None


def wait_replicas_equal(cluster: Cluster, topic: str, partitions: int, *, at_least: dict[int, int],
                        timeout_s: float = 30.0) -> dict[int, list[Batch]]:
    """Until every node's replica of every partition has the same high watermark, at least
    at_least[p]; then the batches of each partition, checked byte-identical on every node."""
    seen: dict[int, dict[int, int | None]] = {}

    def same_hw() -> bool:
        seen.clear()
        seen.update({p: {n: high_watermark(cluster, n, topic, p) for n in cluster.ids} for p in range(partitions)})
        return all(None not in h.values() and len(set(h.values())) == 1 and min(h.values()) >= at_least.get(p, 0)
                   for p, h in seen.items())
    try:
        wait_for(f"{topic}: every replica at the same high watermark", same_hw, timeout_s=timeout_s)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; high watermarks (partition -> node -> hw): {seen}; "
                             f"wanted at least {at_least}") from None
    out = {}
    for p in range(partitions):
        logs = {n: read_replica(cluster, n, topic, p) for n in cluster.ids}
        (hw0, batches0) = logs[cluster.ids[0]]
        for n, (hw, batches) in logs.items():
            assert hw == hw0, f"{topic}-{p}: high watermark {hw} on node {n}, {hw0} on node {cluster.ids[0]}"
            assert [(b.base_offset, b.raw) for b in batches] == [(b.base_offset, b.raw) for b in batches0], (
                f"{topic}-{p}: node {n}'s log differs from node {cluster.ids[0]}'s "
                f"({len(batches)} vs {len(batches0)} batches)")
        offsets = [o for b in batches0 for o in range(b.base_offset, b.last_offset + 1)]
        assert offsets == list(range(hw0)), f"{topic}-{p}: offsets are not 0..{hw0 - 1} exactly once"
        out[p] = batches0
    return out


def balanced(cluster: Cluster, topic: str, nodes: list[int] | None = None) -> dict[int, PartitionInfo] | None:
    """The partitions if every given (default: running) node's Metadata names each
    partition's preferred replica (replicas[0]) as its leader, else None."""
    views = [cluster.partitions(n, topic) for n in (nodes or cluster.running())]
    if views and views[0] and all(v == views[0] for v in views) and \
            all(i.leader == i.replicas[0] for i in views[0].values()):
        return views[0]
    return None


def wait_balanced(cluster: Cluster, topic: str, timeout_s: float = 30.0) -> dict[int, PartitionInfo]:
    return wait_for(f"{topic}: every partition led by its preferred replica on every node",
                    lambda: balanced(cluster, topic), timeout_s=timeout_s, poll_s=0.2)


def produce_raw(cluster: Cluster, n: int, topic: str, partition: int, records: list[Record], *,
                acks: int = -1, timeout_ms: int = 5000, conn: KafkaWire | None = None) -> tuple[int, int]:
    """One Produce (v10: KIP-951 leader hints) of one batch to node n: (error code, base offset)."""
    batch = build_batch(records)
    if conn is not None:
        p = conn.produce(topic, partition, batch, acks=acks, timeout_ms=timeout_ms)
    else:
        with cluster.connect(n, timeout_s=timeout_ms / 1000 + 10) as c:
            p = c.produce(topic, partition, batch, acks=acks, timeout_ms=timeout_ms)
    return int(p.error_code), int(p.base_offset)


def produce_until_written(cluster: Cluster, n: int, topic: str, partition: int, records: list[Record],
                          *, attempts: int = 20) -> int:
    """acks=all to node n, retried on NOT_ENOUGH_REPLICAS (up to `attempts`, 50 ms apart);
    the base offset. For a test's setup writes only, which must not fail on a refusal the
    test is not about (test_isr_refusals.py checks that a healthy ISR refuses none)."""
    answers = []
    for _ in range(attempts):
        error, base = produce_raw(cluster, n, topic, partition, records)
        if error == NONE:
            return base
        answers.append(error)
        assert error == NOT_ENOUGH_REPLICAS, f"produce to node {n}: error {error}"
        time.sleep(0.05)
    raise AssertionError(f"acks=all to node {n} not written after {attempts} attempts: {answers}")
