"""The Kafka wire protocol: framing (framing.py), kio codec glue (codec.py), tagged fields
(tagged.py), a produce's batch checks and ListOffsets' look into one batch (records.py), the
protocol's errors (errors.py), the SASL exchange (sasl.py), a connection's authentication
state (session.py), what each API needs authorized (authorization.py), and one handler
module per API family (handlers/).

Everything but the handlers is pure: it may import the standard library, attrs, kio,
chronik_trio.varint, chronik_trio.record_batch, chronik_trio.errors and the pure cluster
layer (sasl.py its ScramCredential, authorization.py its ACLs). Handlers are async functions (request
body, context) -> response body; they may also import trio and the pure layers, and reach
the node through the context (handlers/context.py). Only handlers await.
"""
