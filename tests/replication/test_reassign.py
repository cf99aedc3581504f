"""Moving partitions (AlterPartitionReassignments / ListPartitionReassignments, issue 17) on
three real nodes: the replication factor grows 1 -> 3, shrinks 3 -> 2 removing the leader,
and the replicas move, while a confluent-kafka producer (acks=all) and consumer go on; then
cancelling, and bad input with Kafka's error codes."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError
from kio.schema.errors import ErrorCode

from tests.brokers import CHRONIK_TRIO
from tests.kafka_wire import Record
from tests.replication.cluster import Cluster, produce_until_written, read_replica, records_by_offset, wait_for
from tests.replication.failover import key_of

pytestmark = pytest.mark.timeout(240)

ALTER = 45
LIST = 46
UNKNOWN_TOPIC_OR_PARTITION = ErrorCode.unknown_topic_or_partition
INVALID_REPLICA_ASSIGNMENT = ErrorCode.invalid_replica_assignment
NO_REASSIGNMENT_IN_PROGRESS = ErrorCode.no_reassignment_in_progress
MOVE_TIMEOUT_S = 60.0
RECORDS_MAX = 20_000  # bounds the producer loop
PRODUCE_INTERVAL_S = 0.005


def alter(cluster: Cluster, n: int, topic: str, partition: int, replicas: list[int] | None) -> tuple[int, str]:
    with cluster.connect(n) as conn:
        r = conn.request(ALTER, {"timeout": 30_000, "topics": [{"name": topic, "partitions": [
            {"partition_index": partition, "replicas": replicas}]}]}, version=0)
    assert int(r.error_code) == 0, r
    ((part,),) = [t.partitions for t in r.responses]
    return int(part.error_code), part.error_message or ""


def ongoing(cluster: Cluster, n: int) -> dict[tuple[str, int], tuple[tuple[int, ...], ...]]:
    """(topic, partition) -> (replicas, adding, removing) as node n lists them."""
    with cluster.connect(n) as conn:
        r = conn.request(LIST, {"timeout": 30_000, "topics": None}, version=0)
    return {(t.name, int(p.partition_index)): (tuple(p.replicas), tuple(p.adding_replicas),
                                                tuple(p.removing_replicas))
            for t in r.topics for p in t.partitions}


def moved(cluster: Cluster, topic: str, target: list[int]) -> bool:
    """Every node's Metadata shows replicas == target with a full ISR and a leader in it,
    and no node lists a reassignment."""
    for n in cluster.running():
        info = cluster.partitions(n, topic).get(0)
        if info is None or list(info.replicas) != target or sorted(info.isr) != sorted(target) \
                or info.leader not in target or ongoing(cluster, n):
            return False
    return True


class Traffic:
    """A confluent-kafka producer (acks=all, idempotent) and consumer in threads, until stop()."""

    def __init__(self, cluster: Cluster, topic: str) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition
        self.topic = topic
        self.acked: dict[int, int] = {}  # record index -> offset
        self.errors: list[str] = []
        self.consumed: dict[bytes, int] = {}  # key -> offset
        self._stop = threading.Event()
        self._produced = threading.Event()  # the producer flushed: acked is complete
        self.producer = Producer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                                  "acks": "all", "enable.idempotence": True, "linger.ms": 2,
                                  "message.timeout.ms": 60_000})
        self.consumer = Consumer({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4",
                                  "group.id": f"{topic}-reader", "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.threads = [threading.Thread(target=self._produce), threading.Thread(target=self._consume)]
        for t in self.threads:
            t.start()

    def _produce(self) -> None:
        def report(i, err, msg):
            if err is not None:
                self.errors.append(f"record {i}: {err}")
            else:
                self.acked[i] = msg.offset()
        for i in range(RECORDS_MAX):
            if self._stop.is_set():
                break
            self.producer.produce(self.topic, key=key_of(i), value=b"value-%d" % i, partition=0,
                                  on_delivery=lambda err, msg, i=i: report(i, err, msg))
            self.producer.poll(PRODUCE_INTERVAL_S)
        self.producer.flush(60)
        self._produced.set()

    def _consume(self) -> None:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                self.consumed[msg.key()] = msg.offset()
            if self._produced.is_set() and all(key_of(i) in self.consumed for i in self.acked):
                break
        self.consumer.close()

    def wait_records(self, count: int) -> None:
        wait_for(f"{count} more acknowledged records", lambda: len(self.acked) >= count, timeout_s=60)

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(240)


def check_replicas(cluster: Cluster, topic: str, replicas: list[int], acked: dict[int, int]) -> None:
    """Every replica holds the same log, and every acknowledged record is at its offset."""
    logs = {}
    for n in replicas:
        hw, batches = wait_for(f"node {n} has every acknowledged record",
                               lambda n=n: (r := read_replica(cluster, n, topic, 0))[0] > max(acked.values()) and r,
                               timeout_s=30)
        logs[n] = [(b.base_offset, b.raw) for b in batches], records_by_offset(batches)
    first = logs[replicas[0]]
    for n, log in logs.items():
        assert log[0] == first[0], f"node {n}'s log differs from node {replicas[0]}'s"
    stored = {o: (k, v) for o, k, v, _ in first[1]}
    for i, offset in acked.items():
        assert stored.get(offset) == (key_of(i), b"value-%d" % i), (i, offset, stored.get(offset))


def test_replication_factor_grows_shrinks_and_moves_while_clients_go_on(cluster):
    topic = "reassign-live"
    entry = cluster.create_topic(1, topic, 1, replication_factor=1)
    assert int(entry.error_code) == 0, entry
    (first,) = wait_for("a leader", lambda: [i.replicas[0] for i in cluster.partitions(1, topic).values()
                                            if i.leader != -1], timeout_s=30)
    others = [n for n in cluster.ids if n != first]
    traffic = Traffic(cluster, topic)
    try:
        traffic.wait_records(200)
        grown = [first, *others]  # 1 -> 3
        assert alter(cluster, others[0], topic, 0, grown) == (0, "")
        wait_for("replication factor 3", lambda: moved(cluster, topic, grown), timeout_s=MOVE_TIMEOUT_S)
        traffic.wait_records(len(traffic.acked) + 200)
        leader = cluster.partitions(first, topic)[0].leader
        shrunk = [n for n in grown if n != leader]  # 3 -> 2, the leader leaves: it hands over first
        assert alter(cluster, first, topic, 0, shrunk) == (0, "")
        wait_for("replication factor 2 without the old leader", lambda: moved(cluster, topic, shrunk),
                 timeout_s=MOVE_TIMEOUT_S)
        traffic.wait_records(len(traffic.acked) + 200)
        swapped = [leader, shrunk[0]]  # a replica moves from one node to another
        assert alter(cluster, first, topic, 0, swapped) == (0, "")
        wait_for("the replica moved", lambda: moved(cluster, topic, swapped), timeout_s=MOVE_TIMEOUT_S)
        traffic.wait_records(len(traffic.acked) + 200)
    finally:
        traffic.stop()
    assert not traffic.errors, traffic.errors[:5]
    check_replicas(cluster, topic, swapped, traffic.acked)
    missing = [i for i in traffic.acked if key_of(i) not in traffic.consumed]
    assert not missing, f"{len(missing)} acknowledged records never consumed, e.g. {missing[:5]}"
    assert all(traffic.consumed[key_of(i)] == o for i, o in traffic.acked.items())


def test_cancel_restores_the_original_replicas_and_bad_input_gets_kafkas_codes(cluster):
    topic = "reassign-cancel"
    assert int(cluster.create_topic(1, topic, 1, replication_factor=1).error_code) == 0
    (home,) = wait_for("a leader", lambda: [i.replicas[0] for i in cluster.partitions(1, topic).values()
                                           if i.leader != -1], timeout_s=30)
    controller = cluster.controller(home)  # kafka-python sends moves to it: it stays up
    down = next(n for n in cluster.ids if n not in (home, controller))
    asker = next(n for n in cluster.ids if n not in (home, down))

    assert alter(cluster, asker, "no-such-topic", 0, [home])[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert alter(cluster, asker, topic, 7, [home])[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert alter(cluster, asker, topic, 0, [])[0] == INVALID_REPLICA_ASSIGNMENT
    assert alter(cluster, asker, topic, 0, [home, home])[0] == INVALID_REPLICA_ASSIGNMENT
    code, message = alter(cluster, asker, topic, 0, [home, 99])
    assert code == INVALID_REPLICA_ASSIGNMENT and "99" in message
    assert alter(cluster, asker, topic, 0, None)[0] == NO_REASSIGNMENT_IN_PROGRESS
    assert (topic, 0) not in ongoing(cluster, asker)
    admin_client = KafkaAdminClient(bootstrap_servers=cluster.bootstrap(), request_timeout_ms=30_000)
    try:  # kafka-python's admin client gets the same answers
        tp = TopicPartition(topic, 0)
        assert admin_client.alter_partition_reassignments({tp: [home, 99]}) == {tp: InvalidReplicationAssignmentError}
        assert admin_client.alter_partition_reassignments({tp: None}) == {tp: NoReassignmentInProgressError}
        assert admin_client.list_partition_reassignments([tp]) == {}
    finally:
        admin_client.close()

    # A new replica on a stopped node cannot catch up: the move stays in progress until
    # cancelled, the leader says so in its log, the admin command shows it stalled, and
    # writes go on meanwhile and after the cancel.
    cluster.kill(down)
    assert alter(cluster, asker, topic, 0, [home, down]) == (0, "")
    assert ongoing(cluster, asker)[(topic, 0)] == ((home, down), (down,), ())
    assert cluster.partitions(asker, topic)[0].replicas == (home, down)
    wait_for("the leader's warning of a stalled move",
             lambda: re.search(rf"{topic}-0: reassignment to \[{home}, {down}\] stalled for \d+ s: the new "
                               rf"replica\(s\) on node\(s\) \[{down}\] gained nothing.*--cancel",
                               cluster.current_log(home)), timeout_s=MOVE_TIMEOUT_S)
    assert ongoing(cluster, asker)[(topic, 0)] == ((home, down), (down,), ())
    listed = admin(cluster, "reassignments")
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"{topic}-0 .* stalled: node\(s\) {down} not answering", listed.stdout), listed.stdout
    produce_until_written(cluster, home, topic, 0, [Record(key=b"during", value=b"the stalled move")])
    assert alter(cluster, asker, topic, 0, None) == (0, "")
    wait_for("the original replicas back", lambda: moved(cluster, topic, [home]), timeout_s=MOVE_TIMEOUT_S)
    base = produce_until_written(cluster, home, topic, 0, [Record(key=b"after", value=b"the cancel")])
    hw, batches = read_replica(cluster, home, topic, 0)
    assert hw == base + 1 and [(k, v) for _, k, v, _ in records_by_offset(batches)][-2:] == [
        (b"during", b"the stalled move"), (b"after", b"the cancel")]


def admin(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", cluster.bootstrap(), *args],
                          capture_output=True, text=True, timeout=300)


def test_decommission_moves_every_replica_off_a_node_or_refuses_naming_the_partition(tmp_path):
    cluster = Cluster(tmp_path).start()
    try:
        assert int(cluster.create_topic(1, "dc", 3, replication_factor=2).error_code) == 0
        assert int(cluster.create_topic(1, "dc-full", 1, replication_factor=3).error_code) == 0
        records = [Record(key=b"k%d" % i, value=b"v%d" % i) for i in range(20)]
        def led():
            found = cluster.partitions(1, "dc")
            return found if found and all(i.leader != -1 for i in found.values()) else None
        leaders = wait_for("leaders", led, timeout_s=30)
        for p, info in leaders.items():
            produce_until_written(cluster, info.leader, "dc", p, records)
        refused = admin(cluster, "decommission", "3")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "dc-full-0: replicas " in refused.stderr and "cover every other broker" in refused.stderr
        assert not ongoing(cluster, 1)  # nothing was moved
        assert admin(cluster, "delete-topic", "dc-full").returncode == 0

        done = admin(cluster, "decommission", "3")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "node 3 holds no partition replica" in done.stdout
        assert "node 3 removed" in done.stdout  # and then out of __meta's voters (remove-node)
        for p, info in cluster.partitions(1, "dc").items():
            assert sorted(info.replicas) == [1, 2] and sorted(info.isr) == [1, 2], (p, info)
            for n in (1, 2):
                hw, batches = read_replica(cluster, n, "dc", p)
                assert [(k, v) for _, k, v, _ in records_by_offset(batches)] == [(r.key, r.value) for r in records]
        wait_for("node 3 deleted its replicas", lambda: not list(
            (cluster.nodes[3].data_dir / "partitions").glob("dc-*")), timeout_s=60)
    finally:
        cluster.close()


def test_a_throttled_move_catches_up_within_the_rate_and_completes(cluster):
    topic = "reassign-throttled"
    assert int(cluster.create_topic(1, topic, 1, replication_factor=1).error_code) == 0
    (home,) = wait_for("a leader", lambda: [i.replicas[0] for i in cluster.partitions(1, topic).values()
                                           if i.leader != -1], timeout_s=30)
    value = bytes(range(256)) * 40  # 10 KiB per record
    for i in range(40):  # 400 KiB to catch up
        produce_until_written(cluster, home, topic, 0, [Record(key=b"k%d" % i, value=value)])
    set_rate = admin(cluster, "config", "set", "--broker-default", "leader.replication.throttled.rate=100000")
    assert set_rate.returncode == 0, set_rate.stderr
    try:
        throttled_before = cluster.raft_metric(home, "chronik_catch_up_throttled_bytes_total")
        other = next(n for n in cluster.ids if n != home)
        assert alter(cluster, home, topic, 0, [home, other]) == (0, "")
        wait_for("the throttled move", lambda: moved(cluster, topic, [home, other]), timeout_s=MOVE_TIMEOUT_S)
        assert cluster.raft_metric(home, "chronik_catch_up_throttled_bytes_total") > throttled_before
    finally:
        assert admin(cluster, "config", "delete", "--broker-default",
                     "leader.replication.throttled.rate").returncode == 0
    logs = {n: read_replica(cluster, n, topic, 0) for n in (home, other)}
    assert logs[home][0] == logs[other][0] == 40
    assert [b.raw for b in logs[home][1]] == [b.raw for b in logs[other][1]]
