"""Pure cluster state machine: the replicated __meta state (brokers, topics with their
configs, partition assignments and leaders, producer-id blocks, transactional ids, SCRAM
credentials, ACLs) and the errors its commands answer with, in meta.py; ACLs and the
authorizer's decision in acls.py.

May import: the standard library, attrs, kio's ErrorCode and chronik_trio.pb. No trio, no
I/O, no clocks.
"""
