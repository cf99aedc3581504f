"""For `chronik-trio bench --security-protocol SSL|SASL_SSL`: the tool's own nodes get a second
listener with that protocol beside their PLAINTEXT one, so that each run measures both on the
same nodes, alternately; the report gives the secured figures beside the plaintext ones.

Certificates (a CA and one broker certificate for 127.0.0.1) are made in the run's temporary
directory with the `openssl` command-line tool (certs.py); SASL_SSL logs in as a user this module
creates through `chronik-trio admin user set` on the PLAINTEXT listener.
"""

from __future__ import annotations

import pathlib
import secrets
import subprocess
import sys

import attrs

from nodeharness import certs
from nodeharness import free_ports

SECURED_PROTOCOLS = ("SSL", "SASL_SSL")
ADMIN_TIMEOUT_S = 60
BENCH_USER = "bench"


@attrs.frozen
class SecuredListeners:
    """The second listener of each node: what to give the nodes and the clients."""

    protocol: str
    ports: dict[int, int]  # node id -> port of the secured listener
    certfile: str
    keyfile: str
    cafile: str
    mechanism: str
    password: str = attrs.field(repr=False)

    def node_args(self, node_id: int, plaintext_address: str) -> list[str]:
        return ["--listeners", f"PLAINTEXT://{plaintext_address},{self.protocol}://127.0.0.1:{self.ports[node_id]}",
                "--ssl-certfile", self.certfile, "--ssl-keyfile", self.keyfile]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports.values())

    @property
    def client_config(self) -> dict[str, str]:
        """librdkafka settings of a client of the secured listener."""
        config = {"security.protocol": self.protocol, "ssl.ca.location": self.cafile}
        if self.protocol == "SASL_SSL":
            config.update({"sasl.mechanism": self.mechanism, "sasl.username": BENCH_USER,
                           "sasl.password": self.password})
        return config

    def create_user(self, plaintext_bootstrap: str) -> None:
        if self.protocol != "SASL_SSL":
            return
        subprocess.run([sys.executable, "-m", "chronik_trio.cli", "admin", "--bootstrap", plaintext_bootstrap,
                        "user", "set", BENCH_USER, "--mechanism", self.mechanism], input=self.password + "\n",
                       text=True, check=True, capture_output=True, timeout=ADMIN_TIMEOUT_S)


def secured_listeners(directory: pathlib.Path, protocol: str, node_ids: list[int],
                      mechanism: str) -> SecuredListeners:
    """Makes the certificates in `directory` (certs.py) and picks free ports."""
    ca = certs.make_ca(directory)
    certfile, keyfile = certs.make_signed(directory, "broker", "/CN=localhost", san=["IP:127.0.0.1", "DNS:localhost"])
    return SecuredListeners(protocol, dict(zip(node_ids, free_ports(len(node_ids)))), str(certfile), str(keyfile),
                            str(ca), mechanism, secrets.token_urlsafe(18))
