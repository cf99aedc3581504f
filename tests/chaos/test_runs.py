"""Short end-to-end chaos runs (the CI subset): failover and partition on real 3-node
clusters through the harness's proxies, checked like `python -m chaos run` checks them.

Each is about 30 s of workload (a full run is in docs/chaos.md); together with cluster
start, final reads and stop they take about 1.5 minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal

import attrs
import pytest

from chaos.runner import run_scenario
from chaos.scenario import load_scenario

pytestmark = pytest.mark.timeout(240)

SCENARIOS = pathlib.Path(__file__).parents[2] / "chaos" / "scenarios"


@pytest.fixture
def run_dir(tmp_path):
    """The run's directory; at teardown any node process still running from it (e.g. after
    a test timeout interrupted the harness's own cleanup) is killed by its PID."""
    yield tmp_path
    for pid_dir in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        mine = str(tmp_path).encode() + b"/"
        if any(mine in arg for arg in argv) and int(pid_dir.name) != os.getpid():
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def short(name: str, **nemesis) -> object:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    return attrs.evolve(scenario, duration_s=30.0, nemesis=attrs.evolve(scenario.nemesis, **nemesis),
                        workload=attrs.evolve(scenario.workload, rate_per_s=25.0))


def assert_passed(result, run_dir: pathlib.Path, faults_min: int) -> None:
    events = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    started = [e for e in events if e["type"] == "fault-start"]
    assert len(started) >= faults_min, [e for e in events if e["type"].startswith("fault")]
    failed = {r.name: r.examples for r in result.results if not r.passed and not r.report_only}
    assert result.passed, (result.verdict_line, failed, (run_dir / "report.md").read_text())
    assert (run_dir / "report.md").exists() and (run_dir / "timeline.png").exists()
    assert result.verdict_line.startswith("chaos PASS: ")


async def test_failover_loses_no_acknowledged_write(run_dir):
    scenario = short("failover", quiet_s=10.0, schedule=(attrs.evolve(
        load_scenario(SCENARIOS / "failover.yaml").nemesis.schedule[0], every_s=10.0, start_s=5.0),))
    result = await run_scenario(scenario, run_dir, progress=False)
    assert_passed(result, run_dir, faults_min=2)


async def test_partitions_lose_no_acknowledged_write(run_dir):
    full = load_scenario(SCENARIOS / "partition.yaml").nemesis.schedule
    isolate = attrs.evolve(full[0], at_s=5.0, faults=(attrs.evolve(full[0].faults[0], duration_s=5.0),))
    split = attrs.evolve(full[1], at_s=13.0, faults=(attrs.evolve(full[1].faults[0], duration_s=5.0),))
    scenario = short("partition", quiet_s=10.0, schedule=(isolate, split))
    result = await run_scenario(scenario, run_dir, progress=False)
    assert_passed(result, run_dir, faults_min=2)
