"""The SASL exchange of one connection as a pure state machine: tokens in, tokens out.

PLAIN (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as
Kafka speaks them inside SaslAuthenticate. No I/O, no clock: the caller gives the server
nonce and a lookup of stored credentials, and feeds client tokens to `receive()`.

States and moves (anything else is a failure, and a failed exchange stays failed):

    mechanism      state                token             -> answer                 new state
    PLAIN          EXPECT_FIRST         authzid\\0user\\0pw  -> b""                     COMPLETE
    SCRAM-SHA-*    EXPECT_FIRST         client-first      -> server-first           EXPECT_FINAL
    SCRAM-SHA-*    EXPECT_FINAL         client-final      -> server-final (v=...)   COMPLETE

The client side of SCRAM (ScramClient) is here too, for the admin tool and the tests.

PLAIN users are checked against the same SCRAM credentials (any mechanism the user has):
a password's salted hash is recomputed with the stored salt and iteration count and
compared with the stored key, so one store serves both mechanisms and no password is kept.

May import: the standard library, kio's ErrorCode, chronik_trio.errors and cluster.meta's
ScramCredential (what __meta stores).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import typing

from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import ScramCredential
from chronik_trio.errors import BrokerError

PLAIN = "PLAIN"
SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_512 = "SCRAM-SHA-512"
# mechanism -> hashlib name; Kafka's ScramMechanism type numbers are 1 and 2
SCRAM_HASHES = {SCRAM_SHA_256: "sha256", SCRAM_SHA_512: "sha512"}
SCRAM_MECHANISM_TYPES = {1: SCRAM_SHA_256, 2: SCRAM_SHA_512}
MECHANISMS = (PLAIN, SCRAM_SHA_256, SCRAM_SHA_512)
# Kafka's bounds on SCRAM iterations (ScramMechanism.minIterations / maxIterations).
SCRAM_ITERATIONS_MIN = 4096
SCRAM_ITERATIONS_MAX = 16384
TOKEN_BYTES_MAX = 4096  # a SASL token of a user name, nonce and proof is ~200 bytes
USER_NAME_BYTES_MAX = 256


class SaslFailed(BrokerError):
    """Authentication failed (bad password, unknown user, malformed token); the connection
    is closed after the answer. The message is logged, not sent: the client gets a generic one."""

    error_code = ErrorCode.sasl_authentication_failed


class SaslState(enum.Enum):
    EXPECT_FIRST = "expect_first"
    EXPECT_FINAL = "expect_final"
    COMPLETE = "complete"
    FAILED = "failed"


CredentialLookup = typing.Callable[[str], typing.Mapping[str, ScramCredential]]
"""user name -> its credentials by mechanism (empty when the user is unknown)."""


def _hmac(hash_name: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hash_name).digest()


def credential_from_salted_password(mechanism: str, iterations: int, salt: bytes,
                                    salted_password: bytes) -> ScramCredential:
    """What AlterUserScramCredentials sends (the client salts and hashes) -> what is stored."""
    hash_name = SCRAM_HASHES[mechanism]
    client_key = _hmac(hash_name, salted_password, b"Client Key")
    return ScramCredential(mechanism, iterations, salt, hashlib.new(hash_name, client_key).digest(),
                           _hmac(hash_name, salted_password, b"Server Key"))


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's Hi(): PBKDF2 with the mechanism's HMAC."""
    return hashlib.pbkdf2_hmac(SCRAM_HASHES[mechanism], password.encode(), salt, iterations)


def credential_from_password(mechanism: str, password: str, salt: bytes, iterations: int) -> ScramCredential:
    return credential_from_salted_password(mechanism, iterations, salt,
                                           salted_password(mechanism, password, salt, iterations))


def password_matches(credential: ScramCredential, password: str) -> bool:
    computed = credential_from_password(credential.mechanism, password, credential.salt, credential.iterations)
    return hmac.compare_digest(computed.stored_key, credential.stored_key)


def _sasl_name(value: str) -> str:
    """RFC 5802 saslname: ',' and '=' arrive as '=2C' and '=3D'; any other '=' is invalid."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "=":
            code = value[i:i + 3]
            if code not in ("=2C", "=3D"):
                raise SaslFailed(f"invalid escape {code!r} in a SCRAM user name")
            out.append("," if code == "=2C" else "=")
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _canonical_b64decode(text: str, what: str) -> bytes:
    """Strict base64: one spelling per value. A decoder that ignores the unused low bits of
    the last character takes up to 16 spellings of one proof (RFC 4648 section 3.5 lets a
    decoder refuse them; found by tests/security/fuzz_sasl.py, seed 1818)."""
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode() != text:
        raise SaslFailed(f"{what} is not canonical base64")
    return data


def _attributes(message: str, where: str) -> dict[str, str]:
    attributes = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise SaslFailed(f"malformed SCRAM {where}: attribute {part[:20]!r}")
        attributes.setdefault(key, value)
    return attributes


class SaslServer:
    """One SASL exchange, server side. receive() answers each client token or raises
    SaslFailed; `principal` is the user once `state` is COMPLETE."""

    def __init__(self, mechanism: str, credentials: CredentialLookup, nonce: str) -> None:
        """nonce: the server's part of the SCRAM nonce, printable ASCII without ','
        (the caller draws it from its random source, e.g. base64 of 18 random bytes)."""
        assert mechanism in MECHANISMS, mechanism
        self.mechanism = mechanism
        self.state = SaslState.EXPECT_FIRST
        self.principal: str | None = None
        self._credentials = credentials
        self._server_nonce = nonce
        self._user = ""
        self._gs2_header = ""
        self._credential: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def receive(self, token: bytes) -> bytes:
        if len(token) > TOKEN_BYTES_MAX:
            return self._fail(f"token of {len(token)} bytes (at most {TOKEN_BYTES_MAX})")
        step = _STEPS.get((self.mechanism == PLAIN, self.state))
        if step is None:
            return self._fail(f"no token expected in state {self.state.value}")
        try:
            return step(self, token)
        except SaslFailed:
            self.state = SaslState.FAILED
            raise
        except (UnicodeDecodeError, ValueError) as exc:  # base64 and utf-8 of client bytes
            return self._fail(f"malformed token: {type(exc).__name__}: {exc}")

    def _fail(self, reason: str) -> bytes:
        self.state = SaslState.FAILED
        raise SaslFailed(reason)

    def _plain(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            return self._fail("PLAIN token is not authzid NUL user NUL password")
        authzid, user, password = (p.decode("utf-8") for p in parts)
        if not user or len(user) > USER_NAME_BYTES_MAX:
            return self._fail("PLAIN token has an empty or overlong user name")
        if authzid and authzid != user:
            return self._fail(f"user {user!r} may not act as {authzid!r}")
        known = self._credentials(user)
        if not known or not any(password_matches(c, password) for c in known.values()):
            return self._fail(f"invalid credentials for user {user!r}")
        self.principal, self.state = user, SaslState.COMPLETE
        return b""

    def _client_first(self, token: bytes) -> bytes:
        message = token.decode("utf-8")
        gs2_flag, sep, rest = message.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2 or gs2_flag not in ("n", "y"):
            return self._fail(f"client-first message without a supported GS2 header ({gs2_flag[:3]!r})")
        attributes = _attributes(bare, "client-first message")
        if "n" not in attributes or "r" not in attributes or not attributes["r"]:
            return self._fail("client-first message without a user name or nonce")
        if set(attributes) - {"n", "r"}:
            return self._fail(f"unsupported SCRAM extensions {sorted(set(attributes) - {'n', 'r'})}")
        user = _sasl_name(attributes["n"])
        if authzid and authzid != "a=" + attributes["n"]:
            return self._fail(f"user {user!r} may not act as {authzid!r}")
        credential = self._credentials(user).get(self.mechanism) if user else None
        if credential is None:
            return self._fail(f"no {self.mechanism} credential for user {user!r}")
        self._user, self._credential, self._gs2_header = user, credential, f"{gs2_flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = attributes["r"] + self._server_nonce
        self._server_first = (f"r={self._nonce},s={base64.b64encode(credential.salt).decode()},"
                              f"i={credential.iterations}")
        self.state = SaslState.EXPECT_FINAL
        return self._server_first.encode()

    def _client_final(self, token: bytes) -> bytes:
        message = token.decode("utf-8")
        without_proof, sep, proof_part = message.rpartition(",p=")
        if not sep:
            return self._fail("client-final message without a proof")
        attributes = _attributes(without_proof, "client-final message")
        if attributes.get("r") != self._nonce:
            return self._fail("client-final message with the wrong nonce")
        if _canonical_b64decode(attributes.get("c", ""), "channel binding") != self._gs2_header.encode():
            return self._fail("client-final message with the wrong channel binding")
        credential = self._credential
        hash_name = SCRAM_HASHES[self.mechanism]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        proof = _canonical_b64decode(proof_part, "client proof")
        signature = _hmac(hash_name, credential.stored_key, auth_message)
        if len(proof) != len(signature):
            return self._fail("client proof of the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.new(hash_name, client_key).digest(), credential.stored_key):
            return self._fail(f"invalid credentials for user {self._user!r}")
        self.principal, self.state = self._user, SaslState.COMPLETE
        server_signature = _hmac(hash_name, credential.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)


# (is PLAIN, state) -> step
_STEPS = {
    (True, SaslState.EXPECT_FIRST): SaslServer._plain,
    (False, SaslState.EXPECT_FIRST): SaslServer._client_first,
    (False, SaslState.EXPECT_FINAL): SaslServer._client_final,
}


class ScramClient:
    """RFC 5802's client of one SCRAM exchange: first() -> server-first -> final(...) ->
    server-final -> verify(...). Raises SaslFailed when the server's answers are wrong."""

    def __init__(self, mechanism: str, user: str, password: str, nonce: str) -> None:
        self.mechanism, self._password = mechanism, password
        name = user.replace("=", "=3D").replace(",", "=2C")
        self._bare = f"n={name},r={nonce}"
        self._nonce = nonce
        self._server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self._bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8", "replace")
        attributes = _attributes(text, "server-first message")
        if not attributes.get("r", "").startswith(self._nonce) or "s" not in attributes or "i" not in attributes:
            raise SaslFailed(f"unexpected SCRAM server-first message {text[:80]!r}")
        hash_name = SCRAM_HASHES[self.mechanism]
        salted = salted_password(self.mechanism, self._password, base64.b64decode(attributes["s"]),
                                 int(attributes["i"]))
        client_key = _hmac(hash_name, salted, b"Client Key")
        without_proof = f"c=biws,r={attributes['r']}"
        auth_message = f"{self._bare},{text},{without_proof}".encode()
        signature = _hmac(hash_name, hashlib.new(hash_name, client_key).digest(), auth_message)
        self._server_signature = _hmac(hash_name, _hmac(hash_name, salted, b"Server Key"), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        expected = b"v=" + base64.b64encode(self._server_signature)
        if not hmac.compare_digest(server_final, expected):
            raise SaslFailed("the server's SCRAM signature does not match: not the server that knows the user")
