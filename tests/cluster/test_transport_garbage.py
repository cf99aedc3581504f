"""Garbage sent to a real node's Raft port does not stop it, and the cluster still commits
metadata afterwards (issue 4).

Hypothesis draws bounded lists of attacks, each sent over a fresh raw TCP socket on
127.0.0.1 to the __meta leader's Raft port: random bytes; the HTTP/2 prior-knowledge
preface followed by garbage; HTTP/2 frames cut short or claiming the largest length;
HTTP/2 requests (built with the sans-I/O h2) to the Raft routes whose bodies hold garbage,
cut-off or huge-length transport frames; and an HTTP/1.1 request claiming a huge body.
The from-node headers name no cluster member, so no drawn byte string can pass as a
legitimate peer's Raft message. tests/transport/test_bad_input.py covers the same ground
in-process; this runs the installed node.
"""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cluster.cluster import ClusterProcesses, create_until_committed
from tests.cluster.test_election import assert_one_leader_per_term

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # empty SETTINGS, stream 0
H2_LENGTH_MAX = 2**24 - 1
STREAM_PATH, BATCH_PATH = "/raft/v1/stream", "/raft/v1/batch"
FRAME_KIND_RAFT_BATCH, FRAME_KIND_SNAPSHOT_CHUNK = 1, 2
EXAMPLES = 60
ATTACKS_PER_EXAMPLE_MAX = 4
ANSWER_WAIT_S = 0.05  # read whatever the node answers for this long, then hang up
SOCKET_TIMEOUT_S = 2.0

garbage = st.binary(max_size=2048)
not_a_member = st.sampled_from([b"99", b"99", b"99", b"4", b"0", b"x"])  # 99, 4: past the header check


def h2_frame(length: int, kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", length)[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def transport_frame(kind: int, length: int, payload: bytes) -> bytes:
    return struct.pack(">BI", kind, length) + payload


def h2_request(path: str, from_node: bytes, body: bytes, end: bool) -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "http"),
                          (":authority", "127.0.0.1"), ("chronik-from-node", from_node)])
    conn.send_data(1, body, end_stream=end)
    return conn.data_to_send()


transport_bodies = st.one_of(
    garbage,
    st.builds(lambda k, p: transport_frame(k, len(p), p), st.integers(0, 255), garbage),
    st.builds(lambda p: transport_frame(FRAME_KIND_RAFT_BATCH, len(p) + 100, p), garbage),
    st.builds(lambda k: transport_frame(k, 2**32 - 1, b""),
              st.sampled_from([FRAME_KIND_RAFT_BATCH, FRAME_KIND_SNAPSHOT_CHUNK, 7])),
)
attacks = st.one_of(
    garbage,
    garbage.map(lambda g: PREFACE + g),
    st.builds(lambda n, g: PREFACE + SETTINGS_FRAME + h2_frame(len(g) + n, 0, 0, 1, g),
              st.integers(1, 10_000), garbage),
    st.builds(lambda kind: PREFACE + SETTINGS_FRAME + h2_frame(H2_LENGTH_MAX, kind, 0, 1, b""),
              st.integers(0, 10)),
    st.builds(lambda cut, data: data[:cut],
              st.integers(0, 200), st.builds(h2_request, st.sampled_from([STREAM_PATH, BATCH_PATH]),
                                             not_a_member, transport_bodies, st.booleans())),
    st.builds(h2_request, st.sampled_from([STREAM_PATH, BATCH_PATH, "/nowhere"]), not_a_member,
              transport_bodies, st.booleans()),
    st.builds(lambda g: b"POST /raft/v1/batch HTTP/1.1\r\nHost: x\r\nchronik-from-node: 99\r\n"
                        b"Content-Length: 99999999999\r\n\r\n" + g, garbage),
)


def send_attack(port: int, data: bytes) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as sock:
            sock.sendall(data)
            sock.settimeout(ANSWER_WAIT_S)
            try:
                sock.recv(65536)
            except (socket.timeout, OSError):
                pass
    except (ConnectionResetError, BrokenPipeError):
        pass  # the node hung up on us: that is a fine answer to garbage


@pytest.mark.timeout(180)
def test_raft_port_survives_garbage_and_cluster_still_commits(cluster_factory):
    cluster = cluster_factory(3).start()
    target = cluster.wait_meta_leader()
    port = cluster.raft_ports[target]
    sent = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(st.lists(attacks, min_size=1, max_size=ATTACKS_PER_EXAMPLE_MAX))
    def attack(datas: list[bytes]) -> None:
        for data in datas:
            send_attack(port, data)
            sent.append(len(data))
        assert cluster.is_running(target), f"node {target} died:\n{cluster.current_log(target)[-3000:]}"

    attack()

    assert all(cluster.is_running(n) for n in cluster.ids), cluster.log(target)[-3000:]
    dropped = cluster.raft_metric(target, "chronik_transport_dropped_total")
    print(f"{len(sent)} attacks ({sum(sent)} bytes) on node {target}'s Raft port; "
          f"{dropped:.0f} drops counted")
    for n in cluster.ids:  # every node, the attacked one first, still gets a command committed
        create_until_committed(cluster, [n], f"after-garbage-{n}")
    assert_one_leader_per_term(cluster)
