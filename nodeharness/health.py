"""GET /health of a node: a small JSON object (docs/transport.md).

The transport's server answers HTTP/1.1 as well as HTTP/2, so a plain urllib request does.
What the harness reads from it: `serving_kafka` (ready: the node is registered in __meta and
accepts Kafka connections), `meta_leader` (the __meta leader this node knows, -1 if none)
and `leading_groups` ({Raft group id: term} of the groups this node leads). fetch_metrics
reads GET /metrics (Prometheus text) for tests that count what a node did.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

HEALTH_TIMEOUT_S = 2.0  # a live node answers in milliseconds; a paused one never


def fetch_health(address: str, timeout_s: float = HEALTH_TIMEOUT_S) -> dict | None:
    """The /health answer of the node serving HTTP at HOST:PORT, None if it does not answer
    (not listening yet, exited, paused or overloaded past timeout_s, or killed while
    answering: a truncated body is http.client.IncompleteRead, not an OSError)."""
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException):
        return None
    return answer if isinstance(answer, dict) else None


def fetch_metrics(address: str, timeout_s: float = HEALTH_TIMEOUT_S) -> dict[str, float]:
    """The node's /metrics as {sample name with labels: value} ({} if it does not answer),
    e.g. 'chronik_txn_requests_total{kind="end_txn_v2"}'."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as response:
            text = response.read().decode()
    except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException):
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples
