"""The pure classic group protocol (chronik_trio/group/group.py), the offsets store and its
records: driven with explicit times, no I/O."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from chronik_trio.group import (Group, GroupState, GroupStore, JoinCompleted, JoinPending, JoinRequest,
                                JoinResult, PersistWanted, SyncCompleted, SyncPending, SyncResult,
                                java_string_hash, partition_for)
from chronik_trio.group.records import batch_records, build_batch, group_key, offset_key, parse_key
from chronik_trio.group.store import GroupRecord, MemberRecord, OffsetRecord, group_batch, offsets_batch
from chronik_trio.group.subscription import subscription_topics
from chronik_trio.partition.transactions import TxnMarker, control_batch
from chronik_trio.record_batch import read_header
from chronik_trio.storage.cleaner import rebuild_batch

pytestmark = pytest.mark.timeout(30)

SESSION_MS = 10_000
REBALANCE_MS = 20_000


def request(member_id="", *, protocols=(("range", b"r"),), protocol_type="consumer", instance_id=None,
            session_ms=SESSION_MS, require_known=True) -> JoinRequest:
    return JoinRequest(member_id, instance_id, "client", "/127.0.0.1", protocol_type, tuple(protocols),
                       session_ms, REBALANCE_MS, require_known)


def join_new(group: Group, now: float, name: str, **kw) -> str:
    """A new member's two JoinGroups (MEMBER_ID_REQUIRED first); returns its id."""
    first = group.join(now, request(**kw), name)
    if kw.get("instance_id") is None:
        assert first == JoinResult(ErrorCode.member_id_required, name)
        first = group.join(now, request(name, **kw), "unused")
    assert first == JoinPending(name)
    return name


DELAY_MS = 100  # the initial rebalance delay: members joining an Empty group within it join together


def form(names, now: float = 0, **kw) -> Group:
    """A group whose members `names` joined together (within the initial delay)."""
    g = Group("g", initial_rebalance_delay_ms=DELAY_MS)
    for name in names:
        join_new(g, now, name, **kw.get(name, {}))
    g.tick(now + DELAY_MS)
    return g


def joins(group: Group) -> dict[str, JoinResult]:
    return {e.member_id: e.result for e in group.take_events() if isinstance(e, JoinCompleted)}


def stabilise(group: Group, now: float, assignments: dict[str, bytes]) -> None:
    """The leader syncs, the write commits, everyone has its assignment."""
    leader = group.leader_id
    assert group.sync(now, leader, group.generation_id, None, None, None, list(assignments.items())) == \
        SyncPending(leader)
    assert PersistWanted(group.generation_id) in group.take_events()
    group.persisted(group.generation_id)
    assert group.state == GroupState.STABLE


def test_first_member_leads_generation_one_and_gets_the_member_list():
    g = Group("g")
    a = join_new(g, 0, "a")
    result = joins(g)["a"]
    assert (result.error, result.generation_id, result.leader, result.protocol_name) == (ErrorCode.none, 1, "a", "range")
    assert result.members == (("a", None, b"r"),)
    assert g.state == GroupState.COMPLETING_REBALANCE
    stabilise(g, 0, {a: b"A"})
    assert g.sync(1, a, 1, None, None, None, []) == SyncResult(ErrorCode.none, "consumer", "range", b"A")


def test_second_member_rebalances_and_followers_wait_for_the_leaders_assignment():
    g = Group("g")
    a = join_new(g, 0, "a")
    joins(g)
    stabilise(g, 0, {a: b"A"})
    b = join_new(g, 10, "b")
    assert g.state == GroupState.PREPARING_REBALANCE
    assert g.heartbeat(20, a, 1, None) == ErrorCode.rebalance_in_progress
    assert g.join(30, request(a), "x") == JoinPending(a)
    results = joins(g)
    assert {m: r.generation_id for m, r in results.items()} == {a: 2, b: 2}
    assert results[a].members and not results[b].members  # only the leader sees members
    assert g.sync(40, b, 2, None, None, None, []) == SyncPending(b)
    assert g.sync(41, a, 2, None, None, None, [(a, b"A2"), (b, b"B2")]) == SyncPending(a)
    assert PersistWanted(2) in g.take_events()
    g.persisted(2)
    done = {e.member_id: e.result.assignment for e in g.take_events() if isinstance(e, SyncCompleted)}
    assert done == {a: b"A2", b: b"B2"}


def test_stale_generation_unknown_member_and_wrong_protocol_type_get_kafkas_errors():
    g = Group("g")
    a = join_new(g, 0, "a")
    joins(g)
    stabilise(g, 0, {a: b"A"})
    assert g.sync(1, a, 0, None, None, None, []) == SyncResult(ErrorCode.illegal_generation)
    assert g.heartbeat(1, a, 7, None) == ErrorCode.illegal_generation
    assert g.heartbeat(1, "nobody", 1, None) == ErrorCode.unknown_member_id
    assert g.join(1, request("nobody"), "x").error == ErrorCode.unknown_member_id
    assert g.join(1, request(protocol_type="connect"), "x").error == ErrorCode.inconsistent_group_protocol
    assert g.join(1, request(protocols=(("other", b""),)), "x").error == ErrorCode.inconsistent_group_protocol
    assert g.join(1, request(protocol_type=""), "x").error == ErrorCode.inconsistent_group_protocol
    assert g.join(1, request(session_ms=10), "x").error == ErrorCode.invalid_session_timeout
    assert g.check_commit("nobody", 1, None) == ErrorCode.unknown_member_id
    assert g.check_commit(a, 0, None) == ErrorCode.illegal_generation
    assert g.check_commit("", -1, None) == ErrorCode.unknown_member_id  # not Empty
    assert g.check_commit(a, 1, None) == ErrorCode.none


def test_session_expiry_and_leave_rebalance_the_rest_and_the_last_leaves_an_empty_group():
    g = form(["a", "b"])
    a, b = "a", "b"
    joins(g)
    stabilise(g, 0, {a: b"A", b: b"B"})
    g.heartbeat(SESSION_MS - 1, a, 1, None)
    g.tick(DELAY_MS + SESSION_MS + 1)  # b never heartbeat after the join
    assert not g.is_member(b) and g.state == GroupState.PREPARING_REBALANCE
    g.join(SESSION_MS + 2, request(a), "x")
    assert joins(g)[a].generation_id == 2
    stabilise(g, SESSION_MS + 3, {a: b"A"})
    assert g.leave(SESSION_MS + 4, a, None) == ErrorCode.none
    assert g.state == GroupState.EMPTY and g.generation_id == 3
    assert PersistWanted(3) in g.take_events()
    assert g.check_commit("", -1, None) == ErrorCode.none  # an Empty group takes plain commits


def test_a_member_that_does_not_rejoin_within_the_rebalance_timeout_is_dropped():
    g = form(["a", "b"])
    a, b = "a", "b"
    joins(g)
    stabilise(g, 0, {a: b"A", b: b"B"})
    c = join_new(g, 100, "c")
    g.join(200, request(a), "x")
    assert not joins(g)
    g.heartbeat(5000, b, 1, None)  # b heartbeats but never rejoins
    g.tick(100 + REBALANCE_MS)
    results = joins(g)
    assert set(results) == {a, c} and not g.is_member(b)


def test_static_member_rejoins_with_a_new_id_without_a_rebalance_and_fences_the_old_id():
    g = form(["a", "b"], a={"instance_id": "i-a"}, b={"instance_id": "i-b"})
    a, b = "a", "b"
    joins(g)
    stabilise(g, 0, {a: b"A", b: b"B"})
    result = g.join(10, request(instance_id="i-b"), "b2")
    assert (result.error, result.member_id, result.generation_id) == (ErrorCode.none, "b2", 1)
    assert g.state == GroupState.STABLE
    assert PersistWanted(1) in g.take_events()
    assert g.heartbeat(11, b, 1, "i-b") == ErrorCode.fenced_instance_id
    assert g.sync(12, "b2", 1, "i-b", None, None, []) == SyncResult(ErrorCode.none, "consumer", "range", b"B")
    assert g.leave(13, b, "i-b") == ErrorCode.fenced_instance_id
    assert g.leave(13, "", "i-b") == ErrorCode.none


def test_protocol_vote_picks_what_every_member_supports():
    g = form(["a", "b"], a={"protocols": (("cooperative-sticky", b"c"), ("range", b"r"))},
             b={"protocols": (("range", b"r"),)})
    assert joins(g)["a"].protocol_name == "range"


def test_a_failed_assignment_write_fails_the_syncs_and_rebalances():
    g = Group("g")
    a = join_new(g, 0, "a")
    joins(g)
    g.sync(1, a, 1, None, None, None, [(a, b"A")])
    g.take_events()
    g.persist_failed(2, 1, ErrorCode.not_coordinator)
    assert [e.result.error for e in g.take_events() if isinstance(e, SyncCompleted)] == [ErrorCode.not_coordinator]
    assert g.state == GroupState.PREPARING_REBALANCE


def test_load_restores_a_stable_group_whose_members_heartbeat_on():
    g = Group("g")
    g.load(0, protocol_type="consumer", protocol_name="range", generation_id=4, leader_id="a",
           members=[("a", None, "c", "/h", SESSION_MS, REBALANCE_MS, b"r", b"A")])
    assert g.state == GroupState.STABLE
    assert g.heartbeat(1, "a", 4, None) == ErrorCode.none
    assert g.sync(2, "a", 4, None, None, None, []).assignment == b"A"


def test_kafka_partition_for_group_matches_javas_string_hash():
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -(2**31)  # Integer.MIN_VALUE: abs -> 0
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for("my-group", 50) == abs(java_string_hash("my-group")) % 50


def test_store_rebuilds_offsets_and_groups_from_batches_and_snapshots():
    store = GroupStore()
    store.apply(memoryview(offsets_batch("g", [("t", 0, OffsetRecord(5, 1, "meta", 1000)),
                                               ("t", 1, OffsetRecord(7, -1, None, 1000))], 1000)), 1)
    member = MemberRecord("a", None, "c", "/h", SESSION_MS, REBALANCE_MS, b"sub", b"asg")
    store.apply(memoryview(group_batch("g", GroupRecord("consumer", 3, "range", "a", 1000, (member,)), 1000)), 2)
    store.apply(memoryview(build_batch([(offset_key("g", "t", 1), None)], 1000)), 3)
    assert store.committed("g") == {("t", 0): OffsetRecord(5, 1, "meta", 1000)}
    copy = GroupStore()
    copy.decode(store.encode())
    assert copy.committed("g") == store.committed("g") and copy.groups == store.groups
    store.apply(memoryview(b"\x00" * 57 + b"\x00\x00\x00\x05"), 4)  # not a coordinator batch: skipped, not a crash
    assert store.skipped_records == 1


def test_expiry_follows_kafkas_rules():
    store = GroupStore()
    store.apply(memoryview(offsets_batch("simple", [("t", 0, OffsetRecord(1, -1, None, 1000))], 1000)), 1)
    store.apply(memoryview(offsets_batch("g", [("t", 0, OffsetRecord(1, -1, None, 1000))], 1000)), 2)
    store.apply(memoryview(group_batch("g", GroupRecord("consumer", 2, None, None, 5000, ()), 5000)), 3)
    assert store.expired(5500, 1000, lambda g: True) == [(offset_key("simple", "t", 0), None)]
    assert store.expired(6000, 1000, lambda g: g != "g") == [(offset_key("simple", "t", 0), None)]
    assert store.expired(6000, 1000, lambda g: True) == [
        (offset_key("g", "t", 0), None), (group_key("g"), None), (offset_key("simple", "t", 0), None)]


def test_record_keys_round_trip_and_batches_parse():
    assert parse_key(offset_key("g", "t", 3)) == ("offset", "g", "t", 3)
    assert parse_key(group_key("g")) == ("group", "g", None, None)
    batch = build_batch([(b"k1", b"v1"), (b"k2", None)], 123)
    assert batch_records(batch) == [(b"k1", b"v1"), (b"k2", None)]


def test_subscription_topics_reads_the_consumer_protocol():
    import struct
    meta = struct.pack(">hi", 1, 2) + struct.pack(">h", 1) + b"a" + struct.pack(">h", 2) + b"bc" + b"\x00" * 8
    assert subscription_topics(meta) == {"a", "bc"}
    assert subscription_topics(b"\x01") == set()


def test_a_static_leader_rejoining_is_told_to_skip_the_assignment():
    g = form(["a", "b"], a={"instance_id": "i-a"}, b={"instance_id": "i-b"})
    joins(g)
    stabilise(g, DELAY_MS, {"a": b"A", "b": b"B"})
    result = g.join(DELAY_MS + 1, request(instance_id="i-a"), "a2")
    assert (result.error, result.leader, result.skip_assignment) == (ErrorCode.none, "a2", True)
    assert {m for m, _, _ in result.members} == {"a2", "b"} and g.state == GroupState.STABLE


def test_next_deadline_is_never_past_unless_tick_has_work():
    """The coordinator sleeps until next_deadline_ms(): after a tick it must lie ahead."""
    g = form(["a", "b"])
    joins(g)
    stabilise(g, DELAY_MS, {"a": b"A", "b": b"B"})
    join_new(g, 200, "c")  # a rebalance waiting for a and b to rejoin
    for now in (300, 5_000, DELAY_MS + SESSION_MS + 50, 40_000):
        g.tick(now)
        g.take_events()
        assert g.next_deadline_ms() > now, (now, g.state, g.next_deadline_ms())


def test_transactional_offsets_replayed_from_a_cleaned_log():
    """A cleaned __consumer_offsets log (docs/compaction.md): a transaction whose offset
    records were all superseded has its batch emptied and, past its delete horizon, its
    commit marker emptied too; replaying it leaves the later offset, nothing pending, and
    no record counted as skipped (an emptied marker is not a malformed control batch)."""
    txn = offsets_batch("g", [("t", 0, OffsetRecord(5, -1, None, 1000))], 1000, producer=(7, 0))
    marker = control_batch(TxnMarker(7, 0, True, 0, ()), 1000)
    store = GroupStore()
    store.apply(memoryview(rebuild_batch(txn, read_header(txn), [])), 1)
    store.apply(memoryview(rebuild_batch(marker, read_header(marker), [])), 2)
    store.apply(memoryview(offsets_batch("g", [("t", 0, OffsetRecord(9, -1, None, 1000))], 1000)), 3)
    assert store.committed("g") == {("t", 0): OffsetRecord(9, -1, None, 1000)}
    assert store.pending == {} and store.skipped_records == 0
