"""One 3-node cluster of real `chronik-trio node` processes for the whole package (starting
one costs seconds on a 2-core machine); each test gets it with every node running, and
whatever a test killed is restarted after it. Every process is stopped by PID at the end."""

from __future__ import annotations

import pytest

from nodeharness import UnexpectedExit
from tests.replication.cluster import running_cluster

# A short lag time makes an ISR shrink visible within seconds; a short balance interval makes
# a restarted preferred leader get its partitions back within seconds.
CLUSTER_CONFIG = ("replica_lag_time_max_ms = 2000\nleader_balance_interval_ms = 1000\n"
                  "log_cleaner_backoff_ms = 100\n"  # compaction tests: a cleaner pass every 100 ms
                  "leader_balance_min_healthy_ms = 3000\n")


@pytest.fixture(scope="package")
def shared_cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("replication"), config_text=CLUSTER_CONFIG) as cluster:
        yield cluster


@pytest.fixture
def cluster(shared_cluster, request):
    """The shared cluster with all nodes running; node logs are printed on failure, and a
    node that exited during the test without the test causing it fails the test."""
    shared_cluster.heal()
    problems_before = len(shared_cluster.problems())
    yield shared_cluster
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(shared_cluster.log_tails(3000))
    new = shared_cluster.problems()[problems_before:]
    shared_cluster.heal()
    if new:
        raise UnexpectedExit("node exit(s) nobody caused during the test:\n" + "\n\n".join(new))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report
