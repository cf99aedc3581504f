"""A 3-node cluster whose clients speak SASL_SSL: a user created through one node logs in
on another (credentials replicated in __meta), every broker is advertised at its SASL_SSL
endpoint, and confluent-kafka produces to and consumes from a replicated topic."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokers import CHRONIK_TRIO, free_ports
from tests.cluster.cluster import ClusterProcesses

from .certs import make_certificates

pytestmark = pytest.mark.timeout(240)
CLIENT_TIMEOUT_S = 30
PASSWORD = "carol-secret"


def test_a_three_node_cluster_serves_sasl_ssl_clients(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    cluster = ClusterProcesses(tmp_path / "cluster", 3)
    secure_ports = dict(zip(cluster.ids, free_ports(3)))
    for n, broker in cluster.nodes.items():
        broker.extra_args += [
            "--listeners", f"PLAINTEXT://127.0.0.1:{broker.port},SASL_SSL://127.0.0.1:{secure_ports[n]}",
            "--ssl-certfile", certs.path("broker.pem"), "--ssl-keyfile", certs.path("broker.key"),
            "--sasl-enabled-mechanisms", "SCRAM-SHA-256"]
    try:
        cluster.start()
        done = subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", cluster.nodes[1].bootstrap, "user", "set",
                               "carol", "--mechanism", "SCRAM-SHA-256"], input=PASSWORD + "\n",
                              capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        conf = {"bootstrap.servers": f"127.0.0.1:{secure_ports[3]}", "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "carol", "sasl.password": PASSWORD,
                "ssl.ca.location": certs.ca}
        topic = f"secure-{uuid.uuid4().hex[:8]}"
        admin = AdminClient(conf)
        admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(CLIENT_TIMEOUT_S)
        metadata = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
        assert {b.id: b.port for b in metadata.brokers.values()} == secure_ports
        producer = Producer({**conf, "acks": "all"})
        for i in range(30):
            producer.produce(topic, f"m{i}".encode(), partition=i % 3)
        assert producer.flush(CLIENT_TIMEOUT_S) == 0
        consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
        got = set()
        try:
            consumer.subscribe([topic])
            for _ in range(CLIENT_TIMEOUT_S * 2):
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    got.add(message.value())
                if len(got) == 30:
                    break
        finally:
            consumer.close()
        assert got == {f"m{i}".encode() for i in range(30)}
    finally:
        cluster.close()
