"""For `chronik-trio bench`: a local cluster of real node processes, and their /metrics.

`local_cluster(n)` starts n `chronik-trio node` processes on 127.0.0.1 (the dev-cluster
layout: Kafka ports base..base+n-1, Raft ports after them) with a temporary data directory,
waits until each has logged that it is ready, and stops them by PID at the end (SIGTERM,
then SIGKILL). A single node gets `--admin-listen` so that its /metrics is reachable too.

`scrape(address)` reads a node's Prometheus text over HTTP/2 (prior knowledge, the way the
transport serves it), with `h2` and a blocking socket; `histogram_delta` turns two scrapes
of one histogram into a count, a mean and bucket-bound percentiles.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import tempfile
import time

import attrs

from chronik_trio.tools import dev_cluster

READY_TIMEOUT_S = 60.0  # three nodes on a loaded 2-core machine start well within this
STOP_TIMEOUT_S = 15.0
PORT_PICK_ATTEMPTS_MAX = 50
SCRAPE_TIMEOUT_S = 5.0
SCRAPE_BYTES_MAX = 64 << 20  # /metrics of 1,000 groups is a few MB


@attrs.define
class LocalCluster:
    bootstrap: str
    metrics_addresses: list[str]  # HOST:PORT serving /metrics over HTTP/2, one per node
    specs: list  # dev_cluster.NodeSpec, node i at index i - 1
    procs: list[subprocess.Popen]
    peers: str

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def kill(self, node_id: int) -> float:
        """SIGKILL node_id by PID; returns time.perf_counter() just before the signal."""
        proc = self.procs[node_id - 1]
        killed_at = time.perf_counter()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return killed_at

    def restart(self, node_id: int) -> None:
        """Start node_id again on its data dir; returns once it has logged that it is ready."""
        spec = self.specs[node_id - 1]
        assert self.procs[node_id - 1].poll() is not None, f"node {node_id} is running"
        seen = spec.log_path.read_bytes().count(f"node {node_id} ready:".encode())
        self.procs[node_id - 1] = dev_cluster.spawn(spec, self.peers, "info")
        _wait_ready([spec], [self.procs[node_id - 1]], seen=seen)


def _pick_base_port(nodes: int) -> int:
    rng = random.Random()
    for _ in range(PORT_PICK_ATTEMPTS_MAX):
        base = rng.randrange(20_000, 60_000)
        ports = list(range(base, base + 2 * nodes + 1))  # +1: the single node's admin port
        if not dev_cluster.busy_ports(ports):
            return base
    raise SystemExit("chronik-trio bench: found no free range of loopback ports")


@contextlib.contextmanager
def local_cluster(nodes: int, log_level: str = "info"):
    """Yields a LocalCluster of `nodes` running processes; stops them by PID afterwards."""
    with tempfile.TemporaryDirectory(prefix="chronik-bench-") as tmp:
        base = _pick_base_port(nodes)
        specs = dev_cluster.plan(nodes, base, pathlib.Path(tmp))
        procs: list[subprocess.Popen] = []
        cluster = None
        try:
            if nodes == 1:
                spec = specs[0]
                admin = f"{dev_cluster.HOST}:{base + 2}"
                command = [*dev_cluster.node_command(spec, "", log_level)]
                command = command[:command.index("--peers")] + command[command.index("--peers") + 2:]
                command += ["--admin-listen", admin]
                spec.data_dir.mkdir(parents=True)
                with open(spec.log_path, "ab") as log_file:
                    procs.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                                  stderr=subprocess.STDOUT))
                metrics = [admin]
            else:
                peers = dev_cluster.peers_of(specs)
                procs = [dev_cluster.spawn(s, peers, log_level) for s in specs]
                metrics = [f"{dev_cluster.HOST}:{s.raft_port}" for s in specs]
            _wait_ready(specs, procs)
            cluster = LocalCluster(",".join(s.kafka_address for s in specs), metrics, specs, procs,
                                   dev_cluster.peers_of(specs) if nodes > 1 else "")
            yield cluster
        finally:
            _stop(cluster.procs if cluster is not None else procs)


def _wait_ready(specs, procs, seen: int = 0) -> None:
    """Until each node's log holds more than `seen` lines saying it is ready."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = list(zip(specs, procs))
    while waiting:
        for spec, proc in waiting:
            if proc.poll() is not None:
                raise SystemExit(f"chronik-trio bench: node {spec.node_id} exited "
                                 f"({proc.returncode}):\n{dev_cluster.log_tail(spec.log_path)}")
        waiting = [(s, p) for s, p in waiting
                   if s.log_path.read_bytes().count(f"node {s.node_id} ready:".encode()) <= seen]
        if waiting and time.monotonic() > deadline:
            raise SystemExit(f"chronik-trio bench: node(s) {[s.node_id for s, _ in waiting]} not "
                             f"ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


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

def scrape(address: str) -> str:
    """GET /metrics from HOST:PORT over cleartext HTTP/2 (prior knowledge)."""
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
                                      (":authority", address), (":path", "/metrics")],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                raise OSError(f"{address} closed the connection during /metrics")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if len(body) > SCRAPE_BYTES_MAX:
                        raise OSError(f"{address}: /metrics larger than {SCRAPE_BYTES_MAX} bytes")
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
