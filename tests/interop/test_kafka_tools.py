"""Apache Kafka's own command-line tools (kafka-tools 4.x, the classes behind
kafka-topics.sh, kafka-console-producer.sh, kafka-console-consumer.sh,
kafka-consumer-groups.sh, kafka-configs.sh, kafka-producer-perf-test.sh,
kafka-consumer-perf-test.sh, kafka-leader-election.sh, kafka-acls.sh, kafka-log-dirs.sh and
kafka-delete-records.sh), run from the Maven jars as an operator runs the scripts, against
a real single `chronik-trio node` and a 3-node cluster. Their printed output is what is
asserted on, as an operator would read it."""

from __future__ import annotations

import json
import re

import pytest

from tests.interop.jvm import JavaKit
from tests.interop.test_streams import produce_lines
from tests.replication.cluster import Cluster

TOOLS = "org.apache.kafka.tools"
TOPICS = f"{TOOLS}.TopicCommand"
CONSOLE_PRODUCER = f"{TOOLS}.ConsoleProducer"
CONSOLE_CONSUMER = f"{TOOLS}.consumer.ConsoleConsumer"
GROUPS = f"{TOOLS}.consumer.group.ConsumerGroupCommand"
CONFIGS = f"{TOOLS}.ConfigCommand"
PRODUCER_PERF = f"{TOOLS}.ProducerPerformance"
CONSUMER_PERF = f"{TOOLS}.ConsumerPerformance"
LEADER_ELECTION = f"{TOOLS}.LeaderElectionCommand"
ACLS = f"{TOOLS}.AclCommand"
LOG_DIRS = f"{TOOLS}.LogDirsCommand"
DELETE_RECORDS = f"{TOOLS}.DeleteRecordsCommand"
TOOL_TIMEOUT_S = 120


def tool(java: JavaKit, main: str, *args: str, input_text: str | None = None) -> str:
    """Run one tool to its end; a non-zero exit fails the test. Its stdout."""
    return java.run(main, list(args), timeout_s=TOOL_TIMEOUT_S, input_text=input_text).stdout


def described_partitions(text: str) -> list[tuple[int, int, list[int], list[int]]]:
    """(partition, leader, replicas, isr) from kafka-topics --describe."""
    rows = re.findall(r"Partition: (\d+)\tLeader: (-?\d+)\tReplicas: ([\d,]+)\tIsr: ([\d,]*)", text)
    return [(int(p), int(leader), [int(r) for r in reps.split(",")], [int(i) for i in isr.split(",") if i])
            for p, leader, reps, isr in rows]


def group_rows(text: str) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (current offset, log end offset) from kafka-consumer-groups
    --describe; the NEW-OFFSET column alone (current = end = it) from --reset-offsets."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[2].isdigit():
            current = int(cols[3])
            end = int(cols[4]) if len(cols) > 4 and cols[4].isdigit() else current
            out[(cols[1], int(cols[2]))] = (current, end)
    return out


@pytest.mark.timeout(300)
def test_topic_console_and_group_tools_on_one_node(java, node):
    b = node.bootstrap
    topic, group = "tools-one", "tools-one-group"
    assert f"Created topic {topic}." in tool(java, TOPICS, "--bootstrap-server", b, "--create",
                                             "--topic", topic, "--partitions", "2", "--replication-factor", "1")
    assert described_partitions(tool(java, TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic)) == \
        [(0, 1, [1], [1]), (1, 1, [1], [1])]
    tool(java, TOPICS, "--bootstrap-server", b, "--alter", "--topic", topic, "--partitions", "3")
    described = tool(java, TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic)
    assert [p[0] for p in described_partitions(described)] == [0, 1, 2], described
    assert topic in tool(java, TOPICS, "--bootstrap-server", b, "--list").split()

    # Console producer: keyed lines (key:value), so each key stays on one partition.
    lines = [f"k{i % 5}:line-{i}" for i in range(30)]
    tool(java, CONSOLE_PRODUCER, "--bootstrap-server", b, "--topic", topic,
         "--reader-property", "parse.key=true", "--reader-property", "key.separator=:", input_text="\n".join(lines) + "\n")
    consumed = tool(java, CONSOLE_CONSUMER, "--bootstrap-server", b, "--topic", topic, "--group", group,
                    "--from-beginning", "--max-messages", "30", "--timeout-ms", "60000",
                    "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:")
    got = consumed.split()
    assert sorted(got) == sorted(lines)
    for key in {line.split(":")[0] for line in lines}:  # each key's lines in the order sent
        assert [v for v in got if v.startswith(key + ":")] == [v for v in lines if v.startswith(key + ":")]

    # Consumer groups: listed, described with no lag, reset to the earliest offsets.
    assert group in tool(java, GROUPS, "--bootstrap-server", b, "--list").split()
    rows = group_rows(tool(java, GROUPS, "--bootstrap-server", b, "--describe", "--group", group))
    assert set(rows) == {(topic, p) for p in range(3)}
    assert all(current == end for current, end in rows.values()), rows
    assert sum(end for _, end in rows.values()) == 30
    # Without a group: one partition from an offset, as kafka-console-consumer --partition reads.
    (_, fullest), (_, end) = max(rows.items(), key=lambda row: row[1][1])
    assert end >= 2, rows
    tail = tool(java, CONSOLE_CONSUMER, "--bootstrap-server", b, "--topic", topic, "--partition", str(fullest),
                "--offset", "1", "--max-messages", str(end - 1), "--timeout-ms", "60000",
                "--formatter-property", "print.offset=true", "--formatter-property", "print.key=true")
    read = re.findall(r"^Offset:(\d+)\s+(\S+)\s+(\S+)$", tail, re.M)
    assert [int(o) for o, _, _ in read] == list(range(1, end)), tail
    assert {f"{k}:{v}" for _, k, v in read} <= set(lines)
    reset = group_rows(tool(java, GROUPS, "--bootstrap-server", b, "--reset-offsets", "--group", group,
                            "--topic", topic, "--to-earliest", "--execute"))
    assert reset == {(topic, p): (0, 0) for p in range(3)}
    rows = group_rows(tool(java, GROUPS, "--bootstrap-server", b, "--describe", "--group", group))
    assert {k: current for k, (current, _) in rows.items()} == {(topic, p): 0 for p in range(3)}
    assert sum(end for _, end in rows.values()) == 30
    # The reset offsets are where the group's next consumer starts: all 30 lines again.
    again = tool(java, CONSOLE_CONSUMER, "--bootstrap-server", b, "--topic", topic, "--group", group,
                 "--max-messages", "30", "--timeout-ms", "60000")
    assert sorted(again.split()) == sorted(line.split(":")[1] for line in lines)

    # Configs: the topic's and the broker's, as kafka-configs prints them with --all.
    topic_configs = tool(java, CONFIGS, "--bootstrap-server", b, "--describe", "--entity-type", "topics",
                         "--entity-name", topic, "--all")
    assert "cleanup.policy=delete" in topic_configs and "retention.ms=" in topic_configs
    broker_configs = tool(java, CONFIGS, "--bootstrap-server", b, "--describe", "--entity-type", "brokers",
                          "--entity-name", "1", "--all")
    assert "num.partitions=3" in broker_configs
    # A group's configs (Kafka 4's --entity-type groups), stored in __meta.
    tool(java, CONFIGS, "--bootstrap-server", b, "--alter", "--entity-type", "groups", "--entity-name", group,
         "--add-config", "consumer.session.timeout.ms=50000")
    group_configs = tool(java, CONFIGS, "--bootstrap-server", b, "--describe", "--entity-type", "groups",
                         "--entity-name", group, "--all")
    assert "consumer.session.timeout.ms=50000" in group_configs and "share.isolation.level=" in group_configs

    tool(java, GROUPS, "--bootstrap-server", b, "--delete", "--group", group)
    assert group not in tool(java, GROUPS, "--bootstrap-server", b, "--list").split()
    tool(java, TOPICS, "--bootstrap-server", b, "--delete", "--topic", topic)
    assert topic not in tool(java, TOPICS, "--bootstrap-server", b, "--list").split()


@pytest.mark.timeout(300)
def test_acl_log_dirs_and_delete_records_tools_on_one_node(java, node, tmp_path):
    """kafka-acls adds, lists and removes an ACL (the authorizer need not be on to manage
    them); kafka-log-dirs shows each partition of a topic with its size on disk;
    kafka-delete-records moves a partition's log start offset."""
    b = node.bootstrap
    topic = "tools-acl"
    tool(java, TOPICS, "--bootstrap-server", b, "--create", "--topic", topic, "--partitions", "1",
         "--replication-factor", "1")
    produce_lines(b, topic, [f"line-{i}" for i in range(10)])
    acl = ["--allow-principal", "User:alice", "--operation", "Read", "--topic", topic]
    tool(java, ACLS, "--bootstrap-server", b, "--add", *acl)
    listed = tool(java, ACLS, "--bootstrap-server", b, "--list", "--topic", topic)
    assert "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)" in listed, listed
    tool(java, ACLS, "--bootstrap-server", b, "--remove", *acl, "--force")
    assert "User:alice" not in tool(java, ACLS, "--bootstrap-server", b, "--list", "--topic", topic)

    text = tool(java, LOG_DIRS, "--bootstrap-server", b, "--describe", "--topic-list", topic)
    (report,) = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    sizes = {p["partition"]: p["size"] for d in report["brokers"][0]["logDirs"] for p in d["partitions"]}
    assert list(sizes) == [f"{topic}-0"] and sizes[f"{topic}-0"] > 0, sizes
    offsets = tmp_path / "delete.json"
    offsets.write_text(json.dumps({"partitions": [{"topic": topic, "partition": 0, "offset": 5}], "version": 1}))
    deleted = tool(java, DELETE_RECORDS, "--bootstrap-server", b, "--offset-json-file", str(offsets))
    assert f"partition: {topic}-0\tlow_watermark: 5" in deleted, deleted


PERF_RECORDS = 5000


@pytest.mark.timeout(300)
def test_perf_tools_on_three_nodes(java, cluster: Cluster):
    """kafka-producer-perf-test and kafka-consumer-perf-test, bounded in records, acks=all, lz4, on
    a topic replicated 3 ways created by kafka-topics (the figures are not asserted on), and
    kafka-leader-election asking for the preferred leaders."""
    b = cluster.bootstrap()
    topic = "tools-perf"
    tool(java, TOPICS, "--bootstrap-server", b, "--create", "--topic", topic, "--partitions", "3",
         "--replication-factor", "3")
    described = described_partitions(tool(java, TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic))
    assert [(p, sorted(reps)) for p, _, reps, _ in described] == [(p, [1, 2, 3]) for p in range(3)]
    produced = tool(java, PRODUCER_PERF, "--bootstrap-server", b, "--topic", topic,
                    "--num-records", str(PERF_RECORDS), "--record-size", "100", "--throughput", "-1",
                    "--command-property", "acks=all", "compression.type=lz4")
    assert re.search(rf"^{PERF_RECORDS} records sent, ", produced, re.M), produced
    consumed = tool(java, CONSUMER_PERF, "--bootstrap-server", b, "--topic", topic,
                    "--num-records", str(PERF_RECORDS), "--timeout", "60000")
    header, row = consumed.strip().splitlines()[-2:]
    fields = dict(zip([h.strip() for h in header.split(",")], [v.strip() for v in row.split(",")]))
    assert int(fields["data.consumed.in.nMsg"]) == PERF_RECORDS, consumed
    elected = tool(java, LEADER_ELECTION, "--bootstrap-server", b, "--election-type", "preferred",
                   "--topic", topic, "--partition", "0")
    assert re.search(rf"(Successfully completed leader election|Valid replica already elected)"
                     rf" .*for partitions {topic}-0", elected), elected
