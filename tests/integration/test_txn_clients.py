"""Transactions with real clients on a 3-node cluster: committed and aborted transactions
across partitions led by different nodes (markers over the peer transport), read_committed
consumers that see exactly the committed records, offsets sent in a transaction that count
only once it commits; and the coordinator's refusals with Kafka's codes (raw wire)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.cluster.conftest import cluster_factory  # noqa: F401  (the fixture, by PID)
from chronik_trio.group import partition_for
from tests.kafka_wire import NONE, KafkaWire, Record, build_batch

pytestmark = pytest.mark.timeout(240)

CONFIG = ("transaction_state_log_num_partitions = 3\noffsets_topic_num_partitions = 3\n"
          "group_initial_rebalance_delay_ms = 0\ntransaction_max_timeout_ms = 120000\n")
PARTITIONS = 3
FIND_COORDINATOR, INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, END_TXN = 10, 22, 24, 26
OFFSET_FETCH, ADD_OFFSETS_TO_TXN, TXN_OFFSET_COMMIT, UNSTABLE_OFFSET_COMMIT = 9, 25, 28, 88
DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 65, 66
INVALID_TXN_STATE, INVALID_PRODUCER_ID_MAPPING, INVALID_TRANSACTION_TIMEOUT = 48, 49, 50
PRODUCER_FENCED, TRANSACTIONAL_ID_NOT_FOUND, NOT_COORDINATOR = 90, 105, 16
INVALID_TOPIC_EXCEPTION, CONCURRENT_TRANSACTIONS = 17, 51


def _bootstrap(cluster) -> str:
    return ",".join(f"127.0.0.1:{cluster.nodes[n].port}" for n in cluster.ids)


def _create(cluster, *topics: str) -> None:
    with cluster.connect(1) as wire:
        assert wire.create_topics(list(topics), partitions=PARTITIONS) == {t: 0 for t in topics}


def _read_all(bootstrap: str, topic: str, isolation: str, want: int, timeout_s: float = 60.0) -> list[str]:
    """Every value of topic from the start, as a consumer of that isolation level sees it,
    until `want` values (then a little longer, to catch extra ones) or the timeout."""
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "group.id": f"reader-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": isolation})
    consumer.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + timeout_s
    settle = None
    try:
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value().decode())
            if len(values) >= want and settle is None:
                settle = time.monotonic() + 2.0
    finally:
        consumer.close()
    return values


def test_confluent_kafka_commits_aborts_and_sends_offsets(cluster_factory):
    from confluent_kafka import Consumer, Producer, TopicPartition
    cluster = cluster_factory(3, config_text=CONFIG).start()
    bootstrap = _bootstrap(cluster)
    _create(cluster, "txn-in", "txn-out")
    producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "transactional.id": "ck-txn", "transaction.timeout.ms": 60000})
    producer.init_transactions(60)
    committed = []
    for round_, outcome in enumerate(["commit", "abort", "commit"]):
        producer.begin_transaction()
        for i in range(30):
            value = f"{outcome}-{round_}-{i}"
            producer.produce("txn-out", value=value.encode(), partition=i % PARTITIONS)
            if outcome == "commit":
                committed.append(value)
        if outcome == "commit":
            producer.commit_transaction(60)
        else:
            assert producer.flush(30) == 0  # written (librdkafka's abort drops what is still queued)
            producer.abort_transaction(60)
    seen = _read_all(bootstrap, "txn-out", "read_committed", len(committed))
    assert sorted(seen) == sorted(committed)  # no aborted record, no committed one lost, none twice
    assert len(_read_all(bootstrap, "txn-out", "read_uncommitted", 90)) == 90  # the aborted ones were written

    # consume-transform-produce: offsets sent in a transaction count once it commits
    plain = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "acks": "all"})
    for i in range(20):
        plain.produce("txn-in", value=f"in-{i}".encode(), partition=i % PARTITIONS)
    assert plain.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": "ctp",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe(["txn-in"])
    try:
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 20 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
        assert len(got) == 20
        tps = [TopicPartition("txn-in", p) for p in range(PARTITIONS)]
        ends = {p: max(m.offset() for m in got if m.partition() == p) + 1 for p in range(PARTITIONS)}

        producer.begin_transaction()  # an aborted attempt first: its offsets must not count
        for m in got:
            producer.produce("txn-out", value=b"x-" + m.value(), partition=m.partition())
        assert producer.flush(30) == 0
        producer.send_offsets_to_transaction([TopicPartition("txn-in", p, ends[p]) for p in ends],
                                             consumer.consumer_group_metadata(), 30)
        producer.abort_transaction(60)
        assert all(tp.offset < 0 for tp in consumer.committed(tps, 30))

        producer.begin_transaction()
        for m in got:
            producer.produce("txn-out", value=b"t-" + m.value(), partition=m.partition())
        producer.send_offsets_to_transaction([TopicPartition("txn-in", p, ends[p]) for p in ends],
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
        assert {tp.partition: tp.offset for tp in consumer.committed(tps, 30)} == ends
    finally:
        consumer.close()
    out = _read_all(bootstrap, "txn-out", "read_committed", len(committed) + 20)
    assert sorted(v for v in out if v.startswith("t-")) == sorted(f"t-in-{i}" for i in range(20))
    assert not [v for v in out if v.startswith(("x-", "abort-"))]


def test_aiokafka_and_kafka_python_transactions(cluster_factory):
    import aiokafka
    import kafka
    cluster = cluster_factory(3, config_text=CONFIG).start()
    bootstrap = _bootstrap(cluster)
    _create(cluster, "aio-out")

    async def aio() -> None:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aio-txn",
                                             enable_idempotence=True)
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(10):
                    await producer.send("aio-out", f"aio-commit-{i}".encode(), partition=i % PARTITIONS)
            await producer.begin_transaction()
            for i in range(10):
                await producer.send("aio-out", f"aio-abort-{i}".encode(), partition=i % PARTITIONS)
            await producer.abort_transaction()
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer("aio-out", bootstrap_servers=bootstrap, isolation_level="read_committed",
                                             auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            seen: list[str] = []
            deadline, settle = time.monotonic() + 30, None
            while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
                batch = await consumer.getmany(timeout_ms=500)
                seen += [m.value.decode() for msgs in batch.values() for m in msgs]
                if len(seen) >= 10 and settle is None:
                    settle = time.monotonic() + 1.5
            assert sorted(seen) == sorted(f"aio-commit-{i}" for i in range(10))
        finally:
            await consumer.stop()

    asyncio.run(aio())

    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-txn")
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(10):
        producer.send("aio-out", f"kp-commit-{i}".encode(), partition=i % PARTITIONS)
    producer.commit_transaction()
    producer.begin_transaction()
    for i in range(10):
        producer.send("aio-out", f"kp-abort-{i}".encode(), partition=i % PARTITIONS)
    producer.abort_transaction()
    producer.close()
    seen = _read_all(bootstrap, "aio-out", "read_committed", 20)
    assert sorted(seen) == sorted([f"aio-commit-{i}" for i in range(10)] + [f"kp-commit-{i}" for i in range(10)])


def _coordinator_wire(cluster, key: str, key_type: int = 1) -> KafkaWire:
    with cluster.connect(1) as wire:
        deadline = time.monotonic() + 30
        while True:
            r = wire.request(FIND_COORDINATOR, {"key": key, "key_type": key_type}, version=3)
            if r.error_code == NONE:
                break
            assert time.monotonic() < deadline, r
            time.sleep(0.1)
    return KafkaWire.connect(r.port)


def test_bad_input_gets_kafkas_codes(cluster_factory):
    cluster = cluster_factory(3, config_text=CONFIG).start()
    _create(cluster, "bad-out")
    with _coordinator_wire(cluster, "bad-txn") as wire:
        def init(timeout_ms: int = 60000, pid: int = -1, epoch: int = -1):
            return wire.request(INIT_PRODUCER_ID, {"transactional_id": "bad-txn", "transaction_timeout": timeout_ms,
                                                   "producer_id": pid, "producer_epoch": epoch})

        def add(pid: int, epoch: int, txn: str = "bad-txn"):
            r = wire.request(ADD_PARTITIONS_TO_TXN, {
                "v3_and_below_transactional_id": txn, "v3_and_below_producer_id": pid,
                "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": [{"name": "bad-out", "partitions": [0]}]},
                version=3)
            return r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code

        def end(pid: int, epoch: int, commit: bool, txn: str = "bad-txn"):
            # CONCURRENT_TRANSACTIONS (retriable) while the previous EndTxn's markers are being
            # written: retried, as clients do
            deadline = time.monotonic() + 30
            while True:
                code = wire.request(END_TXN, {"transactional_id": txn, "producer_id": pid, "producer_epoch": epoch,
                                              "committed": commit}, version=3).error_code
                if code != CONCURRENT_TRANSACTIONS or time.monotonic() > deadline:
                    return code
                time.sleep(0.05)

        assert init(timeout_ms=120001).error_code == INVALID_TRANSACTION_TIMEOUT  # over transaction.max.timeout.ms
        first = init()
        assert first.error_code == NONE
        pid, epoch = first.producer_id, first.producer_epoch
        assert end(pid, epoch, True) == INVALID_TXN_STATE  # nothing to commit: Empty
        assert end(pid, epoch, True, txn="never-seen") in (INVALID_PRODUCER_ID_MAPPING, NOT_COORDINATOR)
        assert add(pid + 1, epoch) == INVALID_PRODUCER_ID_MAPPING
        assert add(pid, epoch) == NONE
        # A new holder: the first one's transaction is aborted with a bumped epoch (which
        # fences it on the partitions), then the new holder gets the next epoch.
        second = init()
        assert second.error_code == NONE and (second.producer_id, second.producer_epoch) == (pid, epoch + 2)
        assert add(pid, epoch) == PRODUCER_FENCED  # the stale epoch
        assert end(pid, epoch, True) == PRODUCER_FENCED
        epoch += 2
        assert add(pid, epoch) == NONE
        r = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": ["bad-txn", "never-seen"]}, version=0)
        state, unknown = r.transaction_states
        assert (state.error_code, state.transaction_state, state.producer_id, state.producer_epoch) == (
            NONE, "Ongoing", pid, epoch)
        assert unknown.error_code in (TRANSACTIONAL_ID_NOT_FOUND, NOT_COORDINATOR)
        assert [(t.topic, tuple(t.partitions)) for t in state.topics] == [("bad-out", (0,))]
        r = wire.request(LIST_TRANSACTIONS, {"state_filters": ["Ongoing"], "producer_id_filters": []}, version=1)
        assert [(t.transactional_id, t.transaction_state) for t in r.transaction_states] == [("bad-txn", "Ongoing")]
        assert end(pid, epoch, False) == NONE
        assert end(pid, epoch, True) == INVALID_TXN_STATE  # commit after its abort
        assert end(pid, epoch, False) == NONE  # a retried abort

        # Offsets in a transaction: unstable while it is open, the group's once it commits
        r = wire.request(ADD_OFFSETS_TO_TXN, {"transactional_id": "bad-txn", "producer_id": pid,
                                              "producer_epoch": epoch, "group_id": "bad-group"}, version=3)
        assert r.error_code == NONE
        with _coordinator_wire(cluster, "bad-group", key_type=0) as group_wire:
            def fetch_offset():
                r = group_wire.request(OFFSET_FETCH, {"group_id": "bad-group", "require_stable": True, "topics": [
                    {"name": "bad-out", "partition_indexes": [0]}]}, version=7)
                p = r.topics[0].partitions[0]
                return p.error_code, p.committed_offset

            def stable_offset():
                # EndTxn is answered before its markers: UNSTABLE_OFFSET_COMMIT (retriable)
                # until the commit marker reaches the offsets partition, as with Kafka
                deadline = time.monotonic() + 30
                while (got := fetch_offset())[0] == UNSTABLE_OFFSET_COMMIT and time.monotonic() < deadline:
                    time.sleep(0.05)
                return got

            r = group_wire.request(TXN_OFFSET_COMMIT, {
                "transactional_id": "bad-txn", "group_id": "bad-group", "producer_id": pid, "producer_epoch": epoch,
                "topics": [{"name": "bad-out", "partitions": [{"partition_index": 0, "committed_offset": 42,
                                                                "committed_metadata": ""}]}]}, version=2)
            assert r.topics[0].partitions[0].error_code == NONE
            assert fetch_offset() == (UNSTABLE_OFFSET_COMMIT, -1)
            assert end(pid, epoch, True) == NONE
            assert stable_offset() == (NONE, 42)
            # Transaction version 2: TxnOffsetCommit v5 without AddOffsetsToTxn adds the
            # group's offsets partition to the transaction itself (at the coordinator).
            r = group_wire.request(TXN_OFFSET_COMMIT, {
                "transactional_id": "bad-txn", "group_id": "bad-group", "producer_id": pid, "producer_epoch": epoch,
                "member_id": "", "generation_id": -1, "group_instance_id": None,
                "topics": [{"name": "bad-out", "partitions": [{"partition_index": 0, "committed_offset": 43,
                                                                "committed_leader_epoch": -1,
                                                                "committed_metadata": ""}]}]}, version=5)
            assert r.topics[0].partitions[0].error_code == NONE
            (state,) = wire.request(DESCRIBE_TRANSACTIONS, {"transactional_ids": ["bad-txn"]},
                                    version=0).transaction_states
            assert state.transaction_state == "Ongoing"
            assert [t.topic for t in state.topics] == ["__consumer_offsets"]
            assert fetch_offset() == (UNSTABLE_OFFSET_COMMIT, -1)  # not the stable 42, as Kafka
            assert end(pid, epoch, True) == NONE
            assert stable_offset() == (NONE, 43)
        # __transaction_state's replicas keep the coordinator's store, not a partition
        # transaction table: read_committed reads of it are served (the LSO is the high
        # watermark), and clients cannot write it.
        txn_partition = partition_for("bad-txn", PARTITIONS)
        body = wire.fetch_request_body("__transaction_state", txn_partition, 0)
        r = wire.request(1, {**body, "isolation_level": 1})
        (part,) = r.responses[0].partitions
        assert part.error_code == NONE and part.last_stable_offset == part.high_watermark > 0
        produced = wire.produce("__transaction_state", txn_partition, build_batch([Record(None, b"x")]))
        assert produced.error_code == INVALID_TOPIC_EXCEPTION


def test_kafkajs_transaction_with_send_offsets(cluster_factory, tmp_path):
    import json
    import shutil
    import subprocess

    from confluent_kafka import Consumer, TopicPartition

    from tests.kafkajs import kafkajs_dir
    js = kafkajs_dir()
    cluster = cluster_factory(3, config_text=CONFIG).start()
    bootstrap = _bootstrap(cluster)
    _create(cluster, "js-out", "js-in")
    spec = {"brokers": bootstrap.split(","), "transactionalId": "js-txn", "topic": "js-out", "partitions": PARTITIONS,
            "commit": [f"js-commit-{i}" for i in range(12)], "abort": [f"js-abort-{i}" for i in range(12)],
            "offsets": {"group": "js-group", "topic": "js-in", "partition": 1, "offset": 7}}
    spec_path, out_path = tmp_path / "spec.json", tmp_path / "out.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([shutil.which("node"), str(js / "kafkajs_txn.js"), str(spec_path), str(out_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out_path.read_text()) == {"ok": True}
    assert sorted(_read_all(bootstrap, "js-out", "read_committed", 12)) == sorted(spec["commit"])
    consumer = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": "js-group"})
    try:
        (tp,) = consumer.committed([TopicPartition("js-in", 1)], 30)
        assert tp.offset == 7
    finally:
        consumer.close()
