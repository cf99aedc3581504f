"""Pure partition logic: the high watermark from committed entries, the leader's offset
reservations, the ISR rule (producer state comes with idempotence).

May import: the standard library and attrs. No trio, no I/O, no clocks (time is passed in).
"""
