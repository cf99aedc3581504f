"""The node-process harness (nodeharness/): readiness and leaders from /health, caused and
uncaused exits, pause and resume, one port picker; and that it and the chaos harness import
nothing of the broker."""

from __future__ import annotations

import ast
import os
import pathlib
import signal

import pytest

from nodeharness import (NodeGroup, NodeProcess, UnexpectedExit, chronik_trio_command,
                         free_ports, node_args)

pytestmark = pytest.mark.timeout(60)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def single_node(group: NodeGroup, tmp_path: pathlib.Path) -> NodeProcess:
    kafka, admin = free_ports(2)
    args = node_args(1, listen=f"127.0.0.1:{kafka}", data_dir=tmp_path / "data",
                     admin_listen=f"127.0.0.1:{admin}")
    return group.add(NodeProcess(1, [*chronik_trio_command(), *args], tmp_path / "node.log",
                                 f"127.0.0.1:{admin}"))


def test_ready_and_leaders_come_from_health_and_a_stop_is_clean(tmp_path):
    group = NodeGroup()
    node = single_node(group, tmp_path).start()
    try:
        node.wait_ready(30)
        assert node.health()["serving_kafka"] is True
        leader, term = group.leaders()["__meta"]  # a single node leads its one-voter __meta
        assert leader == 1 and term >= 1
        assert group.meta_leaders() == {1: 1}
    finally:
        group.close()
    assert node.returncode == 0 and "stopped cleanly" in node.log_text()


def test_an_exit_nobody_caused_fails_at_close_even_after_a_restart(tmp_path):
    group = NodeGroup()
    node = single_node(group, tmp_path).start().wait_ready(30)
    os.kill(node.pid, signal.SIGKILL)  # not through the harness: a crash, as far as it knows
    node.proc.wait(timeout=10)
    node.start().wait_ready(30)  # a restart does not forget the crash
    with pytest.raises(UnexpectedExit, match=r"(?s)node 1 \(pid \d+\) exited with signal SIGKILL.*\(nobody stopped it\)"):
        group.close()
    assert not node.running


def test_kill_pause_and_resume_through_the_harness_are_no_failure(tmp_path):
    group = NodeGroup()
    node = single_node(group, tmp_path).start().wait_ready(30)
    try:
        assert node.kill() == -signal.SIGKILL
        node.start().wait_ready(30)
        node.pause()
        assert group.running() == [] and node.health() is None
        node.resume()
        node.wait_ready(30)
        node.pause()  # close() continues a paused node so that it hears SIGTERM
    finally:
        group.close()
    assert node.returncode == 0


def test_free_ports_are_never_handed_out_twice():
    first, second = free_ports(20), free_ports(20)
    assert len(set(first + second)) == 40
    run = free_ports(6, contiguous=True)
    assert run == list(range(run[0], run[0] + 6)) and not set(run) & set(first + second)


@pytest.mark.parametrize("package", ["nodeharness", "chaos"])
def test_the_harnesses_import_nothing_of_the_broker(package):
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] == "chronik_trio"], (path.name, names)
