"""The chaos harness: `python -m chaos run failover` (a shipped scenario by name, or a path).

Starts real clusters of `chronik-trio node` processes, drives real Kafka clients against
them through the harness's own TCP proxies, injects faults on a schedule drawn from the
scenario's seed, records every operation to history.jsonl, and checks the history for the
anomalies Jepsen's Kafka workload looks for (docs/chaos.md).

It talks to the nodes only as an outsider does: processes and signals (through the
`nodeharness` package), sockets (the Kafka protocol through real clients, HTTP to /health
and /faults), log lines and data files. It imports nothing from `chronik_trio`. The checker
is pure (a history in, results out); scenario and replica_log only read the files they are
given; the trio runtime lives in runner, cluster, network, proxy, nemesis and workload.

The public names below are imported on first use, so that `python -m chaos` can say which
extra is missing (`pip install -e '.[chaos]'`) instead of failing on an import.
"""

from __future__ import annotations

import importlib

__all__ = ["CheckResult", "Scenario", "ScenarioError", "check_history", "load_scenario"]
_HOMES = {"CheckResult": "checker", "check_history": "checker", "Scenario": "scenario",
          "ScenarioError": "scenario", "load_scenario": "scenario"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
