"""Pure partition state: applying committed entries gives offsets, high watermark, producer state.

May import: the standard library, attrs, chronik_trio.kafka.records (pure batch header code).
No trio, no I/O, no clocks.
"""
