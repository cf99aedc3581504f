"""Snapshots and compaction, ReadIndex, leader transfer, membership changes."""

from __future__ import annotations

import pytest

from chronik_trio.raft import (ConfChangeSingle, ConfChangeTransition, ConfChangeType,
                               ConfChangeV2, MessageType, ProgressState, ProposalDropped,
                               ReadIndexDropped, ReadOnlyOption, StateRole)
from chronik_trio.raft.quorum import JointConfig, VoteResult

from .cluster import Cluster

pytestmark = pytest.mark.timeout(60)
MT = MessageType
CT = ConfChangeType


def cc(*changes: tuple[ConfChangeType, int],
       transition=ConfChangeTransition.AUTO) -> ConfChangeV2:
    return ConfChangeV2(changes=tuple(ConfChangeSingle(t, i) for t, i in changes),
                        transition=transition)


# -- snapshots ------------------------------------------------------------------------------

def _lagging_follower_after_compaction() -> Cluster:
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.isolate(3)
    for k in range(10):
        c.propose(1, b"e%d" % k)
    c.compact(1)
    return c


def test_lagging_follower_catches_up_from_a_snapshot_after_compaction():
    c = _lagging_follower_after_compaction()
    assert c.peers[1].storage.first_index() > c.node(3).raft.log.last_index() + 1
    c.heal()
    c.tick_all(2)
    c.node(1).report_snapshot(3, True)
    c.tick_all(2)
    assert c.peers[3].applied == c.peers[1].applied == [b"e%d" % k for k in range(10)]
    assert c.node(1).status().progress[3].state == ProgressState.REPLICATE


def test_failed_snapshot_sends_follower_back_to_probe_and_it_is_retried():
    c = _lagging_follower_after_compaction()
    c.heal()
    sent = []  # every snapshot is lost on the way until the transport reports it
    send = c.send
    c.send = lambda msgs: (sent.extend(msgs), send([m for m in msgs
                                                    if m.type != MT.SNAPSHOT]))
    c.tick_all(2)
    assert any(m.type == MT.SNAPSHOT for m in sent)
    assert c.node(1).status().progress[3].state == ProgressState.SNAPSHOT
    c.node(1).report_snapshot(3, False)
    assert c.node(1).status().progress[3].state == ProgressState.PROBE
    c.send = send
    c.tick_all(3)
    c.node(1).report_snapshot(3, True)
    c.tick_all(2)
    assert c.peers[3].applied == c.peers[1].applied


def test_snapshot_racing_with_appends_is_applied_once_and_in_order():
    # A snapshot and appends to the same follower race: the follower installs a later
    # snapshot, catches up by appends, then an earlier snapshot and old appends arrive late.
    # It must ignore them (they are behind its commit) and keep its log and state.
    c = _lagging_follower_after_compaction()
    c.heal()
    held, old = [], []
    send = c.send

    def hold_first_snapshot(msgs):
        out = []
        for m in msgs:
            if m.to == 3 and m.type == MT.SNAPSHOT and not held:
                held.append(m)
                continue
            if m.to == 3 and m.type == MT.APPEND:
                old.append(m)
            out.append(m)
        send(out)
    c.send = hold_first_snapshot
    c.tick_all(2)
    assert held
    c.node(1).report_snapshot(3, False)  # the transport gave up on it
    c.tick_all(3)
    c.node(1).report_snapshot(3, True)  # the second one arrived
    c.propose(1, b"after")
    c.tick_all(2)
    assert c.peers[3].applied == c.peers[1].applied
    applied, log = list(c.peers[3].applied), c.log_entries(3)
    c.send = send
    c.inbox[3].extend(held + old)
    c.stabilize()
    assert c.peers[3].applied == applied and c.log_entries(3) == log
    c.propose(1, b"later")
    assert c.peers[3].applied[-1] == b"later"


def test_storage_reports_compacted_and_unavailable_as_named_errors():
    from chronik_trio.raft import Compacted, MemoryStorage, Unavailable, Entry
    s = MemoryStorage()
    s.append([Entry(1, i, b"x") for i in range(1, 6)])
    s.compact(3)
    with pytest.raises(Compacted):
        s.term(2)
    with pytest.raises(Compacted):
        s.entries(3, 5)
    with pytest.raises(Unavailable):
        s.term(6)
    with pytest.raises(Unavailable):
        s.entries(4, 7)
    assert s.term(3) == 1 and [e.index for e in s.entries(4, 6)] == [4, 5]
    assert len(s.entries(4, 6, max_size_bytes=0)) == 1  # always at least one


def test_request_snapshot_makes_the_leader_send_one():
    c = Cluster((1, 2, 3))
    c.elect(1)
    for k in range(3):
        c.propose(1, b"e%d" % k)
    c.compact(1)
    sent = []
    send = c.send
    c.send = lambda msgs: (sent.extend(msgs), send(msgs))
    c.node(2).request_snapshot()
    c.stabilize()
    assert any(m.type == MT.SNAPSHOT and m.to == 2 for m in sent)
    c.node(1).report_snapshot(2, True)
    c.tick_all(2)
    c.propose(1, b"more")
    assert c.peers[2].applied == c.peers[1].applied


def test_restarted_node_recovers_from_its_snapshot_and_log():
    c = Cluster((1, 2, 3))
    c.elect(1)
    for k in range(5):
        c.propose(1, b"e%d" % k)
    c.compact(2)
    c.propose(1, b"e5")
    c.crash(2)
    c.restart(2)
    c.tick_all(3)
    assert c.peers[2].applied == [b"e%d" % k for k in range(6)]


# -- ReadIndex ------------------------------------------------------------------------------

def test_safe_read_index_on_leader_needs_a_heartbeat_quorum():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.propose(1, b"x")
    c.isolate(1)
    c.node(1).read_index(b"r1")
    rd = c.process_ready(1)
    assert not rd.read_states
    c.stabilize()
    assert c.node(1).raft.read_only.pending_count() == 1
    c2 = Cluster((1, 2, 3))
    c2.elect(1)
    c2.propose(1, b"x")
    c2.node(1).read_index(b"r1")
    c2.process_ready(1)
    for i in (2, 3):
        c2.deliver(i)
        c2.process_ready(i)
    c2.deliver(1)
    rd = c2.node(1).ready()
    rd_states = list(rd.read_states)
    c2.node(1).advance(rd)
    assert [(s.index, s.request_ctx) for s in rd_states] == [(c2.node(1).raft.log.committed,
                                                              b"r1")]


def test_read_index_on_follower_is_answered_through_the_leader():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.propose(1, b"x")
    c.node(3).read_index(b"f")
    states = []
    for _ in range(10):
        for i in (1, 2, 3):
            p = c.peers[i]
            if p.node.has_ready():
                rd = p.node.ready()
                if i == 3:
                    states += rd.read_states
                c.send(rd.messages)
                c.persist(p, rd)
                c.send(rd.persisted_messages)
                c.apply(i, p, rd)
                p.node.advance(rd)
            c.deliver(i)
    assert [(s.index, s.request_ctx) for s in states] == [(c.node(1).raft.log.committed, b"f")]


def test_lease_based_read_is_answered_without_a_round_trip():
    c = Cluster((1, 2, 3), read_only_option=ReadOnlyOption.LEASE_BASED)
    c.elect(1)
    c.isolate(1)
    c.node(1).read_index(b"lease")
    rd = c.node(1).ready()
    assert [s.request_ctx for s in rd.read_states] == [b"lease"]


def test_new_leader_defers_reads_until_it_commits_an_entry_of_its_term():
    c = Cluster((1, 2, 3))
    c.node(1).campaign()
    # 1 wins but its empty entry is not committed yet (appends not yet acknowledged).
    for _ in range(4):
        for i in (1, 2, 3):
            c.process_ready(i)
        for i in (2, 3):
            c.deliver(i)
        c.deliver(1)
        if c.node(1).raft.state == StateRole.LEADER:
            break
    r = c.node(1).raft
    assert r.state == StateRole.LEADER and not r._committed_entry_in_current_term()
    c.node(1).read_index(b"early")
    assert r.pending_read_index_messages
    c.stabilize()
    assert not r.pending_read_index_messages


def test_read_index_without_leader_is_dropped():
    c = Cluster((1, 2, 3))
    with pytest.raises(ReadIndexDropped):
        c.node(2).read_index(b"x")


# -- leader transfer ------------------------------------------------------------------------

def test_leader_transfer_to_up_to_date_follower_uses_timeout_now():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.propose(1, b"x")
    sent = []
    send = c.send
    c.send = lambda msgs: (sent.extend(msgs), send(msgs))
    c.node(1).transfer_leader(2)
    c.stabilize()
    assert any(m.type == MT.TIMEOUT_NOW and m.to == 2 for m in sent)
    assert c.leader() == 2 and c.node(1).raft.leader_id == 2


def test_leader_transfer_to_lagging_follower_catches_it_up_first():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"x")
    c.heal()
    c.node(1).transfer_leader(3)
    c.stabilize()
    c.tick_all(1)
    assert c.leader() == 3
    assert c.peers[3].applied == [b"x"]


def test_proposals_are_dropped_during_a_transfer_and_it_aborts_after_a_timeout():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.isolate(3)
    c.node(1).transfer_leader(3)
    with pytest.raises(ProposalDropped):
        c.node(1).propose(b"x")
    c.tick(1, 10)
    c.stabilize()
    assert c.node(1).raft.lead_transferee == 0
    c.node(1).propose(b"x")


def test_transfer_request_on_follower_is_forwarded():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(2).transfer_leader(2)
    c.stabilize()
    assert c.leader() == 2


def test_transfer_to_a_learner_is_ignored():
    c = Cluster((1, 2), learners=(3,))
    c.elect(1)
    c.node(1).transfer_leader(3)
    c.stabilize()
    assert c.leader() == 1


# -- membership -----------------------------------------------------------------------------

def conf_change(c: Cluster, leader: int, change: ConfChangeV2) -> None:
    c.node(leader).propose_conf_change(change)
    c.stabilize()
    c.tick_all(1)


def test_add_learner_then_promote_it_to_voter():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.propose(1, b"x")
    from chronik_trio.raft import MemoryStorage
    # A joining node starts from the config it joins (the runtime passes it along).
    c.add_peer(4, MemoryStorage.with_voters((1, 2, 3)))
    conf_change(c, 1, cc((CT.ADD_LEARNER_NODE, 4)))
    assert c.peers[4].applied == [b"x"]
    assert c.node(1).raft.trk.config.learners == {4}
    conf_change(c, 1, cc((CT.ADD_NODE, 4)))
    assert c.node(1).raft.trk.config.voters.incoming == {1, 2, 3, 4}
    assert c.peers[4].conf_state.voters == (1, 2, 3, 4)


def test_joint_change_with_auto_leave_ends_in_the_new_config():
    c = Cluster((1, 2, 3), learners=(4, 5))
    c.elect(1)
    conf_change(c, 1, cc((CT.ADD_NODE, 4), (CT.ADD_NODE, 5), (CT.REMOVE_NODE, 3)))
    c.tick_all(2)
    for i in (1, 2, 4, 5):
        cs = c.peers[i].conf_state
        assert cs.voters == (1, 2, 4, 5) and cs.voters_outgoing == () and not cs.auto_leave


def test_explicit_joint_change_stays_joint_until_left():
    c = Cluster((1, 2, 3))
    c.elect(1)
    conf_change(c, 1, cc((CT.ADD_LEARNER_NODE, 3),
                         transition=ConfChangeTransition.JOINT_EXPLICIT))
    c.tick_all(2)
    cfg = c.node(1).raft.trk.config
    assert cfg.voters.is_joint() and cfg.learners_next == {3}
    with pytest.raises(ProposalDropped):
        c.node(1).propose_conf_change(cc((CT.ADD_NODE, 3)))
    conf_change(c, 1, ConfChangeV2())
    cfg = c.node(1).raft.trk.config
    assert not cfg.voters.is_joint() and cfg.learners == {3}


def test_demoting_a_voter_through_joint_config():
    c = Cluster((1, 2, 3))
    c.elect(1)
    conf_change(c, 1, cc((CT.ADD_LEARNER_NODE, 3), (CT.ADD_LEARNER_NODE, 2)))
    c.tick_all(2)
    assert c.peers[1].conf_state.voters == (1,)
    assert c.peers[1].conf_state.learners == (2, 3)
    c.node(3).campaign()
    assert c.node(3).raft.state == StateRole.FOLLOWER


def test_only_one_conf_change_may_be_pending():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(1).propose_conf_change(cc((CT.ADD_LEARNER_NODE, 4)))
    with pytest.raises(ProposalDropped):
        c.node(1).propose_conf_change(cc((CT.ADD_LEARNER_NODE, 5)))


def test_change_removing_every_voter_is_refused():
    c = Cluster((1, 2, 3))
    c.elect(1)
    with pytest.raises(ProposalDropped):
        c.node(1).propose_conf_change(
            cc((CT.REMOVE_NODE, 1), (CT.REMOVE_NODE, 2), (CT.REMOVE_NODE, 3)))


def test_joint_config_election_needs_both_majorities():
    joint = JointConfig(frozenset({1, 2, 3}), frozenset({1, 4, 5}))
    assert joint.vote_result({1: True, 2: True, 3: True}) == VoteResult.PENDING
    assert joint.vote_result({1: True, 2: True, 4: True}) == VoteResult.WON
    assert joint.vote_result({1: True, 2: True, 4: False, 5: False}) == VoteResult.LOST
    assert joint.committed_index({1: 5, 2: 5, 3: 5, 4: 1, 5: 1}.__getitem__) == 1
    assert joint.committed_index({1: 5, 2: 5, 3: 1, 4: 4, 5: 1}.__getitem__) == 4


def test_candidate_in_joint_config_cannot_win_with_only_the_incoming_majority():
    c = Cluster((1, 2, 3), learners=(4, 5), pre_vote=False, check_quorum=False)
    c.elect(1)
    conf_change_entry = cc((CT.ADD_NODE, 4), (CT.ADD_NODE, 5), (CT.REMOVE_NODE, 2),
                           (CT.REMOVE_NODE, 3), transition=ConfChangeTransition.JOINT_EXPLICIT)
    conf_change(c, 1, conf_change_entry)
    assert c.node(4).raft.trk.config.voters.is_joint()
    # incoming = {1, 4, 5}, outgoing = {1, 2, 3}. 4 campaigns reaching only 1 and 5.
    c.crash(1)
    c.partition((4, 5), (1, 2, 3))
    c.node(4).campaign()
    c.stabilize()
    assert c.node(4).raft.state == StateRole.CANDIDATE
    c.heal()
    c.node(4).campaign()
    c.stabilize()
    assert c.node(4).raft.state == StateRole.LEADER


def test_removed_leader_hands_leadership_to_a_voter():
    c = Cluster((1, 2, 3))
    c.elect(1)
    conf_change(c, 1, cc((CT.REMOVE_NODE, 1)))
    c.tick_all(25)  # a transfer refused before 2/3 applied the change is retried
    assert c.leader() in (2, 3)
    new = c.leader()
    c.propose(new, b"after removal")
    assert c.peers[2].applied == c.peers[3].applied == [b"after removal"]


def test_leader_that_is_no_longer_a_voter_does_not_answer_reads_alone():
    # Found by the simulation: the sole remaining voter may already lead a later term.
    c = Cluster((1, 2))
    c.elect(1)
    c.node(1).propose_conf_change(cc((CT.REMOVE_NODE, 1)))
    c.stabilize()  # 2 refuses the first hand-off (change not yet applied): 1 still leads
    assert c.node(1).raft.state == StateRole.LEADER
    assert c.node(1).raft.trk.config.voters.incoming == {2}
    c.isolate(1)
    c.node(1).read_index(b"stale?")
    rd = c.process_ready(1)
    assert rd is not None and not rd.read_states
    assert any(m.type == MT.HEARTBEAT and m.context == b"stale?" for m in rd.messages)


def test_restarted_single_voter_serves_reads_only_after_committing_in_its_term():
    # Found by the simulation: with asynchronous persistence the hard state's commit index
    # can be older than what was applied (and acknowledged) before a crash.
    from chronik_trio.raft import Config, HardState, MemoryStorage, RawNode

    def drive(n, storage):
        states = []
        while n.has_ready():
            rd = n.ready()
            storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            states += rd.read_states
            n.advance(rd)
        return states

    storage = MemoryStorage.with_voters((1,))
    n = RawNode(Config(id=1), storage)
    n.campaign()
    drive(n, storage)
    n.propose_batch([b"a", b"b"])
    drive(n, storage)
    assert n.raft.log.committed == 3
    hs = storage.hard_state
    storage.set_hard_state(HardState(hs.term, hs.vote, commit=1))  # the newer one was lost
    n = RawNode(Config(id=1), storage)
    n.campaign()
    rd = n.ready()  # the new term and self-vote; once durable, 1 leads
    storage.set_hard_state(rd.hard_state)
    n.advance(rd)
    assert n.raft.state == StateRole.LEADER and n.raft.log.committed == 1
    n.read_index(b"after restart")  # before the empty entry of term 2 commits
    states = drive(n, storage)
    assert [(s.index, s.request_ctx) for s in states] == [(4, b"after restart")]
