"""Which `__consumer_offsets` partition holds a group: Kafka's rule, so that tools that
compute it (and operators who know Kafka) get the same answer.

Kafka: Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions, where hashCode is Java's
String.hashCode over UTF-16 code units and Utils.abs maps Integer.MIN_VALUE to 0.
"""

from __future__ import annotations

INT32_MIN = -(2**31)


def java_string_hash(text: str) -> int:
    """Java's String.hashCode(): s[0]*31^(n-1) + ... + s[n-1], in signed 32-bit arithmetic."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(group_id: str, partitions: int) -> int:
    assert partitions > 0, partitions
    h = java_string_hash(group_id)
    return (0 if h == INT32_MIN else abs(h)) % partitions
