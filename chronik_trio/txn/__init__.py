"""Transactions, the coordinator's pure part: the state machine of a transactional id, its
records on `__transaction_state`, and the store every replica derives from them.

- state.py: TxnState, the transition table, TxnMetadata and the decisions of each API
  (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, the timeout abort), each a
  pure function of the current metadata, the request and the time: it answers an error
  code or the metadata to write.
- records.py: the record key and value on `__transaction_state` and their batches.
- store.py: TxnStore, the BatchState (partition/state.py) of a `__transaction_state`
  partition: the latest metadata per transactional id (compacted semantics).

May import: the standard library, attrs, kio's ErrorCode and the pure layers below (group/
for its batch encoding and Kafka's partition hash). No trio, no I/O, no clocks.
"""

TXN_TOPIC = "__transaction_state"  # Kafka's name; written only by transaction coordinators

from .records import txn_batch, txn_key
from .state import (COMPLETED, PREPARED, Decision, Marker, TxnMetadata, TxnState, add_partitions, check_timeout,
                    complete, dead, end_txn, end_txn_needs_new_producer_id, expired, fence_and_abort, init_producer_id, is_valid_transition,
                    needs_new_producer_id, timed_out, verify_partition)
from .store import TxnStore

__all__ = ["TXN_TOPIC", "txn_batch", "txn_key", "COMPLETED", "PREPARED", "Decision", "Marker",
           "TxnMetadata", "TxnState", "add_partitions", "check_timeout", "complete", "dead", "end_txn",
           "end_txn_needs_new_producer_id", "expired",
           "fence_and_abort", "init_producer_id", "is_valid_transition", "needs_new_producer_id", "timed_out",
           "verify_partition", "TxnStore"]
