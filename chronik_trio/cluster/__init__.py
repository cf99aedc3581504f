"""Pure cluster state machines: the __meta state (brokers, topics, assignments, producer ids).

May import: the standard library, attrs, chronik_trio.pb. No trio, no I/O, no clocks.
"""
