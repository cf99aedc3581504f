"""A SASL fuzzer: mutated PLAIN and SCRAM exchanges against a live node's SASL listener,
which must refuse every one (an answer with an error code, or a closed connection), grant
no access, and keep serving.

Each attempt is one connection: SaslHandshake v1 (its mechanism sometimes mutated), then
the exchange a real client would send with one of its tokens mutated (bits flipped, bytes
cut, added or replaced, a token of random bytes) -- for SCRAM the client-final message is
computed from the node's real server-first message by a small RFC 5802 client here, so the
mutation is the only thing wrong with it -- and finally a Metadata request, which must never
be answered. A health check (a SCRAM login that works and a plaintext produce/fetch) runs
every HEALTH_EVERY attempts and at the end.

    python -m tests.security.fuzz_sasl --port 9095 --plain-port 9092 --attempts 100000 --user alice --password s3cret
"""

from __future__ import annotations

import argparse
import base64
import random
import socket
import time

from chronik_trio.kafka.sasl import SaslFailed, ScramClient
from tests.kafka import live
from tests.kafka_wire import ConnectionClosed, KafkaWire

SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 17, 36, 3
HEALTH_EVERY = 250
SOCKET_TIMEOUT_S = 10.0
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def mutate(rng: random.Random, token: bytes) -> bytes:
    """A token that differs from `token`."""
    while True:
        kind = rng.randrange(6)
        data = bytearray(token)
        if kind == 0 and data:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            del data[rng.randrange(len(data)):]
        elif kind == 2:
            data[rng.randrange(len(data) + 1):0] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3 and data:
            start = rng.randrange(len(data))
            data[start:start + rng.randint(1, 8)] = rng.choice([b"", b",", b"=", b"\0", b"=2C", b"\xff"])
        elif kind == 4:
            data = bytearray(rng.randbytes(rng.randint(0, 300)))
        else:
            data = bytearray(token + rng.choice([b",", b",e=x", b"\0", b",p=" + base64.b64encode(rng.randbytes(32))]))
        if bytes(data) != token:
            return bytes(data)


def _authenticate(conn: KafkaWire, token: bytes):
    return conn.request(SASL_AUTHENTICATE, {"auth_bytes": token}, version=2)


def login(port: int, mechanism: str, user: str, password: str, *, rng: random.Random | None = None) -> bool:
    """One exchange; with rng, one of its steps mutated. True if the node granted access
    (a Metadata request after it was answered)."""
    conn = KafkaWire.connect(port, timeout=SOCKET_TIMEOUT_S, negotiate=False)
    try:
        mutated_step = rng.randrange(3) if rng is not None else -1
        offered = mechanism if mutated_step != 0 else mutate(rng, mechanism.encode()).decode("latin-1")
        if int(conn.request(SASL_HANDSHAKE, {"mechanism": offered}, version=1).error_code) != 0:
            return _granted(conn)
        if mechanism == "PLAIN":
            token = b"\0" + user.encode() + b"\0" + password.encode()
            answer = _authenticate(conn, mutate(rng, token) if mutated_step > 0 else token)
        else:
            client = ScramClient(mechanism, user, password, base64.b64encode(random.Random(1).randbytes(18)).decode())
            first = client.first()
            answer = _authenticate(conn, mutate(rng, first) if mutated_step == 1 else first)
            if int(answer.error_code) == 0:
                try:
                    final = client.final(answer.auth_bytes)
                except SaslFailed:  # the mutation changed our nonce: the server's is not ours
                    return _granted(conn)
                answer = _authenticate(conn, mutate(rng, final) if mutated_step == 2 else final)
        if int(answer.error_code) != 0:
            return _granted(conn)
        return _granted(conn)
    except (ConnectionClosed, ConnectionError, socket.timeout, OSError):
        return False
    finally:
        conn.close()


def _granted(conn: KafkaWire) -> bool:
    try:
        conn.request(METADATA, {"topics": None}, version=12)
        return True
    except (ConnectionClosed, ConnectionError, OSError):
        return False


def check_health(plain_port: int, sasl_port: int, user: str, password: str) -> None:
    assert login(sasl_port, "SCRAM-SHA-512", user, password), "a correct SCRAM login was refused"
    live.round_trip(plain_port, "fuzz-sasl-alive")


def run(sasl_port: int, plain_port: int, user: str, password: str, *, attempts: int, seconds: float,
        seed: int) -> int:
    """Attempts made; raises AssertionError on any access granted or failed health check."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    done = 0
    while done < attempts and time.monotonic() < deadline:
        mechanism = rng.choice(MECHANISMS)
        assert not login(sasl_port, mechanism, user, password, rng=rng), (
            f"seed {seed}: a mutated {mechanism} exchange was granted access (attempt {done})")
        done += 1
        if done % HEALTH_EVERY == 0:
            check_health(plain_port, sasl_port, user, password)
    check_health(plain_port, sasl_port, user, password)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="a SASL_PLAINTEXT listener")
    parser.add_argument("--plain-port", type=int, required=True, help="a PLAINTEXT listener (health checks)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args(argv)
    started = time.monotonic()
    done = run(args.port, args.plain_port, args.user, args.password, attempts=args.attempts,
               seconds=args.seconds, seed=args.seed)
    print(f"seed {args.seed}: {done} mutated exchanges refused in {time.monotonic() - started:.0f} s; node healthy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
