"""Apache Kafka 4.4.0 itself (KRaft, from the Maven jars, tests/interop/apache_kafka.py) as a
reference peer: the Java programs and franz-go pass the same checks against it as against
chronik-trio, so the checks ask only what Kafka does."""

from __future__ import annotations

import shutil

import pytest

from tests.interop.apache_kafka import ApacheKafka
from tests.interop.test_franz_go import check_steps, run_franz
from tests.interop.test_java_client import RECORDS, admin, check_read_as_told, consume, produce


@pytest.fixture(scope="module")
def apache_kafka(tmp_path_factory):
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("Apache Kafka as a peer needs java and mvn on PATH")
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
