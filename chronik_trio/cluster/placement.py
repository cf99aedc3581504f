"""Where a new topic's replicas go: deterministic from the topic's name and the brokers.

Pure: no clocks, no randomness. The first replica of each partition is its preferred
leader; preferred leaders are spread round-robin from a start derived from the name.
"""

from __future__ import annotations

import typing
import zlib

from .meta import PARTITIONS_PER_TOPIC_MAX, InvalidPartitionCount, InvalidReplicationFactor

DEFAULT_REPLICATION_FACTOR_MAX = 3  # replication factor -1 means min(this, brokers)


def assign_replicas(name: str, partitions: int, replication_factor: int,
                    brokers: typing.Iterable[int]) -> list[list[int]]:
    """Replicas for each of `partitions` partitions of topic `name`; replication_factor -1
    picks the default. Raises InvalidReplicationFactor or InvalidPartitionCount."""
    brokers = sorted(brokers)
    rf = min(DEFAULT_REPLICATION_FACTOR_MAX, len(brokers)) if replication_factor == -1 else replication_factor
    if rf < 1 or rf > len(brokers):
        raise InvalidReplicationFactor(f"replication factor {rf} is not between 1 and the "
                                       f"cluster's {len(brokers)} broker(s)")
    if partitions < 1:
        raise InvalidPartitionCount(f"number of partitions must be positive, got {partitions}")
    if partitions > PARTITIONS_PER_TOPIC_MAX:
        raise InvalidPartitionCount(f"{partitions} partitions; a topic has at most {PARTITIONS_PER_TOPIC_MAX}")
    start = zlib.crc32(name.encode()) % len(brokers)
    return [[brokers[(start + p + i) % len(brokers)] for i in range(rf)] for p in range(partitions)]
