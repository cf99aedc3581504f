"""A node started on a data directory of an earlier version (a `hardstate` file per group, no
hard-state log) keeps every group's term and vote (docs/storage.md, "Migration").

The node's Raft terms show as leader epochs in Metadata. A restarted single node elects
again, one term up; a node that lost its hard states would start again from term 0 and
answer with epoch 1, below the epochs it had already given out."""

from __future__ import annotations

import pathlib
import time

import pytest

from chronik_trio.storage import Disk, HardStateFile, HardStateLog
from tests.integration.test_durability import PARTITIONS, _fill, new_topic, produce_more, verify
from tests.kafka_wire import NONE, KafkaWire

META_KEY = "__meta"


def _leader_epochs(port: int, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """Each partition's leader epoch, once every partition has a leader."""
    deadline = time.monotonic() + timeout_s
    with KafkaWire.connect(port) as conn:
        while True:
            (t,) = conn.metadata([topic]).topics
            epochs = {int(p.partition_index): int(p.leader_epoch) for p in t.partitions
                      if p.error_code == NONE and p.leader_id >= 0}
            if t.error_code == NONE and len(epochs) == PARTITIONS:
                return epochs
            assert time.monotonic() < deadline, f"no leader for every partition of {topic}: {t}"
            time.sleep(0.05)


def _back_to_per_group_files(data_dir: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Rewrite the data directory as an earlier version left it: each group's state in a
    `hardstate` file of its own directory, no hard-state log. Returns (term, vote) by group."""
    log = HardStateLog(Disk(), data_dir / "hardstates")
    saved = {}
    directories = {META_KEY: data_dir / "meta"}
    for d in (data_dir / "partitions").iterdir():
        partition = int(d.name.rsplit("-", 1)[1])
        directories[f"{(d / 'topic_id').read_text()}-{partition}"] = d
    for key, directory in directories.items():
        hs = log.get(key)
        assert hs is not None and hs.term > 0, (key, hs)
        HardStateFile(Disk(), directory / "hardstate").save(hs)
        saved[key] = (hs.term, hs.vote)
    log.close()
    (data_dir / "hardstates").unlink()
    return saved


@pytest.mark.timeout(120)
def test_a_node_on_an_old_data_directory_keeps_its_terms_and_votes(broker_factory):
    broker = broker_factory().start()
    topic = new_topic(broker)
    ledger = _fill(broker, topic, 5)
    assert broker.stop() == 0
    broker.start()  # a second election for every group: terms above the first
    before = _leader_epochs(broker.port, topic)
    assert broker.stop() == 0, broker.log_text()[-3000:]

    saved = _back_to_per_group_files(broker.data_dir)
    broker.start()
    after = _leader_epochs(broker.port, topic)
    assert all(after[p] > before[p] for p in range(PARTITIONS)), (before, after)
    ends = verify(broker.port, topic, ledger, exact=True)
    produce_more(broker.port, topic, ledger, ends, "after-migration")
    verify(broker.port, topic, ledger)
    assert broker.stop() == 0

    # The log holds every group now, no term below the old file's; the old files are as
    # they were (never written again).
    log = HardStateLog(Disk(), broker.data_dir / "hardstates")
    for key, (term, _vote) in saved.items():
        assert log.get(key) is not None and log.get(key).term >= term, key
    log.close()
    assert HardStateFile(Disk(), broker.data_dir / "meta" / "hardstate").load().term == saved[META_KEY][0]
