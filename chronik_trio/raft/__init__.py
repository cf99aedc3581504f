"""Pure sans-I/O Raft (RawNode with the etcd-raft / raft-rs contract).

May import: the standard library and chronik_trio.pb (generated protobuf) only.
Never trio, sockets, files or clocks: time is tick(), randomness an injected random.Random.
"""
