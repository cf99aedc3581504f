"""Real clients on a 3-node cluster (issue 5): confluent-kafka, kafka-python, aiokafka and
kafkajs each create a topic of 6 partitions with replication factor 3 and produce 20,000
records with acks=all; the records are then read back through every broker: by the client's
own consumer bootstrapped at each broker in turn (it fetches from the leaders), and from
every replica's own log with Fetch v12 sent to that broker (leaders and followers alike
answer up to their high watermark). Every replica must hold identical batches at identical
offsets, and every record must come back once, at the offset the producer was told."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.clients_common import make_records
from tests.kafkajs import kafkajs_dir
from tests.replication.clients import (RF3_DRIVERS, ConfluentRF3, confluent_consume_in_rack,
                                       kafkajs_create_and_produce)
from tests.replication.cluster import (Cluster, records_by_offset, wait_balanced, wait_for,
                                       wait_replicas_equal)

RECORDS = 20_000
PARTITIONS = 6
CONSUME_TIMEOUT_S = 60.0
# librdkafka's debug line when a leader names another replica to fetch from (KIP-392).
MIGRATED = re.compile(r"Topic (\S+) \[(\d+)\]: migrating from broker (\d+) to (\d+)")


def check_metadata(cluster: Cluster, topic: str) -> None:
    """Every broker reports the topic: 6 partitions, 3 distinct replicas each, a leader.
    The broker that answered CreateTopics knew every leader; the others learn them as
    __meta commits reach them, a moment later."""
    def view(n: int):
        parts = cluster.partitions(n, topic)
        return parts if all(i.leader in i.replicas and i.epoch >= 1 for i in parts.values()) else None
    for n in cluster.ids:
        parts = wait_for(f"node {n} knows every leader of {topic}", lambda: view(n), timeout_s=10)
        assert sorted(parts) == list(range(PARTITIONS)), (n, parts)
        for p, info in parts.items():
            assert sorted(info.replicas) == cluster.ids, (n, p, info)


def check_told(topic: str, recs, told) -> dict[tuple[int, int], object]:
    """Each partition's records were told the offsets 0..n-1, each offset once; returns
    (partition, offset) -> record. A client that retries a refused batch while later ones
    are in flight (not idempotent, several requests in flight) may write them in another
    order than it produced them (Kafka allows that); the count is printed."""
    at = {}
    for p in range(PARTITIONS):
        mine = [(r, t) for r, t in zip(recs, told) if r.partition == p]
        offsets = [t[1] for _, t in mine]
        assert all(t[0] == p for _, t in mine), f"{topic}/{p}: a record was told another partition"
        assert sorted(offsets) == list(range(len(mine))), (
            f"{topic}/{p}: offsets told are not 0..{len(mine) - 1} once each")
        out_of_order = sum(1 for k, o in enumerate(offsets) if o != k)
        if out_of_order:
            print(f"{topic}/{p}: {out_of_order} records written out of production order (client retries)")
        at.update({(p, o): r for r, (_, o) in mine})
    return at


def check_read(topic: str, how: str, at: dict, ends: dict[int, int], got: dict[int, list]) -> None:
    """A consumer read each partition's offsets 0..end-1 once, in order, each record as told."""
    for p in range(PARTITIONS):
        assert [g.offset for g in got[p]] == list(range(ends[p])), f"{topic}/{p} read by {how}"
        for g in got[p]:
            r = at[(p, g.offset)]
            assert (g.key, g.value, g.headers, g.timestamp_ms) == \
                (r.key, r.value, r.headers, r.timestamp_ms), (topic, how, p, g.offset)


def read_back_everywhere(cluster: Cluster, driver_cls, topic: str, recs, told) -> None:
    """The client's consumer bootstrapped at each broker; a confluent-kafka consumer in each
    broker's rack, which fetches from that broker's replicas (followers included, KIP-392);
    then every replica's log read directly. Every record once, at the offset it was told,
    identical (key, value, headers, timestamp)."""
    at = check_told(topic, recs, told)
    ends = {p: sum(1 for r in recs if r.partition == p) for p in range(PARTITIONS)}
    # librdkafka's watermark query is one request without a retry: wait until leaders have
    # settled on the preferred replicas (they move there after creation).
    wait_balanced(cluster, topic)
    for n in cluster.ids:
        driver = driver_cls(cluster.bootstrap(n))
        begins, got_ends = driver.list_offsets(topic, range(PARTITIONS))
        assert (begins, got_ends) == ({p: 0 for p in ends}, ends), (n, begins, got_ends)
        check_read(topic, f"{driver.name} bootstrapped at node {n}", at, ends,
                   driver.consume(topic, ends, timeout_s=CONSUME_TIMEOUT_S))
    leaders = wait_balanced(cluster, topic)
    for n in cluster.ids:
        got, lines = confluent_consume_in_rack(cluster.bootstrap(n), cluster.rack(n), topic, ends,
                                               timeout_s=CONSUME_TIMEOUT_S)
        check_read(topic, f"rack of node {n}", at, ends, got)
        # librdkafka moved every partition node n follows to node n (preferred read replica).
        moved = {int(m[2]) for m in (MIGRATED.search(line) for line in lines)
                 if m and m[1] == topic and m[4] == str(n)}
        followed = {p for p, info in leaders.items() if info.leader != n}
        assert followed <= moved, (f"consumer in node {n}'s rack did not fetch {sorted(followed - moved)} "
                                   f"from node {n}: {lines[:6]}")
    logs = wait_replicas_equal(cluster, topic, PARTITIONS, at_least=ends)
    for p, batches in logs.items():
        assert batches[-1].last_offset + 1 == ends[p], (topic, p)
        for offset, key, value, headers in records_by_offset(batches):
            r = at[(p, offset)]
            assert (key, value, tuple(headers)) == (r.key, r.value, r.headers), (topic, p, offset)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("client", list(RF3_DRIVERS))
def test_client_roundtrip_through_every_replica(cluster, client):
    driver_cls = RF3_DRIVERS[client]
    topic = f"rf3-{client}"
    # Created and produced through the brokers of the whole cluster (any one may be asked).
    driver = driver_cls(cluster.bootstrap())
    driver.create_topics([topic], PARTITIONS)
    check_metadata(cluster, topic)
    recs = make_records(topic, RECORDS, partitions=PARTITIONS)
    t0 = time.monotonic()
    told = driver.produce(topic, recs, acks="all")
    produced_s = time.monotonic() - t0
    print(f"{client}: {RECORDS} records acks=all to 6 partitions x RF 3 in {produced_s:.1f} s")
    read_back_everywhere(cluster, driver_cls, topic, recs, told)


@pytest.mark.timeout(200)
def test_kafkajs_roundtrip_through_every_replica(cluster, tmp_path):
    kafkajs_dir()  # installed (or the test is skipped with the reason)
    topic = "rf3-kafkajs"
    recs = make_records(topic, RECORDS, partitions=PARTITIONS)
    brokers = [cluster.bootstrap(n) for n in cluster.ids]
    told = kafkajs_create_and_produce(brokers, topic, PARTITIONS, recs, tmp_path)
    check_metadata(cluster, topic)
    # kafkajs' consumer needs consumer groups, which the broker does not have yet:
    # confluent-kafka reads back through each broker, and every replica is read directly.
    read_back_everywhere(cluster, ConfluentRF3, topic, recs, told)
