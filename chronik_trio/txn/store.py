"""TxnStore: the transactions of one `__transaction_state` partition, as every replica
derives them from the partition's committed batches (a BatchState, partition/state.py):
the latest metadata per transactional id. A new coordinator starts from it (and resumes
the markers of every prepared transaction in it); the coordinator's decisions read it, so a
decision is only ever taken on committed state.
"""

from __future__ import annotations

import json
import logging

from chronik_trio.group.records import RecordError, batch_records

from .records import parse_txn_key, parse_txn_value, txn_value
from .state import TxnMetadata

log = logging.getLogger(__name__)

ENCODING_VERSION = 1
_DECODE_ERRORS = (RecordError, ValueError, KeyError, TypeError)


class TxnStore:
    name = "transactions"

    def __init__(self) -> None:
        self.txns: dict[str, TxnMetadata] = {}
        self.skipped_records = 0

    def apply(self, data: memoryview, index: int) -> None:
        try:
            records = batch_records(data)
        except RecordError as exc:
            self.skipped_records += 1
            log.warning("__transaction_state entry %d is not a coordinator batch, skipped: %s", index, exc)
            return
        for key, value in records:
            try:
                transactional_id = parse_txn_key(key)
                if value is None:
                    self.txns.pop(transactional_id, None)
                else:
                    self.txns[transactional_id] = parse_txn_value(transactional_id, value)
            except _DECODE_ERRORS as exc:
                self.skipped_records += 1
                log.warning("__transaction_state entry %d: a record does not decode, skipped: %s", index, exc)

    def encode(self) -> bytes:
        return json.dumps({"v": ENCODING_VERSION, "txns": {t: txn_value(m).decode() for t, m in self.txns.items()}},
                          separators=(",", ":")).encode()

    def decode(self, data: bytes) -> None:
        d = json.loads(data)
        self.txns = {t: parse_txn_value(t, v.encode()) for t, v in d["txns"].items()}

    def get(self, transactional_id: str) -> TxnMetadata | None:
        return self.txns.get(transactional_id)
