"""100 topic creations, each followed at once by a produce (issue 5's measured goal; the
seed reached 76 %): CreateTopics (replication factor 3) to one broker, which answers only
once every partition has a leader in its metadata; then, without any pause, Metadata from
that same broker and one acks=all Produce to the leader it names. The first attempt must
succeed every time: no retry is made, and any error counts as a failure."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from tests.kafka_wire import CREATE_TOPICS, KafkaWire, Record, build_batch
from tests.replication.cluster import NONE, Cluster

TOPICS = 100
WORKERS = 4


def create_and_produce_once(cluster: Cluster, conns: dict[int, KafkaWire], via: int,
                            topic: str) -> str | None:
    """None on success, else what went wrong (no retries)."""
    conn = conns[via]
    r = conn.request(CREATE_TOPICS, {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": 3}],
                          "timeout": 30_000})
    (entry,) = r.topics
    if int(entry.error_code) != NONE:
        return f"CreateTopics via node {via}: error {entry.error_code} {entry.error_message}"
    md = conn.metadata([topic])
    (t,) = md.topics
    (p,) = t.partitions
    leader = int(p.leader_id)
    if int(t.error_code) != NONE or int(p.error_code) != NONE or leader not in conns:
        return f"Metadata via node {via}: topic error {t.error_code}, partition error {p.error_code}, leader {leader}"
    batch = [Record(b"k", f"first record of {topic}".encode())]
    answer = conns[leader].produce(topic, 0, build_batch(batch), acks=-1, timeout_ms=10_000)
    if int(answer.error_code) != NONE or int(answer.base_offset) != 0:
        return (f"Produce to leader {leader} (named by node {via}): error {answer.error_code} "
                f"base offset {answer.base_offset}")
    return None


def worker(cluster: Cluster, indexes: list[int]) -> list[str]:
    """Creations one after another on this worker's own connections; the failures."""
    conns = {n: cluster.connect(n, timeout_s=45) for n in cluster.ids}
    failures = []
    try:
        for i in indexes:
            via = cluster.ids[i % len(cluster.ids)]  # every broker answers some creations
            why = create_and_produce_once(cluster, conns, via, f"first-produce-{i:03d}")
            if why is not None:
                failures.append(f"#{i}: {why}")
    finally:
        for c in conns.values():
            c.close()
    return failures


@pytest.mark.timeout(150)
def test_first_produce_after_each_of_100_creations_succeeds(cluster):
    # A creation waits for an election (0.5-1 s of election timeout), so a few run side by
    # side; each produce still follows its own creation at once.
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda w: worker(cluster, list(range(w, TOPICS, WORKERS))), range(WORKERS)))
    failures = sorted(f for r in results for f in r)
    elapsed_s = time.monotonic() - started
    print(f"create-then-produce: {TOPICS - len(failures)}/{TOPICS} first produces succeeded "
          f"without a retry ({elapsed_s:.1f} s for {TOPICS} creations, {WORKERS} at a time)")
    assert not failures, f"{len(failures)} of {TOPICS} failed: {failures[:10]}"
