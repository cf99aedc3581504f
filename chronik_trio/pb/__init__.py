"""Generated protobuf code for proto/*.proto. Do not edit; regenerate with `python proto/generate.py`.

Imports only protobuf; every layer may import it."""
