"""Coordinator failover on a 3-node cluster (issue 6): three confluent-kafka consumers read a
replicated topic while a producer writes to it; the broker that coordinates their group is
SIGKILLed. The group re-forms on the new coordinator (the leader of the same
__consumer_offsets partition on another broker), every record is consumed (no gap), a
consumer that takes over a partition starts at or after the last commit it could know of,
and the committed offsets, watched all along through OffsetFetch, never move backwards.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from tests.groups.harness import (GROUP_CONFIG, OFFSET_FETCH, ConsumerProc, check_takeovers, consumed, coordinator,
                                  describe, split_ok, wait_until)
from tests.cluster.cluster import CONNECTION_ERRORS
from tests.kafka_wire import KafkaWire

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 6
GROUP = "g-failover"
TOPIC = "failover-topic"
PRODUCE_INTERVAL_S = 0.05
STEP_TIMEOUT_S = 60.0


class Producer(threading.Thread):
    """confluent-kafka, acks=all, a small batch to every partition every PRODUCE_INTERVAL_S;
    keeps the (partition, offset) of every acknowledged record."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Producer as CkProducer
        self.producer = CkProducer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "acks": "all",
                                    "linger.ms": 5, "message.timeout.ms": 60000})
        self.acked: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.acked.append((msg.partition(), msg.offset()))
        else:
            self.errors.append(str(err))

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            for p in range(PARTITIONS):
                self.producer.produce(TOPIC, value=f"v{i}".encode(), partition=p, on_delivery=self._delivered)
            i += 1
            self.producer.poll(PRODUCE_INTERVAL_S)
        self.producer.flush(60)


class CommitWatcher(threading.Thread):
    """OffsetFetch from whoever coordinates the group, every 0.1 s; records any decrease."""

    def __init__(self, ports: dict[int, int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.dead: set[int] = set()
        self.latest: dict[int, int] = {}
        self.backwards: list[str] = []
        self.samples = 0
        self.last_sample_at = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            live = [n for n in self.ports if n not in self.dead]
            try:
                node = coordinator(self.ports[live[0]], GROUP, timeout_s=1.0)
                with KafkaWire.connect(self.ports[node], timeout=2.0) as wire:
                    r = wire.request(OFFSET_FETCH, {"groups": [{"group_id": GROUP, "topics": [
                        {"name": TOPIC, "partition_indexes": list(range(PARTITIONS))}]}]}, version=8)
            except (*CONNECTION_ERRORS, AssertionError):
                continue  # the killed node, or no coordinator yet: ask again
            (g,) = r.groups
            if g.error_code != 0:
                continue
            self.samples += 1
            self.last_sample_at = time.time()
            for t in g.topics:
                for p in t.partitions:
                    if p.error_code == 0 and p.committed_offset >= 0:
                        before = self.latest.get(p.partition_index, -1)
                        if p.committed_offset < before:
                            self.backwards.append(f"p{p.partition_index}: {before} -> {p.committed_offset}")
                        self.latest[p.partition_index] = max(before, p.committed_offset)


def _end_offsets(bootstrap: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": "watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=20)[1] for p in range(PARTITIONS)}
    finally:
        c.close()


def test_sigkill_of_the_coordinator_reforms_the_group_without_gaps(cluster_factory, tmp_path):
    cluster = cluster_factory(3, config_text=GROUP_CONFIG).start()
    ports = {n: cluster.nodes[n].port for n in cluster.ids}
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports.values())
    with KafkaWire.connect(ports[1]) as wire:
        assert wire.create_topics([TOPIC], partitions=PARTITIONS) == {TOPIC: 0}
    producer = Producer(bootstrap)
    producer.start()
    procs = [ConsumerProc(tmp_path, f"c{i}", "confluent-kafka", bootstrap, GROUP, TOPIC).start() for i in range(3)]
    watcher = CommitWatcher(ports)
    try:
        wait_until("the group formed", lambda: split_ok(procs, PARTITIONS), STEP_TIMEOUT_S, lambda: describe(procs))
        wait_until("records flowing", lambda: len(consumed(procs)) > 200, STEP_TIMEOUT_S, lambda: describe(procs))
        watcher.start()
        wait_until("commits watched", lambda: watcher.samples >= 3, STEP_TIMEOUT_S)
        victim = coordinator(ports[1], GROUP)
        watcher.dead.add(victim)
        killed_at = time.time()
        cluster.kill(victim)

        # The group re-forms: every consumer commits through the new coordinator.
        def recommitted() -> bool:
            return all(any(e["e"] == "commit" and e["t"] > killed_at for e in c.events()) for c in procs)
        wait_until("every consumer commits again", recommitted, STEP_TIMEOUT_S, lambda: describe(procs))
        reformed_s = max(min(e["t"] for e in c.events() if e["e"] == "commit" and e["t"] > killed_at)
                         for c in procs) - killed_at
        new_coordinator = coordinator(ports[next(n for n in cluster.ids if n != victim)], GROUP)
        assert new_coordinator != victim
        time.sleep(2.0)  # keep producing and consuming on the new coordinator for a while
    finally:
        producer.stopping.set()
        producer.join(90)
    live = [n for n in cluster.ids if n != victim]
    ends = _end_offsets(",".join(f"127.0.0.1:{ports[n]}" for n in live))
    everything = {(p, o) for p in range(PARTITIONS) for o in range(ends[p])}
    assert set(producer.acked) <= everything
    wait_until("every record consumed", lambda: everything <= set(consumed(procs)), STEP_TIMEOUT_S,
               lambda: f"missing {len(everything - set(consumed(procs)))}; {describe(procs)}")
    wait_until("commits reach the end", lambda: watcher.latest == ends, STEP_TIMEOUT_S,
               lambda: f"committed {watcher.latest}, ends {ends}; watcher alive {watcher.is_alive()}, "
                       f"last sample {time.time() - watcher.last_sample_at:.1f}s ago")
    watcher.stopping.set()
    watcher.join(10)
    for c in procs:
        c.stop()
    assert not watcher.backwards, f"committed offsets moved backwards: {watcher.backwards}"
    check_takeovers(procs, PARTITIONS)
    counts = collections.Counter(consumed(procs))
    repeated = sum(n - 1 for n in counts.values() if n > 1)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\ncoordinator node {victim} SIGKILLed: every consumer committed through node {new_coordinator} "
          f"{reformed_s:.2f}s later; {len(everything)} records, {repeated} read twice; "
          f"{watcher.samples} OffsetFetch samples; loadavg {load}")
