"""franz-go (github.com/twmb/franz-go, pinned in tests/go/go.mod), a Go client known for
strict protocol checks, against real `chronik-trio node` processes: admin calls through kadm
(create, brokers, describe, configs, groups, offsets, delete), its producer (idempotent by
default, acks=all) and a consumer in a group that commits. The program is tests/go/main.go;
it prints one JSON line per step, asserted on here."""

from __future__ import annotations

import subprocess

import pytest

from tests.brokers import fetch_session_counters
from tests.interop.jvm import json_lines

RECORDS = 1000
FRANZ_TIMEOUT_S = 120


def run_franz(binary: str, bootstrap: str, topic: str, *, rf: int, partitions: int = 3,
              extra: tuple[str, ...] = ()) -> dict[str, dict]:
    proc = subprocess.run([binary, "-bootstrap", bootstrap, "-topic", topic, "-group", f"{topic}-group",
                           "-records", str(RECORDS), "-partitions", str(partitions), "-rf", str(rf), *extra,
                           "-timeout", f"{FRANZ_TIMEOUT_S - 20}s"],
                          capture_output=True, text=True, timeout=FRANZ_TIMEOUT_S, stdin=subprocess.DEVNULL)
    steps = {line["step"]: line for line in json_lines(proc.stdout)}
    assert proc.returncode == 0, f"franz exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return steps


def check_steps(steps: dict[str, dict], topic: str, brokers: list[int], rf: int, partition_count: int = 3) -> None:
    assert sorted(steps["brokers"]["ids"]) == brokers
    partitions = steps["describe"]["partitions"]
    assert [p["partition"] for p in partitions] == list(range(partition_count))
    assert all(len(p["replicas"]) == rf and p["leader"] in p["replicas"] for p in partitions), partitions
    assert steps["configs"]["configs"]["cleanup.policy"] == "delete"
    assert steps["produce"]["produced"] == RECORDS
    # Every record read once, at the partition and offset its producer was told, in offset order.
    assert steps["consume"] == {"step": "consume", "consumed": RECORDS, "duplicates": 0, "mismatched": 0,
                                "out_of_order": 0}
    assert f"{topic}-group" in steps["groups"]["groups"]
    assert steps["describe-group"]["state"] == "Empty" and steps["describe-group"]["protocol_type"] == "consumer"
    offsets = steps["group-offsets"]
    assert offsets["committed"] == offsets["ends"] and sum(offsets["ends"].values()) == RECORDS, offsets
    assert "delete-group" in steps and "delete" in steps


@pytest.mark.timeout(FRANZ_TIMEOUT_S + 60)
def test_franz_go_admin_produce_and_group_on_one_node(franz, node):
    steps = run_franz(franz, node.bootstrap, "franz-one", rf=1)
    check_steps(steps, "franz-one", [1], rf=1)


@pytest.mark.timeout(FRANZ_TIMEOUT_S + 60)
def test_franz_go_admin_produce_and_group_on_three_nodes(franz, cluster):
    steps = run_franz(franz, cluster.bootstrap(), "franz-three", rf=3)
    check_steps(steps, "franz-three", [1, 2, 3], rf=3)


@pytest.mark.timeout(FRANZ_TIMEOUT_S + 60)
def test_franz_go_consumes_many_partitions_through_one_fetch_session(franz, node):
    """franz-go opens a fetch session (KIP-227) and then sends incremental fetches; the node
    serves them (its counters say so) and every record is read once, in order."""
    before = fetch_session_counters(node)
    # Byte limits far under what is stored: many fetches, each with a few partitions' news.
    steps = run_franz(franz, node.bootstrap, "franz-sessions", rf=1, partitions=24,
                      extra=("-fetch-max-bytes", "4096", "-fetch-max-partition-bytes", "512"))
    check_steps(steps, "franz-sessions", [1], rf=1, partition_count=24)
    after = fetch_session_counters(node)
    assert after["fetch_sessions_created"] > before["fetch_sessions_created"], after
    assert after["fetch_incremental"] > before["fetch_incremental"], after
    assert after["fetch_partitions_left_out"] > before["fetch_partitions_left_out"], after
    assert after["fetch_session_errors"] == before["fetch_session_errors"], after
