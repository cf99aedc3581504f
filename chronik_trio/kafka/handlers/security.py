"""SaslHandshake (17), SaslAuthenticate (36), DescribeUserScramCredentials (50) and
AlterUserScramCredentials (51).

The first two drive the connection's Session (kafka/session.py) through its SASL exchange
(kafka/sasl.py); a failure is answered with its error code and the connection loop then
closes the connection. The last two read and change the SCRAM credentials in __meta.
"""

from __future__ import annotations

import base64
import logging

from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError
from chronik_trio.pb import meta_pb2

from ..codec import build, response_schema
from ..sasl import (SCRAM_HASHES, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, SCRAM_MECHANISM_TYPES, SaslFailed,
                    SaslServer, SaslState, credential_from_salted_password)
from ..session import AuthState, current
from .common import error_code_of

log = logging.getLogger(__name__)

SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY = 17, 36
DESCRIBE_SCRAM_KEY, ALTER_SCRAM_KEY = 50, 51
NONCE_BYTES = 18  # 144 bits of server nonce, base64 without padding
# What a failed client is told (the reason is logged, not sent: it would say which users exist).
AUTHENTICATION_FAILED_MESSAGE = "Authentication failed: invalid credentials or SASL exchange"


async def handle_sasl_handshake(body, ctx, version: int):
    session = current()
    response = response_schema(SASL_HANDSHAKE_KEY, version)
    if session.state is not AuthState.NEEDS_SASL:
        if session.authenticating:
            session.fail("SaslHandshake out of turn")
        return build(response, error_code=ErrorCode.illegal_sasl_state, mechanisms=list(session.mechanisms))
    if body.mechanism not in session.mechanisms:
        session.fail(f"unsupported SASL mechanism {body.mechanism[:64]!r} (enabled: {', '.join(session.mechanisms)})")
        return build(response, error_code=ErrorCode.unsupported_sasl_mechanism, mechanisms=list(session.mechanisms))
    nonce = base64.b64encode(ctx.random_bytes(NONCE_BYTES)).decode()
    session.sasl = SaslServer(body.mechanism, lambda user: ctx.meta.scram_credentials.get(user, {}), nonce)
    session.state = AuthState.HANDSHAKEN
    return build(response, error_code=0, mechanisms=list(session.mechanisms))


async def handle_sasl_authenticate(body, ctx, version: int):
    session = current()
    response = response_schema(SASL_AUTHENTICATE_KEY, version)
    if session.state is not AuthState.HANDSHAKEN:
        if session.authenticating:
            session.fail("SaslAuthenticate before SaslHandshake")
        return build(response, error_code=ErrorCode.illegal_sasl_state,
                     error_message="SaslAuthenticate is not expected now", auth_bytes=b"")
    try:
        token = session.sasl.receive(body.auth_bytes)
    except SaslFailed as exc:
        session.fail(f"{session.sasl.mechanism}: {exc}")
        return build(response, error_code=exc.error_code, error_message=AUTHENTICATION_FAILED_MESSAGE,
                     auth_bytes=b"")
    if session.sasl.state is SaslState.COMPLETE:
        session.principal = f"User:{session.sasl.principal}"
        session.state, session.sasl = AuthState.OPEN, None
        log.info("authenticated %s on listener %s", session.principal, session.listener)
    return build(response, error_code=0, error_message=None, auth_bytes=token, session_lifetime=0)


async def handle_describe_user_scram_credentials(body, ctx, version: int):
    store = ctx.meta.scram_credentials
    names = sorted(store) if body.users is None else [u.name for u in body.users]
    types = {name: kind for kind, name in SCRAM_MECHANISM_TYPES.items()}
    results, seen = [], set()
    for name in names:
        if name in seen:
            results.append({"user": name, "error_code": ErrorCode.duplicate_resource,
                            "error_message": f"user {name!r} asked for twice"})
            continue
        seen.add(name)
        credentials = store.get(name)
        if not credentials:
            results.append({"user": name, "error_code": ErrorCode.resource_not_found,
                            "error_message": f"attempt to describe a user credential that does not exist: {name}"})
            continue
        results.append({"user": name, "error_code": 0, "credential_infos": [
            {"mechanism": types[c.mechanism], "iterations": c.iterations} for c in credentials.values()]})
    return build(response_schema(DESCRIBE_SCRAM_KEY, version), error_code=0, results=results)


def _check_alteration(name: str, mechanism_type: int, iterations: int | None) -> str:
    """The mechanism's name, or raise BrokerError with Kafka's code for what is wrong."""
    if not name:
        raise BrokerError("user name is empty", ErrorCode.unacceptable_credential)
    mechanism = SCRAM_MECHANISM_TYPES.get(mechanism_type)
    if mechanism is None:
        raise BrokerError(f"unknown SCRAM mechanism type {mechanism_type}", ErrorCode.unsupported_sasl_mechanism)
    if iterations is not None and not SCRAM_ITERATIONS_MIN <= iterations <= SCRAM_ITERATIONS_MAX:
        raise BrokerError(f"iterations {iterations} outside [{SCRAM_ITERATIONS_MIN}, {SCRAM_ITERATIONS_MAX}]",
                          ErrorCode.unacceptable_credential)
    return mechanism


def _command(kind: str, item) -> meta_pb2.MetaCommand:
    if kind == "deletion":
        mechanism = _check_alteration(item.name, item.mechanism, None)
        return meta_pb2.MetaCommand(scram_credential_deleted=meta_pb2.ScramCredentialDeleted(
            user=item.name, mechanism=mechanism))
    mechanism = _check_alteration(item.name, item.mechanism, item.iterations)
    if not item.salt or len(item.salted_password) != len(credential_from_salted_password(
            mechanism, item.iterations, b"", b"").stored_key):
        raise BrokerError("salt is empty or salted password has the wrong length for "
                          f"{SCRAM_HASHES[mechanism]}", ErrorCode.unacceptable_credential)
    c = credential_from_salted_password(mechanism, item.iterations, item.salt, item.salted_password)
    return meta_pb2.MetaCommand(scram_credential_upserted=meta_pb2.ScramCredentialUpserted(
        user=item.name, mechanism=mechanism, iterations=c.iterations, salt=c.salt,
        stored_key=c.stored_key, server_key=c.server_key))


async def handle_alter_user_scram_credentials(body, ctx, version: int):
    by_user: dict[str, list] = {}
    for kind, items in (("deletion", body.deletions), ("upsertion", body.upsertions)):
        for item in items:
            by_user.setdefault(item.name, []).append((kind, item))
    results = []
    for name, alterations in by_user.items():
        try:
            if len({item.mechanism for _, item in alterations}) < len(alterations):
                raise BrokerError(f"user {name!r} has more than one alteration of one mechanism",
                                  ErrorCode.duplicate_resource)
            commands = [_command(kind, item) for kind, item in alterations]  # all checked first
            for command in commands:
                applied = await ctx.propose_meta(command)
                if not applied.ok:
                    raise applied.error
        except BrokerError as exc:
            results.append({"user": name, "error_code": error_code_of(exc), "error_message": str(exc)})
            continue
        log.info("SCRAM credentials of user %r altered", name)
        results.append({"user": name, "error_code": 0})
    return build(response_schema(ALTER_SCRAM_KEY, version), results=results)
