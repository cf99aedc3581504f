"""The trio runtime of one broker process. Node (node.py) wires the Raft groups
(raft_group.py, raft_runtime.py), __meta (meta_group.py), the partition replicas
(partition_group.py), the group coordinator (group_coordinator.py), the Kafka listener
(kafka_server.py) and the transport; config.py is its configuration, metrics.py its
Prometheus collector, faults.py the chaos harness's fault-injecting Node, and main.py the
`chronik-trio node` command.

May import every other chronik_trio package. The Disk and the wall clock can be given by
the caller (Node uses the real filesystem by default; FaultInjectingNode a FaultyDisk); it
opens its own TCP listeners and reads trio's clock, so a MockClock drives its timers.
"""
