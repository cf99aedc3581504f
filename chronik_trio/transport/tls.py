"""Mutual TLS between nodes: the Raft port's streams, before HTTP/2 sees them.

Both ends of a connection between nodes present a certificate signed by the cluster's CA
(PEM files), and each certificate names exactly one node: a subjectAltName `DNS:node-<id>`
(NODE_NAME_PREFIX). The server takes the id it names as the connection's identity (put in
the ASGI scope's state, CONNECTION_NODE_KEY), and the app refuses any request on it that
claims another id (server.py). The sender checks that the certificate of the node it dialled
names that node. A handshake that fails, stalls beyond the timeout, or shows a certificate
naming no node (or several) closes the connection, with a log line and a count in
chronik_transport_peers_refused_total{reason}.

TLS is applied to the stream, under hypercorn and under the sender's h2: every route of the
app inherits it, and the seams (listeners made by the caller, `connect`) stay what they are:
the TLS stream wraps whatever stream they give.
"""

from __future__ import annotations

import enum
import re
import ssl

import attrs
import trio

NODE_NAME_PREFIX = "node-"
_NODE_NAME = re.compile(re.escape(NODE_NAME_PREFIX) + r"([1-9][0-9]{0,18})")
# The ASGI scope state key (hypercorn copies a connection's state into each request's scope)
# holding the node id a connection's certificate names; None on a connection that showed no
# certificate (a plaintext listener for /health and /metrics).
CONNECTION_NODE_KEY = "chronik.peer_node"
# ALPN: we speak HTTP/2 only between nodes; http/1.1 for a tool asking /health over TLS.
_ALPN = ["h2", "http/1.1"]
HANDSHAKE_TIMEOUT_S_DEFAULT = 10.0


class RefusalReason(str, enum.Enum):
    TLS_HANDSHAKE = "tls_handshake"  # failed: no certificate, another CA, not TLS, cut
    TLS_TIMEOUT = "tls_timeout"  # not finished within the handshake timeout
    NO_NODE_ID = "no_node_id"  # a valid certificate naming no node, or several
    NODE_ID_MISMATCH = "node_id_mismatch"  # a request claiming another node than its certificate
    UNAUTHENTICATED = "unauthenticated"  # a peer route asked on a connection without a certificate


class PeerRefused(Exception):
    def __init__(self, reason: RefusalReason, detail: str, cause: BaseException | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.cause = cause  # what the TLS layer raised, if anything

    @property
    def by_tls(self) -> bool:
        """Whether TLS itself refused (a certificate, an alert, a name), as opposed to the
        connection just breaking or stalling during the handshake (a peer that is going down)."""
        if self.reason not in (RefusalReason.TLS_HANDSHAKE, RefusalReason.TLS_TIMEOUT):
            return True
        return isinstance(self.cause, ssl.SSLError) and not isinstance(
            self.cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError))


@attrs.frozen
class PeerTLS:
    """The TLS settings of one node's transport: contexts for both directions."""

    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S_DEFAULT

    @classmethod
    def from_pem(cls, *, cafile: str, certfile: str, keyfile: str,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S_DEFAULT) -> PeerTLS:
        """Raises OSError or ssl.SSLError when a file does not load."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        # The node id, not a host name, is what a certificate must match (node_id_of).
        client.check_hostname = False
        for context in (server, client):
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_cert_chain(certfile, keyfile)
            context.set_alpn_protocols(_ALPN)
        return cls(server, client, handshake_timeout_s)


def node_id_of(certificate: dict | None) -> int | None:
    """The node id a verified certificate (as ssl.getpeercert() gives it) names: its one
    subjectAltName DNS:node-<id>. None when it names none or more than one."""
    if not certificate:
        return None
    ids = {int(m.group(1)) for kind, value in certificate.get("subjectAltName", ())
           if kind == "DNS" and (m := _NODE_NAME.fullmatch(value))}
    return ids.pop() if len(ids) == 1 else None


async def _handshake(stream: trio.SSLStream, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s) as scope:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            raise PeerRefused(RefusalReason.TLS_HANDSHAKE,
                              f"TLS handshake failed: {type(cause).__name__}: {cause}"
                              if cause else "TLS handshake failed: the peer closed", cause) from None
    if scope.cancelled_caught:
        raise PeerRefused(RefusalReason.TLS_TIMEOUT, f"no TLS handshake within {timeout_s:g} s")


async def accept_peer(stream: trio.abc.Stream, tls: PeerTLS) -> tuple[trio.SSLStream, int]:
    """Server side: the TLS stream over `stream` and the node id its client's certificate
    names. Raises PeerRefused (the caller closes `stream`)."""
    secured = trio.SSLStream(stream, tls.server_context, server_side=True)
    await _handshake(secured, tls.handshake_timeout_s)
    node_id = node_id_of(secured.getpeercert())
    if node_id is None:
        raise PeerRefused(RefusalReason.NO_NODE_ID,
                          f"its certificate names no single node ({_names(secured)}); "
                          f"a node's certificate needs one subjectAltName DNS:{NODE_NAME_PREFIX}<id>")
    return secured, node_id


async def connect_peer(stream: trio.abc.Stream, tls: PeerTLS, peer_id: int) -> trio.SSLStream:
    """Client side: the TLS stream over `stream` to node `peer_id`, whose certificate must
    name that node. Raises PeerRefused (the caller closes `stream`)."""
    secured = trio.SSLStream(stream, tls.client_context,
                             server_hostname=f"{NODE_NAME_PREFIX}{peer_id}")
    await _handshake(secured, tls.handshake_timeout_s)
    named = node_id_of(secured.getpeercert())
    if named != peer_id:
        raise PeerRefused(RefusalReason.NODE_ID_MISMATCH if named else RefusalReason.NO_NODE_ID,
                          f"node {peer_id}'s certificate names {_names(secured)}")
    return secured


def _names(stream: trio.SSLStream) -> str:
    certificate = stream.getpeercert() or {}
    names = [f"{kind}:{value}" for kind, value in certificate.get("subjectAltName", ())]
    return ", ".join(names) or "no subjectAltName"
