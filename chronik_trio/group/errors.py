"""Expected failures of the group layer; each carries the Kafka error code it answers with."""

from __future__ import annotations

import enum

from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError


class GroupError(BrokerError):
    """A group request that cannot be served here (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
    INVALID_GROUP_ID, ...)."""

    def __init__(self, message: str, error_code: ErrorCode) -> None:
        super().__init__(message, error_code)


class IllegalGroupInput(GroupError):
    """An input the group's transition table has no row for in the group's state
    (group/group.py, _TRANSITIONS). error_code is what Kafka answers a request refused in
    that state (REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, COORDINATOR_NOT_AVAILABLE), or
    UNKNOWN_SERVER_ERROR for one of the group's own inputs, which only a bug sends there."""

    def __init__(self, state: enum.Enum, group_input: enum.Enum, error_code: ErrorCode) -> None:
        super().__init__(f"{group_input} in state {state}", error_code)
        self.state = state
        self.group_input = group_input
