"""Who is on the other end of one client connection, and how far its SASL exchange got.

The connection loop (node/kafka_server.py) makes one Session per connection and sets it in
SESSION before it starts any request's task (trio tasks copy the context they are started
from), so a handler reads the connection it answers on with `current()`: the listener (for
the endpoints Metadata advertises) and the principal.

Authentication states (a table; anything else fails the connection):

    state           request                         -> state
    OPEN            any                                OPEN         (PLAINTEXT, SSL listeners)
    NEEDS_SASL      ApiVersions                        NEEDS_SASL
    NEEDS_SASL      SaslHandshake (known mechanism)    HANDSHAKEN
    HANDSHAKEN      SaslAuthenticate (more to come)    HANDSHAKEN
    HANDSHAKEN      SaslAuthenticate (complete)        OPEN
    any other pair                                     FAILED: answered, then closed

May import: the standard library, attrs and kafka.sasl.
"""

from __future__ import annotations

import contextvars
import enum

import attrs

from .sasl import SaslServer

API_VERSIONS_KEY = 18
SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36
ANONYMOUS = "User:ANONYMOUS"  # Kafka's principal for an unauthenticated connection


class AuthState(enum.Enum):
    OPEN = "open"  # requests are served (authenticated, or no authentication asked)
    NEEDS_SASL = "needs_sasl"
    HANDSHAKEN = "handshaken"
    FAILED = "failed"


# state -> the API keys served in it (before OPEN only the SASL exchange and ApiVersions)
ALLOWED_BEFORE_OPEN = {
    AuthState.NEEDS_SASL: frozenset({API_VERSIONS_KEY, SASL_HANDSHAKE_KEY}),
    AuthState.HANDSHAKEN: frozenset({API_VERSIONS_KEY, SASL_AUTHENTICATE_KEY}),
    AuthState.FAILED: frozenset(),
}


@attrs.define
class Session:
    listener: str | None = None  # None: the node's only, default listener
    security_protocol: str = "PLAINTEXT"
    # "User:NAME" (SASL), "User:<certificate subject>" (SSL with a client certificate), or ANONYMOUS
    principal: str = ANONYMOUS
    state: AuthState = AuthState.OPEN
    mechanisms: tuple[str, ...] = ()  # the SASL mechanisms the listener offers
    sasl: SaslServer | None = None
    failure: str | None = None  # why the connection is being closed (for its log line)
    host: str = ""  # the client's address, as ACLs name hosts

    @classmethod
    def for_listener(cls, name: str | None, protocol: str, mechanisms: tuple[str, ...],
                     principal: str = ANONYMOUS, host: str = "") -> "Session":
        needs_sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        return cls(name, protocol, principal, AuthState.NEEDS_SASL if needs_sasl else AuthState.OPEN,
                   mechanisms, host=host)

    @property
    def authenticating(self) -> bool:
        return self.state is not AuthState.OPEN

    def allows(self, api_key: int) -> bool:
        return self.state is AuthState.OPEN or api_key in ALLOWED_BEFORE_OPEN[self.state]

    def fail(self, reason: str) -> None:
        self.state, self.failure, self.sasl = AuthState.FAILED, reason, None


SESSION: contextvars.ContextVar[Session | None] = contextvars.ContextVar("chronik_session", default=None)


def current() -> Session:
    """The session of the connection being answered (a default, open one outside of any)."""
    return SESSION.get() or _DEFAULT


_DEFAULT = Session()
