"""The chaos harness: `python -m chaos run chaos/scenarios/failover.yaml`.

Starts real clusters of `chronik-trio node` processes, drives real Kafka clients against
them through the harness's own TCP proxies, injects faults on a schedule drawn from the
scenario's seed, records every operation to history.jsonl, and checks the history for the
anomalies Jepsen's Kafka workload looks for (docs/chaos.md).

It talks to the nodes only as an outsider does: processes and signals, sockets (the Kafka
protocol through real clients, HTTP to /health and /faults), log lines and data files. It
imports nothing from `chronik_trio`. The checker is pure (a history in, results out);
scenario and replica_log only read the files they are given; the trio runtime lives in
runner, cluster, network, proxy, nemesis and workload.
"""

from .checker import CheckResult, check_history
from .scenario import Scenario, ScenarioError, load_scenario

__all__ = ["CheckResult", "Scenario", "ScenarioError", "check_history", "load_scenario"]
