"""Compacted topics on a 3-node cluster, produced by every client library the suite drives:
each replica cleans its own committed log, so every node ends up serving each key's latest
value at its producer's offset. A follower down while the records were written catches up
after the cleaning; and one that catches up from a leader that reads the compacted
segments from disk (not from its memory of recent entries) gets a valid, compacted log."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.compaction_common import create_compacted, kafkajs_produce, keyed_records, latest, settle
from tests.kafkajs import kafkajs_dir
from tests.replication.cluster import read_replica, records_by_offset, wait_balanced
from tests.replication.clients import RF3_DRIVERS, ConfluentRF3

pytestmark = pytest.mark.timeout(240)

RECORDS = 48


def _served(cluster, n: int, topic: str) -> list[tuple[int, bytes | None, bytes | None]] | None:
    try:
        _, batches = read_replica(cluster, n, topic, 0, deadline_s=5)
    except AssertionError:
        return None  # not serving yet (restarting, catching up with __meta)
    return [(o, k, v) for o, k, v, _ in records_by_offset(batches)]


def _wait_compacted_on(cluster, nodes, topic: str, want) -> None:
    """Until each node serves exactly `want` (plus the sentinel settle() adds)."""
    def on(n):
        return lambda _count: _served(cluster, n, topic) or []  # all it serves, compared whole
    settle(cluster.bootstrap(), topic, [on(n) for n in nodes], want, f"{topic} on nodes {list(nodes)}")


def _produce(client: str, cluster, topic: str, recs, tmp_path):
    if client == "kafkajs":
        brokers = [cluster.nodes[n].bootstrap for n in cluster.running()]
        return kafkajs_produce(kafkajs_dir(), brokers, topic, recs, tmp_path)
    return RF3_DRIVERS[client](cluster.bootstrap()).produce(topic, recs, flush_every=4)


@pytest.mark.parametrize("client", [*RF3_DRIVERS, "kafkajs"])
def test_every_replica_compacts_including_a_follower_that_was_down(cluster, tmp_path, client):
    topic = "compact3-" + uuid.uuid4().hex[:6]
    create_compacted(cluster.bootstrap(), topic, 3)
    leader = wait_balanced(cluster, topic)[0].leader
    down = next(n for n in cluster.ids if n != leader)
    cluster.kill(down)
    recs = keyed_records(topic, RECORDS)
    told = _produce(client, cluster, topic, recs, tmp_path)
    want = latest(recs, told, tombstones=True)
    _wait_compacted_on(cluster, cluster.running(), topic, want)
    cluster.restart(down)
    _wait_compacted_on(cluster, [down], topic, want)


def test_a_follower_catches_up_from_compacted_segments(cluster):
    """The follower that was down is sent entries the new leader reads from its cleaned
    segment files (its in-memory recent entries were released: it was a follower)."""
    topic = "compact3f-" + uuid.uuid4().hex[:6]
    create_compacted(cluster.bootstrap(), topic, 3)
    leader = wait_balanced(cluster, topic)[0].leader
    down, other = [n for n in cluster.ids if n != leader]
    cluster.kill(down)
    recs = keyed_records(topic, RECORDS)
    told = ConfluentRF3(cluster.bootstrap()).produce(topic, recs, flush_every=4)
    want = latest(recs, told, tombstones=True)
    _wait_compacted_on(cluster, [leader, other], topic, want)
    cluster.kill(leader)  # `other` leads now, with `down` once it is back
    cluster.restart(down)
    _wait_compacted_on(cluster, [down], topic, want)
    cluster.restart(leader)
    _wait_compacted_on(cluster, [leader], topic, want)
