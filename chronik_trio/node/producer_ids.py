"""Producer ids (InitProducerId): from blocks this node reserves in __meta, for idempotent
producers and for the transaction coordinator (node/txn_coordinator.py), which keeps the
transactional ids and their epochs on `__transaction_state`.

Without __meta both raise MetaUnavailable with COORDINATOR_NOT_AVAILABLE, not its usual
REQUEST_TIMED_OUT: the Java producer retries InitProducerId only on coordinator errors and
treats any other as fatal.
"""

from __future__ import annotations

import contextlib
import typing

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.errors import MetaUnavailable
from chronik_trio.pb import meta_pb2

from .meta_group import MetaService

PRODUCER_ID_BLOCK = 1000  # ids reserved per __meta command; a restart skips the unused rest


class ProducerIds:
    def __init__(self, node_id: int, meta_service: MetaService,
                 wall_clock_ms: typing.Callable[[], int]) -> None:
        self.node_id = node_id
        self._meta_service = meta_service
        self._wall_clock_ms = wall_clock_ms
        self._block = (0, 0)  # [next, end) of this node's reserved block
        self._lock = trio.Lock()

    async def allocate(self) -> int:
        """A producer id never handed out before (raises MetaUnavailable)."""
        async with self._lock:
            next_id, end = self._block
            if next_id >= end:
                with _coordinator_unavailable():
                    applied = await self._meta_service.propose(meta_pb2.MetaCommand(
                        producer_ids_allocated=meta_pb2.ProducerIdsAllocated(
                            node_id=self.node_id, count=PRODUCER_ID_BLOCK)))
                next_id, end = applied.producer_id_start, applied.producer_id_start + PRODUCER_ID_BLOCK
            self._block = (next_id + 1, end)
            return next_id


@contextlib.contextmanager
def _coordinator_unavailable() -> typing.Iterator[None]:
    try:
        yield
    except MetaUnavailable as exc:
        raise MetaUnavailable(str(exc), ErrorCode.coordinator_not_available) from None
