"""__meta snapshots its state and compacts its log; a restart rebuilds from snapshot + log."""

import time

import pytest
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

pytestmark = pytest.mark.timeout(120)


def test_meta_survives_snapshot_compaction_and_restart(broker_factory, tmp_path):
    config = tmp_path / "node.toml"
    config.write_text("meta_snapshot_entries = 10\nmeta_segment_bytes = 2048\n")
    broker = broker_factory(extra_args=["--config", str(config)]).start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    dynamic = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[ConfigEntry(
        "log.retention.bytes", "7777777", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([dynamic])[dynamic].result(timeout=15)  # compacted into the snapshot
    names = [f"snap-{i}" for i in range(40)]
    for name in names:
        admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=15)
    deadline = time.monotonic() + 20
    while "__meta snapshot at index" not in broker.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "__meta snapshot at index" in broker.log_text()
    meta_dir = broker.data_dir / "meta"
    first_segment = min(int(p.stem) for p in meta_dir.glob("*.seg"))
    assert first_segment > 1, "compaction dropped no segment"
    cluster_id = admin.describe_cluster().result(timeout=10).cluster_id

    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert set(names) <= set(topics)
    assert admin.describe_cluster().result(timeout=10).cluster_id == cluster_id
    resource = ConfigResource(ResourceType.BROKER, "1")
    assert admin.describe_configs([resource])[resource].result(timeout=10)["log.retention.bytes"].value == "7777777"
    admin.create_topics([NewTopic("after-restart", 1, 1)])["after-restart"].result(timeout=15)
