"""The Kafka wire protocol: framing (framing.py), kio codec glue (codec.py), tagged fields
(tagged.py), a produce's batch checks and ListOffsets' look into one batch (records.py), the
protocol's errors (errors.py), and one handler module per API family (handlers/).

Everything but the handlers is pure: it may import the standard library, attrs, kio,
chronik_trio.varint and chronik_trio.record_batch. Handlers are async functions (request
body, context) -> response body; they may also import trio and the pure layers, and reach
the node through the context (handlers/context.py). Only handlers await.
"""
