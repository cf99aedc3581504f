"""franz-go (github.com/twmb/franz-go, pinned in tests/go/go.mod), a Go client known for
strict protocol checks, against real `chronik-trio node` processes: admin calls through kadm
(create, brokers, describe, configs, groups, offsets, delete), its producer (idempotent by
default, acks=all) and a consumer in a group that commits. The program is tests/go/main.go;
it prints one JSON line per step, asserted on here."""

from __future__ import annotations

import subprocess

import pytest

from tests.interop.jvm import json_lines

RECORDS = 1000
FRANZ_TIMEOUT_S = 120


def run_franz(binary: str, bootstrap: str, topic: str, *, rf: int) -> dict[str, dict]:
    proc = subprocess.run([binary, "-bootstrap", bootstrap, "-topic", topic, "-group", f"{topic}-group",
                           "-records", str(RECORDS), "-partitions", "3", "-rf", str(rf),
                           "-timeout", f"{FRANZ_TIMEOUT_S - 20}s"],
                          capture_output=True, text=True, timeout=FRANZ_TIMEOUT_S, stdin=subprocess.DEVNULL)
    steps = {line["step"]: line for line in json_lines(proc.stdout)}
    assert proc.returncode == 0, f"franz exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return steps


def check_steps(steps: dict[str, dict], topic: str, brokers: list[int], rf: int) -> None:
    assert sorted(steps["brokers"]["ids"]) == brokers
    partitions = steps["describe"]["partitions"]
    assert [p["partition"] for p in partitions] == [0, 1, 2]
    assert all(len(p["replicas"]) == rf and p["leader"] in p["replicas"] for p in partitions), partitions
    assert steps["configs"]["configs"]["cleanup.policy"] == "delete"
    assert steps["produce"]["produced"] == RECORDS
    # Every record read once, at the partition and offset its producer was told.
    assert steps["consume"] == {"step": "consume", "consumed": RECORDS, "duplicates": 0, "mismatched": 0}
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
