"""Mutual TLS between transports on 127.0.0.1 (transport/tls.py), with real handshakes and
certificates made by the test: messages flow; every kind of peer mTLS must refuse is refused,
counted and logged, while the others keep exchanging."""

from __future__ import annotations

import logging
import ssl

import pytest
import trio

from chronik_trio.transport import Transport
from chronik_trio.transport.tls import PeerTLS, node_id_of
from tests.security.certs import Certificates, make_certificates, node_certificate

from .helpers import HOST, H2Client, Node, cluster, listen, message, wait_connected, wait_until


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certificates:
    certs = make_certificates(tmp_path_factory.mktemp("peer-certs"))
    for node_id in (1, 2, 3):
        node_certificate(certs, node_id)
    node_certificate(certs, 2, ca="other-ca", name="rogue-2")  # node 2 by another CA
    node_certificate(certs, None, name="nameless")  # the cluster's CA, but no node id
    return certs


def tls(certs: Certificates, stem: str, timeout_s: float = 10.0) -> PeerTLS:
    return PeerTLS.from_pem(cafile=certs.ca, certfile=certs.path(f"{stem}.pem"),
                            keyfile=certs.path(f"{stem}.key"), handshake_timeout_s=timeout_s)


def refused(transport: Transport, reason: str) -> float:
    return transport.registry.get_sample_value("chronik_transport_peers_refused_total",
                                               {"reason": reason}) or 0.0


async def start(nursery: trio.Nursery, node: Node, peers: dict[int, tuple[str, int]],
                peer_tls: PeerTLS | None, listeners=None, **kwargs) -> None:
    listeners = listeners or await listen()
    node.address = listeners[0].socket.getsockname()[:2]
    node.transport = Transport(node.node_id, listeners, peers, node.on_batch,
                               node.report_unreachable, tls=peer_tls, **kwargs)
    await nursery.start(node.transport.run)


def test_a_certificate_names_its_node_by_one_san_dns_name():
    assert node_id_of({"subjectAltName": (("DNS", "node-7"), ("IP Address", "127.0.0.1"))}) == 7
    assert node_id_of({"subjectAltName": (("DNS", "node-7"), ("DNS", "node-8"))}) is None
    assert node_id_of({"subjectAltName": (("DNS", "node-07"),)}) is None
    assert node_id_of({"subjectAltName": (("DNS", "xnode-7"),), "subject": ((("commonName", "node-7"),),)}) is None
    assert node_id_of(None) is None


@pytest.mark.timeout(30)
async def test_three_transports_exchange_over_mutual_tls(certs):
    async with cluster(3, per_node=lambda n: {"tls": tls(certs, f"node-{n}")}) as nodes:
        await wait_connected(nodes, timeout_s=10)
        for index in range(50):
            for sender in nodes:
                for peer in nodes:
                    if peer is not sender:
                        assert sender.transport.send(peer.node_id, "g", message(sender.node_id, peer.node_id, index))
        await wait_until(lambda: all(len(n.received()) == 100 for n in nodes), timeout_s=10)
        for node in nodes:
            assert node.unreachable == []
            assert node.transport.registry.get_sample_value("chronik_transport_peers_refused_total",
                                                            {"reason": "tls_handshake"}) is None


@pytest.mark.timeout(40)
async def test_refused_peers_are_counted_and_logged_and_the_others_go_on(certs, caplog):
    """Node 1 and node 2 (good) exchange while these try node 1: node 2's id with a
    certificate of another CA, node 2's id with node 3's certificate, node 2 in plaintext,
    and a raw client that sends half a ClientHello and stalls."""
    caplog.set_level(logging.WARNING, logger="chronik_trio.transport")
    one, two = Node(1), Node(2)
    ls1, ls2 = await listen(), await listen()
    one.address, two.address = ls1[0].socket.getsockname()[:2], ls2[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:
        await start(nursery, one, {2: two.address}, tls(certs, "node-1", timeout_s=1.0), ls1)
        await start(nursery, two, {1: one.address}, tls(certs, "node-2"), ls2)
        await wait_connected([one, two], timeout_s=10)
        rogues = {"tls_handshake": [], "node_id_mismatch": []}
        for stem, reason in (("rogue-2", "tls_handshake"), ("node-3", "node_id_mismatch"), (None, "tls_handshake")):
            rogue = Node(2)
            await start(nursery, rogue, {1: one.address}, tls(certs, stem) if stem else None)
            rogues[reason].append(rogue)
        half_hello = await trio.open_tcp_stream(*one.address)
        # The first bytes of a real ClientHello, then nothing.
        outgoing = ssl.MemoryBIO()
        hello = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing)
        with pytest.raises(ssl.SSLWantReadError):
            hello.do_handshake()
        data = outgoing.read()
        await half_hello.send_all(data[:len(data) // 2])

        await wait_until(lambda: refused(one.transport, "tls_handshake") >= 2
                         and refused(one.transport, "node_id_mismatch") >= 1
                         and refused(one.transport, "tls_timeout") >= 1, timeout_s=15)
        for index in range(20):
            assert two.transport.send(1, "g", message(2, 1, index))
            assert one.transport.send(2, "g", message(1, 2, index))
        await wait_until(lambda: len(one.received()) == 20 and len(two.received()) == 20)
        # Nothing from a rogue reached node 1: everything it got came from node 2's transport.
        assert [i for _, _, i in one.received()] == list(range(20))
        for reasons in rogues.values():  # each rogue's connections fail (and are retried)
            for rogue in reasons:
                await wait_until(lambda: (rogue.transport.registry.get_sample_value(
                    "chronik_transport_connect_failures_total", {"peer": "1"}) or 0) >= 1)
        await half_hello.aclose()
        nursery.cancel_scope.cancel()
    text = caplog.text
    assert "refused peer (tls_handshake)" in text and "CERTIFICATE_VERIFY_FAILED" in text
    assert "claims node 2, its certificate names node 3" in text
    assert "refused peer (tls_timeout)" in text and "no TLS handshake within 1 s" in text


@pytest.mark.timeout(30)
async def test_a_sender_refuses_a_server_whose_certificate_names_another_node(certs, caplog):
    """Node 1 believes node 2 is at node 3's address: it refuses the certificate of node 3."""
    caplog.set_level(logging.WARNING, logger="chronik_trio.transport")
    one, three = Node(1), Node(3)
    async with trio.open_nursery() as nursery:
        await start(nursery, three, {}, tls(certs, "node-3"))
        await start(nursery, one, {2: three.address}, tls(certs, "node-1"))
        await wait_until(lambda: refused(one.transport, "node_id_mismatch") >= 1, timeout_s=10)
        assert one.transport.peer_state(2).value != "connected"  # refused before any request
        nursery.cancel_scope.cancel()
    assert "node 2's certificate names DNS:node-3" in caplog.text


@pytest.mark.timeout(30)
async def test_a_certificate_without_a_node_id_is_refused(certs):
    one, nameless = Node(1), Node(2)
    async with trio.open_nursery() as nursery:
        await start(nursery, one, {}, tls(certs, "node-1"))
        await start(nursery, nameless, {1: one.address}, tls(certs, "nameless"))
        await wait_until(lambda: refused(one.transport, "no_node_id") >= 1, timeout_s=10)
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_the_public_listener_serves_health_only(certs):
    """With mTLS on, a cleartext public listener answers /health and /metrics, and refuses
    every peer route (403, counted as unauthenticated)."""
    one = Node(1)
    async with trio.open_nursery() as nursery:
        await start(nursery, one, {}, tls(certs, "node-1"), public_listen=(HOST, 0))
        async with H2Client.open(one.transport.public_address) as client:
            health = await client.request("GET", "/health")
            assert health.status == 200 and b'"node_id": 1' in health.body
            assert (await client.request("GET", "/metrics")).status == 200
            batch = await client.request("POST", "/raft/v1/batch", [(b"chronik-from-node", b"2")], b"x")
            assert batch.status == 403
        assert refused(one.transport, "unauthenticated") == 1
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_cleartext_transports_are_unchanged():
    async with cluster(2) as (a, b):
        await wait_connected([a, b])
        assert a.transport.send(2, "g", message(1, 2, 0))
        await wait_until(lambda: len(b.received()) == 1)
