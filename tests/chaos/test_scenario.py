"""Scenario files: every shipped scenario validates; bad files fail naming file and key; the
nemesis plan is a function of the seed."""

from __future__ import annotations

import pathlib
import random
import subprocess
import sys

import attrs
import pytest

import chaos.__main__ as chaos_main

from chaos.nemesis import MEMBERSHIP_REPLICAS_MIN, membership_target, plan
from chaos.scenario import ScenarioError, load_scenario, parse_scenario, with_overrides

pytestmark = pytest.mark.timeout(30)

SCENARIOS = pathlib.Path(__file__).parents[2] / "chaos" / "scenarios"
SHIPPED = ["failover", "partition", "crash-restart", "pause", "slow-disk", "disk-faults",
           "power-loss", "rolling-restart", "mixed", "failover-idempotent", "failover-mtls",
           "compaction", "grow-shrink", "membership", "transactions", "transactions-copy",
           "transactions-pause", "transactions-partition", "transactions-faults", "membership-faults",
           "transactions-coordinator", "transactions-power-loss", "transactions-compaction"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_is_valid(name):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert scenario.name == name
    assert plan(scenario.nemesis, scenario.duration_s, random.Random(scenario.seed))


def bad(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.yaml")
    return str(info.value)


def test_a_missing_name_is_named():
    assert bad("seed: 1\n") == "bad.yaml: name: is required"


def test_an_unknown_key_is_named_with_its_section():
    message = bad("name: x\nworkload: {producers: 1, ratee_per_s: 3}\n")
    assert message.startswith("bad.yaml: workload: unknown key(s) ['ratee_per_s']")


def test_a_wrong_type_names_the_key():
    assert bad("name: x\ncluster: {nodes: three}\n") == "bad.yaml: cluster.nodes: expected int, got 'three'"


def test_a_bad_fault_names_its_place_in_the_schedule():
    message = bad("name: x\nnemesis:\n  schedule:\n    - at_s: 5\n      fault: {kind: explode}\n")
    assert message.startswith("bad.yaml: nemesis.schedule[0].fault.kind: must be one of")


def test_a_target_beyond_the_cluster_is_refused():
    message = bad("name: x\ncluster: {nodes: 3}\nnemesis:\n  schedule:\n"
                  "    - {at_s: 5, fault: {kind: kill, target: 'node:4'}}\n")
    assert "nemesis.schedule[0].fault.target" in message


def test_a_schedule_entry_needs_exactly_one_time():
    message = bad("name: x\nnemesis:\n  schedule:\n    - {at_s: 5, every_s: 3, fault: {kind: kill}}\n")
    assert message == "bad.yaml: nemesis.schedule[0]: needs exactly one of at_s, every_s, interval_s"


def test_modes_belong_to_their_fault_kind():
    membership = "name: x\nnemesis:\n  schedule:\n    - {at_s: 5, fault: {kind: %s, mode: %s}}\n"
    assert "a membership fault's mode is one of" in bad(membership % ("membership", "bridge"))
    assert "a partition's mode is one of" in bad(membership % ("partition", "kill-joining"))
    parse_scenario(membership % ("membership", "kill-joining"), "ok.yaml")


def test_a_membership_move_changes_one_replica_and_keeps_enough():
    rng = random.Random(5)
    for _ in range(200):
        replicas = rng.sample([1, 2, 3, 4], rng.choice([3, 4]))
        target = membership_target(replicas, [1, 2, 3, 4], rng)
        assert len(set(target)) == len(target) >= MEMBERSHIP_REPLICAS_MIN
        assert len(set(target) ^ set(replicas)) in (1, 2)  # one added, removed, or swapped


def test_idempotence_needs_acks_all():
    assert "workload.idempotence" in bad("name: x\nworkload: {acks: 1, idempotence: true}\n")


def test_invalid_yaml_is_reported_with_the_file():
    assert bad("name: [x\n").startswith("bad.yaml: not valid YAML")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ScenarioError, match="nope.yaml: cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_the_plan_depends_only_on_the_seed():
    scenario = load_scenario(SCENARIOS / "mixed.yaml")
    one = plan(scenario.nemesis, scenario.duration_s, random.Random(7))
    assert one == plan(scenario.nemesis, scenario.duration_s, random.Random(7))
    assert one != plan(scenario.nemesis, scenario.duration_s, random.Random(8))
    assert all(p.at_s < scenario.duration_s - scenario.nemesis.quiet_s for p in one)


def test_the_scenario_written_to_a_run_dir_loads_back_as_the_same_scenario(tmp_path):
    from chaos.report import write_scenario

    for name in SHIPPED:
        scenario = load_scenario(SCENARIOS / f"{name}.yaml")
        write_scenario(tmp_path, scenario)
        again = load_scenario(tmp_path / "scenario.yaml")
        assert attrs.evolve(again, path=None) == attrs.evolve(scenario, path=None), name


def test_only_a_link_fault_takes_clients():
    message = bad("name: x\nnemesis:\n  schedule:\n    - {at_s: 5, fault: {kind: kill, clients: true}}\n")
    assert message == "bad.yaml: nemesis.schedule[0].fault.clients: only a link fault takes clients"


@pytest.mark.parametrize("name", ["failover", "crash-restart", "pause", "rolling-restart", "failover-idempotent"])
def test_process_fault_scenarios_run_against_apache_kafka_as_written(name):
    scenario = with_overrides(load_scenario(SCENARIOS / f"{name}.yaml"), broker="apache-kafka")
    assert scenario.cluster.broker == "apache-kafka" and scenario.cluster.network == "proxy"


def test_partitions_run_against_apache_kafka_only_in_netns_mode():
    partition = load_scenario(SCENARIOS / "partition.yaml")
    with pytest.raises(ScenarioError, match=r"partition faults against Kafka need network: netns"):
        with_overrides(partition, broker="apache-kafka")
    assert with_overrides(partition, broker="apache-kafka", network="netns").cluster.network == "netns"


@pytest.mark.parametrize("name", ["power-loss", "slow-disk", "disk-faults"])
def test_scenarios_needing_the_fault_seam_are_refused_for_apache_kafka(name):
    with pytest.raises(ScenarioError, match="no fault_injection"):
        with_overrides(load_scenario(SCENARIOS / f"{name}.yaml"), broker="apache-kafka")


def test_a_power_loss_is_refused_for_apache_kafka():
    message = bad("name: x\ncluster: {broker: apache-kafka}\nnemesis:\n  schedule:\n"
                  "    - {at_s: 5, fault: {kind: power-loss}}\n")
    assert message == ("bad.yaml: cluster.broker: apache-kafka: nemesis.schedule[0]: power-loss faults need "
                       "chronik-trio's fault seam")


def test_a_meta_leader_target_is_refused_for_apache_kafka():
    message = bad("name: x\ncluster: {broker: apache-kafka}\nnemesis:\n  schedule:\n"
                  "    - {at_s: 5, fault: {kind: pause, target: meta-leader}}\n")
    assert message == ("bad.yaml: cluster.broker: apache-kafka: nemesis.schedule[0]: target meta-leader is "
                       "not known for Kafka")


def run_chaos(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chaos", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_chaos_list_shows_every_shipped_scenario_from_any_directory(tmp_path):
    proc = run_chaos("list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == sorted(SHIPPED)


@pytest.mark.parametrize("argument", ["failover.yaml", "failover"])
def test_a_shipped_scenario_is_found_by_name_from_any_directory(tmp_path, argument):
    proc = run_chaos("validate", argument, cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"{argument}: ok"), proc.stderr


def test_an_unknown_scenario_name_lists_the_shipped_ones(tmp_path):
    proc = run_chaos("run", "no-such-scenario", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no-such-scenario: no such file" in proc.stderr and "failover" in proc.stderr


def test_a_missing_extra_is_named_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(chaos_main, "EXTRA_MODULES", {"chronik_no_such_module": "no-such-package"})
    assert chaos_main.main(["run", "failover"]) == 2
    err = capsys.readouterr().err
    assert "no-such-package" in err and "pip install -e '.[chaos]'" in err


def test_importing_the_harness_entry_point_needs_no_extra():
    code = "import sys, chaos.__main__; print(sorted({'yaml', 'aiokafka'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_the_simulator_refuses_an_apache_kafka_scenario(tmp_path):
    (tmp_path / "kafka.yaml").write_text("name: kafka\ncluster: {broker: apache-kafka}\n")
    done = run_chaos("sim", "kafka.yaml", "--seed", "1", cwd=tmp_path)
    assert done.returncode == 2 and "runs apache-kafka" in done.stderr, done.stderr
