"""Kafka Streams (kafka-streams 4.x, pinned in tests/java/pom.xml) against a real
`chronik-trio node`: the word-count application (at-least-once) reads lines from a topic,
repartitions by word through an internal topic, counts in a state store, and writes the
counts to an output topic, which must end at the right count for every word. The program is
tests/java/src/main/java/chronik/clients/WordCount.java.

The store has its changelog topic, as Streams makes it by default: `cleanup.policy=compact`,
which the broker accepts and stores (docs/configuration.md says what it does with it)."""

from __future__ import annotations

import collections
import re

import pytest
from kafka import KafkaProducer

from tests.interop.jvm import JavaKit
from tests.interop.test_java_client import admin, txn_requests

STREAMS_TIMEOUT_S = 180

TEXT = """all streams lead to kafka
hello kafka streams
join kafka summit
the quick brown fox jumps over the lazy dog
a stream of words and a count of words"""


def produce_lines(bootstrap: str, topic: str, lines: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i, line in enumerate(lines):
            producer.send(topic, key=str(i).encode(), value=line.encode())
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def run_word_count(java: JavaKit, bootstrap: str, tag: str, lines: list[str], tmp_path, *,
                   replication_factor: int, guarantee: str = "at_least_once") -> None:
    source, sink = f"{tag}-lines", f"{tag}-counts"
    out = admin(java, bootstrap, f"create:{source}:3:{replication_factor}",
                f"create:{sink}:3:{replication_factor}")
    assert all("error" not in line for line in out), out
    produce_lines(bootstrap, source, lines)
    want = collections.Counter(w for line in lines for w in re.split(r"\W+", line.lower()) if w)
    results = java.program("WordCount", [
        "--bootstrap", bootstrap, "--application-id", f"{tag}-app", "--input", source, "--output", sink,
        "--words", str(sum(want.values())), "--state-dir", str(tmp_path / "streams-state"),
        "--replication-factor", str(replication_factor), "--timeout-s", str(STREAMS_TIMEOUT_S - 30),
        "--guarantee", guarantee],
        timeout_s=STREAMS_TIMEOUT_S, check=False)
    final = [r for r in results if "counts" in r]
    assert final, f"no counts printed: {results}"
    assert not [r for r in results if "uncaught" in r], results
    assert final[-1]["counts"] == dict(want)
    # The application's internal topics were created through this broker, as Streams names them.
    (listed,) = admin(java, bootstrap, "list")
    internal = {t for t in listed["topics"] if t.startswith(f"{tag}-app-")}
    assert [t for t in internal if t.endswith("-repartition")], listed
    (changelog,) = [t for t in internal if t.endswith("-changelog")]
    (described,) = admin(java, bootstrap, f"topic-configs:{changelog}")
    assert described["configs"]["cleanup.policy"] == "compact", described


@pytest.mark.timeout(STREAMS_TIMEOUT_S + 60)
def test_streams_word_count_at_least_once_on_one_node(java, node, tmp_path):
    lines = TEXT.splitlines() * 20  # 100 lines, about 600 words
    run_word_count(java, node.bootstrap, "wc-one", lines, tmp_path, replication_factor=1)


@pytest.mark.timeout(STREAMS_TIMEOUT_S + 60)
def test_streams_word_count_at_least_once_on_three_nodes(java, cluster, tmp_path):
    """The same with every topic (input, repartition, output) replicated 3 ways."""
    lines = TEXT.splitlines() * 20
    run_word_count(java, cluster.bootstrap(), "wc-three", lines, tmp_path, replication_factor=3)


@pytest.mark.timeout(STREAMS_TIMEOUT_S + 60)
def test_streams_word_count_exactly_once_v2_on_three_nodes(java, cluster, tmp_path):
    """processing.guarantee=exactly_once_v2: every task's output, repartition writes and
    input offsets are one transaction (transactions.md). Streams' producers run transaction
    version 2 (the broker advertises it): no AddPartitionsToTxn nor AddOffsetsToTxn from
    them, the partition leaders and group coordinators add the partitions, EndTxn v5."""
    lines = TEXT.splitlines() * 20
    before = txn_requests(cluster)
    run_word_count(java, cluster.bootstrap(), "wc-eos", lines, tmp_path, replication_factor=3,
                   guarantee="exactly_once_v2")
    done = txn_requests(cluster) - before
    assert done["client_add"] == 0 and done["end_txn_v1"] == 0, done
    assert done["implicit_add"] > 0 and done["end_txn_v2"] > 0, done
