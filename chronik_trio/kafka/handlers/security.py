"""SaslHandshake (17), SaslAuthenticate (36), DescribeUserScramCredentials (50) and
AlterUserScramCredentials (51).

The first two drive the connection's Session (kafka/session.py) through its SASL exchange
(kafka/sasl.py); a failure is answered with its error code and the connection loop then
closes the connection. The last two read and change the SCRAM credentials in __meta.
"""

from __future__ import annotations

import base64
import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.acls import Acl, AclError, AclFilter, Operation, PatternType, Permission, ResourceType, check_acl
from chronik_trio.cluster.meta import acl_binding
from chronik_trio.errors import BrokerError
from chronik_trio.pb import meta_pb2

from ..codec import build, response_schema
from ..sasl import (PLAIN, SCRAM_HASHES, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, SCRAM_MECHANISM_TYPES, SaslFailed,
                    SaslServer, SaslState, credential_from_salted_password)
from ..session import AuthState, current
from .common import error_code_of

log = logging.getLogger(__name__)

SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY = 17, 36
DESCRIBE_SCRAM_KEY, ALTER_SCRAM_KEY = 50, 51
DESCRIBE_ACLS_KEY, CREATE_ACLS_KEY, DELETE_ACLS_KEY = 29, 30, 31
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
        if session.sasl.mechanism == PLAIN:
            # PLAIN recomputes a salted hash (PBKDF2, 4096-16384 rounds, milliseconds of CPU):
            # off the event loop, so a flood of logins does not stall every other connection.
            token = await trio.to_thread.run_sync(session.sasl.receive, body.auth_bytes)
        else:
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


# --- ACLs (cluster/acls.py) --------------------------------------------------------------------

def _enum(cls, value: int):
    try:
        return cls(int(value))
    except ValueError:
        raise AclError(f"unknown {cls.__name__} {int(value)}") from None


def _filter(f) -> AclFilter:
    return AclFilter(_enum(ResourceType, f.resource_type_filter), f.resource_name_filter,
                     _enum(PatternType, f.pattern_type_filter), f.principal_filter, f.host_filter,
                     _enum(Operation, f.operation), _enum(Permission, f.permission_type))


def _acl_fields(acl: Acl) -> dict:
    return {"principal": acl.principal, "host": acl.host, "operation": int(acl.operation),
            "permission_type": int(acl.permission)}


def _by_resource(acls) -> list[dict]:
    resources: dict[tuple, list] = {}
    for acl in acls:
        resources.setdefault((acl.resource_type, acl.resource_name, acl.pattern_type), []).append(acl)
    return [{"resource_type": int(t), "resource_name": n, "pattern_type": int(p),
             "acls": [_acl_fields(a) for a in group]} for (t, n, p), group in resources.items()]


async def handle_describe_acls(body, ctx, version: int):
    response = response_schema(DESCRIBE_ACLS_KEY, version)
    try:
        acl_filter = _filter(body)
    except AclError as exc:
        return build(response, error_code=ErrorCode.invalid_request, error_message=str(exc), resources=[])
    matching = [a for a in ctx.meta.acls if acl_filter.matches(a)]
    return build(response, error_code=0, error_message=None, resources=_by_resource(matching))


async def handle_create_acls(body, ctx, version: int):
    results, created = [], []
    for c in body.creations:
        try:
            acl = Acl(_enum(ResourceType, c.resource_type), c.resource_name, _enum(PatternType, c.resource_pattern_type),
                      c.principal, c.host, _enum(Operation, c.operation), _enum(Permission, c.permission_type))
            check_acl(acl)
        except AclError as exc:
            results.append({"error_code": ErrorCode.invalid_request, "error_message": str(exc)})
            continue
        created.append(acl)
        results.append({"error_code": 0, "error_message": None})
    if created:
        try:
            applied = await ctx.propose_meta(meta_pb2.MetaCommand(acls_created=meta_pb2.AclsCreated(
                acls=[acl_binding(a) for a in created])))
            if not applied.ok:
                raise applied.error
        except BrokerError as exc:
            results = [r if r["error_code"] else {"error_code": error_code_of(exc), "error_message": str(exc)}
                       for r in results]
        else:
            log.info("ACLs created: %s", "; ".join(map(_describe, created)))
    return build(response_schema(CREATE_ACLS_KEY, version), throttle_time=0, results=results)


def _describe(acl: Acl) -> str:
    return (f"{acl.permission.name} {acl.principal} from {acl.host} {acl.operation.name} on "
            f"{acl.resource_type.name}:{acl.pattern_type.name}:{acl.resource_name}")


async def handle_delete_acls(body, ctx, version: int):
    results, doomed = [], {}
    for f in body.filters:
        try:
            acl_filter = _filter(f)
        except AclError as exc:
            results.append({"error_code": ErrorCode.invalid_request, "error_message": str(exc), "matching_acls": []})
            continue
        matching = [a for a in ctx.meta.acls if acl_filter.matches(a)]
        doomed.update(dict.fromkeys(matching))
        results.append({"error_code": 0, "error_message": None, "matching_acls": [
            {"error_code": 0, "error_message": None, "resource_type": int(a.resource_type),
             "resource_name": a.resource_name, "pattern_type": int(a.pattern_type), **_acl_fields(a)}
            for a in matching]})
    if doomed:
        try:
            applied = await ctx.propose_meta(meta_pb2.MetaCommand(acls_deleted=meta_pb2.AclsDeleted(
                acls=[acl_binding(a) for a in doomed])))
            if not applied.ok:
                raise applied.error
        except BrokerError as exc:
            results = [{**r, "error_code": error_code_of(exc), "error_message": str(exc), "matching_acls": []}
                       if r["error_code"] == 0 else r for r in results]
        else:
            log.info("ACLs deleted: %s", "; ".join(map(_describe, doomed)))
    return build(response_schema(DELETE_ACLS_KEY, version), throttle_time=0, filter_results=results)
