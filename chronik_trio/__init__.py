"""chronik-trio: a Kafka-compatible message broker on trio; every partition is a Raft group.

Layering (arrows point down only, see docs/architecture.md):
cli -> node -> (transport, kafka, storage) -> (cluster, partition) -> raft.
The pure packages (raft, partition, cluster, kafka framing) import no trio and do no I/O.
"""

__version__ = "0.1.0"
