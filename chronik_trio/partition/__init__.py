"""Kafka over Raft, the pure part of a partition: the high watermark from committed entries,
the leader's offset reservations, the ISR rule and the BatchState protocol (state.py), and
the idempotent producers' table and sequence rules (producers.py).

May import: the standard library, attrs, chronik_trio.record_batch and chronik_trio.pb. No
trio, no I/O, no clocks (time is passed in).
"""
