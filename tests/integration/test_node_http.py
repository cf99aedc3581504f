"""A real node's /health and /metrics over HTTP/2 (the transport's app, --admin-listen)."""

import json

import pytest
import trio
from confluent_kafka import Producer

from tests.brokers import free_port
from tests.transport.helpers import H2Client

pytestmark = pytest.mark.timeout(60)


async def test_health_and_metrics_of_a_node(broker_factory):
    broker = broker_factory()
    admin_port = free_port()  # never one handed out before, so never the broker's
    broker.extra_args += ["--admin-listen", f"127.0.0.1:{admin_port}"]
    broker.start()
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        p.produce("http-topic", b"x", partition=0)
    assert p.flush(15) == 0

    async with H2Client.open(("127.0.0.1", admin_port)) as client:
        health = await client.request("GET", "/health")
        metrics = await client.request("GET", "/metrics")
    assert health.status == 200
    answer = json.loads(health.body)
    assert answer["status"] == "ok" and answer["node_id"] == 1 and answer["serving_kafka"] is True
    assert answer["meta_leader"] == 1 and answer["partitions"] == 1 and answer["groups"] == 2
    text = metrics.body.decode()
    assert metrics.status == 200
    for name in ("chronik_raft_term{", "chronik_raft_commit_index{", "chronik_raft_applied_index{",
                 "chronik_raft_is_leader{", "chronik_raft_leader_changes_total{",
                 "chronik_ready_pass_seconds_bucket", "chronik_fsync_round_seconds_count",
                 "chronik_raft_quiesced_groups", "chronik_transport_dropped_total"):
        assert name in text, name
    assert 'chronik_raft_is_leader{group="__meta"} 1.0' in text
