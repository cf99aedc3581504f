"""A 3-node cluster whose clients speak SASL_SSL and whose nodes speak mutual TLS to each
other (docs/security.md): a user created through one node logs in on another (credentials
replicated in __meta), every broker is advertised at its SASL_SSL endpoint, confluent-kafka
produces and consumes across a kill of the __meta leader (re-election over mTLS); and real
TLS handshakes against a node's Raft port that mTLS must refuse are refused, logged and
counted while the cluster serves on."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import uuid

import h2.config
import h2.connection
import h2.events
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokers import CHRONIK_TRIO, free_port, free_ports
from tests.cluster.cluster import ClusterProcesses
from tests.kafka import live
from tests.replication.cluster import wait_for

from .certs import Certificates, make_certificates, node_certificate

pytestmark = pytest.mark.timeout(240)
CLIENT_TIMEOUT_S = 30
PASSWORD = "carol-secret"
AUTHENTICATION_TIMEOUT_MS = 2000


class SecureCluster:
    def __init__(self, root, certs: Certificates) -> None:
        self.certs = certs
        self.processes = ClusterProcesses(root / "cluster", 3)
        ports = free_ports(6)
        self.secure_ports = dict(zip(self.processes.ids, ports[:3]))
        self.admin_ports = dict(zip(self.processes.ids, ports[3:]))
        for n, broker in self.processes.nodes.items():
            node_cert = node_certificate(certs, n)
            broker.extra_args += [
                "--listeners", f"PLAINTEXT://127.0.0.1:{broker.port},SASL_SSL://127.0.0.1:{self.secure_ports[n]}",
                "--ssl-certfile", certs.path(f"{node_cert}.pem"), "--ssl-keyfile", certs.path(f"{node_cert}.key"),
                "--sasl-enabled-mechanisms", "SCRAM-SHA-256",
                "--peer-ssl-cafile", certs.ca, "--peer-ssl-certfile", certs.path(f"{node_cert}.pem"),
                "--peer-ssl-keyfile", certs.path(f"{node_cert}.key"),
                "--admin-listen", f"127.0.0.1:{self.admin_ports[n]}",
                "--authentication-timeout-ms", str(AUTHENTICATION_TIMEOUT_MS)]

    def conf(self, nodes) -> dict:
        return {"bootstrap.servers": ",".join(f"127.0.0.1:{self.secure_ports[n]}" for n in nodes),
                "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "carol",
                "sasl.password": PASSWORD, "ssl.ca.location": self.certs.ca}

    def refused(self, n: int, reason: str) -> float:
        return live.metric_labelled(self.admin_ports[n], "chronik_transport_peers_refused_total", reason=reason)

    def raft_port(self, n: int) -> int:
        return self.processes.raft_ports[n]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("secure-cluster")
    certs = make_certificates(root / "certs")
    node_certificate(certs, 2, ca="other-ca", name="rogue-2")
    secure = SecureCluster(root, certs)
    try:
        secure.processes.start()
        done = subprocess.run([CHRONIK_TRIO, "admin", "--bootstrap", secure.processes.nodes[1].bootstrap, "user",
                               "set", "carol", "--mechanism", "SCRAM-SHA-256"], input=PASSWORD + "\n",
                              capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        yield secure
    finally:
        secure.processes.close()


def _peer_context(certs: Certificates, stem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca)
    context.check_hostname = False
    context.load_cert_chain(certs.path(f"{stem}.pem"), certs.path(f"{stem}.key"))
    context.set_alpn_protocols(["h2"])
    return context


def _h2_status(sock, claimed_node: int) -> int:
    """Opens a Raft stream claiming `claimed_node` on a TLS socket; the answer's status."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"test"),
                          (b":path", b"/raft/v1/stream"), (b"chronik-from-node", str(claimed_node).encode())])
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        assert data, "closed without an answer"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                return int(dict(event.headers)[b":status"])
        sock.sendall(conn.data_to_send())


def test_the_raft_port_refuses_what_mutual_tls_must_refuse(cluster):
    certs, port = cluster.certs, cluster.raft_port(1)
    # A certificate of another CA.
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        try:  # TLS 1.3: the server's refusal arrives after the client's Finished
            with _peer_context(certs, "rogue-2").wrap_socket(raw) as sock:
                assert sock.recv(1) == b""
        except (ssl.SSLError, ConnectionError):
            pass
    # TLS without any certificate.
    anonymous = ssl.create_default_context(cafile=certs.ca)
    anonymous.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        try:
            with anonymous.wrap_socket(raw) as sock:
                assert sock.recv(1) == b""
        except (ssl.SSLError, ConnectionError):
            pass
    # Node 3's certificate (the cluster's CA) claiming to be node 2.
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        with _peer_context(certs, "node-3").wrap_socket(raw) as sock:
            assert _h2_status(sock, 2) == 403
    # Cleartext HTTP/2 (what a node without mTLS speaks) on the TLS port.
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 9)
        while sock.recv(65536):
            pass
    # A handshake cut half-way: half a ClientHello, then silence until the node closes it.
    outgoing = ssl.MemoryBIO()
    client = _peer_context(certs, "node-2").wrap_bio(ssl.MemoryBIO(), outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as stalled:
        stalled.sendall(hello[: len(hello) // 2])
        live.wait_for(lambda: cluster.refused(1, "tls_timeout") == 1, what="the stalled handshake timed out")
    live.wait_for(lambda: cluster.refused(1, "tls_handshake") == 3, what="three failed handshakes counted")
    assert cluster.refused(1, "node_id_mismatch") == 1
    log = cluster.processes.log(1)
    assert "refused peer (tls_handshake)" in log and "CERTIFICATE_VERIFY_FAILED" in log
    assert "claims node 2, its certificate names node 3" in log
    assert f"no TLS handshake within {AUTHENTICATION_TIMEOUT_MS / 1000:g} s" in log
    # Its peers stayed connected through all that.
    assert live.metric_labelled(cluster.admin_ports[1], "chronik_transport_peer_connected") == 2


def _produce(conf: dict, topic: str, values: list[bytes]) -> None:
    producer = Producer({**conf, "acks": "all"})
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % 3)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0


def _consume(conf: dict, topic: str, count: int) -> set[bytes]:
    consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    got = set()
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CLIENT_TIMEOUT_S * 2
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.add(message.value())
    finally:
        consumer.close()
    return got


def test_a_transaction_across_the_nodes_over_mutual_tls(cluster):
    """The transaction coordinator reaches partition leaders on the other nodes (markers,
    verification) over the peer transport's RPC route: with mutual TLS on, that route is
    only reachable through a node certificate, and the transaction still commits and aborts."""
    conf = cluster.conf(cluster.processes.ids)
    topic = f"secure-txn-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(CLIENT_TIMEOUT_S)
    producer = Producer({**conf, "transactional.id": f"tx-{topic}", "transaction.timeout.ms": 60_000})
    producer.init_transactions(CLIENT_TIMEOUT_S)
    for outcome in ("commit", "abort", "commit"):
        producer.begin_transaction()
        for p in range(3):  # every partition, so leaders on other nodes than the coordinator
            producer.produce(topic, f"{outcome}-{p}".encode(), partition=p)
        if outcome == "commit":
            producer.commit_transaction(CLIENT_TIMEOUT_S)
        else:
            producer.abort_transaction(CLIENT_TIMEOUT_S)
    consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    got = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CLIENT_TIMEOUT_S * 2
        while len(got) < 6 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
    finally:
        consumer.close()
    assert sorted(got) == sorted([f"commit-{p}".encode() for p in range(3)] * 2)


def test_sasl_ssl_clients_and_mtls_peers_across_a_leader_kill(cluster):
    processes = cluster.processes
    conf = cluster.conf([3])
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(CLIENT_TIMEOUT_S)
    metadata = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
    assert {b.id: b.port for b in metadata.brokers.values()} == cluster.secure_ports
    first = [f"m{i}".encode() for i in range(30)]
    _produce(conf, topic, first)

    leader = processes.wait_meta_leader()
    processes.kill(leader)
    survivors = [n for n in processes.ids if n != leader]
    new_leader = processes.wait_meta_leader(survivors, timeout_s=60)
    assert new_leader != leader
    conf = cluster.conf(survivors)
    second = [f"n{i}".encode() for i in range(30)]
    _produce(conf, topic, second)
    assert _consume(conf, topic, 60) == set(first + second)
    for n in survivors:  # the survivors' Raft connections (mTLS only on this port) are up
        (other,) = set(survivors) - {n}
        assert live.metric_labelled(cluster.admin_ports[n], "chronik_transport_peer_connected", peer=str(other)) == 1
        assert cluster.refused(n, "node_id_mismatch") == (1 if n == 1 else 0)


def test_a_node_joins_through_a_members_raft_port_with_its_node_certificate(cluster):
    """--join ID@HOST:PORT: the join goes over mutual TLS with the new node's certificate, not
    through a Kafka listener (which here would ask for SASL or be the operators' own); the
    node becomes a voter and a broker that SASL_SSL clients see."""
    processes = cluster.processes
    via = processes.running()[0]
    cert = node_certificate(cluster.certs, 4)
    processes.join_node(4, via=via, through_raft=True, timeout_s=90, extra_args=(
        "--peer-ssl-cafile", cluster.certs.ca, "--peer-ssl-certfile", cluster.certs.path(f"{cert}.pem"),
        "--peer-ssl-keyfile", cluster.certs.path(f"{cert}.key"), "--admin-listen", f"127.0.0.1:{free_port()}"))
    log = processes.log(4)
    assert f"node 4: node {via} accepted its join (peer call)" in log, log[-3000:]
    assert "DescribeQuorum" not in log and "bootstrapped __meta" not in log
    assert "node 4 asked to join" in processes.log(via)
    admin = AdminClient(cluster.conf([via]))
    wait_for("broker 4 in Metadata over SASL_SSL",
             lambda: 4 in admin.list_topics(timeout=CLIENT_TIMEOUT_S).brokers, timeout_s=CLIENT_TIMEOUT_S)
