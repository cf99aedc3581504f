"""HTTP/2 Raft transport between nodes: a hypercorn ASGI server and one h2 sender per peer.

Carries chronik.transport.RaftBatch frames (proto/transport.proto) over HTTP/2 with prior
knowledge, in cleartext or over mutual TLS (tls.py); serves /health and /metrics on the same
port. docs/transport.md describes the
wire format, the limits, the metrics and the measured figures.

May import: trio, h2, hyperframe, hypercorn, prometheus_client, attrs, protobuf,
chronik_trio.pb and chronik_trio.varint. Not node/ (the node uses this package, never the
other way) nor the pure layers' internals.
"""

from .client import (CONNECT_TIMEOUT_S, PEER_QUEUE_BYTES_MAX, PEER_QUEUE_MESSAGES_MAX,
                     PEER_SNAPSHOTS_MAX,
                     PING_INTERVAL_S, PING_TIMEOUT_S, RECONNECT_BACKOFF_INITIAL_S,
                     RECONNECT_BACKOFF_MAX_S, PeerState)
from .framing import (FRAME_KIND_RAFT_BATCH, FRAME_KIND_SNAPSHOT_CHUNK, FrameDecoder, FrameReceived, FrameTooLarge,
                      FramingError, encode_frame, encode_group_message, encode_raft_batch)
from .metrics import DropReason
from .server import BATCH_PATH, FROM_NODE_HEADER, STREAM_PATH
from .snapshot import (SNAPSHOT_CHUNK_BYTES, SnapshotAssembler, SnapshotRefused,
                       split_snapshot)
from .transport import (FRAME_BYTES_MAX_DEFAULT, SNAPSHOT_BYTES_MAX_DEFAULT, Transport,
                        TransportFailed)

__all__ = [
    "Transport", "TransportFailed", "PeerState", "DropReason",
    "FRAME_BYTES_MAX_DEFAULT", "SNAPSHOT_BYTES_MAX_DEFAULT", "SNAPSHOT_CHUNK_BYTES",
    "PEER_QUEUE_MESSAGES_MAX", "PEER_QUEUE_BYTES_MAX", "PEER_SNAPSHOTS_MAX",
    "RECONNECT_BACKOFF_INITIAL_S", "RECONNECT_BACKOFF_MAX_S", "CONNECT_TIMEOUT_S",
    "PING_INTERVAL_S", "PING_TIMEOUT_S",
    "STREAM_PATH", "BATCH_PATH", "FROM_NODE_HEADER",
    "FRAME_KIND_RAFT_BATCH", "FRAME_KIND_SNAPSHOT_CHUNK", "FrameDecoder", "FrameReceived", "FrameTooLarge", "FramingError",
    "encode_frame", "encode_group_message", "encode_raft_batch",
    "SnapshotAssembler", "SnapshotRefused", "split_snapshot",
]
