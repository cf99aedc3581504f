"""Fixtures for the tests with Apache Kafka's Java client, its tools, Kafka Streams and
franz-go (issue 19): the built Java and Go programs (once per run), and one single node and
one 3-node cluster of real `chronik-trio node` processes shared by the package (each costs
seconds to start on a 2-core machine). Every process is stopped by PID at the end; a node a
test killed is restarted before the next test."""

from __future__ import annotations

import pytest

from tests.brokers import BrokerProcess
from tests.interop import gobuild, jvm
from tests.replication.cluster import running_cluster

# A short lag time lets the ISR follow a killed node within seconds.
CLUSTER_CONFIG = "replica_lag_time_max_ms = 2000\n"


@pytest.fixture(scope="session")
def java() -> jvm.JavaKit:
    return jvm.build()


@pytest.fixture(scope="session")
def franz() -> str:
    return gobuild.build()


@pytest.fixture(scope="package")
def node(tmp_path_factory):
    """One single-node broker (3 partitions for auto-created topics)."""
    broker = BrokerProcess(tmp_path_factory.mktemp("interop-node") / "data",
                           extra_args=["--default-partitions", "3"])
    try:
        yield broker.start()
    finally:
        try:
            broker.stop()
        finally:
            broker.kill()


@pytest.fixture(scope="package")
def shared_cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("interop-cluster"), config_text=CLUSTER_CONFIG) as cluster:
        yield cluster


@pytest.fixture
def cluster(shared_cluster):
    """The shared 3-node cluster with every node running."""
    return shared_cluster.heal()
