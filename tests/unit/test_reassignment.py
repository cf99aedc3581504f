"""Partition reassignment: the __meta state machine's part (cluster/meta.py), the leader's
next step (node/reassignments.next_change) and the decommission plan (tools/admin.py)."""

import uuid

import pytest

from chronik_trio.cluster import meta
from chronik_trio.node.reassignments import CAUGHT_UP_LAG_ENTRIES, next_change
from chronik_trio.pb import meta_pb2
from chronik_trio.raft.rawnode import ProgressStatus
from chronik_trio.raft.types import ConfChangeTransition, ConfChangeType, ConfState, ProgressState
from chronik_trio.tools.admin import Refused, plan_decommission

TOPIC_ID = uuid.UUID(int=7)


def _state(replicas=((1,),)) -> meta.MetaState:
    state = meta.MetaState()
    for n in (1, 2, 3, 4):
        state.apply(meta_pb2.MetaCommand(broker_registered=meta_pb2.BrokerRegistered(node_id=n)))
    state.apply(meta_pb2.MetaCommand(topic_created=meta_pb2.TopicCreated(
        name="t", topic_id=TOPIC_ID.bytes, partitions=[meta_pb2.PartitionAssignment(replicas=r) for r in replicas])))
    return state


def _request(state, target, partition=0, cancel=False):
    return state.apply(meta_pb2.MetaCommand(partition_reassignment_requested=meta_pb2.PartitionReassignmentRequested(
        topic_id=TOPIC_ID.bytes, partition=partition, target=target, cancel=cancel)))


def _complete(state, replicas):
    return state.apply(meta_pb2.MetaCommand(partition_reassignment_completed=meta_pb2.PartitionReassignmentCompleted(
        topic_id=TOPIC_ID.bytes, partition=0, replicas=replicas)))


def test_a_move_lists_target_and_old_replicas_then_completes_to_the_target():
    state = _state(((1, 2),))
    assert _request(state, [3, 2]).ok
    assert state.topics["t"].replicas == ((3, 2, 1),)
    move = state.reassignments[(TOPIC_ID, 0)]
    assert (move.target, move.original, move.adding, move.removing) == ((3, 2), (1, 2), (3,), (1,))
    assert state.partition_bootstrap_voters(state.topics["t"], 0) == (1, 2)
    assert not _complete(state, [2, 3]).ok  # not this move's target
    assert _complete(state, [3, 2]).ok
    assert state.topics["t"].replicas == ((3, 2),) and not state.reassignments
    assert state.partition_bootstrap_voters(state.topics["t"], 0) == (1, 2)  # the group's first config


def test_cancel_and_a_new_target_keep_the_original_and_the_generation():
    state = _state(((1,),))
    assert _request(state, [2]).ok
    generation = state.reassignments[(TOPIC_ID, 0)].generation
    assert _request(state, [3]).ok
    assert state.topics["t"].replicas == ((3, 2, 1),)  # 2 may host a learner already
    assert _request(state, [], cancel=True).ok
    move = state.reassignments[(TOPIC_ID, 0)]
    assert (move.target, move.original, move.generation) == ((1,), (1,), generation)
    assert _complete(state, [1]).ok and state.topics["t"].replicas == ((1,),)
    assert _request(state, [2]).ok and state.reassignments[(TOPIC_ID, 0)].generation > generation


@pytest.mark.parametrize("target, partition, cancel, error", [
    ([], 0, False, meta.InvalidReplicaAssignment),
    ([1, 1], 0, False, meta.InvalidReplicaAssignment),
    ([1, 9], 0, False, meta.InvalidReplicaAssignment),
    ([1], 5, False, meta.UnknownTopic),
    ([], 0, True, meta.NoReassignmentInProgress),
])
def test_bad_reassignments_are_refused_with_kafkas_codes(target, partition, cancel, error):
    state = _state()
    version = state.version
    applied = _request(state, target, partition, cancel)
    assert not applied.ok and type(applied.error) is error
    assert state.version == version and not state.reassignments


def test_reassignments_survive_a_snapshot():
    state = _state(((1, 2),))
    _request(state, [2, 3])
    copy = meta.MetaState()
    copy.restore(state.snapshot())
    assert copy.reassignments == state.reassignments and copy.bootstrap_voters == state.bootstrap_voters
    assert copy.topics["t"].replicas == state.topics["t"].replicas


def _pr(match, state=ProgressState.REPLICATE, learner=False):
    return ProgressStatus(match, match + 1, state, learner, True)


def test_the_leader_adds_learners_then_promotes_them_jointly_and_removes_the_old():
    last = 1000
    cs = ConfState(voters=(1, 2, 3))
    add = next_change(1, cs, {1: _pr(last), 2: _pr(last), 3: _pr(last)}, last, (2, 3, 4))
    assert [(c.type, c.node_id) for c in add.changes] == [(ConfChangeType.ADD_LEARNER_NODE, 4)]
    cs = ConfState(voters=(1, 2, 3), learners=(4,))
    lagging = {1: _pr(last), 2: _pr(last), 3: _pr(last), 4: _pr(last - CAUGHT_UP_LAG_ENTRIES - 1, learner=True)}
    assert next_change(2, cs, lagging, last, (2, 3, 4)) is None
    caught_up = {**lagging, 4: _pr(last - 5, learner=True)}
    assert next_change(1, cs, caught_up, last, (2, 3, 4)) == 2  # the leader leaves: hand over first
    swap = next_change(2, cs, caught_up, last, (2, 3, 4))
    assert swap.transition == ConfChangeTransition.JOINT_IMPLICIT
    assert [(c.type, c.node_id) for c in swap.changes] == [(ConfChangeType.ADD_NODE, 4), (ConfChangeType.REMOVE_NODE, 1)]
    assert next_change(2, ConfState(voters=(2, 3, 4), voters_outgoing=(1, 2, 3)), caught_up, last, (2, 3, 4)) is None
    assert next_change(2, ConfState(voters=(2, 3, 4)), caught_up, last, (2, 3, 4)) is True
    cancelled = next_change(2, cs, caught_up, last, (1, 2, 3))
    assert [(c.type, c.node_id) for c in cancelled.changes] == [(ConfChangeType.REMOVE_NODE, 4)]


def _topic(name, *partitions):
    return {"name": name, "partitions": [{"partition": i, "replicas": list(r), "isr": list(isr)}
                                         for i, (r, isr) in enumerate(partitions)]}


def test_decommission_keeps_replication_factors_and_spreads_the_load():
    topics = [_topic("a", ([1, 2], [1, 2]), ([3, 1], [3, 1]), ([2, 3], [2, 3]))]
    assert plan_decommission(topics, [1, 2, 3, 4], 1) == {("a", 0): [4, 2], ("a", 1): [3, 4]}


def test_decommission_refuses_naming_each_partition_it_cannot_move():
    topics = [_topic("full", ([1, 2, 3], [1, 2, 3])), _topic("lost", ([1, 2, 4], [4]))]
    with pytest.raises(Refused) as refused:
        plan_decommission(topics, [1, 2, 3, 4], 1)
    text = str(refused.value)
    assert "lost-0: only 4 in sync of replicas 1,2,4" in text
    assert "full-0" not in text  # node 4 is free to take its replica
    with pytest.raises(Refused, match="full-0: replicas 1,2,3 cover every other broker"):
        plan_decommission([topics[0]], [1, 2, 3], 1)
