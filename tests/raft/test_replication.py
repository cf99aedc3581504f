"""Log replication and commitment (Raft paper 5.3, 5.4.2, Figure 8) and flow control."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from chronik_trio.raft import (ConfChangeSingle, ConfChangeType, ConfChangeV2, Message, MessageType,
                               ProgressState, ProposalDropped, StateRole)

from .cluster import Cluster

pytestmark = pytest.mark.timeout(60)
MT = MessageType


def committed(c: Cluster, i: int) -> int:
    return c.node(i).raft.log.committed


def test_leader_commits_an_entry_once_a_majority_holds_it():
    c = Cluster((1, 2, 3, 4, 5))
    c.elect(1)
    c.partition((1, 2, 3), (4, 5))
    c.propose(1, b"x")
    assert [c.peers[i].applied for i in (1, 2, 3)] == [[b"x"]] * 3
    assert c.peers[4].applied == c.peers[5].applied == []


def test_entry_held_by_a_minority_is_not_committed():
    c = Cluster((1, 2, 3, 4, 5))
    c.elect(1)
    before = committed(c, 1)
    c.partition((1, 2), (3, 4, 5))
    c.propose(1, b"x")
    assert committed(c, 1) == before
    assert c.peers[1].applied == []


def test_followers_apply_only_committed_entries():
    # 5.3: "once the leader learns an entry is committed, it includes that index in future
    # AppendEntries" - a follower persists first and applies only after learning the commit.
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(1).propose(b"x")
    c.process_ready(1)
    c.deliver(2)
    rd = c.process_ready(2)
    assert [e.data for e in rd.entries] == [b"x"]
    assert not rd.committed_entries
    c.stabilize()
    assert c.peers[2].applied == [b"x"]


def test_conflicting_follower_entries_are_overwritten_by_the_leader():
    # 5.3: "the leader handles inconsistencies by forcing the followers' logs to duplicate
    # its own"; also the fast back-off over a whole conflicting term.
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(1)
    for k in range(20):
        c.node(1).propose(b"stale%d" % k)
    c.stabilize()
    c.elect(2)
    for k in range(3):
        c.propose(2, b"new%d" % k)
    c.heal()
    probes = []
    c.send = _spy(c.send, probes)
    c.tick_all(2)
    assert c.node(1).raft.state == StateRole.FOLLOWER
    assert [c.peers[i].applied for i in (1, 2, 3)] == [[b"new0", b"new1", b"new2"]] * 3
    assert c.log_entries(1) == c.log_entries(2)
    rejects = [m for m in probes if m.type == MT.APPEND_RESPONSE and m.reject]
    assert len(rejects) <= 2, rejects  # not one round trip per conflicting entry


def _spy(send, out):
    def spy(msgs):
        msgs = list(msgs)
        out.extend(msgs)
        send(msgs)
    return spy


def test_leader_does_not_commit_an_earlier_term_entry_by_counting_replicas():
    # 5.4.2: "Raft never commits log entries from previous terms by counting replicas."
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.partition((1,), (2, 3))
    c.node(1).propose(b"old")
    c.stabilize()
    r = c.node(1).raft
    old_index = r.log.last_index()
    # Pretend a quorum holds the old entry while 1 leads a later term: no commit.
    r.term += 1
    for pr in r.trk.progress.values():
        pr.match = old_index
    assert not r._maybe_commit()
    assert r.log.committed < old_index


def test_figure_8_entry_replicated_on_majority_from_old_term_can_be_overwritten():
    # Paper Figure 8: S1 replicates its term-1 entry at index 2 to a majority while leading
    # term 3, without committing it; S5 then wins and overwrites it. Nobody applies it.
    c = Cluster((1, 2, 3, 4, 5), pre_vote=False, check_quorum=False,
                max_size_per_msg_bytes=50)
    c.elect(1)                                   # term 1, index 1
    c.partition((1, 2), (3,), (4,), (5,))
    c.node(1).propose(b"a" * 100)                # (a) index 2 term 1 on S1, S2
    c.stabilize()
    c.crash(1)                                   # (b) S5 wins term 2 with S3, S4 ...
    c.partition((1,), (2,), (3, 4, 5))
    c.node(5).campaign()
    c.process_ready(5)
    c.deliver(3), c.deliver(4), c.process_ready(3), c.process_ready(4)
    c.deliver(5)
    assert c.node(5).raft.state == StateRole.LEADER
    c.partition((1,), (2,), (3,), (4,), (5,))    # ... and keeps its term-2 entry to itself
    c.stabilize()
    assert c.node(5).raft.log.last_term() == 2
    c.crash(5)
    c.restart(1)                                 # (c) S1 restarts, elected in term 3
    c.partition((1, 2, 3), (4,), (5,))
    send = c.send
    # Entries from index 3 (S1's term-3 entry) never leave S1.
    c.send = lambda msgs: send([dataclasses.replace(m, entries=tuple(
        e for e in m.entries if e.index < 3)) if m.from_ == 1 else m for m in msgs])
    for _ in range(2):
        c.node(1).campaign()
        c.stabilize()
    assert c.node(1).raft.state == StateRole.LEADER and c.node(1).raft.term == 3
    assert c.node(3).raft.log.match_term(2, 1)   # index 2 (term 1) now on S1, S2, S3 ...
    assert committed(c, 1) < 2                   # ... yet not committed
    c.send = send
    c.crash(1)                                   # (d) S1 down again; S5 wins term 4
    c.restart(5)
    c.partition((1,), (2, 3, 4, 5))
    for _ in range(2):
        c.node(5).campaign()
        c.stabilize()
    assert c.node(5).raft.state == StateRole.LEADER and c.node(5).raft.term == 4
    c.propose(5, b"b")
    for i in (2, 3, 4, 5):
        assert c.peers[i].applied == [b"b"], (i, c.peers[i].applied)
        assert c.node(i).raft.log.term(2) == 2


def test_probe_becomes_replicate_after_first_ack():
    c = Cluster((1, 2, 3))
    c.elect(1)
    st = c.node(1).status()
    assert st.progress[2].state == ProgressState.REPLICATE
    assert st.progress[2].match == c.node(1).raft.log.last_index()


def test_inflight_messages_are_bounded_per_follower():
    c = Cluster((1, 2, 3), max_inflight_msgs=2)
    c.elect(1)
    c.cut = {(2, 1), (3, 1)}  # acks are lost: the pipe must stop after 2 appends
    sent = []
    c.send = _spy(c.send, sent)
    for k in range(6):
        c.node(1).propose(b"x%d" % k)
        c.stabilize()
    appends = [m for m in sent if m.type == MT.APPEND and m.to == 2 and m.entries]
    assert len(appends) == 2


def test_inflight_bytes_are_bounded_per_follower():
    c = Cluster((1, 2, 3), max_inflight_msgs=100, max_inflight_bytes=250)
    c.elect(1)
    c.cut = {(2, 1), (3, 1)}
    sent = []
    c.send = _spy(c.send, sent)
    for k in range(6):
        c.node(1).propose(b"x" * 100)
        c.stabilize()
    appends = [m for m in sent if m.type == MT.APPEND and m.to == 2 and m.entries]
    assert len(appends) == 3  # 100, 200, 300 >= 250: full


def test_max_size_per_msg_splits_entries_but_always_sends_one():
    c = Cluster((1, 2), max_size_per_msg_bytes=250)
    c.elect(1)
    c.isolate(2)
    for k in range(5):
        c.node(1).propose(b"y" * 100)
    c.node(1).propose(b"z" * 1000)
    c.stabilize()
    c.heal()
    sent = []
    c.send = _spy(c.send, sent)
    c.tick_all(1)
    sizes = [sum(len(e.data) for e in m.entries) for m in sent if m.type == MT.APPEND]
    assert all(s <= 250 or n == 1 for s, n in
               zip(sizes, [len(m.entries) for m in sent if m.type == MT.APPEND]))
    assert c.peers[2].applied[-1] == b"z" * 1000


def test_max_uncommitted_size_drops_proposals_until_commits_catch_up():
    c = Cluster((1, 2, 3), max_uncommitted_size_bytes=300)
    c.elect(1)
    c.isolate(1)
    c.node(1).propose(b"x" * 200)
    c.node(1).propose(b"x" * 100)
    with pytest.raises(ProposalDropped):
        c.node(1).propose(b"x" * 1)
    c.heal()
    c.stabilize()
    c.tick_all(1)
    c.node(1).propose(b"x" * 250)  # committed entries released their budget


def test_proposal_on_follower_is_forwarded_to_the_leader():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.propose(3, b"via 3")
    assert c.peers[1].applied == [b"via 3"]


def test_proposal_forwarding_can_be_disabled():
    c = Cluster((1, 2, 3), disable_proposal_forwarding=True)
    c.elect(1)
    with pytest.raises(ProposalDropped):
        c.node(3).propose(b"x")


def test_proposal_without_a_leader_is_dropped():
    c = Cluster((1, 2, 3))
    with pytest.raises(ProposalDropped):
        c.node(1).propose(b"x")


def test_heartbeat_never_commits_past_what_the_follower_holds():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.cut = {(1, 3)}
    c.propose(1, b"x")
    c.cut = set()
    c.node(1).tick()
    rd = c.process_ready(1)
    hb = [m for m in rd.messages if m.type == MT.HEARTBEAT and m.to == 3]
    assert hb and hb[0].commit <= c.node(3).raft.log.last_index()


def test_leader_with_unreachable_follower_falls_back_to_probing():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(1).report_unreachable(2)
    assert c.node(1).status().progress[2].state == ProgressState.PROBE


def _messages_per_proposal(c: Cluster, proposals: int) -> collections.Counter:
    sent: collections.Counter = collections.Counter()
    send = c.send
    c.send = lambda msgs: (sent.update((m.from_, m.type) for m in msgs), send(msgs))
    for k in range(proposals):
        c.propose(1, b"p%d" % k)
    c.send = send
    return sent


def test_skip_bcast_commit_halves_the_messages_of_a_proposal():
    # Without it the leader tells each follower of every commit with an empty append, which
    # each answers: 8 messages per proposal on 3 voters. With it the commit of one proposal
    # travels in the next one's append: 2 appends and 2 answers.
    for skip, rounds in ((False, 2), (True, 1)):
        c = Cluster((1, 2, 3), skip_bcast_commit=skip)
        c.elect(1)
        sent = _messages_per_proposal(c, 5)
        assert sent == {(1, MT.APPEND): 5 * 2 * rounds, (2, MT.APPEND_RESPONSE): 5 * rounds,
                        (3, MT.APPEND_RESPONSE): 5 * rounds}, (skip, sent)
        # The followers know every commit but the last, which the next heartbeat brings.
        assert [committed(c, i) for i in (1, 2, 3)] == (
            [committed(c, 1), committed(c, 1) - 1, committed(c, 1) - 1] if skip else [committed(c, 1)] * 3)
        c.tick(1, c.node(1).raft.heartbeat_timeout_ticks)
        c.stabilize()
        assert [c.peers[i].applied for i in (1, 2, 3)] == [[b"p%d" % k for k in range(5)]] * 3


def test_skip_bcast_commit_still_sends_a_pending_conf_change_s_commit_at_once():
    c = Cluster((1, 2, 3), skip_bcast_commit=True)
    c.elect(1)
    c.node(1).propose_conf_change(ConfChangeV2(changes=(ConfChangeSingle(ConfChangeType.REMOVE_NODE, 3),)))
    c.stabilize()
    # No tick, no later proposal: node 2 applied the change because its commit was sent.
    assert c.peers[2].conf_state.voters == (1, 2)


def test_skip_heartbeat_after_append_leaves_out_followers_an_append_just_reached():
    c = Cluster((1, 2, 3), skip_bcast_commit=True, skip_heartbeat_after_append=True)
    c.elect(1)
    beat = c.node(1).raft.heartbeat_timeout_ticks
    c.tick(1, beat)  # the election's appends stand for this round
    c.stabilize()
    heartbeats = []
    send = c.send
    c.send = lambda msgs: (heartbeats.extend(m.to for m in msgs if m.type == MT.HEARTBEAT), send(msgs))
    for k in range(4):  # a proposal per heartbeat interval: appends, and no heartbeat
        c.propose(1, b"p%d" % k)
        c.tick(1, beat)
        c.stabilize()
    assert heartbeats == []
    assert [committed(c, i) for i in (2, 3)] == [committed(c, 1) - 1] * 2
    c.isolate(3)  # an append that does not arrive still counts as sent: one round later,
    c.propose(1, b"lost")  # the heartbeat goes out again
    c.tick(1, beat)
    c.stabilize()
    assert heartbeats == []
    c.heal()
    c.tick(1, beat)
    c.stabilize()
    assert sorted(heartbeats) == [2, 3]
    assert [c.peers[i].applied for i in (1, 2, 3)] == [[b"p0", b"p1", b"p2", b"p3", b"lost"]] * 3


def test_an_answer_acknowledging_committed_entries_to_a_caught_up_follower_can_wait():
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.node(1).propose(b"x")
    rd = c.process_ready(1)
    appends = {m.to: m for m in rd.messages}
    index = appends[2].entries[-1].index
    node = c.node(1)

    def answer(frm, **fields):
        return Message(**{"type": MT.APPEND_RESPONSE, "to": 1, "from_": frm, "term": node.raft.term,
                          "index": index, **fields})

    assert not node.append_response_can_wait(answer(2))  # it commits x: step it now
    node.step(answer(2))
    assert committed(c, 1) == index
    assert node.append_response_can_wait(answer(3))  # x is committed, 3 was sent everything
    assert not node.append_response_can_wait(answer(3, reject=True, reject_hint=index - 1))
    assert not node.append_response_can_wait(answer(3, term=node.raft.term + 1))
    node.propose(b"y")  # an entry not yet sent to 3 (it goes with the next Ready)
    assert not node.append_response_can_wait(answer(3))
    c.stabilize()
    node.transfer_leader(3)  # a transfer waits for 3's answers
    assert not node.append_response_can_wait(answer(3))
