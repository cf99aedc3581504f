"""Kafka's own `kafka-reassign-partitions` (org.apache.kafka.tools.reassign.ReassignPartitionsCommand,
kafka-tools 4.x) against a 3-node cluster, as an operator runs it (issue 17): --execute with
a throttle, --verify (which also removes the throttle configs), and --list and --cancel of a
move throttled to 1 byte/s."""

from __future__ import annotations

import json

import pytest

from tests.interop.test_kafka_tools import CONSOLE_PRODUCER, TOPICS, described_partitions, tool
from tests.replication.cluster import wait_for

REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"

pytestmark = pytest.mark.timeout(300)


def _plan(path, topic: str, replicas: list[int]) -> str:
    path.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": replicas}]}))
    return str(path)


def test_kafka_reassign_partitions_moves_lists_verifies_and_cancels(java, cluster, tmp_path):
    b = cluster.bootstrap()
    topic = "tools-reassign"
    tool(java, TOPICS, "--bootstrap-server", b, "--create", "--topic", topic, "--partitions", "1",
         "--replication-factor", "1")
    (_, _, (home,), _), = wait_for("a leader", lambda: [p for p in described_partitions(
        tool(java, TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic)) if p[1] != -1], timeout_s=30)
    others = [n for n in cluster.ids if n != home]
    grown = [home, *others]

    out = tool(java, REASSIGN, "--bootstrap-server", b, "--execute", "--throttle", "10000000",
               "--reassignment-json-file", _plan(tmp_path / "grow.json", topic, grown))
    assert f"Successfully started partition reassignment for {topic}-0" in out, out

    def verified():
        text = tool(java, REASSIGN, "--bootstrap-server", b, "--verify",
                    "--reassignment-json-file", str(tmp_path / "grow.json"))
        return text if f"Reassignment of partition {topic}-0 is completed" in text else None
    text = wait_for("--verify says completed", verified, timeout_s=60, poll_s=1.0)
    assert "Clearing broker-level throttles" in text, text
    # The leader reports the ISR to __meta on its own beat (leader_reports.ISR_CHECK_S), so the
    # new replicas join the described ISR shortly after the move's configuration commits.
    wait_for("the grown replicas all in sync", lambda: [
        (p, replicas, sorted(isr)) for p, _, replicas, isr in described_partitions(
            tool(java, TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic))
    ] == [(0, grown, sorted(grown))], timeout_s=30, poll_s=1.0)

    # Back to one replica; then a move that cannot finish (its new replica's node is stopped)
    # is listed, and cancelled.
    tool(java, REASSIGN, "--bootstrap-server", b, "--execute",
         "--reassignment-json-file", _plan(tmp_path / "back.json", topic, [home]))
    wait_for("back to one replica", lambda: described_partitions(tool(
        java, TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic))[0][2] == [home], timeout_s=60)
    # A move throttled to 1 byte/s cannot finish: it is listed, then cancelled.
    tool(java, CONSOLE_PRODUCER, "--bootstrap-server", b, "--topic", topic,
         input_text="\n".join(f"line-{i}" for i in range(50)) + "\n")
    tool(java, REASSIGN, "--bootstrap-server", b, "--execute", "--throttle", "1",
         "--reassignment-json-file", _plan(tmp_path / "stuck.json", topic, [home, others[0]]))
    listed = tool(java, REASSIGN, "--bootstrap-server", b, "--list")
    assert f"{topic}-0" in listed, listed
    cancelled = tool(java, REASSIGN, "--bootstrap-server", b, "--cancel",
                     "--reassignment-json-file", str(tmp_path / "stuck.json"))
    assert f"{topic}-0" in cancelled, cancelled
    wait_for("the move cancelled", lambda: f"{topic}-0" not in tool(
        java, REASSIGN, "--bootstrap-server", b, "--list"), timeout_s=60, poll_s=1.0)
    assert described_partitions(tool(java, TOPICS, "--bootstrap-server", b, "--describe",
                                     "--topic", topic))[0][2] == [home]
