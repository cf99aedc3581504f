"""The group APIs on the wire (tests/kafka_wire.py against a real node): Kafka's error codes
for bad or stale requests, and the rarer APIs (batched FindCoordinator, batched LeaveGroup,
multi-group OffsetFetch, DescribeGroups, ListGroups, DeleteGroups, OffsetDelete, static
members, session expiry)."""

from __future__ import annotations

import struct

import pytest

from tests.groups.harness import (DELETE_GROUPS, DESCRIBE_GROUPS, FIND_COORDINATOR, HEARTBEAT, JOIN_GROUP,
                                  LEAVE_GROUP, LIST_GROUPS, OFFSET_COMMIT, OFFSET_DELETE, OFFSET_FETCH,
                                  SYNC_GROUP, wait_until)
from tests.kafka_wire import KafkaWire

pytestmark = pytest.mark.timeout(60)

# Errors (Kafka's codes).
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_METADATA_TOO_LARGE = 12
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86

SESSION_MS = 1000  # the test broker allows short sessions, so expiry is quick to see
CONFIG = ("group_initial_rebalance_delay_ms = 0\ngroup_min_session_timeout_ms = 500\n"
          "offsets_topic_num_partitions = 3\n")
TOPIC = "wire-topic"


def subscription(*topics: str) -> bytes:
    """A ConsumerProtocolSubscription v0."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def join(wire, group: str, member_id: str = "", *, protocol_type: str = "consumer", protocols=None,
         instance_id: str | None = None, session_ms: int = SESSION_MS, version: int = 5):
    if protocols is None:
        protocols = [{"name": "range", "metadata": subscription(TOPIC)}]
    return wire.request(JOIN_GROUP, {"group_id": group, "session_timeout": session_ms, "rebalance_timeout": 5000,
                                     "member_id": member_id, "group_instance_id": instance_id,
                                     "protocol_type": protocol_type, "protocols": protocols}, version=version)


def join_new(wire, group: str, **kw):
    """A new member's JoinGroup v5: MEMBER_ID_REQUIRED, then the join with that id."""
    first = join(wire, group, **kw)
    if kw.get("instance_id") is None:
        assert first.error_code == MEMBER_ID_REQUIRED and first.member_id, first
        first = join(wire, group, first.member_id, **kw)
    assert first.error_code == NONE, first
    return first


def sync(wire, group: str, member_id: str, generation: int, assignments=(), instance_id=None):
    return wire.request(SYNC_GROUP, {"group_id": group, "generation_id": generation, "member_id": member_id,
                                     "group_instance_id": instance_id,
                                     "assignments": [{"member_id": m, "assignment": a} for m, a in assignments]},
                        version=3)


def heartbeat(wire, group: str, member_id: str, generation: int, instance_id=None) -> int:
    return wire.request(HEARTBEAT, {"group_id": group, "generation_id": generation, "member_id": member_id,
                                    "group_instance_id": instance_id}, version=3).error_code


def commit(wire, group: str, member_id: str, generation: int, offsets, version: int = 8):
    """offsets: [(topic, partition, offset, metadata)] -> {(topic, partition): error}."""
    by_topic: dict[str, list] = {}
    for t, p, o, md in offsets:
        by_topic.setdefault(t, []).append({"partition_index": p, "committed_offset": o,
                                           "committed_leader_epoch": -1, "committed_metadata": md})
    r = wire.request(OFFSET_COMMIT, {"group_id": group, "generation_id_or_member_epoch": generation,
                                     "member_id": member_id, "group_instance_id": None, "retention_time": -1,
                                     "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]},
                     version=version)
    return {(t.name, p.partition_index): p.error_code for t in r.topics for p in t.partitions}


def fetch(wire, groups: dict[str, list[int] | None]):
    """OffsetFetch v8 for several groups at once -> {group: (error, {(topic, p): (offset, metadata)})}."""
    r = wire.request(OFFSET_FETCH, {"groups": [
        {"group_id": g, "topics": None if ps is None else [{"name": TOPIC, "partition_indexes": ps}]}
        for g, ps in groups.items()], "require_stable": False}, version=8)
    return {g.group_id: (g.error_code, {(t.name, p.partition_index): (p.committed_offset, p.metadata)
                                        for t in g.topics for p in t.partitions}) for g in r.groups}


@pytest.fixture
def broker(broker_factory, tmp_path):
    config = tmp_path / "groups.toml"
    config.write_text(CONFIG)
    broker = broker_factory(extra_args=["--config", str(config)]).start()
    with KafkaWire.connect(broker.port) as w:
        assert w.create_topics([TOPIC], partitions=2) == {TOPIC: 0}
    return broker


def _connect_loaded(broker) -> KafkaWire:
    w = KafkaWire.connect(broker.port)
    r = w.request(FIND_COORDINATOR, {"key": "warm-up", "key_type": 0}, version=2)
    assert r.error_code == NONE and r.port == broker.port, r
    # Each offsets partition's coordinator loads once its log is applied (a moment).
    wait_until("coordinators loaded", lambda: all(
        g.error_code == NONE for g in w.request(DESCRIBE_GROUPS, {"groups": [f"g{i}" for i in range(20)]},
                                                version=0).groups), timeout_s=10)
    return w


@pytest.fixture
def wire(broker):
    with _connect_loaded(broker) as w:
        yield w


def _stable_group(wire, group: str):
    """One member, generation 1, Stable with an assignment; returns its JoinGroup answer."""
    j = join_new(wire, group)
    assert (j.generation_id, j.leader) == (1, j.member_id)
    s = sync(wire, group, j.member_id, 1, [(j.member_id, b"assignment")])
    assert (s.error_code, s.assignment) == (NONE, b"assignment")
    return j


def test_join_refuses_unknown_protocol_types_empty_protocols_and_bad_session_timeouts(wire):
    j = _stable_group(wire, "g1")
    assert join(wire, "g1", protocol_type="not-consumer").error_code == INCONSISTENT_GROUP_PROTOCOL
    assert join(wire, "g1", protocols=[{"name": "unknown-assignor", "metadata": b""}]).error_code == \
        INCONSISTENT_GROUP_PROTOCOL
    assert join(wire, "g-new", protocol_type="").error_code == INCONSISTENT_GROUP_PROTOCOL
    assert join(wire, "g-new", protocols=[]).error_code == INCONSISTENT_GROUP_PROTOCOL
    assert join(wire, "g-new", session_ms=10).error_code == INVALID_SESSION_TIMEOUT
    assert join(wire, "").error_code == INVALID_GROUP_ID
    assert join(wire, "g1", "no-such-member").error_code == UNKNOWN_MEMBER_ID
    assert heartbeat(wire, "g1", j.member_id, 1) == NONE  # the group is unharmed


def test_stale_generations_and_non_members_get_kafkas_errors(wire):
    j = _stable_group(wire, "g2")
    assert sync(wire, "g2", j.member_id, 0).error_code == ILLEGAL_GENERATION
    assert sync(wire, "g2", "stranger", 1).error_code == UNKNOWN_MEMBER_ID
    assert heartbeat(wire, "g2", j.member_id, 7) == ILLEGAL_GENERATION
    assert heartbeat(wire, "g2", "stranger", 1) == UNKNOWN_MEMBER_ID
    assert heartbeat(wire, "no-such-group", "stranger", 1) == UNKNOWN_MEMBER_ID
    assert commit(wire, "g2", "stranger", 1, [(TOPIC, 0, 5, None)]) == {(TOPIC, 0): UNKNOWN_MEMBER_ID}
    assert commit(wire, "g2", j.member_id, 0, [(TOPIC, 0, 5, None)]) == {(TOPIC, 0): ILLEGAL_GENERATION}
    assert commit(wire, "g2", "", -1, [(TOPIC, 0, 5, None)]) == {(TOPIC, 0): UNKNOWN_MEMBER_ID}
    assert commit(wire, "no-such-group", "m", 3, [(TOPIC, 0, 5, None)]) == {(TOPIC, 0): ILLEGAL_GENERATION}
    assert commit(wire, "g2", j.member_id, 1, [(TOPIC, 0, 5, "x" * 5000), (TOPIC, 1, 6, "kept"),
                                                ("no-such-topic", 0, 1, None)]) == {
        (TOPIC, 0): OFFSET_METADATA_TOO_LARGE, (TOPIC, 1): NONE, ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION}
    assert fetch(wire, {"g2": [0, 1]})["g2"] == (NONE, {(TOPIC, 0): (-1, ""), (TOPIC, 1): (6, "kept")})


def test_a_new_member_rebalances_and_the_old_generation_is_refused(wire):
    a = _stable_group(wire, "g3")
    b_id = join(wire, "g3").member_id  # MEMBER_ID_REQUIRED
    wire_b = KafkaWire.connect(wire.sock.getpeername()[1])
    try:
        wire_b.send(JOIN_GROUP, 5, {"group_id": "g3", "session_timeout": SESSION_MS, "rebalance_timeout": 5000,
                                    "member_id": b_id, "group_instance_id": None, "protocol_type": "consumer",
                                    "protocols": [{"name": "range", "metadata": subscription(TOPIC)}]})
        wait_until("b's join started a rebalance",
                   lambda: heartbeat(wire, "g3", a.member_id, 1) == REBALANCE_IN_PROGRESS, timeout_s=5)
        assert commit(wire, "g3", a.member_id, 1, [(TOPIC, 0, 1, None)]) == {(TOPIC, 0): NONE}
        a2 = join(wire, "g3", a.member_id)
        _, b2 = wire_b.recv()
        assert (a2.error_code, b2.error_code, a2.generation_id, b2.generation_id) == (NONE, NONE, 2, 2)
        assert {m.member_id for m in a2.members} == {a.member_id, b_id} and not b2.members
        assert sync(wire, "g3", a.member_id, 1).error_code == ILLEGAL_GENERATION
        # Between the join and the leader's SyncGroup, commits wait for the assignment.
        assert commit(wire, "g3", a.member_id, 2, [(TOPIC, 0, 2, None)]) == {(TOPIC, 0): REBALANCE_IN_PROGRESS}
        assert sync(wire, "g3", a.member_id, 2, [(a.member_id, b"a"), (b_id, b"b")]).assignment == b"a"
        assert commit(wire, "g3", a.member_id, 1, [(TOPIC, 0, 2, None)]) == {(TOPIC, 0): ILLEGAL_GENERATION}
        assert commit(wire, "g3", b_id, 2, [(TOPIC, 0, 3, None)]) == {(TOPIC, 0): NONE}
    finally:
        wire_b.close()


def test_batched_leave_find_coordinator_multi_group_fetch_describe_list_delete(wire):
    a = _stable_group(wire, "g4")
    assert commit(wire, "g4", a.member_id, 1, [(TOPIC, 0, 10, "m0")]) == {(TOPIC, 0): NONE}
    r = wire.request(FIND_COORDINATOR, {"key_type": 0, "coordinator_keys": ["g4", "other", ""]}, version=4)
    assert [c.error_code for c in r.coordinators] == [NONE, NONE, 42]  # INVALID_REQUEST for ""
    d = wire.request(DESCRIBE_GROUPS, {"groups": ["g4", "unknown-group"], "include_authorized_operations": False},
                     version=5)
    g4, unknown = d.groups
    assert (g4.group_state, g4.protocol_type, g4.protocol_data) == ("Stable", "consumer", "range")
    assert [(m.member_id, m.member_assignment) for m in g4.members] == [(a.member_id, b"assignment")]
    assert g4.members[0].client_host.startswith("/127.0.0.1")
    assert (unknown.error_code, unknown.group_state) == (NONE, "Dead")
    listed = {g.group_id: g.group_state for g in wire.request(LIST_GROUPS, {"states_filter": []}, version=4).groups}
    assert listed["g4"] == "Stable"
    assert wire.request(DELETE_GROUPS, {"groups_names": ["g4", "unknown-group"]}, version=2).results[0].error_code \
        == NON_EMPTY_GROUP
    r = wire.request(OFFSET_DELETE, {"group_id": "g4", "topics": [{"name": TOPIC, "partitions": [
        {"partition_index": 0}]}]}, version=0)
    assert (r.error_code, r.topics[0].partitions[0].error_code) == (NONE, GROUP_SUBSCRIBED_TO_TOPIC)
    leave = wire.request(LEAVE_GROUP, {"group_id": "g4", "members": [
        {"member_id": a.member_id, "group_instance_id": None}, {"member_id": "nobody", "group_instance_id": None}]},
        version=3)
    assert (leave.error_code, [m.error_code for m in leave.members]) == (NONE, [NONE, UNKNOWN_MEMBER_ID])
    assert fetch(wire, {"g4": None, "never-committed": [0]}) == {
        "g4": (NONE, {(TOPIC, 0): (10, "m0")}), "never-committed": (NONE, {(TOPIC, 0): (-1, "")})}
    r = wire.request(OFFSET_DELETE, {"group_id": "g4", "topics": [{"name": TOPIC, "partitions": [
        {"partition_index": 0}]}]}, version=0)
    assert (r.error_code, r.topics[0].partitions[0].error_code) == (NONE, NONE)
    assert fetch(wire, {"g4": [0]})["g4"] == (NONE, {(TOPIC, 0): (-1, "")})
    results = wire.request(DELETE_GROUPS, {"groups_names": ["g4", "unknown-group"]}, version=2).results
    assert [r.error_code for r in results] == [NONE, GROUP_ID_NOT_FOUND]


def test_static_member_restart_keeps_its_assignment_and_fences_the_old_id(wire):
    a = join_new(wire, "g5", instance_id="instance-a", session_ms=5000)
    assert sync(wire, "g5", a.member_id, 1, [(a.member_id, b"mine")], instance_id="instance-a").error_code == NONE
    again = join(wire, "g5", instance_id="instance-a", session_ms=5000)
    assert (again.error_code, again.generation_id) == (NONE, 1) and again.member_id != a.member_id
    assert heartbeat(wire, "g5", a.member_id, 1, "instance-a") == FENCED_INSTANCE_ID
    s = sync(wire, "g5", again.member_id, 1, instance_id="instance-a")
    assert (s.error_code, s.assignment) == (NONE, b"mine")


def test_a_silent_member_expires_after_its_session_timeout(wire):
    a = _stable_group(wire, "g6")
    wait_until("the member expired", lambda: heartbeat(wire, "g6", "probe", 1) == UNKNOWN_MEMBER_ID and
               wire.request(DESCRIBE_GROUPS, {"groups": ["g6"]}, version=0).groups[0].group_state == "Empty",
               timeout_s=SESSION_MS / 1000 + 5)
    assert heartbeat(wire, "g6", a.member_id, 1) == UNKNOWN_MEMBER_ID
    assert commit(wire, "g6", "", -1, [(TOPIC, 0, 3, None)]) == {(TOPIC, 0): NONE}  # Empty: plain commits


def test_old_versions_of_offset_commit_and_fetch(wire):
    assert commit(wire, "g7", "", -1, [(TOPIC, 1, 42, "old")], version=2) == {(TOPIC, 1): NONE}
    r = wire.request(OFFSET_FETCH, {"group_id": "g7", "topics": [{"name": TOPIC, "partition_indexes": [1]}]},
                     version=1)
    assert [(p.committed_offset, p.metadata, p.error_code) for p in r.topics[0].partitions] == [(42, "old", NONE)]
    j = join(wire, "g8", version=0)  # v0: no MEMBER_ID_REQUIRED
    assert (j.error_code, j.generation_id) == (NONE, 1)


def test_pipelined_commits_of_one_connection_are_written_in_order(wire):
    """Kafka handles a connection's requests one at a time: the last commit sent wins."""
    for offset in range(1, 31):
        wire.send(OFFSET_COMMIT, 8, {"group_id": "g9", "generation_id_or_member_epoch": -1, "member_id": "",
                                     "group_instance_id": None, "topics": [{"name": TOPIC, "partitions": [
                                         {"partition_index": 0, "committed_offset": offset,
                                          "committed_leader_epoch": -1, "committed_metadata": None}]}]})
    for _ in range(30):
        _, r = wire.recv()
        assert r.topics[0].partitions[0].error_code == NONE
    assert fetch(wire, {"g9": [0]})["g9"] == (NONE, {(TOPIC, 0): (30, "")})


def test_clients_cannot_produce_to_the_offsets_topic(wire):
    from tests.kafka_wire import Record, build_batch
    r = wire.produce("__consumer_offsets", 0, build_batch([Record(b"forged", b"offset")]))
    assert r.error_code == 17  # INVALID_TOPIC_EXCEPTION, as Kafka answers for internal topics


def test_groups_and_commits_survive_a_broker_restart(broker):
    with _connect_loaded(broker) as w:
        a = _stable_group(w, "g10")
        assert commit(w, "g10", a.member_id, 1, [(TOPIC, 1, 77, "before restart")]) == {(TOPIC, 1): NONE}
    broker.restart()
    with _connect_loaded(broker) as w:
        # Loaded from the log: Stable at generation 1 with the same member and assignment.
        assert heartbeat(w, "g10", a.member_id, 1) == NONE
        s = sync(w, "g10", a.member_id, 1)
        assert (s.error_code, s.assignment) == (NONE, b"assignment")
        assert fetch(w, {"g10": [1]})["g10"] == (NONE, {(TOPIC, 1): (77, "before restart")})
