"""A live node with four listeners (PLAINTEXT, SSL, SASL_SSL, SASL_PLAINTEXT), certificates
made at run time, and SCRAM users created through `chronik-trio admin user`."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import ssl
import subprocess

import attrs
from collections.abc import Iterator
from confluent_kafka import Consumer, Producer

from tests.brokers import CHRONIK_TRIO, BrokerProcess, free_ports
from tests.kafka import live
from tests.kafka_wire import KafkaWire

from .certs import Certificates, make_certificates

ADMIN_TIMEOUT_S = 30
CLIENT_TIMEOUT_S = 30
USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@attrs.define
class SecureNode:
    broker: BrokerProcess
    admin_port: int
    certs: Certificates
    ports: dict[str, int]  # listener name -> port

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def client_context(self, cert: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certs.ca)
        if cert is not None:
            context.load_cert_chain(self.certs.path(f"{cert}.pem"), self.certs.path(f"{cert}.key"))
        return context

    def tls_wire(self, listener: str = "SSL", cert: str | None = None, *, negotiate: bool = True) -> KafkaWire:
        raw = socket.create_connection(("127.0.0.1", self.ports[listener]), timeout=15)
        sock = self.client_context(cert).wrap_socket(raw, server_hostname="localhost")
        conn = KafkaWire(sock)
        if negotiate:
            conn.negotiate()
        return conn

    def auth_failures(self, reason: str) -> float:
        return live.metric_labelled(self.admin_port, "chronik_authentication_failures_total", reason=reason)

    def admin(self, *args: str, stdin: str | None = None, listener: str = "PLAINTEXT") -> subprocess.CompletedProcess:
        """`chronik-trio admin` at a listener (other than PLAINTEXT: give its security options in args)."""
        return subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", self.address(listener), *args],
                              input=stdin, capture_output=True, text=True, timeout=ADMIN_TIMEOUT_S)


@contextlib.contextmanager
def secure_node(root: pathlib.Path, extra_args: tuple[str, ...] = ()) -> Iterator[SecureNode]:
    """A started SecureNode (users of USERS created), stopped when the block ends: what every
    module of these tests serves its tests with (a module-scoped fixture around it)."""
    node = None
    try:
        node = start_secure_node(root, extra_args)
        yield node
    finally:
        if node is not None:
            node.broker.stop()


def start_secure_node(root: pathlib.Path, extra_args: tuple[str, ...] = ()) -> SecureNode:
    certs = make_certificates(root / "certs")
    broker = BrokerProcess(root / "data")
    ssl_port, sasl_ssl_port, sasl_plain_port, admin_port = free_ports(4)
    ports = {"PLAINTEXT": broker.port, "SSL": ssl_port, "SASL_SSL": sasl_ssl_port, "SASL_PLAINTEXT": sasl_plain_port}
    broker.extra_args += [
        "--listeners", ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
        "--ssl-certfile", certs.path("broker.pem"), "--ssl-keyfile", certs.path("broker.key"),
        "--ssl-cafile", certs.ca, "--ssl-client-auth", "requested",
        "--admin-listen", f"127.0.0.1:{admin_port}", "--config", str(live.config_file(root)), *extra_args]
    broker.start()
    node = SecureNode(broker, admin_port, certs, ports)
    try:
        for user, password in USERS.items():
            done = node.admin("user", "set", user, stdin=password + "\n")
            assert done.returncode == 0, done.stderr
    except BaseException:
        broker.stop()
        raise
    return node


def plain_wire(node: SecureNode, user: str, password: str | None = None, *, listener: str = "SASL_PLAINTEXT") -> KafkaWire:
    """A raw connection authenticated with SASL PLAIN (a SASL_SSL listener goes over TLS)."""
    conn = node.tls_wire(listener) if listener == "SASL_SSL" else KafkaWire.connect(node.ports[listener])
    assert int(conn.request(17, {"mechanism": "PLAIN"}, version=1).error_code) == 0
    token = b"\0" + user.encode() + b"\0" + (password or USERS[user]).encode()
    answer = conn.request(36, {"auth_bytes": token}, version=2)
    assert int(answer.error_code) == 0, answer
    return conn


def confluent_conf(node: SecureNode, listener: str, mechanism: str, user: str, password: str) -> dict:
    """confluent-kafka settings for user on one of node's SASL listeners."""
    conf = {"bootstrap.servers": node.address(listener), "security.protocol": listener,
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
    if listener == "SASL_SSL":
        conf["ssl.ca.location"] = node.certs.ca
    return conf


def confluent_round_trip(conf: dict, topic: str, value: bytes, *, group: str | None = None) -> None:
    """Produce value to topic (acks=all) with confluent-kafka, then consume it back from the
    earliest offset in consumer group `group` (default g-TOPIC); AssertionError if either fails."""
    producer = Producer({**conf, "acks": "all"})
    producer.produce(topic, value)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0, f"not acknowledged in {CLIENT_TIMEOUT_S} s"
    consumer = Consumer({**conf, "group.id": group or f"g-{topic}", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        for _ in range(CLIENT_TIMEOUT_S):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                assert message.value() == value
                return
        raise AssertionError(f"nothing consumed from {topic}")
    finally:
        consumer.close()
