"""DeleteRecords on a 3-node cluster: the LOG_START entry is replicated, so every replica
(including one that was down when it was committed) serves from the new log start offset
and deletes the segments below it."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.kafka_wire import Record
from tests.replication.cluster import NONE, fetch_from, produce_until_written, wait_balanced, wait_for

pytestmark = pytest.mark.timeout(150)

TIMEOUT_S = 20
OFFSET_OUT_OF_RANGE = 1


def _segments(cluster, n: int, name: str) -> int:
    return len(list((cluster.nodes[n].data_dir / "partitions" / f"{name}-0").glob("*.seg")))


def _start_seen(cluster, n: int, name: str, start: int) -> bool:
    with cluster.connect(n) as conn:
        below, at = fetch_from(conn, name, 0, start - 1), fetch_from(conn, name, 0, start)
    return (int(below.error_code), int(below.log_start_offset), int(at.error_code)) == \
        (OFFSET_OUT_OF_RANGE, start, NONE)


def test_every_replica_follows_delete_records_including_one_that_was_down(cluster):
    name = "del3-" + uuid.uuid4().hex[:6]
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    admin.create_topics([NewTopic(name, 1, 3, config={"segment.bytes": "4096"})])[name].result(timeout=TIMEOUT_S)
    leader = wait_balanced(cluster, name)[0].leader
    for i in range(30):
        produce_until_written(cluster, leader, name, 0, [Record(b"k", b"%03d" % i + b"." * 1000)])
    down = next(n for n in cluster.ids if n != leader)
    before = _segments(cluster, down, name)
    cluster.kill(down)

    for i in range(30, 40):
        produce_until_written(cluster, leader, name, 0, [Record(b"k", b"%03d" % i + b"." * 1000)])
    (future,) = admin.delete_records([TopicPartition(name, 0, 25)]).values()
    assert future.result(timeout=TIMEOUT_S).low_watermark == 25
    for n in cluster.running():
        wait_for(f"node {n} serves from offset 25", lambda: _start_seen(cluster, n, name, 25), timeout_s=10)

    cluster.restart(down)
    wait_for(f"node {down}, down during the delete, serves from offset 25",
             lambda: _start_seen(cluster, down, name, 25), timeout_s=30)
    wait_for(f"node {down} deleted its segments below 25",
             lambda: _segments(cluster, down, name) < before - 2, timeout_s=10)


def test_a_follower_too_far_behind_gets_the_new_log_start_in_a_snapshot(cluster):
    """The leader deleted the segments the follower would need (a snapshot at the boundary
    first), so the follower is sent that snapshot, which carries the log start offset."""
    name = "del3s-" + uuid.uuid4().hex[:6]
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    admin.create_topics([NewTopic(name, 1, 3, config={"segment.bytes": "4096"})])[name].result(timeout=TIMEOUT_S)
    leader = wait_balanced(cluster, name)[0].leader
    produce_until_written(cluster, leader, name, 0, [Record(b"k", b"first")])
    down = next(n for n in cluster.ids if n != leader)
    cluster.kill(down)
    for i in range(40):
        produce_until_written(cluster, leader, name, 0, [Record(b"k", b"%03d" % i + b"." * 1000)])
    (future,) = admin.delete_records([TopicPartition(name, 0, 35)]).values()
    assert future.result(timeout=TIMEOUT_S).low_watermark == 35
    wait_for("the leader deleted the segments below 35",
             lambda: "DeleteRecords: deleted" in cluster.nodes[leader].log_text(), timeout_s=10)
    cluster.restart(down)
    wait_for(f"node {down} serves from offset 35", lambda: _start_seen(cluster, down, name, 35), timeout_s=30)
    first_segment = min(int(p.stem) for p in (cluster.nodes[down].data_dir / "partitions" / f"{name}-0").glob("*.seg"))
    assert first_segment > 10, "the follower was not reset to a snapshot"  # it had entries 1..3 only
