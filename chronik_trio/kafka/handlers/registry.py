"""The APIs this broker implements, their versions, and ApiVersions built from that table."""

from __future__ import annotations

import kio.schema.index

from ..codec import build, response_schema
from . import (admin, configs, epochs, fetch, groups, logs, membership, metadata, offsets, produce, producers,
               reassignments, security, transactions, txn_markers)

API_VERSIONS_KEY = 18
UNSUPPORTED_VERSION = 35


# Features (KIP-584), answered in ApiVersions v3+: name -> (lowest supported, highest
# supported, finalized level). transaction.version 2 is KIP-890 part 2: a client that reads it
# (the Java client 4.x) stops sending AddPartitionsToTxn for produce partitions and
# AddOffsetsToTxn (the partition leader and the group coordinator add them at the
# transaction coordinator) and sends EndTxn v5 (a new epoch per transaction). The finalized
# level never changes on this broker, so its epoch is a constant (clients only compare it).
FEATURES = {"transaction.version": (0, 2, 2)}
FINALIZED_FEATURES_EPOCH = 1


async def handle_api_versions(body, ctx, version: int):
    return build(response_schema(API_VERSIONS_KEY, version), error_code=0, api_keys=advertised(),
                 supported_features=[{"name": n, "min_version": low, "max_version": high}
                                     for n, (low, high, _) in FEATURES.items()],
                 finalized_features_epoch=FINALIZED_FEATURES_EPOCH,
                 finalized_features=[{"name": n, "min_version_level": level, "max_version_level": level}
                                     for n, (_, _, level) in FEATURES.items()])


# api_key -> ((min version, max version), handler). The maxima are Kafka 4.0's (kafka-python
# infers the broker's version from them: ListOffsets v10 reads as 4.0); the minima reach back
# as far as kio and the clients measured in clients.md go (Kafka 4.0 dropped Produce < 3 and
# Metadata < 4, and JoinGroup < 2; keeping them costs nothing). Every pair is answered
# correctly: tests/kafka/test_conformance.py sends each one a request.
HANDLERS = {
    0: ((3, 12), produce.handle_produce),
    1: ((4, 17), fetch.handle_fetch),
    2: ((1, 10), offsets.handle_list_offsets),
    3: ((0, 13), metadata.handle_metadata),
    8: ((2, 9), groups.handle_offset_commit),
    9: ((1, 9), groups.handle_offset_fetch),
    10: ((0, 6), groups.handle_find_coordinator),
    11: ((0, 9), groups.handle_join_group),
    12: ((0, 4), groups.handle_heartbeat),
    13: ((0, 5), groups.handle_leave_group),
    14: ((0, 5), groups.handle_sync_group),
    15: ((0, 6), groups.handle_describe_groups),
    16: ((0, 5), groups.handle_list_groups),
    # Kafka 4.0 dropped SaslHandshake v0 (raw SASL tokens outside Kafka frames, KIP-896)
    17: ((1, 1), security.handle_sasl_handshake),
    18: ((0, 4), handle_api_versions),
    19: ((2, 7), admin.handle_create_topics),
    20: ((1, 6), admin.handle_delete_topics),
    21: ((0, 2), logs.handle_delete_records),
    22: ((0, 5), admin.handle_init_producer_id),
    23: ((2, 4), epochs.handle_offset_for_leader_epoch),
    24: ((0, 5), transactions.handle_add_partitions_to_txn),
    25: ((0, 4), transactions.handle_add_offsets_to_txn),
    26: ((0, 5), transactions.handle_end_txn),
    27: ((1, 2), txn_markers.handle_write_txn_markers),  # refused: the coordinator writes in process
    28: ((0, 5), transactions.handle_txn_offset_commit),
    29: ((1, 3), security.handle_describe_acls),
    30: ((1, 3), security.handle_create_acls),
    31: ((1, 3), security.handle_delete_acls),
    32: ((1, 4), configs.handle_describe_configs),
    33: ((0, 2), configs.handle_alter_configs),
    35: ((1, 4), logs.handle_describe_log_dirs),
    36: ((0, 2), security.handle_sasl_authenticate),
    37: ((0, 3), admin.handle_create_partitions),
    42: ((0, 2), groups.handle_delete_groups),
    43: ((0, 2), admin.handle_elect_leaders),
    44: ((0, 1), configs.handle_incremental_alter_configs),
    45: ((0, 1), reassignments.handle_alter_partition_reassignments),
    46: ((0, 0), reassignments.handle_list_partition_reassignments),
    47: ((0, 0), groups.handle_offset_delete),
    50: ((0, 0), security.handle_describe_user_scram_credentials),
    51: ((0, 0), security.handle_alter_user_scram_credentials),
    55: ((0, 2), membership.handle_describe_quorum),
    60: ((0, 2), admin.handle_describe_cluster),
    61: ((0, 0), producers.handle_describe_producers),
    64: ((0, 0), membership.handle_unregister_broker),
    80: ((0, 0), membership.handle_add_raft_voter),
    81: ((0, 0), membership.handle_remove_raft_voter),
    65: ((0, 0), transactions.handle_describe_transactions),
    66: ((0, 2), transactions.handle_list_transactions),
}


def _check_against_kio() -> None:
    for key, ((low, high), _) in HANDLERS.items():
        name = kio.schema.index.api_key_map[key]
        versions = kio.schema.index.schema_name_map[name]
        assert low in versions and high in versions, (name, low, high, sorted(versions))


_check_against_kio()


def advertised() -> list[dict]:
    return [{"api_key": key, "min_version": low, "max_version": high}
            for key, ((low, high), _) in sorted(HANDLERS.items())]


def supports(api_key: int, version: int) -> bool:
    entry = HANDLERS.get(api_key)
    return entry is not None and entry[0][0] <= version <= entry[0][1]


def unsupported_api_versions_response():
    """The v0 answer Kafka gives an ApiVersions request at a version it does not know; the
    client retries with a version from the list."""
    return build(response_schema(API_VERSIONS_KEY, 0), error_code=UNSUPPORTED_VERSION,
                 api_keys=advertised())
