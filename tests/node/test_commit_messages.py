"""Messages, batches and Ready passes per record on three voters (issue 20).

A record proposed to a 3-voter group costs, without skip_bcast_commit (etcd's behaviour,
which __meta keeps): the leader's append to each follower, each follower's answer, then, once
the leader committed, an empty append to each follower carrying the new commit index and
each follower's answer to it: 8 messages, 8 batches (one per pass and peer, which the
transport sends as one RaftBatch, one HTTP/2 DATA frame for records this small), 2 passes
per follower. As partitions run (skip_bcast_commit and skip_heartbeat_after_append), the
commit goes with the next append, or the first heartbeat round that finds no append since
the last: 4 messages, 4 batches, 1 pass per follower, and no heartbeat while records flow.

Virtual time stands still (pytest-trio's mock_clock at rate 0), so no tick or heartbeat is
sent unless the test ticks a group by hand; real files and fsyncs, as test_ready_wakeups.py.
"""

import collections

import pytest

from chronik_trio.raft.types import MessageType
from tests.node.cluster import LocalCluster

pytestmark = pytest.mark.timeout(60)
RECORDS = 5
MT = MessageType


async def _records_one_at_a_time(cluster, nursery, count, *, beat_after_each=False):
    """Elect node 1, then propose `count` records, each once the one before was applied by
    the leader; beat_after_each: then tick the leader through a heartbeat timeout. Returns
    (messages, batches, passes) per node, for those records only."""
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    await cluster.settle()
    leader = cluster.runtimes[1].groups["g"]
    async with leader.lock:
        leader.node.campaign()
    leader.wake_runtime()
    await cluster.settle()
    assert leader.is_leader
    await leader.propose(b"warm-up")  # every follower's progress is in replicate state
    await cluster.settle()
    sent_before = len(cluster.sent)
    passes_before = {n: r.passes for n, r in cluster.runtimes.items()}
    for k in range(count):
        await leader.propose(b"record %d" % k)
        await cluster.settle()
        if beat_after_each:
            await _heartbeat_timeout(cluster, leader)
    sent = cluster.sent[sent_before:]
    messages = collections.Counter((frm, kind) for frm, _, kind, _ in sent)
    batches = collections.Counter(frm for frm, _, _ in {(frm, to, p) for frm, to, _, p in sent})
    passes = {n: r.passes - passes_before[n] for n, r in cluster.runtimes.items()}
    return messages, batches, passes


async def _heartbeat_timeout(cluster, group):
    """Tick group (whose clock stands still) through one heartbeat timeout, then settle."""
    for _ in range(group.node.raft.heartbeat_timeout_ticks):
        group.tick()
    await cluster.settle()


def _applied(cluster, node_id):
    return [d for _, d in cluster.machines[(node_id, "g")].applied]


async def test_without_skip_bcast_commit_a_record_costs_two_rounds_of_messages(tmp_path, nursery, mock_clock):
    cluster = LocalCluster(tmp_path)
    messages, batches, passes = await _records_one_at_a_time(cluster, nursery, RECORDS)
    assert messages == {(1, MT.APPEND): 4 * RECORDS, (2, MT.APPEND_RESPONSE): 2 * RECORDS,
                        (3, MT.APPEND_RESPONSE): 2 * RECORDS}
    assert batches == {1: 4 * RECORDS, 2: 2 * RECORDS, 3: 2 * RECORDS}
    # Each follower: a pass for the append (and its fsync), one for the commit's append.
    assert passes[2] == passes[3] == 2 * RECORDS, passes
    # The leader: one for the proposal, one for the first answer (which commits). A later
    # answer acknowledges committed entries and waits for the next pass (RaftGroup.deliver).
    assert passes[1] == 2 * RECORDS, passes
    for n in cluster.node_ids:  # every follower applied every record, with no tick
        assert len(_applied(cluster, n)) == RECORDS + 1


async def test_as_partitions_run_a_record_costs_one_round_of_messages(tmp_path, nursery, mock_clock):
    # skip_bcast_commit and skip_heartbeat_after_append, as node/replicas.py opens partitions;
    # a heartbeat timeout after every record, as at about 10 records/s per partition.
    cluster = LocalCluster(tmp_path, skip_bcast_commit=True, skip_heartbeat_after_append=True)
    messages, batches, passes = await _records_one_at_a_time(cluster, nursery, RECORDS, beat_after_each=True)
    # No heartbeat: each round found an append sent to both followers since the last.
    assert messages == {(1, MT.APPEND): 2 * RECORDS, (2, MT.APPEND_RESPONSE): RECORDS,
                        (3, MT.APPEND_RESPONSE): RECORDS}
    assert batches == {1: 2 * RECORDS, 2: RECORDS, 3: RECORDS}
    assert passes[2] == passes[3] == RECORDS, passes
    # The leader: one pass for the proposal, one for the first answer (which commits), one
    # for each heartbeat timeout (its ticks), which steps the second answer too.
    assert passes[1] == 3 * RECORDS, passes
    # Each record's append carried the commit of the one before: the followers applied all
    # but the last, which the next heartbeat round (with no append since) brings.
    assert [len(_applied(cluster, n)) for n in cluster.node_ids] == [RECORDS + 1, RECORDS, RECORDS]
    sent = len(cluster.sent)
    await _heartbeat_timeout(cluster, cluster.runtimes[1].groups["g"])
    assert sorted((frm, to, kind) for frm, to, kind, _ in cluster.sent[sent:]) == [
        (1, 2, MT.HEARTBEAT), (1, 3, MT.HEARTBEAT), (2, 1, MT.HEARTBEAT_RESPONSE), (3, 1, MT.HEARTBEAT_RESPONSE)]
    for n in cluster.node_ids:
        assert _applied(cluster, n) == [b"warm-up"] + [b"record %d" % k for k in range(RECORDS)], n
