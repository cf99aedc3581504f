"""Consumer groups with real clients in real processes (issue 6): three consumers of one
group over a 6-partition topic split it and read each record once; one leaves and the
others take over; one joins and the assignment rebalances; all stop and new ones resume
exactly after the last commit. Then the same with a mix of clients whose assignors agree.

The stabilisation times (from the leave or join until every live consumer has its final
assignment) are printed; docs/consumer-groups.md has the measured figures.
"""

from __future__ import annotations

import time

import pytest

from tests.groups.harness import (GROUP_CONFIG, ConsumerProc, check_consumed, committed, consumed, describe,
                                  produce, split_ok, stable_since, wait_until)
from tests.kafka_wire import KafkaWire
from tests.kafkajs import kafkajs_dir

pytestmark = pytest.mark.timeout(150)

PARTITIONS = 6
PER_PARTITION = 20
STEP_TIMEOUT_S = 40.0


@pytest.fixture
def group_broker(broker_factory, tmp_path):
    config = tmp_path / "groups.toml"
    config.write_text(GROUP_CONFIG)
    return broker_factory(extra_args=["--config", str(config)]).start()


@pytest.fixture
def consumers():
    made: list[ConsumerProc] = []
    yield made
    for c in made:
        c.kill()


def _run_lifecycle(broker, consumers, tmp_path, clients: list[str], assignor: str, group: str) -> dict:
    topic = f"{group}-topic"
    with KafkaWire.connect(broker.port) as wire:
        assert wire.create_topics([topic], partitions=PARTITIONS) == {topic: 0}

    def make(name: str, client: str) -> ConsumerProc:
        c = ConsumerProc(tmp_path, name, client, broker.bootstrap, group, topic, assignor=assignor)
        consumers.append(c)
        return c.start()

    expected: set[tuple[int, int]] = set()

    def produce_round(tag: str) -> None:
        start = {p: sum(1 for (q, _) in expected if q == p) for p in range(PARTITIONS)}
        produce(broker.port, topic, PARTITIONS, PER_PARTITION, tag)
        expected.update((p, start[p] + i) for p in range(PARTITIONS) for i in range(PER_PARTITION))

    def settle(procs, what: str, after: float) -> float:
        wait_until(f"{what}: all records consumed",
                   lambda: expected <= set(consumed(procs)), STEP_TIMEOUT_S, lambda: describe(procs))
        wait_until(f"{what}: partitions split", lambda: split_ok(procs, PARTITIONS), STEP_TIMEOUT_S,
                   lambda: describe(procs))
        check_consumed(procs, expected, what, PARTITIONS)
        return stable_since(procs, after) - after

    times = {}
    # Three consumers split the topic and read every record once.
    produce_round("a")
    first = [make(f"c{i}", clients[i % len(clients)]) for i in range(3)]
    t0 = time.time()
    times["form"] = settle(first, "three consumers", t0)
    assert all(len(c.assigned()) == 2 for c in first), describe(first)

    # One leaves (a clean close: LeaveGroup); the other two take over its partitions.
    t0 = time.time()
    first[2].stop()
    produce_round("b")
    times["leave"] = settle(first, "after a leave", t0)
    assert "closed" in [e["e"] for e in first[2].events()], first[2].log_text()

    # A new one joins; the assignment rebalances over three again.
    t0 = time.time()  # includes the new process's start-up
    joiner = make("c3", clients[2 % len(clients)])
    produce_round("c")
    procs = first + [joiner]
    times["join"] = settle(procs, "after a join", t0)
    assert all(len(c.assigned()) == 2 for c in procs if c.running), describe(procs)

    # Everybody stops; new consumers resume exactly after the last commit.
    for c in procs:
        c.stop()
    ends = {p: sum(1 for (q, _) in expected if q == p) for p in range(PARTITIONS)}
    assert committed(broker.port, group, topic, PARTITIONS) == ends
    old = set(expected)
    produce_round("d")
    again = [make(f"r{i}", clients[i % len(clients)]) for i in range(3)]
    wait_until("restarted consumers read the new records", lambda: expected - old <= set(consumed(again)),
               STEP_TIMEOUT_S, lambda: describe(again))
    resumed = consumed(again)
    assert not set(resumed) & old, f"records read again after a restart: {sorted(set(resumed) & old)[:5]}"
    assert len(resumed) == len(set(resumed)), "a record was read twice after the restart"
    for c in again:
        c.stop()
    print(f"\n{clients} {assignor}: stable after the first join {times['form']:.2f}s, "
          f"a leave {times['leave']:.2f}s, a join {times['join']:.2f}s; loadavg {_loadavg()}")
    return times


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python", "aiokafka", "kafkajs"])
def test_three_consumers_split_leave_join_and_resume_after_restart(group_broker, consumers, tmp_path, client):
    if client == "kafkajs":
        kafkajs_dir()  # installed (or the test is skipped with the reason)
    assignor = "roundrobin" if client == "kafkajs" else "range"
    _run_lifecycle(group_broker, consumers, tmp_path, [client], assignor, f"g-{client}")


def test_mixed_clients_share_a_group_with_the_range_assignor(group_broker, consumers, tmp_path):
    _run_lifecycle(group_broker, consumers, tmp_path, ["confluent-kafka", "kafka-python", "aiokafka"], "range",
                   "g-mixed")


def test_librdkafka_cooperative_sticky_group_rebalances_incrementally(group_broker, consumers, tmp_path):
    """The broker runs the classic protocol; the cooperative part is librdkafka's own."""
    _run_lifecycle(group_broker, consumers, tmp_path, ["confluent-kafka"], "cooperative-sticky", "g-coop")


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(group_broker, consumers, tmp_path):
    """group.instance.id (KIP-345) with librdkafka: a member SIGKILLed and restarted within its
    session timeout gets its old partitions back, and the other member never rebalances."""
    topic, group = "static-topic", "g-static"
    with KafkaWire.connect(group_broker.port) as wire:
        assert wire.create_topics([topic], partitions=PARTITIONS) == {topic: 0}

    def make(name: str, instance: str) -> ConsumerProc:
        c = ConsumerProc(tmp_path, name, "confluent-kafka", group_broker.bootstrap, group, topic,
                         instance_id=instance)
        consumers.append(c)
        return c.start()

    a, b = make("s0", "instance-0"), make("s1", "instance-1")
    wait_until("two static members split the topic", lambda: split_ok([a, b], PARTITIONS), STEP_TIMEOUT_S,
               lambda: describe([a, b]))
    before = b.assigned()
    changes_of_a = len([e for e in a.events() if e["e"] == "assigned"])
    b.kill()  # no LeaveGroup: a static member is expected back
    again = make("s1-again", "instance-1")
    t0 = time.time()
    wait_until("the restarted member has its partitions back", lambda: again.assigned() == before,
               STEP_TIMEOUT_S, lambda: describe([a, again]))
    produce(group_broker.port, topic, PARTITIONS, PER_PARTITION, "static")
    wait_until("records flow to both", lambda: a.records() and again.records(), STEP_TIMEOUT_S,
               lambda: describe([a, again]))
    assert len([e for e in a.events() if e["e"] == "assigned"]) == changes_of_a, describe([a, again])
    print(f"\nstatic member back with its partitions {time.time() - t0:.2f}s after its new process started")
