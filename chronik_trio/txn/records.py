"""The records a transaction coordinator writes to `__transaction_state`.

Key: Kafka's TransactionLogKey layout (version i16 = 0, transactional id as i16 length +
UTF-8), so tools that read keys of Kafka's topic read ours. Value: a UTF-8 JSON object with
a "v" version field (TxnMetadata.to_json), read only by this broker; a null value is a
tombstone (the id expired: Dead). Each write is one uncompressed v2 batch (group/records.py's
encoding) of one record, or of two of one id (a transaction's Complete record and the next
transaction's Ongoing one); the latest record of an id is its state (compacted semantics).
"""

from __future__ import annotations

import json
import struct

from chronik_trio.group.records import RecordError, build_batch

from .state import TxnMetadata

KEY_VERSION = 0
VALUE_VERSION = 1
_I16 = struct.Struct(">h")


def txn_key(transactional_id: str) -> bytes:
    raw = transactional_id.encode()
    return _I16.pack(KEY_VERSION) + _I16.pack(len(raw)) + raw


def parse_txn_key(key: bytes) -> str:
    if len(key) < 4:
        raise RecordError(f"transaction key of {len(key)} bytes")
    version, length = _I16.unpack_from(key, 0)[0], _I16.unpack_from(key, 2)[0]
    if version != KEY_VERSION:
        raise RecordError(f"unknown transaction key version {version}")
    if length < 0 or 4 + length != len(key):
        raise RecordError(f"transaction key string of {length} bytes in a key of {len(key)}")
    return key[4:].decode()


def txn_value(meta: TxnMetadata) -> bytes:
    return json.dumps({"v": VALUE_VERSION, **meta.to_json()}, separators=(",", ":")).encode()


def parse_txn_value(transactional_id: str, value: bytes) -> TxnMetadata:
    return TxnMetadata.from_json(transactional_id, json.loads(value))


def txn_batch(transactional_id: str, meta: TxnMetadata | None, timestamp_ms: int, *then: TxnMetadata) -> bytes:
    """The batch that records meta (None: a tombstone) as transactional_id's state, and
    then each of `then` in order (the last is the state: a Complete record with the next
    transaction's Ongoing, written as one)."""
    key = txn_key(transactional_id)
    return build_batch([(key, None if meta is None else txn_value(meta)), *((key, txn_value(m)) for m in then)],
                       timestamp_ms)
