"""chronik-trio: a Kafka-compatible message broker on trio; every partition is a Raft group.

The layers, lowest first. A package may import the layers listed before it and the shared
pieces below, never a layer listed after it; partition/, cluster/, group/ and storage/ are
one layer and import none of each other (docs/architecture.md draws the arrows):

  raft/                          pure sans-I/O Raft (RawNode): the standard library and pb only
  partition/ cluster/ group/     pure state machines: a partition's offsets, ISR and
                                 producers; the __meta cluster state; consumer groups
  storage/                       durable logs, hard state and snapshots behind the Disk seam
                                 (blocking file I/O, no trio)
  kafka/                         the Kafka wire protocol and one handler module per API family
  transport/                     HTTP/2 between nodes
  node/                          the trio runtime of one process: wires the layers before it
  cli.py                         the `chronik-trio` command

Shared by every layer: pb/ (generated protobuf code), varint.py and record_batch.py (the one
reader of Kafka RecordBatch headers); they import nothing of the layers. raft/, partition/,
cluster/, group/ and kafka/'s framing and codec import no trio and do no I/O. The other
`chronik-trio` commands (admin, dev-cluster, bench) are clients of the broker, not part of it.
"""

__version__ = "0.1.0"
