"""Where a new topic's replicas go (cluster/placement.py)."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import InvalidPartitionCount, InvalidReplicationFactor
from chronik_trio.cluster.placement import assign_replicas

pytestmark = pytest.mark.timeout(10)


def test_preferred_leaders_are_spread_round_robin_with_distinct_replicas():
    assignment = assign_replicas("orders", 6, -1, [3, 1, 2, 4])
    assert all(len(set(r)) == len(r) == 3 for r in assignment)  # default: min(3, brokers)
    leaders = [r[0] for r in assignment]
    assert sorted(leaders[:4]) == [1, 2, 3, 4]  # each broker leads one of the first four
    assert assignment == assign_replicas("orders", 6, -1, [1, 2, 3, 4])  # deterministic


@pytest.mark.parametrize("rf", [0, 4])
def test_a_replication_factor_beyond_the_brokers_is_refused_with_its_code(rf):
    with pytest.raises(InvalidReplicationFactor) as exc:
        assign_replicas("t", 1, rf, [1, 2, 3])
    assert exc.value.error_code == ErrorCode.invalid_replication_factor


def test_no_partitions_is_refused_with_its_code():
    with pytest.raises(InvalidPartitionCount) as exc:
        assign_replicas("t", 0, 1, [1])
    assert exc.value.error_code == ErrorCode.invalid_partitions
