"""The authorizer's decisions (cluster/acls.py), Kafka's rules one by one, and ACLs through
a __meta snapshot."""

from __future__ import annotations

from chronik_trio.cluster.acls import (CLUSTER_NAME, Acl, AclFilter, Operation, PatternType, Permission,
                                       ResourceType, authorize, may_write_some_topic)
from chronik_trio.cluster.meta import MetaState, acl_binding
from chronik_trio.pb import meta_pb2

T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
ALICE, BOB = "User:alice", "User:bob"


def acl(kind, name, principal=ALICE, operation=Operation.READ, permission=Permission.ALLOW,
        pattern=PatternType.LITERAL, host="*") -> Acl:
    return Acl(kind, name, pattern, principal, host, operation, permission)


def can(acls, principal, operation, kind, name, host="10.0.0.1", supers=()) -> bool:
    return authorize(acls, frozenset(supers), principal, host, operation, kind, name)


def test_no_acl_means_no_access_and_super_users_need_none():
    assert not can([], ALICE, Operation.READ, T, "t")
    assert can([], "User:admin", Operation.ALTER, C, CLUSTER_NAME, supers={"User:admin"})


def test_literal_wildcard_and_prefixed_patterns():
    acls = [acl(T, "orders"), acl(T, "logs-", pattern=PatternType.PREFIXED), acl(G, "*")]
    assert can(acls, ALICE, Operation.READ, T, "orders")
    assert not can(acls, ALICE, Operation.READ, T, "orders2")
    assert can(acls, ALICE, Operation.READ, T, "logs-app")
    assert not can(acls, ALICE, Operation.READ, T, "log")
    assert can(acls, ALICE, Operation.READ, G, "any-group")
    assert not can(acls, BOB, Operation.READ, T, "orders")


def test_deny_wins_over_allow_and_all_covers_every_operation():
    acls = [acl(T, "t", operation=Operation.ALL), acl(T, "t", principal="User:*", operation=Operation.WRITE,
                                                      permission=Permission.DENY)]
    assert can(acls, ALICE, Operation.READ, T, "t")
    assert not can(acls, ALICE, Operation.WRITE, T, "t")


def test_hosts_and_implied_describe():
    acls = [acl(T, "t", operation=Operation.WRITE, host="10.0.0.1")]
    assert can(acls, ALICE, Operation.DESCRIBE, T, "t")  # WRITE implies DESCRIBE
    assert not can(acls, ALICE, Operation.DESCRIBE, T, "t", host="10.0.0.2")
    assert not can(acls, ALICE, Operation.READ, T, "t")


def test_idempotent_write_follows_write_on_some_topic():
    assert may_write_some_topic([acl(T, "t", operation=Operation.WRITE)], ALICE, "h")
    assert not may_write_some_topic([acl(T, "t", operation=Operation.READ)], ALICE, "h")
    assert not may_write_some_topic([acl(T, "t", operation=Operation.WRITE),
                                     acl(T, "t", operation=Operation.WRITE, permission=Permission.DENY)], ALICE, "h")


def test_filters_match_like_describe_and_delete_acls():
    a, b = acl(T, "orders"), acl(T, "ord", pattern=PatternType.PREFIXED, principal=BOB)
    assert AclFilter().matches(a) and AclFilter().matches(b)
    assert AclFilter(resource_type=T, resource_name="orders", pattern_type=PatternType.MATCH).matches(b)
    assert not AclFilter(resource_name="orders", pattern_type=PatternType.LITERAL).matches(b)
    assert AclFilter(principal=BOB).matches(b) and not AclFilter(principal=BOB).matches(a)


def test_acls_are_applied_and_survive_a_meta_snapshot():
    state = MetaState()
    a, b = acl(T, "orders"), acl(G, "g", principal=BOB)
    state.apply(meta_pb2.MetaCommand(acls_created=meta_pb2.AclsCreated(acls=[acl_binding(a), acl_binding(b)])))
    state.apply(meta_pb2.MetaCommand(acls_created=meta_pb2.AclsCreated(acls=[acl_binding(a)])))  # stays once
    state.apply(meta_pb2.MetaCommand(acls_deleted=meta_pb2.AclsDeleted(acls=[acl_binding(b)])))
    restored = MetaState()
    restored.restore(state.snapshot())
    assert list(restored.acls) == [a]
