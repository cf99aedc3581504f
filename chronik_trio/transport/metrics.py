"""Prometheus metrics of one Transport, in a registry the transport owns (or is given).

Label values are bounded: `peer` is a configured peer id or "other" (a stream may claim any
node id), `reason` is one of DropReason.
"""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge

PEER_OTHER = "other"


class DropReason(str, enum.Enum):
    # sender side
    QUEUE_FULL = "queue_full"
    PEER_DISCONNECTED = "peer_disconnected"
    PEER_UNKNOWN = "peer_unknown"
    MESSAGE_TOO_LARGE = "message_too_large"
    CONNECTION_LOST = "connection_lost"  # still queued when the connection broke
    # receiver side
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    UNKNOWN_KIND = "unknown_kind"
    WRONG_TO_NODE = "wrong_to_node"
    WRONG_FROM_NODE = "wrong_from_node"
    BAD_STREAM_HEADERS = "bad_stream_headers"
    SNAPSHOT_REFUSED = "snapshot_refused"
    # sender side, snapshots
    SNAPSHOT_QUEUE_FULL = "snapshot_queue_full"


class TransportMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "chronik_transport_"
        self.sent_messages = Counter(p + "sent_messages", "Raft messages written to a peer",
                                     ["peer"], registry=registry)
        self.sent_batches = Counter(p + "sent_batches", "RaftBatch frames written to a peer",
                                    ["peer"], registry=registry)
        self.sent_bytes = Counter(p + "sent_bytes", "RaftBatch frame bytes written to a peer",
                                  ["peer"], registry=registry)
        self.received_messages = Counter(p + "received_messages",
                                         "Raft messages handed to on_batch", ["peer"],
                                         registry=registry)
        self.received_batches = Counter(p + "received_batches", "RaftBatches handed to on_batch",
                                        ["peer"], registry=registry)
        self.received_bytes = Counter(p + "received_bytes", "Frame bytes received", ["peer"],
                                      registry=registry)
        self.sent_snapshots = Counter(p + "sent_snapshots", "Snapshots written in full to a peer",
                                      ["peer"], registry=registry)
        self.received_snapshots = Counter(p + "received_snapshots",
                                          "Snapshots rebuilt and handed to on_batch", ["peer"],
                                          registry=registry)
        self.dropped = Counter(p + "dropped", "Messages, frames or streams dropped",
                               ["reason"], registry=registry)
        self.queue_depth_messages = Gauge(p + "queue_depth_messages",
                                          "Messages queued for a peer", ["peer"],
                                          registry=registry)
        self.queue_depth_bytes = Gauge(p + "queue_depth_bytes", "Bytes queued for a peer",
                                       ["peer"], registry=registry)
        self.peer_connected = Gauge(p + "peer_connected",
                                    "1 while the sender to a peer has a connection", ["peer"],
                                    registry=registry)
        self.connect_attempts = Counter(p + "connect_attempts", "Connections tried to a peer",
                                        ["peer"], registry=registry)
        self.connect_failures = Counter(p + "connect_failures",
                                        "Connections to a peer that failed or broke",
                                        ["peer"], registry=registry)
        self.connection_failures = Counter(
            p + "server_connection_failures",
            "Incoming connections closed because hypercorn failed on them", registry=registry)
        self.peers_refused = Counter(
            p + "peers_refused", "Connections or requests between nodes refused by mutual TLS "
            "(reason: tls.RefusalReason)", ["reason"], registry=registry)
        self.reported_unreachable = Counter(p + "reported_unreachable",
                                            "report_unreachable calls for a peer", ["peer"],
                                            registry=registry)
        # Children of the dropped counter, looked up once: send() runs per Raft message.
        self._dropped = {reason: self.dropped.labels(reason.value) for reason in DropReason}

    def drop(self, reason: DropReason, count: int = 1) -> None:
        self._dropped[reason].inc(count)

    def peer(self, peer_id: int) -> PeerMetrics:
        return PeerMetrics(self, str(peer_id))

    def remove_peer(self, peer_id: int) -> None:
        label = str(peer_id)
        for metric in (self.sent_messages, self.sent_batches, self.sent_bytes, self.sent_snapshots,
                       self.queue_depth_messages, self.queue_depth_bytes, self.peer_connected,
                       self.connect_attempts, self.connect_failures, self.reported_unreachable):
            try:
                metric.remove(label)
            except KeyError:
                pass  # never used for this peer


class PeerMetrics:
    """The children of one peer, looked up once per peer rather than per message."""

    def __init__(self, metrics: TransportMetrics, label: str) -> None:
        self.sent_messages = metrics.sent_messages.labels(label)
        self.sent_batches = metrics.sent_batches.labels(label)
        self.sent_bytes = metrics.sent_bytes.labels(label)
        self.sent_snapshots = metrics.sent_snapshots.labels(label)
        self.queue_depth_messages = metrics.queue_depth_messages.labels(label)
        self.queue_depth_bytes = metrics.queue_depth_bytes.labels(label)
        self.connected = metrics.peer_connected.labels(label)
        self.connect_attempts = metrics.connect_attempts.labels(label)
        self.connect_failures = metrics.connect_failures.labels(label)
        self.reported_unreachable = metrics.reported_unreachable.labels(label)
