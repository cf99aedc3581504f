"""The Kafka wire protocol: framing (framing.py, pure), kio codec glue (codec.py, pure),
record-batch headers (records.py, pure) and one handler module per API family (handlers/).

Handlers are async functions (request body, context) -> response body; the context is the
node (see handlers/context.py for what they may use). Only handlers may await.
"""
