"""The pure __meta state machine: deterministic apply, validation of names and configs."""

import uuid

import pytest

from chronik_trio.cluster import configs as configs_module
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


@pytest.mark.parametrize("configs,match", [({"nope": "1"}, "nope"), ({"retention.ms": "x"}, "retention.ms"),
                                           ({"cleanup.policy": "purge"}, "cleanup.policy")])
def test_bad_topic_configs_are_refused(configs, match):
    with pytest.raises(configs_module.InvalidConfig, match=match):
        configs_module.validate_topic_configs(configs)


def _with_id(command, request_id):
    command.request_id = request_id
    return command


def test_a_retried_request_is_applied_once_and_returns_the_first_result():
    state = meta.MetaState()
    alloc = meta_pb2.MetaCommand(producer_ids_allocated=meta_pb2.ProducerIdsAllocated(node_id=1, count=10))
    first = state.apply(_with_id(alloc, b"req-1"))
    again = state.apply(_with_id(meta_pb2.MetaCommand.FromString(alloc.SerializeToString()), b"req-1"))
    assert first == again and first.producer_id_start == 0 and state.next_producer_id == 10
    dup_create = [state.apply(_with_id(_create("t"), b"req-2")) for _ in range(2)]
    assert all(r.ok for r in dup_create) and state.topics["t"].partition_count == 3


def test_leader_reports_only_move_forward():
    state = meta.MetaState()
    state.apply(_create("a"))
    topic = state.topics["a"]

    def report(leader, epoch):
        return state.apply(meta_pb2.MetaCommand(partition_leader_changed=meta_pb2.PartitionLeaderChanged(
            topic_id=topic.topic_id.bytes, partition=1, leader=leader, leader_epoch=epoch)))

    assert report(2, 5).ok and state.leader_of(topic, 1) == meta.PartitionLeader(2, 5)
    assert report(3, 4).ok and state.leader_of(topic, 1) == meta.PartitionLeader(2, 5)  # stale
    assert report(3, 6).ok and state.leader_of(topic, 1) == meta.PartitionLeader(3, 6)
    assert state.leader_of(topic, 0) is None


def test_one_batched_leader_command_applies_each_report_as_its_own_and_skips_stale_or_unknown_ones():
    state = meta.MetaState()
    state.apply(_create("a"))
    topic = state.topics["a"]

    def one(partition, leader, epoch, topic_id=topic.topic_id):
        return meta_pb2.PartitionLeaderChanged(topic_id=topic_id.bytes, partition=partition, leader=leader,
                                               leader_epoch=epoch, isr=[leader])

    assert state.apply(meta_pb2.MetaCommand(partition_leader_changed=one(1, 2, 5))).ok
    version = state.version
    layout = state.layout_version
    applied = state.apply(meta_pb2.MetaCommand(partition_leaders_changed=meta_pb2.PartitionLeadersChanged(
        reports=[one(0, 1, 3), one(1, 3, 4), one(2, 3, 7), one(9, 1, 1), one(0, 1, 1, uuid.UUID(int=99))])))
    assert applied.ok
    assert state.leader_of(topic, 0) == meta.PartitionLeader(1, 3, (1,))
    assert state.leader_of(topic, 1) == meta.PartitionLeader(2, 5, (2,))  # the batch's report was stale
    assert state.leader_of(topic, 2) == meta.PartitionLeader(3, 7, (3,))
    assert len(state.leaders) == 3  # no partition 9, no topic 99
    assert state.version == version + 1 and state.layout_version == layout  # one command, no layout change


def test_a_snapshot_restores_an_equal_state_including_dedup_memory():
    state = meta.MetaState()
    state.apply(_with_id(_create("a", 2, **{"retention.ms": "9"}), b"c1"))
    state.apply(_with_id(_create("a"), b"c2"))  # fails: exists
    state.apply(meta_pb2.MetaCommand(broker_registered=meta_pb2.BrokerRegistered(
        node_id=1, host="h", port=9, raft_address="h:10")))
    state.apply(meta_pb2.MetaCommand(partition_leader_changed=meta_pb2.PartitionLeaderChanged(
        topic_id=state.topics["a"].topic_id.bytes, partition=0, leader=1, leader_epoch=3)))
    state.apply(_with_id(meta_pb2.MetaCommand(producer_ids_allocated=meta_pb2.ProducerIdsAllocated(
        node_id=1, count=5)), b"p1"))
    copy = meta.MetaState()
    copy.restore(state.snapshot())
    assert copy.topics == state.topics and copy.brokers == state.brokers
    assert copy.leaders == state.leaders and copy.next_producer_id == 5 and copy.version == state.version
    assert copy.snapshot() == state.snapshot()
    replay = copy.apply(_with_id(_create("a"), b"c2"))
    assert not replay.ok and isinstance(replay.error, meta.TopicAlreadyExists)


def test_dynamic_broker_configs_apply_remove_and_survive_snapshots():
    state = meta.MetaState()

    def alter(broker, set_=None, removed=()):
        state.apply(meta_pb2.MetaCommand(broker_configs_altered=meta_pb2.BrokerConfigsAltered(
            broker=broker, set=set_ or {}, removed=removed)))

    alter("", {"log.retention.ms": "5", "message.max.bytes": "9"})
    alter("2", {"log.retention.ms": "6"})
    alter("", removed=["message.max.bytes"])
    alter("3", {"log.retention.bytes": "1"})
    alter("3", removed=["log.retention.bytes"])
    assert state.broker_configs == {"": {"log.retention.ms": "5"}, "2": {"log.retention.ms": "6"}}
    copy = meta.MetaState()
    copy.restore(state.snapshot())
    assert copy.broker_configs == state.broker_configs and copy.snapshot() == state.snapshot()


def test_group_configs_apply_remove_and_survive_snapshots():
    state = meta.MetaState()

    def alter(group, set_=None, removed=()):
        state.apply(meta_pb2.MetaCommand(group_configs_altered=meta_pb2.GroupConfigsAltered(
            group=group, set=set_ or {}, removed=removed)))

    alter("g1", {"consumer.session.timeout.ms": "50000", "share.isolation.level": "read_committed"})
    alter("g1", removed=["share.isolation.level"])
    alter("g2", {"streams.num.standby.replicas": "1"})
    alter("g2", removed=["streams.num.standby.replicas"])
    assert state.group_configs == {"g1": {"consumer.session.timeout.ms": "50000"}}
    copy = meta.MetaState()
    copy.restore(state.snapshot())
    assert copy.group_configs == state.group_configs and copy.snapshot() == state.snapshot()


def test_the_first_applied_cluster_id_wins_and_survives_snapshots():
    state = meta.MetaState()
    for proposal in ("first", "second"):
        state.apply(meta_pb2.MetaCommand(cluster_id_proposed=meta_pb2.ClusterIdProposed(cluster_id=proposal)))
    assert state.cluster_id == "first"
    copy = meta.MetaState()
    copy.restore(state.snapshot())
    assert copy.cluster_id == "first"


def _init_txn(tid, pid=-1, epoch=-1, ts=1_000, expiration_ms=10_000):
    return meta_pb2.MetaCommand(transactional_id_initialized=meta_pb2.TransactionalIdInitialized(
        transactional_id=tid, expected_producer_id=pid, expected_epoch=epoch, timestamp_ms=ts,
        expiration_ms=expiration_ms))


def test_a_transactional_id_keeps_its_producer_id_and_each_init_bumps_the_epoch():
    state = meta.MetaState()
    state.apply(meta_pb2.MetaCommand(producer_ids_allocated=meta_pb2.ProducerIdsAllocated(node_id=1, count=10)))
    first = state.apply(_init_txn("t"))
    assert (first.producer_id_start, first.producer_epoch) == (10, 0)  # never one of a block
    assert state.next_producer_id == 11
    again = state.apply(_init_txn("t"))  # a new instance of the producer: fences the old one
    assert (again.producer_id_start, again.producer_epoch) == (10, 1)
    # KIP-360: with the id and epoch it holds, a producer bumps; a stale holder is fenced.
    bumped = state.apply(_init_txn("t", 10, 1))
    assert (bumped.producer_id_start, bumped.producer_epoch) == (10, 2)
    retry = state.apply(_init_txn("t", 10, 1))  # the same bump again (its answer was lost)
    assert (retry.producer_id_start, retry.producer_epoch) == (10, 2)
    fenced = state.apply(_init_txn("t", 10, 0))
    assert not fenced.ok and isinstance(fenced.error, meta.ProducerFenced)
    assert state.apply(_init_txn("other")).producer_id_start == 11


def test_an_exhausted_epoch_gets_a_new_producer_id_and_idle_ids_expire():
    state = meta.MetaState()
    state.transactional_ids["t"] = (5, meta.PRODUCER_EPOCH_MAX, 1_000)
    state.next_producer_id = 6
    result = state.apply(_init_txn("t", 5, meta.PRODUCER_EPOCH_MAX))
    assert (result.producer_id_start, result.producer_epoch) == (6, 0)
    state.apply(_init_txn("idle", ts=2_000))
    state.apply(_init_txn("t", ts=20_000))  # 18 s later: "idle" (10 s expiration) is forgotten
    assert set(state.transactional_ids) == {"t"}
    copy = meta.MetaState()
    copy.restore(state.snapshot())
    assert copy.transactional_ids == state.transactional_ids


def test_layout_version_moves_with_topics_and_configs_not_with_leader_reports():
    """A node's hosted replicas redo their pass over every partition only when
    layout_version moved: a topic of 10,000 partitions brings 10,000 leader reports, and a
    pass per report made creation quadratic."""
    state = meta.MetaState()
    assert state.apply(_create("a", 3)).ok
    layout = state.layout_version
    topic_id = state.topics["a"].topic_id.bytes
    for p in range(3):
        assert state.apply(meta_pb2.MetaCommand(partition_leader_changed=meta_pb2.PartitionLeaderChanged(
            topic_id=topic_id, partition=p, leader=1, leader_epoch=2, isr=[1]))).ok
    assert state.layout_version == layout and state.version == layout + 3
    assert not state.apply(_create("a")).ok  # refused: nothing changed
    assert state.layout_version == layout
    assert state.apply(meta_pb2.MetaCommand(topic_configs_altered=meta_pb2.TopicConfigsAltered(
        name="a", set={"segment.bytes": "1048576"}))).ok
    assert state.layout_version == layout + 1
    snapshot = state.snapshot()
    state.restore(snapshot)  # a restore may change anything: it moves too, never back
    assert state.layout_version == layout + 2
