"""A leader transfer on demand: `chronik-trio admin elect-preferred` (Kafka's ElectLeaders)."""

import subprocess

import pytest

from tests.brokers import CHRONIK_TRIO
from tests.replication.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(180)


def test_elect_preferred_moves_leadership_back_to_the_preferred_replica(tmp_path):
    # Automatic balancing off, so only the command can move leadership back.
    cluster = Cluster(tmp_path, config_text="leader_balance_interval_ms = 3600000\n"
                                            "replica_lag_time_max_ms = 3000\n").start()
    try:
        cluster.wait_brokers()
        cluster.create_topic(1, "elect", 1)
        info = wait_for("a leader", lambda: cluster.partitions(1, "elect")[0], timeout_s=30)
        preferred = info.replicas[0]
        assert info.leader == preferred  # a new partition's preferred replica campaigns first
        cluster.kill(preferred)
        survivor = next(n for n in cluster.ids if n != preferred)
        wait_for("a new leader", lambda: (p := cluster.partitions(survivor, "elect")[0]).leader
                 not in (preferred, -1) and p, timeout_s=30)
        cluster.restart(preferred)
        wait_for("a full ISR", lambda: len(cluster.partitions(survivor, "elect")[0].isr) == 3 or None,
                 timeout_s=60)
        assert cluster.partitions(survivor, "elect")[0].leader != preferred

        run = subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", cluster.bootstrap(survivor),
                              "elect-preferred", "elect"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "elect-0: moved to its preferred replica" in run.stdout
        for n in cluster.ids:
            wait_for(f"node {n} to see the preferred leader",
                     lambda n=n: cluster.partitions(n, "elect")[0].leader == preferred or None, timeout_s=20)
        again = subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", cluster.bootstrap(survivor),
                                "elect-preferred", "elect", "0"], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already led by its preferred replica" in again.stdout
    finally:
        cluster.close()
