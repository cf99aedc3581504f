"""Majority and joint quorums: commit indexes and vote results. Pure functions on id sets."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Callable

INDEX_INFINITE = 1 << 64
"""Commit index of an empty majority config: it never holds a joint config back."""


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed_index(voters: frozenset[int], match_of: Callable[[int], int]) -> int:
    """The largest index acknowledged by a majority of voters."""
    n = len(voters)
    if n == 0:
        return INDEX_INFINITE
    matched = sorted((match_of(v) for v in voters), reverse=True)
    return matched[n // 2]


def majority_vote_result(voters: frozenset[int], votes: Mapping[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON  # an empty config agrees to everything (joint with nothing)
    granted = rejected = 0
    for v in voters:
        vote = votes.get(v)
        if vote is True:
            granted += 1
        elif vote is False:
            rejected += 1
    quorum = len(voters) // 2 + 1
    if granted >= quorum:
        return VoteResult.WON
    if len(voters) - rejected >= quorum:
        return VoteResult.PENDING
    return VoteResult.LOST


def majority_is_active(voters: frozenset[int], active: Callable[[int], bool]) -> bool:
    if not voters:
        return True
    return sum(1 for v in voters if active(v)) >= len(voters) // 2 + 1


class JointConfig:
    """Two majority configs; a decision needs both. Outside a joint change `outgoing` is
    empty, which agrees to everything, so the same code serves both cases."""

    __slots__ = ("incoming", "outgoing")

    def __init__(self, incoming: frozenset[int], outgoing: frozenset[int] = frozenset()):
        self.incoming = incoming
        self.outgoing = outgoing

    def ids(self) -> frozenset[int]:
        return self.incoming | self.outgoing

    def is_joint(self) -> bool:
        return bool(self.outgoing)

    def committed_index(self, match_of: Callable[[int], int]) -> int:
        return min(majority_committed_index(self.incoming, match_of),
                   majority_committed_index(self.outgoing, match_of))

    def vote_result(self, votes: Mapping[int, bool]) -> VoteResult:
        r1 = majority_vote_result(self.incoming, votes)
        r2 = majority_vote_result(self.outgoing, votes)
        if r1 == r2:
            return r1
        if VoteResult.LOST in (r1, r2):
            return VoteResult.LOST
        return VoteResult.PENDING

    def is_active(self, active: Callable[[int], bool]) -> bool:
        return majority_is_active(self.incoming, active) and \
            majority_is_active(self.outgoing, active)

    def __repr__(self) -> str:
        inc = " ".join(map(str, sorted(self.incoming)))
        if not self.outgoing:
            return f"({inc})"
        return f"({inc})&&({' '.join(map(str, sorted(self.outgoing)))})"
