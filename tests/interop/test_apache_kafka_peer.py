"""Apache Kafka 4.4.0 itself (KRaft, from the Maven jars, tests/interop/apache_kafka.py) as a
reference peer: the Java programs and franz-go pass the same checks against it as against
chronik-trio, so the checks ask only what Kafka does; and the chaos harness runs its
workload and checks against it (chaos/apache_kafka.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from chaos.runner import run_scenario
from chaos.scenario import parse_scenario

from tests.interop.apache_kafka import ApacheKafka
from tests.interop.test_franz_go import check_steps, run_franz
from tests.chaos.test_runs import run_dir  # noqa: F401 (the fixture: kills what a timeout left running)
from tests.interop.test_java_client import RECORDS, admin, check_read_as_told, consume, produce


def needs_java_and_maven() -> None:
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("Apache Kafka as a peer needs java and mvn on PATH")


@pytest.fixture(scope="module")
def apache_kafka(tmp_path_factory):
    needs_java_and_maven()
    kafka = ApacheKafka(tmp_path_factory.mktemp("apache-kafka"), 1)
    try:
        yield kafka.start()
    finally:
        kafka.close()


@pytest.mark.timeout(300)
def test_the_same_java_and_franz_go_checks_pass_against_apache_kafka(java, franz, apache_kafka):
    b = apache_kafka.bootstrap
    created, described = admin(java, b, "create:peer:3:1", "describe:peer")
    assert "error" not in created and [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    told = produce(java, b, "peer", RECORDS, "peer")
    records, summary = consume(java, b, "peer", "peer-group", RECORDS)
    check_read_as_told(told, records, summary)
    check_steps(run_franz(franz, b, "peer-franz", rf=1), "peer-franz", [1], rf=1)


SMOKE = """
name: apache-kafka-smoke
seed: 1
duration_s: 8
cluster: {nodes: 1, broker: apache-kafka}
topics: [{name: chaos, partitions: 2, replication_factor: 1}]
workload: {producers: 1, consumers: 1, rate_per_s: 20, acks: all}
nemesis:
  quiet_s: 3
  schedule:
    - {at_s: 3, fault: {kind: pause, target: leader, topic: chaos, duration_s: 2}}
"""


@pytest.mark.timeout(180)
async def test_the_chaos_harness_runs_its_workload_and_checks_against_apache_kafka(run_dir):  # noqa: F811
    """8 s against one Kafka node through the client proxy: the leader found from Kafka's
    metadata is paused and resumed, every check passes, the replica logs are read from Kafka's
    own segment files, and the final SIGTERM's exit (the JVM's 143) counts as a clean stop."""
    needs_java_and_maven()
    result = await run_scenario(parse_scenario(SMOKE, "smoke"), run_dir, progress=False)
    events = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert result.passed, (result.verdict_line, (run_dir / "report.md").read_text())
    assert [e["nodes"] for e in events if e["type"] == "fault-start"] == [[1]]
    acked = sum(1 for e in events if e["type"] == "send" and e["outcome"] == "ok")
    replicas = [e for e in events if e["type"] == "replica-log"]
    assert acked > 0 and sorted(e["partition"] for e in replicas) == [0, 1]
    assert sum(len(e["records"]) for e in replicas) >= acked
    assert [e["detail"] for e in events if e["type"] == "node" and e["what"] == "exited"] == ["code 143"]
