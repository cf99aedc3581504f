"""Leader election, mapped to the Raft paper (section 5.2, 5.4.1) and the thesis (pre-vote,
check-quorum, leader lease, 9.6)."""

from __future__ import annotations

import random

import pytest

from chronik_trio.raft import (Config, MemoryStorage, Message, MessageType, RawNode, StateRole)

from .cluster import Cluster

pytestmark = pytest.mark.timeout(60)


def role(c: Cluster, i: int) -> StateRole:
    return c.node(i).raft.state


def term(c: Cluster, i: int) -> int:
    return c.node(i).raft.term


@pytest.mark.parametrize("seed", range(20))
def test_follower_campaigns_after_randomized_timeout_in_election_tick_to_twice(seed):
    # 5.2: "election timeouts are chosen randomly from a fixed interval".
    storage = MemoryStorage.with_voters((1, 2, 3))
    node = RawNode(Config(id=1, election_tick=10, rng=random.Random(seed)), storage)
    for ticks in range(1, 30):
        node.tick()
        if node.raft.state != StateRole.FOLLOWER:
            break
    assert 10 <= ticks < 20, ticks


def test_randomized_timeouts_differ_between_nodes():
    timeouts = {RawNode(Config(id=i), MemoryStorage.with_voters((1, 2, 3)))
                .raft.randomized_election_timeout_ticks for i in range(1, 30)}
    assert len(timeouts) > 1


def test_candidate_with_majority_of_votes_becomes_leader():
    c = Cluster((1, 2, 3, 4, 5))
    c.elect(1)
    assert all(role(c, i) == StateRole.FOLLOWER for i in (2, 3, 4, 5))
    assert all(c.node(i).raft.leader_id == 1 for i in (1, 2, 3, 4, 5))


def test_candidate_cut_off_from_majority_does_not_become_leader():
    c = Cluster((1, 2, 3, 4, 5), pre_vote=False)
    c.partition((1, 2), (3, 4, 5))
    c.node(1).campaign()
    c.stabilize()
    assert role(c, 1) == StateRole.CANDIDATE


def test_a_node_votes_for_at_most_one_candidate_per_term():
    # 5.2: "each server will vote for at most one candidate in a given term".
    c = Cluster((1, 2, 3), pre_vote=False)
    n = c.node(3)
    for cand in (1, 2):
        n.step(Message(type=MessageType.VOTE, to=3, from_=cand, term=1, index=0, log_term=0))
    while n.has_ready():
        rd = n.ready()
        votes = [(m.to, m.reject) for m in rd.persisted_messages]
        n.advance(rd)
    assert votes == [(1, False), (2, True)]
    assert n.raft.vote == 1


def test_voter_rejects_candidate_whose_log_is_less_up_to_date():
    # 5.4.1: the voter denies its vote if its own log is more up-to-date than the
    # candidate's. check_quorum off: the leader lease would ignore the request anyway.
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.partition((1, 2), (3,))
    c.propose(1, b"only on 1 and 2")
    c.heal()
    c.node(3).campaign()
    c.process_ready(3)
    votes = []
    for i in (1, 2):
        c.deliver(i)
        rd = c.process_ready(i)
        votes += [m for m in rd.persisted_messages if m.type == MessageType.VOTE_RESPONSE]
    assert len(votes) == 2 and all(m.reject for m in votes)
    c.stabilize()
    assert role(c, 3) != StateRole.LEADER


def test_leader_isolated_from_followers_steps_down_and_majority_elects_new_leader():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.isolate(1)
    c.tick_all(25)  # > 2 * election_tick: check-quorum fires on 1, 2/3 time out
    assert role(c, 1) != StateRole.LEADER
    new = c.leader()
    assert new in (2, 3)
    c.heal()
    c.tick_all(5)
    assert c.leader() == new
    assert all(c.node(i).raft.leader_id == new for i in (1, 2, 3))


def test_stale_leader_rejoining_steps_down_and_loses_uncommitted_entries():
    c = Cluster((1, 2, 3), check_quorum=False, pre_vote=False)
    c.elect(1)
    c.isolate(1)
    c.node(1).propose(b"lost")
    c.stabilize()
    c.elect(2)
    c.propose(2, b"kept")
    c.heal()
    c.tick_all(3)  # heartbeats of 2 reach 1 with a higher term
    assert role(c, 1) == StateRole.FOLLOWER
    assert c.node(1).raft.leader_id == 2
    assert [c.peers[i].applied for i in (1, 2, 3)] == [[b"kept"]] * 3


def test_partitioned_node_with_pre_vote_does_not_raise_its_term():
    c = Cluster((1, 2, 3), pre_vote=True)
    c.elect(1)
    t = term(c, 1)
    c.isolate(3)
    c.tick_all(50)
    assert term(c, 3) == t
    assert role(c, 3) == StateRole.PRE_CANDIDATE
    c.heal()
    c.tick_all(3)
    assert c.leader() == 1 and term(c, 1) == t


def test_without_pre_vote_a_rejoining_node_disrupts_the_leader():
    # The problem pre-vote solves (thesis 9.6); check-quorum off so that 1 is not
    # protected by its lease either.
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    t = term(c, 1)
    c.isolate(3)
    c.tick_all(50)
    assert term(c, 3) > t
    c.heal()
    c.tick_all(30)
    assert term(c, c.leader()) > t


def test_leader_lease_ignores_vote_request_while_leader_is_heard_from():
    c = Cluster((1, 2, 3), check_quorum=True, pre_vote=False)
    c.elect(1)
    t = term(c, 2)
    c.node(2).step(Message(type=MessageType.VOTE, to=2, from_=3, term=t + 5,
                           index=100, log_term=t + 4))
    assert term(c, 2) == t
    assert not c.node(2).raft.msgs_after_append


def test_learner_never_campaigns_and_its_vote_is_not_counted():
    c = Cluster((1, 2), learners=(3,), pre_vote=False)
    c.tick(3, 100)
    assert role(c, 3) == StateRole.FOLLOWER and term(c, 3) == 0
    c.node(3).campaign()
    assert role(c, 3) == StateRole.FOLLOWER
    # 1 campaigns while 2 is unreachable: the learner's vote must not make a majority.
    c.partition((1, 3), (2,))
    c.node(1).campaign()
    c.stabilize()
    assert role(c, 1) == StateRole.CANDIDATE
    # Learners are not even asked; a (misdirected) grant from one does not count either.
    c.node(1).step(Message(type=MessageType.VOTE_RESPONSE, to=1, from_=3, term=term(c, 1)))
    assert role(c, 1) == StateRole.CANDIDATE


def test_candidate_counts_its_own_vote_only_once_it_is_persisted():
    n = RawNode(Config(id=1, pre_vote=False), MemoryStorage.with_voters((1,)))
    n.campaign()
    assert n.raft.state == StateRole.CANDIDATE
    rd = n.ready()
    assert rd.hard_state.term == 1 and rd.hard_state.vote == 1 and rd.must_sync
    assert not rd.persisted_messages  # the self-vote is never handed to the caller
    n.advance(rd)
    assert n.raft.state == StateRole.LEADER


def test_pre_vote_round_does_not_change_term_or_vote():
    c = Cluster((1, 2, 3), pre_vote=True)
    c.partition((1,), (2, 3))
    c.node(1).campaign()
    assert role(c, 1) == StateRole.PRE_CANDIDATE
    assert term(c, 1) == 0 and c.node(1).raft.vote == 0
    c.heal()
    c.stabilize()
    assert role(c, 1) == StateRole.LEADER and term(c, 1) == 1


def test_split_votes_resolve_within_a_few_election_timeouts():
    for seed in range(10):
        c = Cluster((1, 2, 3, 4, 5), seed=seed, pre_vote=False)
        for rounds in range(1, 200):
            c.tick_all(1)
            if c.leader() is not None:
                break
        assert rounds < 100, (seed, rounds)


def test_vote_request_from_a_lower_term_is_answered_with_our_term():
    # Paper Figure 2: a candidate stuck below the others' term must learn it, or (without
    # pre-vote) it may never catch up with a voter that keeps campaigning alongside it.
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.elect(2)  # term 2
    n1 = c.node(1)
    n1.step(Message(type=MessageType.VOTE, to=1, from_=3, term=1, index=5, log_term=1))
    rd = c.process_ready(1)
    assert [(m.type, m.term, m.reject) for m in rd.persisted_messages] == \
        [(MessageType.VOTE_RESPONSE, term(c, 1), True)]
