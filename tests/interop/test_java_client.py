"""Apache Kafka's Java client (kafka-clients 4.x, pinned in tests/java/pom.xml) against real
`chronik-trio node` processes: the producer with Kafka 4's defaults (acks=all, idempotence
on), the consumer in a classic-protocol group committing its offsets, the AdminClient
(topics, configs, groups, cluster), on one node and on a 3-node cluster, and a producer that
goes on through the SIGKILL of its partition's leader without losing or duplicating anything
it was told was written. The programs are tests/java/src/main/java/chronik/clients/*.java;
each prints JSON lines, asserted on here."""

from __future__ import annotations

import collections
import subprocess

import pytest

from tests.brokers import fetch_session_counters
from nodeharness.health import fetch_metrics
from tests.interop.jvm import JavaKit, json_lines
from tests.replication.cluster import Cluster, records_by_offset, wait_for, wait_replicas_equal

RECORDS = 1000
JAVA_TIMEOUT_S = 120


def produce(java: JavaKit, bootstrap: str, topic: str, count: int, prefix: str) -> dict[str, tuple[int, int]]:
    """value -> (partition, offset) as the producer was told; every record must be acked."""
    lines = java.program("Produce", ["--bootstrap", bootstrap, "--topic", topic, "--count", str(count),
                                     "--prefix", prefix, "--each"], timeout_s=JAVA_TIMEOUT_S)
    summary = lines[-1]
    assert summary["produced"] == count and summary["errors"] == [], summary
    return {line["acked"]: (line["partition"], line["offset"]) for line in lines[:-1]}


def consume(java: JavaKit, bootstrap: str, topic: str, group: str, expect: int,
            *extra: str) -> tuple[list[dict], dict]:
    """(records, summary) read by one group member from the earliest offsets."""
    lines = java.program("Consume", ["--bootstrap", bootstrap, "--topic", topic, "--group", group,
                                     "--expect", str(expect), "--each", "--timeout-s", "60", *extra],
                         timeout_s=JAVA_TIMEOUT_S)
    return lines[:-1], lines[-1]


def check_read_as_told(told: dict[str, tuple[int, int]], records: list[dict], summary: dict) -> None:
    """Every acknowledged record read exactly once at the offset its producer was told, and
    the group's committed offsets at the end of each partition."""
    got = [(r["value"], (r["partition"], r["offset"])) for r in records]
    assert len(got) == len(told), (len(got), len(told))
    assert dict(got) == told
    ends: dict[str, int] = {}
    for partition, offset in told.values():
        ends[str(partition)] = max(ends.get(str(partition), 0), offset + 1)
    assert summary["committed"] == ends, summary


def admin(java: JavaKit, bootstrap: str, *ops: str, check: bool = True) -> list[dict]:
    return java.program("Admin", ["--bootstrap", bootstrap, *ops], timeout_s=JAVA_TIMEOUT_S, check=check)


@pytest.mark.timeout(240)
def test_java_producer_and_group_consumer_on_one_node(java, node):
    # Auto-created with the node's 3 partitions; the producer spreads keys over them.
    told = produce(java, node.bootstrap, "java-one", RECORDS, "one")
    assert {p for p, _ in told.values()} == {0, 1, 2}
    records, summary = consume(java, node.bootstrap, "java-one", "java-one-group", RECORDS)
    assert summary["assigned"] == 3
    check_read_as_told(told, records, summary)
    # The commits are what the coordinator returns to an AdminClient too.
    (offsets,) = admin(java, node.bootstrap, "group-offsets:java-one-group")
    assert offsets["offsets"] == {f"java-one-{p}": o for p, o in summary["committed"].items()}


@pytest.mark.timeout(240)
def test_java_consumer_reads_many_partitions_through_one_fetch_session(java, node):
    """Kafka's consumer opens a fetch session (KIP-227) and then sends incremental fetches;
    the node serves them (its counters say so) and every record is read once, in order."""
    topic = "java-sessions"
    (created,) = admin(java, node.bootstrap, f"create:{topic}:24:1")
    assert "error" not in created, created
    before = fetch_session_counters(node)
    told = produce(java, node.bootstrap, topic, RECORDS, "sessions")
    assert len({p for p, _ in told.values()}) > 12
    # Byte limits far under what is stored: many fetches, each with a few partitions' news.
    records, summary = consume(java, node.bootstrap, topic, "java-sessions-group", RECORDS,
                               "--max-partition-fetch-bytes", "512", "--fetch-max-bytes", "4096")
    check_read_as_told(told, records, summary)
    last: dict[int, int] = {}
    for r in records:  # in the order the consumer returned them: offsets rise in each partition
        assert r["offset"] > last.get(r["partition"], -1), r
        last[r["partition"]] = r["offset"]
    after = fetch_session_counters(node)
    assert after["fetch_sessions_created"] > before["fetch_sessions_created"], after
    assert after["fetch_incremental"] > before["fetch_incremental"], after
    assert after["fetch_partitions_left_out"] > before["fetch_partitions_left_out"], after
    assert after["fetch_session_errors"] == before["fetch_session_errors"], after


@pytest.mark.timeout(240)
def test_java_admin_client_on_one_node(java, node):
    topic, group = "java-admin", "java-admin-group"
    out = admin(java, node.bootstrap, f"create:{topic}:2:1", f"describe:{topic}", "list",
                f"add-partitions:{topic}:4", f"describe:{topic}", f"topic-configs:{topic}",
                "broker-configs:1", "cluster")
    by_op = [(line["op"], line) for line in out]
    assert [op for op, _ in by_op] == ["create", "describe", "list", "add-partitions", "describe",
                                       "topic-configs", "broker-configs", "cluster"], out
    described = by_op[1][1]
    assert [(p["partition"], p["leader"], p["replicas"], p["isr"]) for p in described["partitions"]] == \
        [(0, 1, [1], [1]), (1, 1, [1], [1])]
    assert topic in by_op[2][1]["topics"]
    assert [p["partition"] for p in by_op[4][1]["partitions"]] == [0, 1, 2, 3]
    assert by_op[4][1]["topic_id"] == described["topic_id"]
    assert by_op[5][1]["configs"]["cleanup.policy"] == "delete"
    assert by_op[6][1]["configs"]["num.partitions"] == "3"
    cluster = by_op[7][1]
    assert cluster["controller"] == 1 and [n["id"] for n in cluster["nodes"]] == [1]

    # A group: one member's commits, then list, describe (empty once it left) and delete.
    told = produce(java, node.bootstrap, topic, 40, "adm")
    records, summary = consume(java, node.bootstrap, topic, group, 40)
    check_read_as_told(told, records, summary)
    listed, described_group, deleted, after, topic_deleted, listed_after = admin(
        java, node.bootstrap, "groups", f"describe-group:{group}", f"delete-group:{group}", "groups",
        f"delete:{topic}", "list")
    assert {"group": group, "type": "Classic", "protocol": "consumer", "state": "Empty"} in listed["groups"]
    assert described_group["state"] == "Empty" and described_group["members"] == []
    assert described_group["coordinator"] == 1
    assert "error" not in deleted and group not in [g["group"] for g in after["groups"]]
    assert "error" not in topic_deleted and topic not in listed_after["topics"]


@pytest.mark.timeout(300)
def test_java_clients_on_three_nodes(java, cluster: Cluster):
    topic, group = "java-three", "java-three-group"
    bootstrap = cluster.bootstrap()
    created, described, info = admin(java, bootstrap, f"create:{topic}:3:3", f"describe:{topic}", "cluster")
    assert "error" not in created, created
    assert [sorted(p["replicas"]) for p in described["partitions"]] == [[1, 2, 3]] * 3
    assert sorted(n["id"] for n in info["nodes"]) == [1, 2, 3]
    told = produce(java, bootstrap, topic, RECORDS, "three")
    records, summary = consume(java, bootstrap, topic, group, RECORDS)
    check_read_as_told(told, records, summary)
    # Every replica holds what the producer was told, byte for byte the same on each node.
    logs = wait_replicas_equal(cluster, topic, 3, at_least={})
    on_disk = {value.decode(): (p, offset) for p, batches in logs.items()
               for offset, _key, value, _headers in records_by_offset(batches)}
    assert on_disk == told


def leader_of(cluster: Cluster, n: int, topic: str) -> int:
    """Partition 0's leader as node n's Metadata names it (0 while there is none)."""
    info = cluster.partitions(n, topic).get(0)
    return info.leader if info is not None and info.leader > 0 else 0


CODECS = ("gzip", "snappy", "lz4", "zstd")


@pytest.mark.timeout(240)
def test_java_producer_compresses_with_every_codec_and_the_consumer_reads_them(java, node):
    """The broker stores and serves the batches as the producer compressed them."""
    told = {}
    for codec in CODECS:
        lines = java.program("Produce", ["--bootstrap", node.bootstrap, "--topic", f"java-{codec}",
                                         "--count", "300", "--prefix", codec, "--compression", codec, "--each"],
                             timeout_s=JAVA_TIMEOUT_S)
        assert lines[-1]["produced"] == 300, lines[-1]
        told.update({line["acked"]: (f"java-{codec}", line["partition"], line["offset"]) for line in lines[:-1]})
    topics = ",".join(f"java-{codec}" for codec in CODECS)
    records, summary = consume(java, node.bootstrap, topics, "java-codecs-group", len(told))
    got = [(r["value"], (r["topic"], r["partition"], r["offset"])) for r in records]
    assert len(got) == len(told) and dict(got) == told
    assert summary["assigned"] == 3 * len(CODECS)


FAILOVER_RECORDS = 600
FAILOVER_INTERVAL_MS = 10  # about 6 s of sending, the kill early in it


@pytest.mark.timeout(300)
def test_java_producer_goes_on_through_a_leader_kill(java, cluster: Cluster, tmp_path):
    topic = "java-failover"
    (created,) = admin(java, cluster.bootstrap(), f"create:{topic}:1:3")
    assert "error" not in created, created
    leader = wait_for("a leader for the topic", lambda: leader_of(cluster, 1, topic), timeout_s=30)
    out_path = tmp_path / "produce.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(java.command("chronik.clients.Produce", [
            "--bootstrap", cluster.bootstrap(), "--topic", topic, "--count", str(FAILOVER_RECORDS),
            "--interval-ms", str(FAILOVER_INTERVAL_MS), "--prefix", "fo", "--each",
            "--delivery-timeout-ms", "120000"]), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        wait_for("the first 100 acknowledgements",
                 lambda: out_path.read_text().count('"acked"') >= 100 or proc.poll() is not None,
                 timeout_s=60, tolerate=())
        acked_before_kill = out_path.read_text().count('"acked"')
        assert proc.poll() is None, f"the producer ended before the kill:\n{out_path.read_text()[-3000:]}"
        cluster.kill(leader)
        proc.wait(timeout=JAVA_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    lines = json_lines(out_path.read_text())
    assert proc.returncode == 0, out_path.read_text()[-4000:]
    summary = lines[-1]
    assert summary["produced"] == FAILOVER_RECORDS and summary["errors"] == [], summary
    assert acked_before_kill < FAILOVER_RECORDS, "the kill came after the last acknowledgement"
    told = {line["acked"]: line["offset"] for line in lines[:-1]}
    # A new leader among the survivors, and every acknowledged record on both surviving
    # replicas exactly once, at the offset the producer was told (idempotence: no duplicates
    # from the retries across the failover).
    survivors = [n for n in cluster.ids if n != leader]
    wait_for("a new leader among the survivors",
             lambda: leader_of(cluster, survivors[0], topic) in survivors, timeout_s=30)
    cluster.restart(leader)
    logs = wait_replicas_equal(cluster, topic, 1, at_least={0: FAILOVER_RECORDS})
    on_disk = [(value.decode(), offset) for offset, _k, value, _h in records_by_offset(logs[0])]
    assert len(on_disk) == len(set(v for v, _ in on_disk)), "a record was written twice"
    assert dict(on_disk) == told


@pytest.mark.timeout(240)
def test_two_java_consumers_split_a_group_and_read_everything_once(java, node, tmp_path):
    """Two members of one classic group (the Java consumer's default assignors, range and
    cooperative-sticky): once both are in, Admin shows the 3 partitions split between them,
    and what is produced next is read by exactly one of them."""
    topic, group = "java-split", "java-split-group"
    (created,) = admin(java, node.bootstrap, f"create:{topic}:3:1")
    assert "error" not in created, created
    procs, outs = [], []
    try:
        for name in ("a", "b"):
            outs.append(tmp_path / f"member-{name}.out")
            with open(outs[-1], "w") as out:
                procs.append(subprocess.Popen(java.command("chronik.clients.Consume", [
                    "--bootstrap", node.bootstrap, "--topic", topic, "--group", group,
                    "--expect", str(10**9), "--each", "--timeout-s", "150"]),
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

        def split() -> list[list[str]] | None:
            (described,) = admin(java, node.bootstrap, f"describe-group:{group}", check=False)
            members = [m["partitions"] for m in described.get("members", [])]
            ok = (described.get("state") == "Stable" and len(members) == 2 and all(members)
                  and sorted(p for m in members for p in m) == [f"{topic}-{p}" for p in range(3)])
            return members if ok else None
        members = wait_for("both members in the group, the partitions split", split, timeout_s=90, poll_s=0.5)
        told = produce(java, node.bootstrap, topic, RECORDS, "split")

        def read() -> list[list[dict]]:
            return [[r for r in json_lines(out.read_text()) if "value" in r] for out in outs]
        wait_for("every record read", lambda: sum(map(len, read())) >= RECORDS, timeout_s=60, poll_s=0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)
    per_member = read()
    assert all(per_member), f"a member read nothing; assignment {members}"
    got = [(r["value"], (r["partition"], r["offset"])) for records in per_member for r in records]
    assert len(got) == len(told) and dict(got) == told
    partitions = [{r["partition"] for r in records} for records in per_member]
    assert not partitions[0] & partitions[1], partitions


def txn_requests(cluster: Cluster) -> collections.Counter:
    """The transaction coordinators' request counts (chronik_txn_requests), summed over the
    running nodes: kind -> count."""
    counts: collections.Counter = collections.Counter()
    for n in cluster.nodes:
        address = cluster.nodes[n].process.health_address
        for name, value in (fetch_metrics(address) if address else {}).items():
            if name.startswith("chronik_txn_requests_total{"):
                counts[name.split('kind="', 1)[1].split('"', 1)[0]] += int(value)
    return counts


@pytest.mark.timeout(240)
def test_java_transactions_run_transaction_version_2(java, cluster: Cluster):
    """The Java client 4.x reads `transaction.version` 2 from ApiVersions and runs KIP-890
    part 2: no AddPartitionsToTxn (the partition leaders add their partitions at the
    coordinator, across nodes), EndTxn v5 with a new epoch per transaction. Committed
    transactions are read whole by a read_committed consumer, aborted ones never; the
    broker's counters show the TV2 path was taken."""
    topic = "java-txn"
    bootstrap = cluster.bootstrap()
    (created,) = admin(java, bootstrap, f"create:{topic}:3:3")
    assert "error" not in created, created
    before = txn_requests(cluster)
    (summary,) = java.program("Produce", ["--bootstrap", bootstrap, "--topic", topic, "--count", "60",
                                          "--prefix", "tx", "--transactional-id", "java-tv2", "--txn-records", "10",
                                          "--abort-every", "3"], timeout_s=JAVA_TIMEOUT_S)
    assert summary["error"] == "" and (summary["committed"], summary["aborted"]) == (4, 2), summary
    lines = java.program("Consume", ["--bootstrap", bootstrap, "--topic", topic, "--group", "java-txn-reader",
                                     "--expect", "40", "--each", "--timeout-s", "60", "--isolation",
                                     "read_committed"], timeout_s=JAVA_TIMEOUT_S)
    assert sorted(r["value"] for r in lines[:-1]) == sorted(summary["committed_values"])
    done = txn_requests(cluster) - before
    assert done["client_add"] == 0, done  # not one AddPartitionsToTxn from the client
    assert done["implicit_add"] >= 6 and done["end_txn_v2"] == 6 and done["end_txn_v1"] == 0, done
