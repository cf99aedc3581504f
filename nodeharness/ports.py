"""The one free-port picker: loopback ports free at the moment, never one this process
handed out before (the OS may offer a port again as soon as the probe socket closes, and a
node started a moment later would then find it taken by its neighbour)."""

from __future__ import annotations

import pathlib
import random
import socket

HOST = "127.0.0.1"
PICK_ATTEMPTS_MAX = 200  # a bound on probing; collisions with handed-out ports are rare
# Consecutive ranges are chosen from here up to the ephemeral range: below, well-known and
# registered ports others may use; inside it, any port can be taken at any moment as the
# local port of some outgoing connection, which made a restarted dev-cluster fail to bind
# its old Raft port.
CONTIGUOUS_LOW = 20000
EPHEMERAL_LOW_DEFAULT = 32768  # Linux's default start of ip_local_port_range
_handed_out: set[int] = set()


def free_ports(count: int, *, contiguous: bool = False) -> list[int]:
    """`count` distinct ports on 127.0.0.1, free now and new to this process.

    With contiguous=True they are consecutive (dev-cluster's layout: Kafka ports, then Raft
    ports, from one base port).

    Raises:
        RuntimeError: no such ports within PICK_ATTEMPTS_MAX probes.
    """
    if contiguous:
        return _contiguous(count)
    socks: list[socket.socket] = []
    try:
        for _ in range(PICK_ATTEMPTS_MAX):
            s = socket.socket()
            s.bind((HOST, 0))  # held open until all are picked, so none repeats
            if s.getsockname()[1] in _handed_out:
                s.close()
                continue
            socks.append(s)
            if len(socks) == count:
                ports = [s.getsockname()[1] for s in socks]
                _handed_out.update(ports)
                return ports
    finally:
        for s in socks:
            s.close()
    raise RuntimeError(f"no {count} fresh free port(s) after {PICK_ATTEMPTS_MAX} probes")


def free_port() -> int:
    return free_ports(1)[0]


def _ephemeral_low() -> int:
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_LOW_DEFAULT


def _contiguous(count: int) -> list[int]:
    # Not a seeded choice: ports are the machine's business, never part of a replayed run.
    rng = random.Random()
    high = _ephemeral_low() - count
    for _ in range(PICK_ATTEMPTS_MAX):
        base = rng.randrange(CONTIGUOUS_LOW, high) if high > CONTIGUOUS_LOW else free_ports(1)[0]
        ports = list(range(base, base + count))
        if base + count <= 65536 and not set(ports) & _handed_out and _all_bindable(ports):
            _handed_out.update(ports)
            return ports
    raise RuntimeError(f"no {count} consecutive free ports after {PICK_ATTEMPTS_MAX} probes")


def _all_bindable(ports: list[int]) -> bool:
    """Whether a node could listen on every port now (bound as it binds them: SO_REUSEADDR,
    so a port in TIME_WAIT counts as free)."""
    socks = []
    try:
        for port in ports:
            s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()
