"""The pure __meta state machine: deterministic apply, validation of names and configs."""

import uuid

import pytest

from chronik_trio.cluster import meta
from chronik_trio.pb import meta_pb2


def _create(name, n=3, **configs):
    return meta_pb2.MetaCommand(topic_created=meta_pb2.TopicCreated(
        name=name, topic_id=uuid.UUID(int=len(name)).bytes, configs=configs,
        partitions=[meta_pb2.PartitionAssignment(replicas=[1])] * n))


def test_the_same_commands_give_the_same_state_on_every_replica():
    commands = [_create("a"), _create("bb", 1, **{"retention.ms": "5"}),
                meta_pb2.MetaCommand(producer_ids_allocated=meta_pb2.ProducerIdsAllocated(node_id=1, count=10)),
                meta_pb2.MetaCommand(topic_deleted=meta_pb2.TopicDeleted(name="a", topic_id=uuid.UUID(int=1).bytes))]
    states = [meta.MetaState(), meta.MetaState()]
    for state in states:
        for c in commands:
            state.apply(meta_pb2.MetaCommand.FromString(c.SerializeToString()))
    a, b = states
    assert a.topics == b.topics and list(a.topics) == ["bb"]
    assert a.next_producer_id == b.next_producer_id == 10
    assert a.topics["bb"].config("retention.ms") == "5"
    assert a.topics["bb"].config("retention.bytes") == "-1"


def test_creating_an_existing_topic_fails_at_apply_without_changing_state():
    state = meta.MetaState()
    assert state.apply(_create("a")).ok
    version = state.version
    result = state.apply(_create("a", 5))
    assert not result.ok and isinstance(result.error, meta.TopicAlreadyExists)
    assert state.topics["a"].partition_count == 3 and state.version == version


def test_producer_id_blocks_never_overlap():
    state = meta.MetaState()
    starts = [state.apply(meta_pb2.MetaCommand(producer_ids_allocated=meta_pb2.ProducerIdsAllocated(
        node_id=1, count=1000))).producer_id_start for _ in range(3)]
    assert starts == [0, 1000, 2000]


def test_partitions_added_extend_a_topic():
    state = meta.MetaState()
    state.apply(_create("a", 2))
    state.apply(meta_pb2.MetaCommand(partitions_added=meta_pb2.PartitionsAdded(
        name="a", topic_id=uuid.UUID(int=1).bytes, partitions=[meta_pb2.PartitionAssignment(replicas=[1])])))
    assert state.topics["a"].partition_count == 3


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "x" * 250, "é"])
def test_illegal_topic_names_are_refused(name):
    with pytest.raises(meta.InvalidTopicName):
        meta.validate_topic_name(name)


@pytest.mark.parametrize("name", ["a", "a.b-c_d", "x" * 249, "__consumer_offsets"])
def test_legal_topic_names_pass(name):
    meta.validate_topic_name(name)


@pytest.mark.parametrize("configs,match", [({"nope": "1"}, "nope"), ({"retention.ms": "x"}, "integer"),
                                           ({"cleanup.policy": "compact"}, "supported")])
def test_bad_topic_configs_are_refused(configs, match):
    with pytest.raises(meta.InvalidTopicConfig, match=match):
        meta.validate_topic_configs(configs)
