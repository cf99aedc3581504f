"""The node's Kafka listeners: named, each with its security protocol (docs/security.md).

For every listener of the config (node/config.py kafka_listeners) the node opens a TCP
listener; a connection to an SSL or SASL_SSL listener is wrapped in trio.SSLStream (the
standard library's ssl, certificates from PEM files). A connection must finish its TLS
handshake and, on a SASL listener, its SASL exchange within authentication_timeout_ms of
being accepted (AuthDeadline), or it is closed. A client certificate, when the listener asks for one and
the client sends one signed by ssl_cafile, names the connection's principal
("User:CN=...,O=..." as Kafka writes an X.500 name). The connection then gets a Session
(kafka/session.py) that says whether SASL must come first.

Every refused connection (a TLS handshake that fails or stalls, a failed SASL exchange) is
logged with the peer and the reason, and counted by listener and reason in AuthFailures,
exported as chronik_authentication_failures in /metrics.
"""

from __future__ import annotations

import collections
import logging
import os
import ssl

import trio

from chronik_trio.kafka.session import Session
from chronik_trio.transport.tls import PeerTLS

from .config import ConfigError, Listener, NodeConfig

log = logging.getLogger(__name__)

# The X.500 attribute names Kafka's default principal builder writes (RFC 2253's short names).
_RDN_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
              "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
              "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}


class AuthFailures:
    """Connections refused for authentication, by (listener, reason): tls_handshake,
    tls_timeout, sasl (wrong credentials, unknown mechanism, out-of-turn request),
    sasl_timeout (no finished SASL exchange in time)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def add(self, listener: str, reason: str) -> None:
        self.counts[(listener, reason)] += 1


def server_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL listeners; None when there are none.
    Raises ConfigError when a PEM file is missing or does not load."""
    if not any(spec.uses_tls for spec in config.kafka_listeners):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
        if config.ssl_cafile:
            context.load_verify_locations(cafile=config.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS certificate or key does not load: {exc}") from None
    context.verify_mode = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[config.ssl_client_auth]
    return context


def peer_tls(config: NodeConfig) -> PeerTLS | None:
    """Mutual TLS between nodes (transport/tls.py), None when not configured. Raises
    ConfigError when a PEM file is missing or does not load."""
    if not config.peer_tls_enabled:
        return None
    try:
        return PeerTLS.from_pem(cafile=config.peer_ssl_cafile, certfile=config.peer_ssl_certfile,
                                keyfile=config.peer_ssl_keyfile,
                                handshake_timeout_s=config.authentication_timeout_ms / 1000)
    except (OSError, ssl.SSLError) as exc:
        unreadable = [f"{key}={path}" for key, path in (("peer_ssl_cafile", config.peer_ssl_cafile),
                                                         ("peer_ssl_certfile", config.peer_ssl_certfile),
                                                         ("peer_ssl_keyfile", config.peer_ssl_keyfile))
                      if not os.access(path, os.R_OK)]
        raise ConfigError(f"peer TLS certificate, key or CA does not load: {exc}"
                          + (f" (not readable: {', '.join(unreadable)})" if unreadable else "")) from None


def principal_of(certificate: dict | None) -> str | None:
    """"User:CN=alice,OU=eng,O=example" from a peer certificate as ssl.getpeercert() gives it
    (RFC 2253 order: the most specific attribute first), or None without a certificate."""
    if not certificate or not certificate.get("subject"):
        return None
    parts = []
    for rdn in reversed(certificate["subject"]):
        parts.append("+".join(f"{_RDN_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn))
    return "User:" + ",".join(parts)


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    return out[:-1] + "\\ " if out.endswith(" ") else out


async def open_session(stream: trio.abc.Stream, spec: Listener, context: ssl.SSLContext | None,
                       mechanisms: tuple[str, ...], peer: str, failures: AuthFailures, timeout_s: float):
    """(the stream to serve, its Session), or None after logging and counting why the
    connection is refused (the caller closes the raw stream). A TLS handshake has timeout_s."""
    principal = None
    if spec.uses_tls:
        assert context is not None, spec
        stream = trio.SSLStream(stream, context, server_side=True)
        reason = None
        with trio.move_on_after(timeout_s) as timeout:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                reason = f"{type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ else "peer closed"
        if timeout.cancelled_caught:
            reason = f"no TLS handshake within {timeout_s:g} s"
        if reason is not None:
            kind = "tls_timeout" if timeout.cancelled_caught else "tls_handshake"
            failures.add(spec.name, kind)
            log.warning("listener %s: refused connection from %s: TLS handshake failed: %s", spec.name, peer, reason)
            return None
        principal = principal_of(stream.getpeercert())
        if principal is not None:
            log.info("listener %s: connection from %s with a client certificate, principal %s",
                     spec.name, peer, principal)
    session = Session.for_listener(spec.name, spec.security_protocol, mechanisms, host=peer.rpartition(":")[0])
    if principal is not None and not spec.uses_sasl:
        session.principal = principal
    return stream, session


async def close_unauthenticated(session: Session, timeout_s: float, accepted_at: float, peer: str,
                                failures: AuthFailures, connection: trio.CancelScope) -> None:
    """Run beside a connection on a SASL listener: timeout_s after it was accepted (trio time
    accepted_at), if its SASL exchange has not completed, log, count (sasl_timeout) and cancel
    `connection`. Kafka has no such bound (it has connections.max.idle.ms)."""
    await trio.sleep_until(accepted_at + timeout_s)
    if session.authenticating:
        listener = session.listener or "PLAINTEXT"
        failures.add(listener, "sasl_timeout")
        log.warning("listener %s: closed the connection from %s: not authenticated within %g s",
                    listener, peer, timeout_s)
        connection.cancel()
