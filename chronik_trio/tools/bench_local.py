"""For `chronik-trio bench`: a local cluster of real node processes, and their /metrics.

`local_cluster(n)` starts n `chronik-trio node` processes on 127.0.0.1 through the
node-process harness (`nodeharness`; the dev-cluster layout: Kafka ports base..base+n-1,
Raft ports after them) with a temporary data directory, waits until each says in /health
that it is ready, and stops them by PID at the end (SIGTERM, then SIGKILL). A single node
runs without --peers and with `--admin-listen`, so that its /metrics and /health are
reachable too.

`scrape(address)` reads a node's Prometheus text over HTTP/2 (prior knowledge, the way the
transport serves it), with `h2` and a blocking socket; `histogram_delta` turns two scrapes
of one histogram into a count, a mean and bucket-bound percentiles.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import socket
import sys
import tempfile
import time

import attrs

from chronik_trio.tools import bench_security, dev_cluster
from nodeharness import NodeExited, NodeGroup, NodeProcess, NotReady, free_ports

READY_TIMEOUT_S = 60.0  # three nodes on a loaded 2-core machine start well within this
SCRAPE_TIMEOUT_S = 5.0
SCRAPE_BYTES_MAX = 64 << 20  # /metrics of 1,000 groups is a few MB


@attrs.define
class LocalCluster:
    bootstrap: str
    metrics_addresses: list[str]  # HOST:PORT serving /metrics over HTTP/2, one per node
    group: NodeGroup  # node ids 1..n
    secured: bench_security.SecuredListeners | None = None  # a second listener of each node

    @property
    def pids(self) -> list[int]:
        return [self.group[n].pid for n in self.group.ids]

    def kill(self, node_id: int) -> float:
        """SIGKILL node_id by PID; returns time.perf_counter() just before the signal."""
        killed_at = time.perf_counter()
        self.group[node_id].kill()
        return killed_at

    def restart(self, node_id: int) -> None:
        """Start node_id again on its data dir; returns once it says it is ready."""
        node = self.group[node_id]
        assert not node.running, f"node {node_id} is running"
        _ready(node.start())


def _ready(node: NodeProcess) -> None:
    try:
        node.wait_ready(READY_TIMEOUT_S)
    except (NodeExited, NotReady) as exc:
        raise SystemExit(f"chronik-trio bench: {exc}") from None


@contextlib.contextmanager
def local_cluster(nodes: int, log_level: str = "info", *, security_protocol: str = "PLAINTEXT",
                  sasl_mechanism: str = "SCRAM-SHA-512"):
    """Yields a LocalCluster of `nodes` running processes; stops them by PID afterwards.
    With security_protocol SSL or SASL_SSL each node also has a listener of that protocol
    (bench_security.py)."""
    with tempfile.TemporaryDirectory(prefix="chronik-bench-") as tmp:
        ports = free_ports(2 * nodes + 1, contiguous=True)  # +1: the single node's admin port
        specs = dev_cluster.plan(nodes, ports[0], pathlib.Path(tmp))
        secured = None
        if security_protocol != "PLAINTEXT":
            secured = bench_security.secured_listeners(pathlib.Path(tmp) / "certs", security_protocol,
                                                       [s.node_id for s in specs], sasl_mechanism)
        group = NodeGroup()
        try:
            if nodes == 1:
                admin = f"{dev_cluster.HOST}:{ports[2]}"
                group.add(dev_cluster.node_process(specs[0], "", log_level, admin_listen=admin))
                metrics = [admin]
            else:
                peers = dev_cluster.peers_of(specs)
                for spec in specs:
                    group.add(dev_cluster.node_process(spec, peers, log_level))
                metrics = [f"{dev_cluster.HOST}:{s.raft_port}" for s in specs]
            if secured is not None:
                for spec in specs:
                    group[spec.node_id].command += secured.node_args(spec.node_id, spec.kafka_address)
            group.start_all(timeout_s=None)
            for n in group.ids:
                _ready(group[n])
            bootstrap = ",".join(s.kafka_address for s in specs)
            if secured is not None:
                secured.create_user(bootstrap)
            yield LocalCluster(bootstrap, metrics, group, secured)
        finally:
            group.stop_all()
            for problem in group.problems():  # a node that crashed makes the figures suspect
                print(f"chronik-trio bench: {problem}", file=sys.stderr)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- /metrics -----------------------------------------------------------------------------------

def scrape(address: str, path: str = "/metrics") -> str:
    """GET path (/metrics, /health) from HOST:PORT over cleartext HTTP/2 (prior knowledge)."""
    import h2.config
    import h2.connection
    import h2.events

    host, port = address.rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding="utf-8"))
    body = bytearray()
    with socket.create_connection((host, int(port)), timeout=SCRAPE_TIMEOUT_S) as sock:
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [(":method", "GET"), (":scheme", "http"),
                                      (":authority", address), (":path", path)],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                raise OSError(f"{address} closed the connection during {path}")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if len(body) > SCRAPE_BYTES_MAX:
                        raise OSError(f"{address}: {path} larger than {SCRAPE_BYTES_MAX} bytes")
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    return body.decode()


_BUCKET = re.compile(r'^(\w+)_bucket\{le="([^"]+)"\} (\S+)$', re.M)
_SUM_COUNT = re.compile(r'^(\w+)_(sum|count) (\S+)$', re.M)


def histograms(text: str) -> dict[str, dict]:
    """{name: {"buckets": [(le, cumulative count)], "sum": s, "count": n}} of unlabelled ones."""
    out: dict[str, dict] = {}
    for name, le, value in _BUCKET.findall(text):
        out.setdefault(name, {"buckets": [], "sum": 0.0, "count": 0.0})["buckets"].append(
            (float(le), float(value)))
    for name, kind, value in _SUM_COUNT.findall(text):
        if name in out:
            out[name][kind] = float(value)
    return out


_COUNTER = re.compile(r'^(chronik_cleaner_\w+)_total (\S+)$', re.M)


def cleaner_counters(text: str) -> dict[str, float]:
    """The log cleaner's counters (chronik_cleaner_*_total) of a /metrics text."""
    return {name: float(value) for name, value in _COUNTER.findall(text)}


_TRANSPORT_SENT = re.compile(r'^chronik_transport_sent_(messages|batches)_total\{[^}]*\} (\S+)$', re.M)


def transport_sent(text: str) -> dict[str, float]:
    """Messages and RaftBatch frames the node's transport wrote, summed over its peers (the
    node's liveness messages included), from a /metrics text."""
    sent = {"messages": 0.0, "batches": 0.0}
    for kind, value in _TRANSPORT_SENT.findall(text):
        sent[kind] += float(value)
    return sent


def histogram_delta(before: dict | None, after: dict) -> dict:
    """Count, mean and bucket-bound p50/p99/max (ms) of what was observed between scrapes."""
    b_buckets = dict(before["buckets"]) if before else {}
    buckets = [(le, n - b_buckets.get(le, 0.0)) for le, n in after["buckets"]]
    count = after["count"] - (before["count"] if before else 0.0)
    total_s = after["sum"] - (before["sum"] if before else 0.0)

    def bound_ms(q: float) -> float | None:
        if count <= 0:
            return None
        for le, n in buckets:
            if n >= q * count:
                return le * 1000 if le != float("inf") else None
        return None

    return {"count": int(count), "mean_ms": round(total_s / count * 1000, 3) if count else None,
            "p50_ms_at_most": bound_ms(0.5), "p99_ms_at_most": bound_ms(0.99),
            "max_ms_at_most": bound_ms(1.0)}
