"""The consumer group's transition table (chronik_trio/group/group.py, _TRANSITIONS), walked:
every row from a group really in its state, and every other (state, input) pair refused with
the error code Kafka answers. Pure: no I/O, explicit times."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from chronik_trio.group import Group, GroupInput, GroupState, IllegalGroupInput, JoinRequest
from chronik_trio.group.group import _TRANSITIONS

pytestmark = pytest.mark.timeout(30)

SESSION_MS = 10_000
REBALANCE_MS = 20_000
NOW_MS = 1_000
DELAY_MS = 100  # the initial rebalance delay: a and b join generation 1 together

# The table as a reader should see it; a change to the group's protocol shows up here.
EXPECTED = """
Empty               REQUEST_RECEIVED        Empty
PreparingRebalance  REQUEST_RECEIVED        PreparingRebalance
CompletingRebalance REQUEST_RECEIVED        CompletingRebalance
Stable              REQUEST_RECEIVED        Stable
Empty               MEMBER_JOINED           PreparingRebalance
PreparingRebalance  MEMBER_JOINED           PreparingRebalance
CompletingRebalance MEMBER_JOINED           PreparingRebalance
Stable              MEMBER_JOINED           PreparingRebalance
PreparingRebalance  MEMBER_REJOINED         PreparingRebalance
CompletingRebalance MEMBER_REJOINED         CompletingRebalance
Stable              MEMBER_REJOINED         Stable
PreparingRebalance  LEADER_REJOINED         PreparingRebalance
CompletingRebalance LEADER_REJOINED         CompletingRebalance
Stable              LEADER_REJOINED         PreparingRebalance
PreparingRebalance  MEMBER_CHANGED          PreparingRebalance
CompletingRebalance MEMBER_CHANGED          PreparingRebalance
Stable              MEMBER_CHANGED          PreparingRebalance
PreparingRebalance  STATIC_MEMBER_RETURNED  PreparingRebalance
CompletingRebalance STATIC_MEMBER_RETURNED  PreparingRebalance
Stable              STATIC_MEMBER_RETURNED  Stable
PreparingRebalance  STATIC_MEMBER_CHANGED   PreparingRebalance
CompletingRebalance STATIC_MEMBER_CHANGED   PreparingRebalance
Stable              STATIC_MEMBER_CHANGED   PreparingRebalance
PreparingRebalance  MEMBER_LEFT             PreparingRebalance
CompletingRebalance MEMBER_LEFT             PreparingRebalance
Stable              MEMBER_LEFT             PreparingRebalance
PreparingRebalance  JOIN_PHASE_ENDED        CompletingRebalance
PreparingRebalance  JOIN_PHASE_ENDED_EMPTY  Empty
CompletingRebalance MEMBER_SYNCED           CompletingRebalance
CompletingRebalance LEADER_SYNCED           CompletingRebalance
Stable              MEMBER_SYNCED           Stable
Stable              LEADER_SYNCED           Stable
CompletingRebalance ASSIGNMENT_PERSISTED    Stable
Empty               PERSIST_FAILED          Empty
PreparingRebalance  PERSIST_FAILED          PreparingRebalance
CompletingRebalance PERSIST_FAILED          PreparingRebalance
Stable              PERSIST_FAILED          Stable
Dead                PERSIST_FAILED          Dead
CompletingRebalance HEARTBEAT               CompletingRebalance
Stable              HEARTBEAT               Stable
Empty               STANDALONE_COMMIT       Empty
PreparingRebalance  STANDALONE_COMMIT       PreparingRebalance
Stable              STANDALONE_COMMIT       Stable
PreparingRebalance  MEMBER_COMMIT           PreparingRebalance
Stable              MEMBER_COMMIT           Stable
Empty               DELETED                 Dead
PreparingRebalance  DELETED                 Dead
CompletingRebalance DELETED                 Dead
Stable              DELETED                 Dead
Dead                DELETED                 Dead
Empty               LOADED                  Stable
Empty               LOADED_EMPTY            Empty
"""

# What Kafka answers a client's request that the state refuses; the group's own inputs
# (join phase, writes, loading) are refused as a bug would be.
CLIENT_REFUSALS = {
    GroupState.DEAD: ErrorCode.coordinator_not_available,
    GroupState.EMPTY: ErrorCode.unknown_member_id,
    GroupState.PREPARING_REBALANCE: ErrorCode.rebalance_in_progress,
    GroupState.COMPLETING_REBALANCE: ErrorCode.rebalance_in_progress,
}
OWN_INPUTS = {GroupInput.JOIN_PHASE_ENDED, GroupInput.JOIN_PHASE_ENDED_EMPTY,
              GroupInput.ASSIGNMENT_PERSISTED, GroupInput.PERSIST_FAILED, GroupInput.DELETED,
              GroupInput.LOADED, GroupInput.LOADED_EMPTY}


def _expected() -> dict[tuple[GroupState, GroupInput], GroupState]:
    rows = {}
    for line in EXPECTED.strip().splitlines():
        state, group_input, next_state = line.split()
        rows[GroupState(state), GroupInput[group_input]] = GroupState(next_state)
    return rows


def _request(member_id: str = "", instance_id: str | None = None) -> JoinRequest:
    return JoinRequest(member_id, instance_id, "client", "/127.0.0.1", "consumer", (("range", b"r"),),
                       SESSION_MS, REBALANCE_MS, False)


def _completing() -> Group:
    """Members a (leader, static i-a) and b; the leader's assignment is being written."""
    g = Group("g", initial_rebalance_delay_ms=DELAY_MS)
    g.join(0, _request(instance_id="i-a"), "a")
    g.join(0, _request(), "b")
    g.tick(DELAY_MS)
    assert g.state == GroupState.COMPLETING_REBALANCE and g.leader_id == "a"
    g.sync(1, "a", 1, None, None, None, [("a", b"A"), ("b", b"B")])
    return g


def _stable() -> Group:
    g = _completing()
    g.persisted(1)
    return g


def _preparing() -> Group:
    g = _stable()
    g.join(2, _request(), "c")
    return g


def _dead() -> Group:
    g = _stable()
    g.mark_dead()
    return g


GROUP_IN = {GroupState.EMPTY: lambda: Group("g"), GroupState.PREPARING_REBALANCE: _preparing,
            GroupState.COMPLETING_REBALANCE: _completing, GroupState.STABLE: _stable,
            GroupState.DEAD: _dead}


def _args(group_input: GroupInput, g: Group) -> tuple:
    """What the request methods pass with each input (see GroupInput)."""
    if group_input in (GroupInput.REQUEST_RECEIVED, GroupInput.ASSIGNMENT_PERSISTED, GroupInput.HEARTBEAT,
                       GroupInput.DELETED, GroupInput.LOADED, GroupInput.LOADED_EMPTY):
        return ()
    if group_input in (GroupInput.JOIN_PHASE_ENDED, GroupInput.JOIN_PHASE_ENDED_EMPTY):
        return (NOW_MS,)
    if group_input in (GroupInput.MEMBER_SYNCED, GroupInput.LEADER_SYNCED):
        return ("a", [("a", b"A2")])
    if group_input == GroupInput.PERSIST_FAILED:
        return (NOW_MS, ErrorCode.not_coordinator)
    if group_input in (GroupInput.MEMBER_COMMIT, GroupInput.STANDALONE_COMMIT):
        return ("a", g.generation_id)
    return (NOW_MS, "a")  # the join inputs and MEMBER_LEFT


def test_the_table_is_the_one_written_here():
    assert {key: next_state for key, (_, next_state) in _TRANSITIONS.items()} == _expected()


@pytest.mark.parametrize("state, group_input", sorted(_expected(), key=str), ids=str)
def test_every_row_moves_a_group_in_its_state_to_the_next(state, group_input):
    g = GROUP_IN[state]()
    assert g.state == state
    g._step(group_input, *_args(group_input, g))
    assert g.state == _expected()[state, group_input]


ILLEGAL = sorted(((s, i) for s in GroupState for i in GroupInput if (s, i) not in _expected()), key=str)


@pytest.mark.parametrize("state, group_input", ILLEGAL, ids=str)
def test_every_other_input_is_refused_with_kafkas_error_and_changes_nothing(state, group_input):
    g = GROUP_IN[state]()
    events = list(g.outbox)
    with pytest.raises(IllegalGroupInput) as refused:
        g._step(group_input, *_args(group_input, g))
    expected = ErrorCode.unknown_server_error if group_input in OWN_INPUTS else CLIENT_REFUSALS[state]
    assert refused.value.error_code == expected
    assert g.state == state and g.outbox == events


def test_refusals_reach_the_client_as_answers():
    """The request methods answer a refused input with its code, as Kafka does."""
    g = _preparing()
    assert g.heartbeat(3, "a", 1, None) == ErrorCode.rebalance_in_progress
    assert g.sync(3, "a", 1, None, None, None, []).error == ErrorCode.rebalance_in_progress
    g = _completing()
    assert g.check_commit("a", 1, None) == ErrorCode.rebalance_in_progress
    g = _dead()
    assert g.join(3, _request("a"), "x").error == ErrorCode.coordinator_not_available
    assert g.heartbeat(3, "a", 1, None) == ErrorCode.coordinator_not_available
    assert g.leave(3, "a", None) == ErrorCode.coordinator_not_available
    assert g.check_commit("a", 1, None) == ErrorCode.coordinator_not_available
