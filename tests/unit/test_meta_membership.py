"""The membership commands of the pure __meta state machine (issue 17): joining, removing,
disk health; refusals carry Kafka's codes; everything survives a snapshot."""

import uuid

from kio.schema.errors import ErrorCode

from chronik_trio.cluster import meta
from chronik_trio.pb import meta_pb2


def _register(state, node_id):
    return state.apply(meta_pb2.MetaCommand(broker_registered=meta_pb2.BrokerRegistered(
        node_id=node_id, host="127.0.0.1", port=9000 + node_id, raft_address=f"127.0.0.1:{9100 + node_id}")))


def _join(state, node_id, address="127.0.0.1:9999"):
    return state.apply(meta_pb2.MetaCommand(node_join_requested=meta_pb2.NodeJoinRequested(
        node_id=node_id, raft_address=address)))


def _remove(state, node_id, force=False):
    return state.apply(meta_pb2.MetaCommand(node_removed=meta_pb2.NodeRemoved(node_id=node_id, force=force)))


def test_a_node_joins_registers_and_is_removed():
    state = meta.MetaState()
    for n in (1, 2, 3):
        assert _register(state, n).ok
    assert _join(state, 4).ok and state.joining == {4: "127.0.0.1:9999"}
    assert _register(state, 4).ok and state.joining == {} and 4 in state.brokers
    assert _remove(state, 4).ok and 4 not in state.brokers and state.removed_nodes == {4}
    refused = _register(state, 4)  # a removed node may not come back without joining again
    assert not refused.ok and refused.error.error_code == ErrorCode.broker_id_not_registered
    assert _join(state, 4).ok and state.removed_nodes == set()


def test_joining_with_the_id_of_a_registered_broker_is_refused():
    state = meta.MetaState()
    assert _register(state, 2).ok
    refused = _join(state, 2)
    assert not refused.ok and refused.error.error_code == ErrorCode.duplicate_voter
    assert "in use" in str(refused.error) and state.joining == {}
    bad = _join(state, 5, address="")
    assert not bad.ok and bad.error.error_code == ErrorCode.invalid_request


def test_removing_a_node_that_hosts_replicas_names_them_unless_forced():
    state = meta.MetaState()
    for n in (1, 2, 3):
        _register(state, n)
    state.apply(meta_pb2.MetaCommand(topic_created=meta_pb2.TopicCreated(
        name="t", topic_id=uuid.UUID(int=7).bytes,
        partitions=[meta_pb2.PartitionAssignment(replicas=[1, 2]), meta_pb2.PartitionAssignment(replicas=[2, 3])])))
    refused = _remove(state, 3)
    assert not refused.ok and refused.error.error_code == ErrorCode.invalid_request
    assert "t-1" in str(refused.error) and "t-0" not in str(refused.error) and 3 in state.brokers
    assert _remove(state, 3, force=True).ok and 3 not in state.brokers
    assert state.topics["t"].replicas[1] == (2, 3)  # its replicas stay until moved


def test_membership_and_disk_health_survive_a_snapshot():
    state = meta.MetaState()
    _register(state, 1)
    _join(state, 4)
    _remove(state, 5)
    state.apply(meta_pb2.MetaCommand(node_health_reported=meta_pb2.NodeHealthReported(node_id=1, disk_degraded=True)))
    copy = meta.MetaState()
    copy.restore(state.snapshot())
    assert (copy.joining, copy.removed_nodes, copy.disk_degraded) == ({4: "127.0.0.1:9999"}, {5}, {1})
    state.apply(meta_pb2.MetaCommand(node_health_reported=meta_pb2.NodeHealthReported(node_id=1)))
    assert state.disk_degraded == set()
