"""The consumer protocol's subscription (ConsumerProtocolSubscription): which topics a
member subscribes to. The broker reads it only for OffsetDelete's
GROUP_SUBSCRIBED_TO_TOPIC check; the assignment itself is the leader's business.

Layout (every version): version i16, topics [i32 count of i16-length strings], then fields
the broker does not need (user data, owned partitions, ...).
"""

from __future__ import annotations

import struct

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
TOPICS_MAX = 100_000  # a count beyond this is garbage, not a subscription


def subscription_topics(metadata: bytes) -> set[str]:
    """The subscribed topics; empty when the bytes are not a consumer subscription."""
    try:
        pos = 2
        (count,) = _I32.unpack_from(metadata, pos)
        pos += 4
        if not 0 <= count <= TOPICS_MAX:
            return set()
        topics = set()
        for _ in range(count):
            (n,) = _I16.unpack_from(metadata, pos)
            pos += 2
            if n < 0 or pos + n > len(metadata):
                return set()
            topics.add(metadata[pos:pos + n].decode())
            pos += n
        return topics
    except (struct.error, UnicodeDecodeError):
        return set()
