"""`chronik-trio admin`: the real command against real nodes (127.0.0.1).

Each command runs at least once as a subprocess (`admin`); variants and polling loops call
the same entry point in this process (`admin_here`), which saves the second or more an
interpreter takes to start on a busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from chronik_trio import cli
from tests.brokers import CHRONIK_TRIO, free_port, free_ports

pytestmark = pytest.mark.timeout(90)

SETTLE_TIMEOUT_S = 30.0  # failover, ISR shrink after a kill, ISR regrowth after a restart


def admin(bootstrap: str, *args: str, timeout_s: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", bootstrap, "--timeout", str(timeout_s), *args],
                          capture_output=True, text=True, timeout=60)


def admin_here(capsys, bootstrap: str, *args: str, timeout_s: float = 15) -> subprocess.CompletedProcess:
    capsys.readouterr()
    code = cli.main(["admin", "--bootstrap", bootstrap, "--timeout", str(timeout_s), *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def health_until(capsys, bootstrap: str, done) -> dict:
    """`admin health --json` until done(report) or SETTLE_TIMEOUT_S; the last report."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        ran = admin_here(capsys, bootstrap, "health", "--json", timeout_s=5)
        report = json.loads(ran.stdout)
        assert ran.returncode == (0 if report["healthy"] else 1), ran
        if done(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def test_topics_lifecycle_on_one_node(broker, capsys):
    """create (refused twice: exists, bad --config), list, health, delete (refused once gone)."""
    b = broker.bootstrap
    created = admin(b, "create-topic", "orders", "--partitions", "2", "--replication-factor", "1",
                    "--config", "retention.ms=3600000")
    assert (created.returncode, created.stdout.strip()) == (0, "created topic orders"), created.stderr
    res = ConfigResource(ResourceType.TOPIC, "orders")
    client = AdminClient({"bootstrap.servers": b})
    configs = client.describe_configs([res])[res].result(timeout=15)
    assert configs["retention.ms"].value == "3600000"

    again = admin_here(capsys, b, "create-topic", "orders", "--partitions", "2")
    assert again.returncode == 1 and "TOPIC_ALREADY_EXISTS" in again.stderr
    refused = admin_here(capsys, b, "create-topic", "t", "--config", "retention.ms")
    assert refused.returncode == 2 and "--config expects KEY=VALUE" in refused.stderr

    listed = admin(b, "topics", "--json")
    assert listed.returncode == 0, listed.stderr
    (orders,) = [t for t in json.loads(listed.stdout)["topics"] if t["name"] == "orders"]
    assert [(p["partition"], p["leader"], p["replicas"], p["isr"], p["offline_replicas"], p["error"])
            for p in orders["partitions"]] == [(0, 1, [1], [1], [], None), (1, 1, [1], [1], [], None)]
    assert all(p["leader_epoch"] >= 1 for p in orders["partitions"])

    capsys.readouterr()  # options also go after the subcommand
    assert cli.main(["admin", "topics", "orders", "--bootstrap", b, "--timeout", "15"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE", "ERROR"]
    assert [line.split()[:3] for line in table[1:]] == [["orders", "0", "1"], ["orders", "1", "1"]]
    missing = admin_here(capsys, b, "topics", "no-such-topic")
    assert missing.returncode == 1 and "no such topic(s): no-such-topic" in missing.stderr

    defaults = admin_here(capsys, b, "create-topic", "plain")  # partitions and RF from the broker
    assert defaults.returncode == 0, defaults.stderr
    (plain,) = json.loads(admin_here(capsys, b, "topics", "plain", "--json").stdout)["topics"]
    assert [p["replicas"] for p in plain["partitions"]] == [[1]]

    healthy = admin(b, "health")
    assert healthy.returncode == 0 and healthy.stdout.startswith("healthy: 1 broker(s) answer, controller 1"), healthy

    deleted = admin(b, "delete-topic", "orders")
    assert deleted.returncode == 0, deleted.stderr
    topics = json.loads(admin_here(capsys, b, "topics", "--json").stdout)["topics"]
    assert "orders" not in [t["name"] for t in topics]
    gone = admin_here(capsys, b, "delete-topic", "orders")
    assert gone.returncode == 1 and "UNKNOWN_TOPIC" in gone.stderr


def test_cluster_shows_id_controller_and_brokers(broker_factory, capsys):
    broker = broker_factory(extra_args=["--rack", "rack-a"]).start()
    shown = json.loads(admin(broker.bootstrap, "cluster", "--json").stdout)
    assert shown["cluster_id"] and shown["controller"] == 1
    assert shown["brokers"] == [{"id": 1, "host": "127.0.0.1", "port": broker.port, "rack": "rack-a"}]
    text = admin_here(capsys, broker.bootstrap, "cluster").stdout.splitlines()
    assert text[:2] == [f"cluster id: {shown['cluster_id']}", "controller: 1"]
    assert [line.split() for line in text[2:]] == [["BROKER", "ADDRESS", "RACK"],
                                                   ["1", f"127.0.0.1:{broker.port}", "rack-a"]]


def test_no_answer_from_the_bootstrap_is_exit_code_2(capsys):
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    assert admin(nobody, "health", timeout_s=1).returncode == 2
    for command in (["topics"], ["cluster"]):
        ran = admin_here(capsys, nobody, *command, timeout_s=1)
        assert ran.returncode == 2 and f"no answer from {nobody}" in ran.stderr, (command, ran)


def test_admin_needs_no_confluent_kafka(broker):
    """The tool speaks the protocol itself (kio), so a plain `pip install -e .` is enough."""
    code = ("import sys; sys.modules['confluent_kafka'] = None\n"
            "from chronik_trio import cli\n"
            f"sys.exit(cli.main(['admin', '--bootstrap', '{broker.bootstrap}', 'create-topic', 'plain-install']))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout.strip()) == (0, "created topic plain-install"), ran.stderr


def test_health_after_a_node_is_killed_and_after_it_returns(broker_factory, capsys):
    ports = free_ports(6)
    kafka_ports = ports[:3]
    peers = ",".join(f"{i}@127.0.0.1:{ports[3 + i - 1]}" for i in (1, 2, 3))
    nodes = [broker_factory(f"n{i}", node_id=i, port=kafka_ports[i - 1], extra_args=["--peers", peers])
             for i in (1, 2, 3)]
    for node in nodes:  # all at once: none serves before __meta has a quorum
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    b = ",".join(node.bootstrap for node in nodes)
    created = admin(b, "create-topic", "replicated", "--partitions", "3", "--replication-factor", "3")
    assert created.returncode == 0, created.stderr
    assert health_until(capsys, b, lambda r: r["healthy"])["healthy"]

    nodes[2].kill()  # SIGKILL node 3: it stays registered in __meta
    first = admin(b, "health")
    assert first.returncode == 1 and f"broker 3 at 127.0.0.1:{kafka_ports[2]} does not answer" in first.stdout

    # Once new leaders have reported and the ISR has shrunk: every partition is served by a
    # live leader but is under-replicated, and the broker is still unreachable.
    def settled(report):
        kinds = {p["kind"] for p in report["problems"]}
        under = {p["partition"] for p in report["problems"] if p["kind"] == "under_replicated"}
        return "leader_unreachable" not in kinds and under == {0, 1, 2}
    report = health_until(capsys, b, settled)
    assert settled(report), report
    assert not report["healthy"] and report["brokers"] == 3
    assert {(p["kind"], p.get("broker")) for p in report["problems"] if "partition" not in p} == \
        {("broker_unreachable", 3)}
    assert all(p["replicas"] == [3] for p in report["problems"]
               if p["kind"] in ("under_replicated", "replica_unreachable"))
    # `topics` may ask another broker, whose copy of __meta can be a moment behind.
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        listed = json.loads(admin_here(capsys, b, "topics", "--json").stdout)["topics"]
        moved = all(p["leader"] in (1, 2) and 3 not in p["isr"] for t in listed for p in t["partitions"])
        if moved or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert moved, listed

    nodes[2].start()  # back from its data dir: it catches up and the ISR regrows
    back = health_until(capsys, b, lambda r: r["healthy"])
    assert back["healthy"], back
