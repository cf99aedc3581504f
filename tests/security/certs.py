"""Certificates made at test time with the `openssl` command-line tool (no new dependency):
a cluster CA, a broker certificate for 127.0.0.1/localhost, client certificates signed by
it, and a second, unrelated CA with a client certificate of its own."""

from __future__ import annotations

import pathlib
import subprocess

import attrs

OPENSSL_TIMEOUT_S = 30
DAYS = "2"


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=OPENSSL_TIMEOUT_S)


def _ca(directory: pathlib.Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", DAYS, "-subj", f"/O=chronik-trio tests/CN={name}", cwd=directory)


def _signed(directory: pathlib.Path, ca: str, name: str, subject: str, *, server: bool,
            extensions_text: str | None = None) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=directory)
    extensions = directory / f"{name}.ext"
    extensions.write_text(extensions_text or (
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
        else "extendedKeyUsage=clientAuth\n"))
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", DAYS, "-extfile", extensions.name, cwd=directory)


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
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _signed(directory, "ca", "broker", "/O=chronik-trio tests/CN=localhost", server=True)
    _signed(directory, "ca", "alice", "/O=example/OU=eng/CN=alice", server=False)
    _signed(directory, "other-ca", "mallory", "/O=example/CN=mallory", server=False)
    return Certificates(directory)


def node_certificate(certs: Certificates, node_id: int | None, *, ca: str = "ca", name: str | None = None) -> str:
    """A node's certificate for mutual TLS between nodes (docs/security.md): subjectAltName
    DNS:node-<id> (none when node_id is None), also valid for its Kafka listeners on 127.0.0.1
    and localhost, for both TLS client and server use. Returns the file stem (NAME.pem, NAME.key)."""
    name = name or f"node-{node_id}"
    san = ([f"DNS:node-{node_id}"] if node_id is not None else []) + ["IP:127.0.0.1", "DNS:localhost"]
    _signed(certs.directory, ca, name, f"/O=chronik-trio tests/CN={name}", server=True,
            extensions_text=f"subjectAltName={','.join(san)}\nextendedKeyUsage=serverAuth,clientAuth\n")
    return name
