"""The transaction coordinator between a transaction's PrepareCommit and its Complete record
(3 nodes, raw wire and confluent-kafka).

1. A coordinator that fails between PrepareCommit and its markers: the next leader of its
   `__transaction_state` partition finds the prepared transaction when it loads and writes
   the markers itself. The partition written to is led by another node X than the
   coordinator C; X is paused (SIGSTOP) so the markers cannot land; EndTxn commits
   PrepareCommit and answers; C is SIGKILLed; X resumes. The new coordinator (X or the third
   node) must commit the transaction: a read_committed reader then sees its records, and
   DescribeTransactions says CompleteCommit.

2. EndTxn is answered once its PrepareCommit record is durable, before the markers (as
   Kafka's coordinator answers). The transaction writes to a partition P whose two replicas
   are the coordinator C and another node Y; Y is paused before the commit, so P has no
   quorum and its commit marker cannot be written. commit_transaction() returns; the
   coordinator's /metrics count the EndTxn answered and no marker written,
   DescribeTransactions says PrepareCommit; a read_committed Fetch of P (from C, its leader)
   serves nothing of the transaction (the last stable offset stays at its first record)
   while read_uncommitted sees all 5 records; the id's next transaction waits
   (AddPartitionsToTxn answered CONCURRENT_TRANSACTIONS, the client's next record not
   delivered). Y resumes: the marker lands, the transaction completes, the next one goes
   through, and read_committed readers see both whole."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from chronik_trio.tools.bench_local import scrape

from tests.cluster.conftest import cluster_factory  # noqa: F401  (the fixture, by PID)
from tests.kafka_wire import NONE, KafkaWire, Record, build_batch, parse_batches

pytestmark = pytest.mark.timeout(240)

CONFIG = "transaction_state_log_num_partitions = 2\noffsets_topic_num_partitions = 2\n"
FIND_COORDINATOR, INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, END_TXN, PRODUCE, FETCH = 10, 22, 24, 26, 0, 1
DESCRIBE_TRANSACTIONS = 65
TXN_ID, TOPIC = "failover-txn", "failover-out"
TRANSACTIONAL = 0x10


def _until(what: str, probe, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = probe()
        except (OSError, ConnectionError, TimeoutError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _coordinator(cluster, via: int, transactional_id: str = TXN_ID) -> int:
    def probe():
        with cluster.connect(via) as wire:
            r = wire.request(FIND_COORDINATOR, {"key": transactional_id, "key_type": 1}, version=3)
            return r.node_id if r.error_code == NONE else None
    return _until("the transaction coordinator", probe)


def _leader(cluster, via: int, partition: int) -> int:
    def probe():
        md = cluster.metadata(via, [TOPIC])
        (t,) = md.topics
        (p,) = [p for p in t.partitions if p.partition_index == partition]
        return p.leader_id if p.leader_id > 0 else None
    return _until("a leader", probe)


def test_a_new_coordinator_writes_the_markers_of_a_prepared_transaction(cluster_factory):
    cluster = cluster_factory(3, config_text=CONFIG).start()
    with cluster.connect(1) as wire:
        assert wire.create_topics([TOPIC], partitions=3) == {TOPIC: 0}
    coordinator = _coordinator(cluster, 1)
    partition = next(p for p in range(3) if _leader(cluster, 1, p) != coordinator)
    leader = _leader(cluster, 1, partition)
    third = next(n for n in cluster.ids if n not in (coordinator, leader))

    with cluster.connect(coordinator) as wire:
        r = wire.request(INIT_PRODUCER_ID, {"transactional_id": TXN_ID, "transaction_timeout": 120000,
                                            "producer_id": -1, "producer_epoch": -1})
        assert r.error_code == NONE, r
        pid, epoch = r.producer_id, r.producer_epoch
        r = wire.request(ADD_PARTITIONS_TO_TXN, {
            "v3_and_below_transactional_id": TXN_ID, "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": [{"name": TOPIC, "partitions": [partition]}]},
            version=3)
        assert r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == NONE
    batch = build_batch([Record(None, b"v%d" % i) for i in range(5)], producer_id=pid, producer_epoch=epoch,
                        base_sequence=0, attributes=TRANSACTIONAL)
    with cluster.connect(leader) as wire:
        r = wire.request(PRODUCE, {"transactional_id": TXN_ID, "acks": -1, "timeout": 10000, "topic_data": [
            {"name": TOPIC, "partition_data": [{"index": partition, "records": batch}]}]}, version=9)
        assert r.responses[0].partition_responses[0].error_code == NONE, r

    cluster.pause(leader)  # the markers cannot land
    try:
        with cluster.connect(coordinator) as wire:
            r = wire.request(END_TXN, {"transactional_id": TXN_ID, "producer_id": pid, "producer_epoch": epoch,
                                       "committed": True}, version=3)
            assert r.error_code == NONE, r  # PrepareCommit is committed: the outcome is decided
            r = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [TXN_ID]}, version=0)
            assert r.transaction_states[0].transaction_state == "PrepareCommit"
        cluster.kill(coordinator)
    finally:
        cluster.resume(leader)

    new = _coordinator(cluster, third)
    assert new != coordinator

    def committed_values():
        owner = _leader(cluster, third, partition)
        with cluster.connect(owner) as wire:
            body = wire.fetch_request_body(TOPIC, partition, 0)
            body["isolation_level"] = 1
            p = wire.request(FETCH, body).responses[0].partitions[0]
            if p.error_code != NONE or p.last_stable_offset < 6:  # 5 records + the marker
                return None
            return [r.value for b in parse_batches(p.records or b"") for r in b.records
                    if not b.attributes & 0x20]
    assert _until("the commit marker", committed_values) == [b"v%d" % i for i in range(5)]

    def complete():
        with cluster.connect(new) as wire:
            r = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [TXN_ID]}, version=0)
            return r.transaction_states[0].transaction_state == "CompleteCommit"
    _until("CompleteCommit", complete)
    assert "resuming the markers of 1 prepared transaction" in cluster.log(new)
    cluster.restart(coordinator)


# --- 2. the early answer ---------------------------------------------------------------------

CREATE_TOPICS, CONCURRENT_TRANSACTIONS = 19, 51
EARLY_TXN_ID, BLOCKED, NEXT = "early-txn", "early-blocked", "early-next"


def _txn_metrics(cluster, n: int) -> dict[str, float]:
    text = scrape(f"127.0.0.1:{cluster.raft_ports[n]}")
    out = {m.group(1): float(m.group(2))
           for m in re.finditer(r"^chronik_txn_(end_txn|markers|completion)_seconds_count (\S+)$", text, re.M)}
    out.update({m.group(1): float(m.group(2)) for m in re.finditer(
        r'^chronik_txn_requests_total\{kind="(\w+)"\} (\S+)$', text, re.M)})
    return out


def _describe(cluster, n: int):
    with cluster.connect(n) as wire:
        r = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [EARLY_TXN_ID]}, version=0)
    (state,) = r.transaction_states
    assert state.error_code == NONE, state
    return state


def _read_committed(bootstrap: str, topics: list[str], want: int, timeout_s: float = 60.0) -> list[str]:
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "group.id": f"reader-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.subscribe(topics)
    values: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(values) < want:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value().decode())
    finally:
        consumer.close()
    return values


def test_end_txn_is_answered_before_its_markers_and_the_next_transaction_waits(cluster_factory):
    from confluent_kafka import Producer

    cluster = cluster_factory(3, config_text=CONFIG).start()

    c = _coordinator(cluster, 1, EARLY_TXN_ID)
    y = next(n for n in cluster.ids if n != c)
    z = next(n for n in cluster.ids if n not in (c, y))
    with cluster.connect(c) as wire:
        r = wire.request(CREATE_TOPICS, {"topics": [
            {"name": BLOCKED, "num_partitions": -1, "replication_factor": -1,
             "assignments": [{"partition_index": 0, "broker_ids": [c, y]}]},  # C leads (first replica)
            {"name": NEXT, "num_partitions": -1, "replication_factor": -1,
             "assignments": [{"partition_index": 0, "broker_ids": [c, z, y]}]}], "timeout": 10000})
        assert [t.error_code for t in r.topics] == [NONE, NONE], r

    def led_by_c():
        md = cluster.metadata(c, [BLOCKED, NEXT])
        return all(t.partitions[0].leader_id == c for t in md.topics)
    _until("both partitions led by the coordinator", led_by_c)

    bootstrap = ",".join(f"127.0.0.1:{cluster.nodes[n].port}" for n in cluster.ids)
    producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "transactional.id": EARLY_TXN_ID, "transaction.timeout.ms": 120000, "linger.ms": 5})
    producer.init_transactions(60)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(BLOCKED, b"first-%d" % i, partition=0)
    assert producer.flush(60) == 0

    # The client learns NEXT's leader now: a metadata request it sent to Y while Y is paused
    # would wait out socket.timeout.ms (60 s), and its add for NEXT with it.
    assert NEXT in producer.list_topics(NEXT, timeout=30).topics
    cluster.pause(y)  # P has 1 replica of 2: its commit marker cannot be written
    try:
        producer.commit_transaction(60)
        # Answered with the marker not written: the coordinator observed one EndTxn answer and
        # no marker; the transaction is prepared, not complete.
        counts = _txn_metrics(cluster, c)
        assert counts.get("end_txn") == 1 and counts.get("markers") == 0 and counts.get("completion") == 0, counts
        state = _describe(cluster, c)
        assert state.transaction_state == "PrepareCommit" and [t.topic for t in state.topics] == [BLOCKED]

        # read_committed sees nothing of it before the marker; read_uncommitted all 5.
        with cluster.connect(c) as wire:
            body = wire.fetch_request_body(BLOCKED, 0, 0)
            body["isolation_level"] = 1
            p = wire.request(FETCH, body).responses[0].partitions[0]
            assert p.error_code == NONE and p.last_stable_offset == 0 and p.high_watermark == 5, p
            assert not [r for b in parse_batches(p.records or b"") for r in b.records]
            p = wire.request(FETCH, wire.fetch_request_body(BLOCKED, 0, 0)).responses[0].partitions[0]
            assert len([r for b in parse_batches(p.records or b"") for r in b.records]) == 5

        # The next transaction waits for the completion: its add is CONCURRENT_TRANSACTIONS
        # (retriable), and the client's record is not delivered meanwhile.
        with cluster.connect(c) as wire:
            r = wire.request(ADD_PARTITIONS_TO_TXN, {
                "v3_and_below_transactional_id": EARLY_TXN_ID, "v3_and_below_producer_id": state.producer_id,
                "v3_and_below_producer_epoch": state.producer_epoch,
                "v3_and_below_topics": [{"name": NEXT, "partitions": [0]}]}, version=3)
            code = r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
            assert code == CONCURRENT_TRANSACTIONS, r
        producer.begin_transaction()
        producer.produce(NEXT, b"second", partition=0)
        assert producer.flush(3) == 1  # not delivered: the partition cannot join the transaction yet
        assert _describe(cluster, c).transaction_state == "PrepareCommit"
        # The client's own add waits up to a second on the completion before it is answered
        # CONCURRENT_TRANSACTIONS (and is counted then); a loaded machine may send it late.
        # (_txn_metrics' client_add counts it on arrival.)
        deadline = time.monotonic() + 30
        while (counts := _txn_metrics(cluster, c)).get("concurrent_transactions", 0) < 2:
            assert time.monotonic() < deadline, f"the client's add not answered CONCURRENT_TRANSACTIONS: {counts}"
            time.sleep(0.2)
        assert _describe(cluster, c).transaction_state == "PrepareCommit"
    finally:
        cluster.resume(y)

    # The marker lands, the transaction completes, the waiting one proceeds.
    assert producer.flush(60) == 0
    producer.commit_transaction(60)
    _until("both transactions complete", lambda: _describe(cluster, c).transaction_state == "CompleteCommit"
           and _txn_metrics(cluster, c).get("completion") == 2)
    counts = _txn_metrics(cluster, c)
    assert counts["end_txn"] == 2 and counts["markers"] == 2, counts
    values = _read_committed(bootstrap, [BLOCKED, NEXT], 6)
    assert sorted(values) == sorted([f"first-{i}" for i in range(5)] + ["second"]), values


PIPELINE_TXN_ID, PIPELINED = "pipelined-txn", "pipelined-out"


def test_pipelined_first_produces_of_a_transaction_are_appended_in_order(cluster_factory):
    """3. KIP-890 part 2 (Produce v12): a transaction's first produce to a partition makes its
    leader ask the coordinator to add the partition. A client pipelines produces (the Java
    client up to five a connection); every one of them that comes before the first is
    appended needs the coordinator too, and their answers come back in any order. The
    partition must append them in the order they came: else a later batch goes first and
    the earlier ones are refused OUT_OF_ORDER_SEQUENCE ("sequence 0 does not follow 3", as a
    Java client saw). The leader here is not the coordinator, so each add is a peer RPC;
    five rounds of five pipelined produces, each round a new TV2 transaction (EndTxn v5)."""
    cluster = cluster_factory(3, config_text=CONFIG).start()

    c = _coordinator(cluster, 1, PIPELINE_TXN_ID)
    leader = next(n for n in cluster.ids if n != c)
    with cluster.connect(c) as wire:
        r = wire.request(CREATE_TOPICS, {"topics": [
            {"name": PIPELINED, "num_partitions": -1, "replication_factor": -1,
             "assignments": [{"partition_index": 0, "broker_ids": [leader] + [n for n in cluster.ids if n != leader]}]}],
            "timeout": 10000})
        assert [t.error_code for t in r.topics] == [NONE], r
    _until("the partition led by its first replica",
           lambda: cluster.metadata(c, [PIPELINED]).topics[0].partitions[0].leader_id == leader)

    with cluster.connect(c) as wire:
        r = _until("a producer id", lambda: (lambda r: r if r.error_code == NONE else None)(wire.request(
            INIT_PRODUCER_ID, {"transactional_id": PIPELINE_TXN_ID, "transaction_timeout": 60000,
                               "producer_id": -1, "producer_epoch": -1})))
        pid, epoch = int(r.producer_id), int(r.producer_epoch)
    expected = []
    for round_ in range(5):
        with cluster.connect(leader) as wire:
            for k in range(5):
                batch = build_batch([Record(None, b"r%d-%d-%d" % (round_, k, j)) for j in range(2)],
                                    producer_id=pid, producer_epoch=epoch, base_sequence=2 * k,
                                    attributes=TRANSACTIONAL)
                wire.send(PRODUCE, 12, {"transactional_id": PIPELINE_TXN_ID, "acks": -1, "timeout": 10000,
                                        "topic_data": [{"name": PIPELINED, "partition_data": [
                                            {"index": 0, "records": batch}]}]})
            answers = [wire.recv()[1].responses[0].partition_responses[0] for _ in range(5)]
        assert [int(p.error_code) for p in answers] == [NONE] * 5, answers
        offsets = [int(p.base_offset) for p in answers]
        assert offsets == sorted(offsets) and len(set(offsets)) == 5, offsets
        expected += [b"r%d-%d-%d" % (round_, k, j) for k in range(5) for j in range(2)]
        with cluster.connect(c) as wire:
            r = _until("EndTxn", lambda: (lambda r: r if r.error_code == NONE else None)(wire.request(
                END_TXN, {"transactional_id": PIPELINE_TXN_ID, "producer_id": pid, "producer_epoch": epoch,
                          "committed": True}, version=5)))
            epoch = int(r.producer_epoch)  # TV2: a new epoch for the next transaction
    _until("the last transaction complete", lambda: _describe_id(cluster, c, PIPELINE_TXN_ID) == "CompleteCommit")
    with cluster.connect(leader) as wire:
        body = wire.fetch_request_body(PIPELINED, 0, 0)
        body["isolation_level"] = 1
        p = wire.request(FETCH, body).responses[0].partitions[0]
        got = [r.value for b in parse_batches(p.records or b"") if not b.attributes & 0x20 for r in b.records]
    assert got == expected


def _describe_id(cluster, n: int, transactional_id: str) -> str:
    with cluster.connect(n) as wire:
        (state,) = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": [transactional_id]},
                                version=0).transaction_states
    return state.transaction_state
