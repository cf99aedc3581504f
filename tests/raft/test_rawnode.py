"""The RawNode / Ready contract, asynchronous persistence, conversions and describe."""

from __future__ import annotations

import random

import pytest

from chronik_trio.raft import (Config, ConfChangeSingle, ConfChangeType, ConfChangeV2,
                               ConfigInvalid, ConfState, Entry, EntryType, HardState,
                               MemoryStorage, Message, MessageType, RawNode, Snapshot,
                               SnapshotMetadata, StateRole, StepLocalMessage, decode_message,
                               describe_entry, describe_message, describe_ready,
                               encode_conf_change, encode_message, hard_state_from_pb,
                               hard_state_to_pb, snapshot_from_pb, snapshot_to_pb)

from .cluster import Cluster

pytestmark = pytest.mark.timeout(60)
MT = MessageType


def single() -> RawNode:
    storage = MemoryStorage.with_voters((1,))
    n = RawNode(Config(id=1), storage)
    n.campaign()
    while n.has_ready():
        rd = n.ready()
        storage.append(rd.entries)
        n.advance(rd)
    assert n.raft.state == StateRole.LEADER
    return n


@pytest.mark.parametrize("call", [
    lambda n: n.step(Message(type=MT.HEARTBEAT, to=1, from_=2, term=1)),
    lambda n: n.propose(b"x"),
    lambda n: n.tick(),
    lambda n: n.campaign(),
    lambda n: n.ready(),
])
def test_calls_between_ready_and_advance_assert(call):
    n = single()
    n.propose(b"a")
    rd = n.ready()
    with pytest.raises(AssertionError, match="between ready"):
        call(n)
    n.raft.log.storage.append(rd.entries)
    n.advance(rd)


def test_local_message_from_the_network_is_refused():
    n = single()
    with pytest.raises(StepLocalMessage):
        n.step(Message(type=MT.HUP, to=1, from_=2))


def test_responses_wait_for_persistence_but_leader_appends_do_not():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(1).propose(b"x")
    rd = c.process_ready(1)
    assert any(m.type == MT.APPEND for m in rd.messages)
    assert rd.entries and rd.must_sync
    c.deliver(2)
    rd2 = c.process_ready(2)
    assert [m.type for m in rd2.persisted_messages] == [MT.APPEND_RESPONSE]
    assert not rd2.messages


def test_commit_only_change_needs_no_sync_and_unchanged_hard_state_is_none():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(1).propose(b"x")
    c.process_ready(1)
    c.deliver(2)
    c.process_ready(2)
    c.deliver(1)
    rd = c.node(1).ready()
    assert rd.hard_state is not None and not rd.entries and not rd.must_sync
    c.node(1).advance(rd)
    c.node(1).tick()
    rd = c.node(1).ready()
    assert rd.hard_state is None and rd.soft_state is None
    c.node(1).advance(rd)


def test_async_persistence_commits_only_after_on_persist_ready():
    n = single()
    n.propose(b"a")
    rd1 = n.ready()
    storage = n.raft.log.storage
    n.advance_append_async(rd1)
    n.propose(b"b")
    rd2 = n.ready()
    assert [e.data for e in rd2.entries] == [b"b"]  # a is not handed out twice
    n.advance_append_async(rd2)
    assert not n.has_ready()  # nothing is durable, so nothing commits
    storage.append(rd1.entries + rd2.entries)
    n.on_persist_ready(rd2.number)  # acknowledges rd1 too
    rd3 = n.ready()
    assert [e.data for e in rd3.committed_entries] == [b"a", b"b"]
    n.advance(rd3)


def test_advance_append_then_advance_apply_in_steps():
    n = single()
    for d in (b"a", b"b", b"c"):
        n.propose(d)
    rd = n.ready()
    n.raft.log.storage.append(rd.entries)
    n.advance_append(rd)
    rd = n.ready()
    assert [e.data for e in rd.committed_entries] == [b"a", b"b", b"c"]
    n.advance_append(rd)
    first = rd.committed_entries[0].index
    n.advance_apply(first)
    assert n.status().applied == first
    assert not n.has_ready()  # handed-out entries are not handed out again
    n.advance_apply()
    assert n.status().applied == rd.committed_entries[-1].index


def test_entries_overwritten_while_persisting_are_not_marked_stable():
    c = Cluster((1, 2, 3), pre_vote=False)
    c.elect(1)
    n2 = c.node(2)
    n2.step(Message(type=MT.APPEND, to=2, from_=1, term=1, index=1, log_term=1, commit=1,
                    entries=(Entry(1, 2, b"x"), Entry(1, 3, b"y"))))
    rd = n2.ready()
    n2.advance_append_async(rd)
    # A new leader of term 2 overwrites index 3 before the persist completes.
    n2.step(Message(type=MT.APPEND, to=2, from_=3, term=2, index=2, log_term=1, commit=1,
                    entries=(Entry(2, 3, b"z"),)))
    c.peers[2].storage.append(rd.entries)
    n2.on_persist_ready(rd.number)
    # The Ready's last entry (3, term 1) is gone, so it proves nothing durable: stay safe.
    assert Entry(1, 3, b"y") not in n2.raft.log.unstable.entries
    rd2 = n2.ready()
    assert rd2.entries == (Entry(2, 3, b"z"),)
    c.peers[2].storage.append(rd2.entries)
    n2.advance(rd2)
    assert n2.raft.log.unstable.entries == []
    assert n2.raft.log.persisted_index() == 3


def test_status_reports_progress_on_the_leader_only():
    c = Cluster((1, 2, 3))
    c.elect(1)
    assert set(c.node(1).status().progress) == {1, 2, 3}
    assert c.node(2).status().progress == {}
    assert c.node(2).status().soft_state.leader_id == 1


def test_config_validation_raises_config_invalid():
    with pytest.raises(ConfigInvalid):
        Config(id=1, election_tick=1, heartbeat_tick=1).validate()
    with pytest.raises(ConfigInvalid):
        Config(id=0).validate()


def test_message_and_state_round_trip_through_protobuf():
    rng = random.Random(7)
    snap = Snapshot(SnapshotMetadata(5, 2, ConfState((1, 2), (3,), (1, 4), (4,), True)), b"s")
    for t in MT:
        m = Message(type=t, to=rng.randrange(9), from_=rng.randrange(9), term=3, log_term=2,
                    index=9, entries=(Entry(2, 9, b"d"), Entry(3, 10, b"c",
                                                               EntryType.CONF_CHANGE_V2)),
                    commit=8, snapshot=snap if t == MT.SNAPSHOT else None, reject=True,
                    reject_hint=4, context=b"ctx", request_snapshot=2)
        assert decode_message(encode_message(m)) == m
    hs = HardState(4, 2, 9)
    assert hard_state_from_pb(hard_state_to_pb(hs)) == hs
    assert snapshot_from_pb(snapshot_to_pb(snap)) == snap


def test_describe_is_short_and_deterministic():
    cc = ConfChangeV2(changes=(ConfChangeSingle(ConfChangeType.ADD_NODE, 4),
                               ConfChangeSingle(ConfChangeType.REMOVE_NODE, 1)))
    e = Entry(2, 7, encode_conf_change(cc), EntryType.CONF_CHANGE_V2)
    assert describe_entry(e) == "2/7 EntryConfChangeV2 v4 r1"
    m = Message(type=MT.APPEND, to=2, from_=1, term=2, log_term=1, index=6, commit=5,
                entries=(Entry(2, 7, b"x" * 40),))
    assert describe_message(m) == ('1->2 APPEND Term:2 Log:1/6 Commit:5 Entries:[2/7 '
                                   'EntryNormal "' + "x" * 32 + '...(40 B)"]')
    n = single()
    n.propose(b"hello")
    rd = n.ready()
    assert describe_ready(rd) == 'Entries:\n  1/2 EntryNormal "hello"\nMustSync'
    n.raft.log.storage.append(rd.entries)
    n.advance(rd)


def test_propose_batch_appends_all_entries_in_order_in_one_append():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(1).propose_batch([b"a", b"b", b"c"])
    rd = c.process_ready(1)
    appends = [m for m in rd.messages if m.type == MT.APPEND and m.to == 2]
    assert [[e.data for e in m.entries] for m in appends] == [[b"a", b"b", b"c"]]
    c.stabilize()
    assert c.peers[3].applied == [b"a", b"b", b"c"]


def test_the_runtime_accessors_report_the_leaders_view():
    """What a runtime reads between Readies (term, leader, indexes, progress, the election
    timer) without reaching into RawNode.raft."""
    storage = MemoryStorage.with_voters((1,))
    n = RawNode(Config(id=1, election_tick=10), storage)
    timer = n.election_timer()
    assert (timer.elapsed_ticks, timer.timeout_ticks) == (0, 10)
    assert 10 <= timer.randomized_timeout_ticks < 20
    n.tick()
    assert n.election_timer().elapsed_ticks == 1
    assert (n.role, n.leader_id, n.voter_ids()) == (StateRole.FOLLOWER, 0, frozenset({1}))
    n.campaign()
    while n.has_ready():
        rd = n.ready()
        storage.append(rd.entries)
        n.advance(rd)
    n.propose(b"a")
    rd = n.ready()
    storage.append(rd.entries)
    n.advance(rd)
    while n.has_ready():  # the commit of "a" and its application
        rd = n.ready()
        storage.append(rd.entries)
        n.advance(rd)
    last = n.last_index()
    assert (n.role, n.leader_id, n.term, n.lead_transferee) == (StateRole.LEADER, 1, 1, 0)
    assert n.committed_index == n.applied_index == last
    assert [e.data for e in n.entries(last, last + 1)] == [b"a"]
    assert n.match_indexes() == {1: last}
    assert n.progress()[1].match == last and not n.progress()[1].is_learner


@pytest.mark.parametrize("pre_vote", [True, False])
def test_campaign_answered_says_whether_a_peer_answered_this_campaign(pre_vote):
    """What a new partition's first-campaign retry asks (node/replicas.py): a campaign no
    peer has answered may have been dropped by peers without the group yet."""
    storage = MemoryStorage.with_voters((1, 2, 3))
    n = RawNode(Config(id=1, pre_vote=pre_vote), storage)
    assert n.campaign_answered()  # a follower: no campaign to answer
    n.campaign()
    assert n.raft.state == (StateRole.PRE_CANDIDATE if pre_vote else StateRole.CANDIDATE)
    assert not n.campaign_answered()
    kind = MT.PRE_VOTE_RESPONSE if pre_vote else MT.VOTE_RESPONSE
    n.step(Message(type=kind, to=1, from_=2, term=n.raft.term + (1 if pre_vote else 0), reject=True))
    assert n.campaign_answered()  # refused, but answered (or lost, and back to follower)
