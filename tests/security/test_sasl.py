"""SASL against a real node: SCRAM-SHA-256/512 and PLAIN with confluent-kafka, kafka-python
and aiokafka over SASL_SSL (and SASL_PLAINTEXT), users managed by `chronik-trio admin user`
and kept in __meta across a restart; wrong passwords, unknown mechanisms and requests before
authentication get Kafka's error codes or a closed connection, a log line and a count, and
never access."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from confluent_kafka import KafkaError, Producer
from kafka import KafkaConsumer, KafkaProducer

from tests.kafka import live
from tests.kafkajs import kafkajs_dir
from tests.kafka_wire import KafkaWire

from . import fuzz_sasl
from .node import CLIENT_TIMEOUT_S, USERS, confluent_conf, confluent_round_trip, secure_node

pytestmark = pytest.mark.timeout(180)
KAFKAJS_TIMEOUT_S = 90
SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 17, 36, 3
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM = 58, 33


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with secure_node(tmp_path_factory.mktemp("sasl")) as secure:
        yield secure


@pytest.mark.parametrize("listener, mechanism", [("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512"),
                                                 ("SASL_SSL", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-512")])
def test_confluent_kafka_authenticates_and_produces_and_consumes(node, listener, mechanism):
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    confluent_round_trip(confluent_conf(node, listener, mechanism, "alice", USERS["alice"]), topic,
                          f"{mechanism} over {listener}".encode())
    assert f"authenticated User:alice on listener {listener}" in node.broker.log_text()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_kafka_python_over_sasl_ssl(node, mechanism):
    topic = f"kp-{uuid.uuid4().hex[:8]}"
    common = dict(bootstrap_servers=node.address("SASL_SSL"), security_protocol="SASL_SSL",
                  sasl_mechanism=mechanism, sasl_plain_username="bob", sasl_plain_password=USERS["bob"],
                  ssl_cafile=node.certs.ca)
    producer = KafkaProducer(acks="all", **common)
    producer.send(topic, b"kafka-python").get(timeout=CLIENT_TIMEOUT_S)
    producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=CLIENT_TIMEOUT_S * 1000,
                             **common)
    try:
        assert next(iter(consumer)).value == b"kafka-python"
    finally:
        consumer.close()


def test_aiokafka_over_sasl_ssl_with_scram_sha_256(node):
    topic = f"aio-{uuid.uuid4().hex[:8]}"

    async def main():
        common = dict(bootstrap_servers=node.address("SASL_SSL"), security_protocol="SASL_SSL",
                      sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                      sasl_plain_password=USERS["alice"], ssl_context=create_ssl_context(cafile=node.certs.ca))
        producer = AIOKafkaProducer(acks="all", **common)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"aiokafka")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **common)
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), CLIENT_TIMEOUT_S)
            assert message.value == b"aiokafka"
        finally:
            await consumer.stop()

    asyncio.run(main())


def _sasl_wire(node, listener: str = "SASL_PLAINTEXT") -> KafkaWire:
    if listener == "SASL_SSL":
        return node.tls_wire(listener, negotiate=False)
    return KafkaWire.connect(node.ports[listener], negotiate=False)


def test_a_wrong_password_gets_authentication_failed_then_the_connection_closes(node):
    before = node.auth_failures("sasl")
    with _sasl_wire(node) as conn:
        assert int(conn.request(SASL_HANDSHAKE, {"mechanism": "PLAIN"}, version=1).error_code) == 0
        answer = conn.request(SASL_AUTHENTICATE, {"auth_bytes": b"\0alice\0wrong"}, version=2)
        assert int(answer.error_code) == SASL_AUTHENTICATION_FAILED
        assert conn.wait_closed() == b""
    live.wait_for(lambda: node.auth_failures("sasl") == before + 1, what="the failure counted")
    assert "authentication failed for the connection from" in node.broker.log_text()


def test_confluent_kafka_with_a_wrong_password_gets_an_authentication_error_and_no_access(node):
    errors = []
    conf = confluent_conf(node, "SASL_SSL", "SCRAM-SHA-256", "alice", "not-her-password")
    producer = Producer({**conf, "error_cb": errors.append, "message.timeout.ms": 5000})
    producer.produce("never-written", b"x")
    producer.flush(10)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    with KafkaWire.connect(node.ports["PLAINTEXT"]) as conn:
        assert "never-written" not in conn.topic_names()


def test_an_unknown_mechanism_is_refused_with_the_enabled_ones(node):
    with _sasl_wire(node, "SASL_SSL") as conn:
        answer = conn.request(SASL_HANDSHAKE, {"mechanism": "GSSAPI"}, version=1)
        assert int(answer.error_code) == UNSUPPORTED_SASL_MECHANISM
        assert set(answer.mechanisms) == {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
        assert conn.wait_closed() == b""


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_request_before_authentication_closes_the_connection_unanswered(node, listener):
    before = node.auth_failures("sasl")
    with _sasl_wire(node, listener) as conn:
        conn.send(METADATA, 12, {"topics": None})
        assert conn.wait_closed() == b""
    live.wait_for(lambda: node.auth_failures("sasl") == before + 1, what="the refusal counted")
    assert "MetadataRequest before authentication completed" in node.broker.log_text()


def test_sasl_on_a_plaintext_listener_is_an_illegal_state_and_changes_nothing(node):
    with KafkaWire.connect(node.ports["PLAINTEXT"]) as conn:
        assert int(conn.request(SASL_HANDSHAKE, {"mechanism": "PLAIN"}, version=1).error_code) == 34
        assert conn.metadata(None).brokers  # still served


def test_admin_user_lists_sets_and_deletes_and_users_survive_a_restart(node):
    listed = node.admin("user", "list")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[:2] for line in listed.stdout.splitlines()[1:] if line.strip()) == [
        ["alice", "SCRAM-SHA-256"], ["alice", "SCRAM-SHA-512"], ["bob", "SCRAM-SHA-256"], ["bob", "SCRAM-SHA-512"]]
    assert node.admin("user", "set", "carol", "--mechanism", "SCRAM-SHA-512", "--iterations", "4096",
                      stdin="carol-pw\n").returncode == 0
    too_few = node.admin("user", "set", "dave", "--iterations", "100", stdin="pw\n")
    assert too_few.returncode == 1 and "UNACCEPTABLE_CREDENTIAL" in too_few.stderr
    node.broker.restart()
    conf = confluent_conf(node, "SASL_SSL", "SCRAM-SHA-512", "carol", "carol-pw")
    confluent_round_trip(conf, f"carol-{uuid.uuid4().hex[:8]}", b"after restart")
    assert node.admin("user", "delete", "carol", "--mechanism", "SCRAM-SHA-512").returncode == 0
    missing = node.admin("user", "describe", "carol")
    assert missing.returncode == 1 and "RESOURCE_NOT_FOUND" in missing.stderr
    with _sasl_wire(node) as conn:
        conn.request(SASL_HANDSHAKE, {"mechanism": "PLAIN"}, version=1)
        answer = conn.request(SASL_AUTHENTICATE, {"auth_bytes": b"\0carol\0carol-pw"}, version=2)
        assert int(answer.error_code) == SASL_AUTHENTICATION_FAILED


@pytest.mark.parametrize("mechanism, password, ok", [("scram-sha-256", USERS["alice"], True),
                                                     ("scram-sha-512", "wrong", False)])
def test_kafkajs_over_sasl_ssl_with_scram(node, tmp_path, mechanism, password, ok):
    js_dir = kafkajs_dir()
    topic = f"kjs-{uuid.uuid4().hex[:8]}"
    spec, out = tmp_path / "spec.json", tmp_path / "out.json"
    spec.write_text(json.dumps({"broker": node.address("SASL_SSL"), "ca": node.certs.ca, "mechanism": mechanism,
                                "username": "alice", "password": password, "topic": topic, "value": "kafkajs"}))
    done = subprocess.run([shutil.which("node"), str(js_dir / "kafkajs_sasl.js"), str(spec), str(out)],
                          cwd=js_dir, capture_output=True, text=True, timeout=KAFKAJS_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    if ok:
        assert result["error"] is None, result
        assert result["produced"] == [{"partition": 0, "baseOffset": "0"}]
        assert result["offsets"] == [{"partition": 0, "high": "1"}]
    else:
        assert result["produced"] is None and "SASL" in result["error"]["message"] + str(result["error"]["type"]), result


FUZZ_ATTEMPTS, FUZZ_SECONDS = 600, 20


def test_mutated_sasl_exchanges_never_get_access_nor_stop_the_node(node):
    seed = random.randrange(1 << 30)
    errors_before = live.metric(node.admin_port, live.REQUEST_ERRORS_METRIC)
    failures_before = node.auth_failures("sasl")
    done = fuzz_sasl.run(node.ports["SASL_PLAINTEXT"], node.ports["PLAINTEXT"], "alice", USERS["alice"],
                         attempts=FUZZ_ATTEMPTS, seconds=FUZZ_SECONDS, seed=seed)
    assert done >= 50, f"seed {seed}: only {done} attempts"
    assert live.metric(node.admin_port, live.REQUEST_ERRORS_METRIC) == errors_before, f"seed {seed}"
    # every refused exchange was counted (the few that failed only at the socket are not)
    live.wait_for(lambda: node.auth_failures("sasl") >= failures_before + done * 0.9, what="failures counted")
    assert node.broker.proc.poll() is None
