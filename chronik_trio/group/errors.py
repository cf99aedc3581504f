"""Expected failures of the group layer; each carries the Kafka error code it answers with."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError


class GroupError(BrokerError):
    """A group request that cannot be served here (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
    INVALID_GROUP_ID, ...)."""

    def __init__(self, message: str, error_code: ErrorCode) -> None:
        super().__init__(message, error_code)
