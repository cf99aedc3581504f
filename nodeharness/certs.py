"""Test and benchmark certificates made with the `openssl` command-line tool (no Python
dependency): a CA, and certificates it signs with given subjectAltNames and key usages.

Part of the node-process harness (it imports nothing of the broker), for what needs TLS on
throw-away nodes (`bench --security-protocol`, the chaos harness's `peer_tls`) and for the
tests; docs/security.md shows the same commands for operators.
"""

from __future__ import annotations

import pathlib
import subprocess

OPENSSL_TIMEOUT_S = 60
DAYS = "2"
SERVER = "serverAuth"
CLIENT = "clientAuth"


def _openssl(directory: pathlib.Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=OPENSSL_TIMEOUT_S)


def make_ca(directory: pathlib.Path, name: str = "ca") -> pathlib.Path:
    """NAME.pem and NAME.key in `directory`: a self-signed CA. Returns NAME.pem's path."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", "-days", DAYS, "-subj", f"/O=chronik-trio tests/CN={name}")
    return directory / f"{name}.pem"


def make_signed(directory: pathlib.Path, name: str, subject: str, *, ca: str = "ca", san: list[str] = (),
                usages: tuple[str, ...] = (SERVER,)) -> tuple[pathlib.Path, pathlib.Path]:
    """NAME.pem and NAME.key signed by CA.pem/CA.key in `directory`, with the subject (e.g.
    "/O=example/CN=alice"), subjectAltNames (e.g. "DNS:node-1", "IP:127.0.0.1") and extended
    key usages given. Returns (certificate, key) paths."""
    _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject)
    lines = ([f"subjectAltName={','.join(san)}"] if san else []) + [f"extendedKeyUsage={','.join(usages)}"]
    (directory / f"{name}.ext").write_text("\n".join(lines) + "\n")
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", DAYS, "-extfile", f"{name}.ext")
    return directory / f"{name}.pem", directory / f"{name}.key"


def make_node_certificate(directory: pathlib.Path, node_id: int | None, *, ca: str = "ca",
                          name: str | None = None) -> tuple[pathlib.Path, pathlib.Path]:
    """A node's certificate for mutual TLS between nodes (subjectAltName DNS:node-<id>; none
    when node_id is None), also valid for its Kafka listeners on 127.0.0.1 and localhost, for
    both TLS client and server use."""
    name = name or f"node-{node_id}"
    san = ([f"DNS:node-{node_id}"] if node_id is not None else []) + ["IP:127.0.0.1", "DNS:localhost"]
    return make_signed(directory, name, f"/O=chronik-trio tests/CN={name}", ca=ca, san=san, usages=(SERVER, CLIENT))
