"""Real-process cluster tests (issue 4): several `chronik-trio node` processes on 127.0.0.1.

`cluster.py` starts, kills, pauses and restarts nodes through nodeharness and reads their logs; the tests
check __meta elections, failover, catch-up by log and by snapshot, exactly-once metadata
commands across a failover, idle stability with 300 partition groups and the Raft port's
resistance to garbage. `measure.py` (`python -m tests.cluster.measure`) produces the figures
in docs/cluster-measurements.md. Imports: nodeharness, tests.brokers, tests.kafka_wire, the stdlib.
"""
