"""`chronik-trio dev-cluster`: the real command as a subprocess, real nodes, real clients.

Every process is found by PID (the supervisor prints each node's) and, whatever happens,
stopped by PID at teardown; only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from chronik_trio import cli
from chronik_trio.tools import dev_cluster as dev_cluster_module
from tests.brokers import CHRONIK_TRIO, free_ports

pytestmark = pytest.mark.timeout(90)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 20


def free_base_port(nodes: int) -> int:
    """A base port whose 2*nodes consecutive ports (Kafka, then Raft) are all free now,
    below the ephemeral range (nodeharness.free_ports)."""
    return free_ports(2 * nodes, contiguous=True)[0]


def is_node_process(pid: int) -> bool:
    """Whether PID is (still) a chronik-trio node, not a recycled PID of something else."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return b"chronik_trio.cli\x00node" in cmdline and "State:\tZ" not in status


class DevCluster:
    """One `chronik-trio dev-cluster` supervisor process and the nodes it reports."""

    def __init__(self, tmp_path: pathlib.Path, nodes: int, data_dir: pathlib.Path | None = None,
                 base_port: int | None = None, extra: list[str] | None = None) -> None:
        self.nodes = nodes
        self.data_dir = data_dir or tmp_path / "dc"
        self.base_port = base_port
        self.extra = list(extra or [])
        self.out_path = tmp_path / f"dev-cluster-{time.monotonic_ns()}.out"
        self.proc: subprocess.Popen | None = None
        self.bootstrap = ""
        self.node_pids: dict[int, int] = {}

    def output(self) -> str:
        try:
            return self.out_path.read_text()
        except FileNotFoundError:
            return ""

    def start(self) -> "DevCluster":
        """Start and wait for `ready`; a fresh base port is tried if one was taken meanwhile."""
        for _ in range(PORT_ATTEMPTS if self.base_port is None else 1):
            base = self.base_port or free_base_port(self.nodes)
            self.out_path = self.out_path.with_name(f"dev-cluster-{time.monotonic_ns()}.out")
            with open(self.out_path, "w") as out:
                self.proc = subprocess.Popen(
                    [CHRONIK_TRIO, "dev-cluster", "--nodes", str(self.nodes), "--base-port", str(base),
                     "--data-dir", str(self.data_dir), *self.extra],
                    stdout=out, stderr=subprocess.STDOUT)
            if self._wait_ready():
                self.base_port = base
                return self
            if "in use" not in self.output():
                break
        raise AssertionError(f"dev-cluster did not start:\n{self.output()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.output()
            self.node_pids.update({int(n): int(p) for n, p in re.findall(r"node (\d+): kafka .*?, pid (\d+)", text)})
            match = re.search(r"ready; bootstrap: (\S+)", text)
            if match:
                self.bootstrap = match.group(1)
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        raise AssertionError(f"dev-cluster not ready after {READY_TIMEOUT_S}s:\n{self.output()}")

    def signal(self, sig: int) -> int:
        os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def cleanup(self) -> None:
        """Teardown, whatever state the test left: supervisor, then any node, by PID."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        for pid in self.node_pids.values():
            if is_node_process(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev_cluster(tmp_path):
    made: list[DevCluster] = []

    def make(nodes: int, **kwargs) -> DevCluster:
        cluster = DevCluster(tmp_path, nodes, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.cleanup()


def admin(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", bootstrap, "--timeout", "15", *args],
                          capture_output=True, text=True, timeout=60)


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dev-cluster-test",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values


@pytest.mark.timeout(180)  # two 3-node starts: 20 s on a quiet machine, 50 s seen at load 10
def test_three_nodes_serve_clients_stop_on_sigterm_and_restart_from_their_data(dev_cluster):
    cluster = dev_cluster(3).start()
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{cluster.base_port + i}" for i in range(3))
    assert sorted(cluster.node_pids) == [1, 2, 3]
    for i in (1, 2, 3):  # Raft ports follow the Kafka ports
        assert f"raft 127.0.0.1:{cluster.base_port + 3 + i - 1}" in cluster.output()

    created = admin(cluster.bootstrap, "create-topic", "events", "--partitions", "3", "--replication-factor", "3")
    assert created.returncode == 0, created.stderr
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    sent = [b"record-%d" % i for i in range(60)]
    for i, value in enumerate(sent):
        producer.produce("events", value, partition=i % 3)
    assert producer.flush(30) == 0
    assert sorted(consume_all(cluster.bootstrap, "events", 3, len(sent))) == sorted(sent)

    listed = admin(cluster.bootstrap, "topics", "--json")
    assert listed.returncode == 0, listed.stderr
    (events,) = [t for t in json.loads(listed.stdout)["topics"] if t["name"] == "events"]
    assert [p["partition"] for p in events["partitions"]] == [0, 1, 2]
    for p in events["partitions"]:
        assert sorted(p["replicas"]) == [1, 2, 3] and p["leader"] in (1, 2, 3), p
        assert p["leader_epoch"] >= 1 and p["offline_replicas"] == [], p

    assert cluster.signal(signal.SIGTERM) == 0, cluster.output()
    assert "every node stopped" in cluster.output()
    assert not [pid for pid in cluster.node_pids.values() if is_node_process(pid)]
    for i in (1, 2, 3):
        log = (cluster.data_dir / f"node{i}" / "node.log").read_text()
        assert f"node {i} ready:" in log and f"node {i} stopped cleanly" in log

    # The same command again: every node rejoins from its data dir, the records are there.
    again = dev_cluster(3, data_dir=cluster.data_dir, base_port=cluster.base_port).start()
    assert sorted(consume_all(again.bootstrap, "events", 3, len(sent))) == sorted(sent)
    assert again.signal(signal.SIGINT) == 0, again.output()  # Ctrl-C stops it like SIGTERM
    assert not [pid for pid in again.node_pids.values() if is_node_process(pid)]
    for i in (1, 2, 3):  # __meta was bootstrapped on the first start only; logs are appended to
        log = (cluster.data_dir / f"node{i}" / "node.log").read_text()
        assert log.count("bootstrapped __meta") == 1 and log.count("--- dev-cluster: starting") == 2


def test_a_node_that_dies_stops_the_cluster_with_its_log_tail(dev_cluster):
    cluster = dev_cluster(2, extra=["--log-level", "debug"]).start()
    assert " DEBUG " in (cluster.data_dir / "node1" / "node.log").read_text()  # passed on
    os.kill(cluster.node_pids[2], signal.SIGKILL)
    assert cluster.proc.wait(timeout=STOP_TIMEOUT_S) == 1
    out = cluster.output()
    assert f"node 2 (pid {cluster.node_pids[2]}) exited unexpectedly with signal SIGKILL" in out
    assert "last lines of" in out and "node 2 ready:" in out.split("exited unexpectedly", 1)[1]
    assert not [pid for pid in cluster.node_pids.values() if is_node_process(pid)]


def test_nodes_stop_when_the_supervisor_is_killed(dev_cluster):
    cluster = dev_cluster(1).start()
    cluster.proc.kill()  # SIGKILL: no chance to stop its nodes itself
    cluster.proc.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while is_node_process(cluster.node_pids[1]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_node_process(cluster.node_pids[1])
    assert "node 1 stopped cleanly" in (cluster.data_dir / "node1" / "node.log").read_text()


def test_sigterm_while_nodes_start_stops_them_with_exit_0(tmp_path):
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([CHRONIK_TRIO, "dev-cluster", "--nodes", "1", "--base-port",
                                 str(free_base_port(1)), "--data-dir", str(tmp_path / "dc")],
                                stdout=out, stderr=subprocess.STDOUT)
    node_pid = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while node_pid is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"node 1: kafka .*?, pid (\d+)", out_path.read_text())
            node_pid = int(found.group(1)) if found else None
            time.sleep(0.02)
        assert node_pid is not None, out_path.read_text()
        os.kill(proc.pid, signal.SIGTERM)  # the node is still starting (or just ready)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, out_path.read_text()
        assert not is_node_process(node_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        if node_pid is not None and is_node_process(node_pid):
            os.kill(node_pid, signal.SIGKILL)


def run_dev_cluster(capsys, *args: str) -> tuple[int, str]:
    """The command in this process: refusals come before any node starts, and save a
    second of interpreter start-up each."""
    code = cli.main(["dev-cluster", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("nodes", ["0", "8"])
def test_node_counts_outside_one_to_seven_are_refused(tmp_path, capsys, nodes):
    code, err = run_dev_cluster(capsys, "--nodes", nodes, "--data-dir", str(tmp_path / "dc"))
    assert code == 2 and "--nodes must be 1..7" in err
    assert not (tmp_path / "dc").exists()


def test_busy_ports_are_refused(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        base = s.getsockname()[1]
        code, err = run_dev_cluster(capsys, "--nodes", "1", "--base-port", str(base),
                                    "--data-dir", str(tmp_path / "dc"))
    assert code == 2 and f"port(s) [{base}" in err and "in use" in err


def test_a_data_dir_it_did_not_make_is_never_wiped(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    code, err = run_dev_cluster(capsys, "--nodes", "1", "--base-port", str(free_base_port(1)),
                                "--data-dir", str(precious), "--clean")
    assert code == 2 and "dev-cluster did not make it" in err
    assert (precious / "keep.txt").read_text() == "mine"


def test_clean_wipes_a_data_dir_it_made(tmp_path):
    data_dir = tmp_path / "dc"
    dev_cluster_module.prepare_data_dir(data_dir, 3, 9092, clean=False)
    (data_dir / "node1").mkdir()
    (data_dir / "node1" / "old").write_text("x")
    dev_cluster_module.prepare_data_dir(data_dir, 1, 9100, clean=True)
    assert sorted(p.name for p in data_dir.iterdir()) == ["dev-cluster.json"]
    assert json.loads((data_dir / "dev-cluster.json").read_text()) == {"nodes": 1, "base_port": 9100}


def test_a_data_dir_of_another_cluster_shape_is_refused(tmp_path, capsys):
    data_dir = tmp_path / "dc"
    data_dir.mkdir()
    (data_dir / "dev-cluster.json").write_text(json.dumps({"nodes": 3, "base_port": 9092}))
    code, err = run_dev_cluster(capsys, "--nodes", "1", "--base-port", str(free_base_port(1)),
                                "--data-dir", str(data_dir))
    assert code == 2 and "--nodes 3 --base-port 9092" in err and "--clean" in err
