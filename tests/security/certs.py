"""Certificates made at test time with the `openssl` command-line tool (no new dependency,
nodeharness/certs.py): a cluster CA, a broker certificate for 127.0.0.1/localhost,
client certificates signed by it, and a second, unrelated CA with a client certificate of
its own; node certificates for mutual TLS between nodes on demand."""

from __future__ import annotations

import pathlib

import attrs

from nodeharness.certs import CLIENT, make_ca, make_node_certificate, make_signed


@attrs.frozen
class Certificates:
    directory: pathlib.Path

    def path(self, name: str) -> str:
        return str(self.directory / name)

    @property
    def ca(self) -> str:
        return self.path("ca.pem")


def make_certificates(directory: pathlib.Path) -> Certificates:
    """ca.pem; broker.pem/.key; alice.pem/.key (CN=alice,OU=eng,O=example, signed by ca);
    other-ca.pem and mallory.pem/.key (signed by other-ca)."""
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_signed(directory, "broker", "/O=chronik-trio tests/CN=localhost", san=["IP:127.0.0.1", "DNS:localhost"])
    make_signed(directory, "alice", "/O=example/OU=eng/CN=alice", usages=(CLIENT,))
    make_signed(directory, "mallory", "/O=example/CN=mallory", ca="other-ca", usages=(CLIENT,))
    return Certificates(directory)


def node_certificate(certs: Certificates, node_id: int | None, *, ca: str = "ca", name: str | None = None) -> str:
    """A node's certificate (nodeharness/certs.py make_node_certificate) in the
    certificates' directory; returns the file stem (NAME.pem, NAME.key)."""
    name = name or f"node-{node_id}"
    make_node_certificate(certs.directory, node_id, ca=ca, name=name)
    return name
