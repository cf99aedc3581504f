"""Health-aware leader balancing (node/preferred_leaders.py, node/disk_health.py): a node whose
fsyncs are slowed (the fault-injection endpoint) reports its disk degraded, hands off what
it leads and is given nothing back while it stays slow (no flapping); once its disk is
healthy again it gets its preferred partitions back within the stated bound. Produce load
(confluent-kafka, acks=all, bounded) runs throughout and loses no acknowledged record.
(After a restart: tests/replication/test_failover.py::test_restarted_preferred_leader_gets_its_partitions_back.)"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.cluster.cluster import parse_leader_lines
from tests.replication.cluster import Cluster, wait_balanced, wait_for
from tests.replication.failover import PacedLoad, check_acked_on_every_replica

pytestmark = pytest.mark.timeout(240)

CONFIG = ("fault_injection = true\nleader_balance_interval_ms = 1000\nleader_balance_min_healthy_ms = 2000\n"
          "replica_lag_time_max_ms = 3000\n")
SLOW_FSYNC_MS = 1000  # clearly above disk_degraded_fsync_ms (500)
WATCH_S = 8.0  # how long leadership is watched while the disk stays slow
RECOVER_S = 10.0  # disk_health.RECOVER_S: clean this long before the disk counts as healthy
BACK_BOUND_S = RECOVER_S + 2.0 + 1.0 + 15.0  # + min healthy + check interval + slack for a loaded machine


def set_faults(cluster: Cluster, n: int, faults: dict) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.raft_ports[n]}/faults", method="POST",
                                     data=json.dumps(faults).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_a_slow_disk_loses_leadership_without_flapping_and_gets_it_back_when_healthy(tmp_path):
    cluster = Cluster(tmp_path, config_text=CONFIG).start()
    try:
        assert int(cluster.create_topic(1, "slow", 3).error_code) == 0
        leaders = wait_balanced(cluster, "slow", timeout_s=60)
        victim = leaders[0].replicas[0]
        survivor = next(n for n in cluster.ids if n != victim)
        load = PacedLoad(cluster, "slow", 3).start()

        preferred_by_victim = [p for p, i in leaders.items() if i.replicas[0] == victim]
        cluster.forget_log_so_far(survivor)
        set_faults(cluster, victim, {"fsync_latency_ms": SLOW_FSYNC_MS})
        wait_for(f"node {victim} reports its disk degraded",
                 lambda: (cluster.nodes[victim].process.health() or {}).get("disk_degraded"), timeout_s=30)
        wait_for(f"no partition led by node {victim}",
                 lambda: all(p.leader not in (victim, -1) for p in cluster.partitions(survivor, "slow").values()),
                 timeout_s=30)
        watch_end = time.monotonic() + WATCH_S
        while time.monotonic() < watch_end:
            led = [p for p, i in cluster.partitions(survivor, "slow").items() if i.leader == victim]
            assert not led, f"partitions {led} handed back to node {victim} while its disk is slow"
            time.sleep(0.25)

        set_faults(cluster, victim, {"fsync_latency_ms": 0})
        healed = time.monotonic()
        wait_balanced(cluster, "slow", timeout_s=BACK_BOUND_S)
        back_s = time.monotonic() - healed
        print(f"node {victim}: preferred leadership back {back_s:.1f} s after its disk was healthy again")

        acked = load.stop()
        assert len(acked) >= 100 and not load.producer.errors, (len(acked), load.producer.errors[:3])
        check_acked_on_every_replica(cluster, "slow", 3, acked)
        # No flapping: from the fault on, node `victim` was seen taking a partition's leadership
        # only when it got each of its preferred partitions back, once.
        regained = [s for s in parse_leader_lines(cluster.current_log(survivor))
                    if s.leader == victim and s.group != "__meta"]
        assert len(regained) == len(preferred_by_victim), (regained, cluster.log_excerpt("leader is node|disk"))
    finally:
        cluster.close()
