"""`chronik-trio bench` measures correctly (counts and report shape); speed is never asserted."""

import json
import subprocess

import pytest

from tests.brokers import CHRONIK_TRIO

pytestmark = pytest.mark.timeout(120)


def _bench(tmp_path, *target):
    out = tmp_path / "bench.json"
    proc = subprocess.run([CHRONIK_TRIO, "bench", *target, "--records", "3000", "--record-bytes", "50",
                           "--repeat", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "median: produce" in proc.stdout
    return json.loads(out.read_text())


def test_bench_against_a_running_broker(broker, tmp_path):
    report = _bench(tmp_path, "--bootstrap", broker.bootstrap)
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        assert run["produce"]["acked"] == 3000 and run["produce"]["errors"] == 0
        assert run["consume"]["records"] == 3000
        assert run["produce"]["records_per_s"] > 0
    assert "acks=all" in report["method"] and broker.bootstrap in report["method"]


def test_bench_starts_and_stops_its_own_node(tmp_path):
    report = _bench(tmp_path, "--cluster", "1")
    assert all(r["consume"]["records"] == 3000 for r in report["runs"])
    assert "started by the tool" in report["method"]
