"""Named listeners and TLS against a real node: each client is told the listener it came in
on, TLS clients (confluent-kafka, raw sockets) produce and consume, a client certificate
names the principal, and bad TLS (plaintext on a TLS port, a handshake cut half-way, a
certificate from another CA) is refused with a log line and a count, the node serving on."""

from __future__ import annotations

import socket
import subprocess
import ssl
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from tests.brokers import CHRONIK_TRIO, free_port
from tests.kafka import live
from tests.kafka_wire import ConnectionClosed, KafkaWire, encode_request, frame, request_class

from .node import plain_wire, secure_node

pytestmark = pytest.mark.timeout(120)
CLIENT_TIMEOUT_S = 30
AUTHENTICATION_TIMEOUT_MS = 4000


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with secure_node(tmp_path_factory.mktemp("listeners"),
                     ("--authentication-timeout-ms", str(AUTHENTICATION_TIMEOUT_MS))) as secure:
        yield secure


def _broker_ports(conn: KafkaWire) -> list[int]:
    return [int(b.port) for b in conn.metadata(None).brokers]


def test_metadata_advertises_the_listener_the_client_connected_on(node):
    with KafkaWire.connect(node.ports["PLAINTEXT"]) as conn:
        assert _broker_ports(conn) == [node.ports["PLAINTEXT"]]
    with node.tls_wire("SSL") as conn:
        assert _broker_ports(conn) == [node.ports["SSL"]]


def test_confluent_kafka_produces_and_consumes_over_ssl(node):
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": node.address("SSL"), "security.protocol": "SSL",
            "ssl.ca.location": node.certs.ca}
    producer = Producer({**conf, "acks": "all"})
    producer.produce(topic, b"over tls", key=b"k")
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    metadata = producer.list_topics(topic, timeout=CLIENT_TIMEOUT_S)
    assert [b.port for b in metadata.brokers.values()] == [node.ports["SSL"]]
    consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        message = None
        for _ in range(CLIENT_TIMEOUT_S):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None and message.value() == b"over tls"
    finally:
        consumer.close()


def test_a_client_certificate_names_the_connections_principal(node):
    with node.tls_wire("SSL", cert="alice") as conn:
        assert conn.metadata(None).brokers
    assert "principal User:CN=alice,OU=eng,O=example" in node.broker.log_text()


def _refused_tls(node, reason: str, attempt) -> None:
    before = node.auth_failures(reason)
    attempt()
    live.wait_for(lambda: node.auth_failures(reason) == before + 1, what=f"{reason} counted")
    live.round_trip(node.ports["PLAINTEXT"], "tls-alive")  # the node serves on


def test_a_certificate_from_another_ca_is_refused(node):
    def attempt():
        with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosed)):
            with node.tls_wire("SSL", cert="mallory") as conn:
                conn.metadata(None)
    _refused_tls(node, "tls_handshake", attempt)
    assert "TLS handshake failed" in node.broker.log_text()


def test_a_plaintext_client_on_a_tls_port_is_refused(node):
    def attempt():
        with KafkaWire.connect(node.ports["SSL"], negotiate=False) as conn:
            conn.send_raw(frame(encode_request(18, 0, 1, request_class(18, 0)())))
            conn.wait_closed()
    _refused_tls(node, "tls_handshake", attempt)


def test_a_tls_handshake_cut_half_way_is_refused(node):
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = node.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()

    def attempt():
        with socket.create_connection(("127.0.0.1", node.ports["SSL"]), timeout=15) as sock:
            sock.sendall(hello[: len(hello) // 2])
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):  # an alert, perhaps; then the node closes
                pass
    _refused_tls(node, "tls_handshake", attempt)


def test_a_connection_that_never_finishes_authenticating_is_closed_in_time(node):
    """authentication_timeout_ms bounds a TLS handshake that never starts and a SASL exchange
    that stops after its handshake; a connection that authenticated meanwhile stays open."""
    before = {reason: node.auth_failures(reason) for reason in ("tls_timeout", "sasl_timeout")}
    started = time.monotonic()  # before the stalled connection is accepted
    with plain_wire(node, "alice") as done, KafkaWire.connect(node.ports["SASL_PLAINTEXT"]) as stalled, \
            socket.create_connection(("127.0.0.1", node.ports["SSL"]), timeout=15) as silent:
        assert int(stalled.request(17, {"mechanism": "SCRAM-SHA-256"}, version=1).error_code) == 0
        stalled.wait_closed(timeout=AUTHENTICATION_TIMEOUT_MS / 1000 + 20)
        assert time.monotonic() - started >= AUTHENTICATION_TIMEOUT_MS / 1000 - 0.05  # not early
        silent.settimeout(20)
        assert silent.recv(1) == b""
        assert done.metadata(None).brokers  # the authenticated one is still served
    for reason in before:
        live.wait_for(lambda: node.auth_failures(reason) == before[reason] + 1, what=f"{reason} counted")
    log = node.broker.log_text()
    assert f"not authenticated within {AUTHENTICATION_TIMEOUT_MS / 1000:g} s" in log
    assert f"no TLS handshake within {AUTHENTICATION_TIMEOUT_MS / 1000:g} s" in log


def test_a_node_whose_certificate_does_not_load_exits_2_naming_it(tmp_path):
    done = subprocess.run([CHRONIK_TRIO, "node", "--data-dir", str(tmp_path / "data"),
                           "--listeners", f"SSL://127.0.0.1:{free_port()}",
                           "--ssl-certfile", str(tmp_path / "missing.pem"), "--ssl-keyfile", str(tmp_path / "missing.key")],
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    assert done.returncode == 2 and "TLS certificate or key does not load" in done.stderr, done.stderr
