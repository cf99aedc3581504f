"""ACLs and the authorizer's decision, pure: Kafka's model and numbers.

An ACL binds a resource pattern (type, name, LITERAL or PREFIXED) to a principal, a host,
an operation and ALLOW or DENY. `authorize()` decides one (principal, host, operation,
resource) question as Kafka's StandardAuthorizer does:

1. a super user is allowed everything;
2. a matching DENY wins over any ALLOW;
3. else a matching ALLOW allows; DESCRIBE is implied by READ, WRITE, DELETE and ALTER, and
   DESCRIBE_CONFIGS by ALTER_CONFIGS;
4. else denied (no access by default).

An ACL matches a resource when the types are equal and its name is the resource's (LITERAL),
is "*" (LITERAL wildcard), or a prefix of it (PREFIXED); its principal is the asker's or
"User:*"; its host the asker's or "*"; its operation the one asked or ALL.

May import: the standard library and attrs.
"""

from __future__ import annotations

import enum
import typing

import attrs


class ResourceType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class Permission(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


CLUSTER_NAME = "kafka-cluster"  # the one CLUSTER resource's name, as Kafka calls it
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
# An ALLOW of any of these operations also allows the key (Kafka's implied operations).
IMPLIED_BY = {Operation.DESCRIBE: (Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER),
              Operation.DESCRIBE_CONFIGS: (Operation.ALTER_CONFIGS,)}


@attrs.frozen(slots=True)
class Acl:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def covers(self, resource_type: ResourceType, name: str) -> bool:
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.PREFIXED:
            return name.startswith(self.resource_name)
        return self.resource_name in (name, WILDCARD)


class AclError(ValueError):
    """An ACL or filter Kafka would refuse (INVALID_REQUEST); the message says which field."""


def check_acl(acl: Acl) -> None:
    """Raise AclError for what CreateAcls must refuse: unknown or ANY values, a malformed principal."""
    if acl.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
        raise AclError(f"resource type {acl.resource_type.name} cannot be stored")
    if acl.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        raise AclError(f"pattern type {acl.pattern_type.name} cannot be stored (LITERAL or PREFIXED)")
    if acl.operation in (Operation.UNKNOWN, Operation.ANY):
        raise AclError(f"operation {acl.operation.name} cannot be stored")
    if acl.permission not in (Permission.ALLOW, Permission.DENY):
        raise AclError(f"permission {acl.permission.name} cannot be stored")
    if not acl.principal.partition(":")[2] or ":" not in acl.principal:
        raise AclError(f"principal {acl.principal!r} is not TYPE:NAME")
    if not acl.resource_name or not acl.host:
        raise AclError("empty resource name or host")
    if acl.resource_type == ResourceType.CLUSTER and acl.resource_name != CLUSTER_NAME:
        raise AclError(f"the cluster resource is named {CLUSTER_NAME!r}")


@attrs.frozen(slots=True)
class AclFilter:
    """DescribeAcls / DeleteAcls: None or ANY matches every value. Pattern MATCH matches the
    ACLs that would apply to the named resource (literal, wildcard and prefixes)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, acl: Acl) -> bool:
        if self.resource_type not in (ResourceType.ANY, acl.resource_type):
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is not None and not acl.covers(acl.resource_type, self.resource_name):
                return False
        else:
            if self.pattern_type not in (PatternType.ANY, acl.pattern_type):
                return False
            if self.resource_name is not None and self.resource_name != acl.resource_name:
                return False
        return (self.principal in (None, acl.principal) and self.host in (None, acl.host)
                and self.operation in (Operation.ANY, acl.operation)
                and self.permission in (Permission.ANY, acl.permission))


def _applies(acl: Acl, principal: str, host: str, operations: typing.Container[Operation]) -> bool:
    return (acl.principal in (principal, WILDCARD_PRINCIPAL) and acl.host in (host, WILDCARD)
            and (acl.operation == Operation.ALL or acl.operation in operations))


def authorize(acls: typing.Iterable[Acl], super_users: typing.Container[str], principal: str, host: str,
              operation: Operation, resource_type: ResourceType, name: str) -> bool:
    if principal in super_users:
        return True
    matching = [a for a in acls if a.covers(resource_type, name)]
    if any(a.permission == Permission.DENY and _applies(a, principal, host, (operation,)) for a in matching):
        return False
    allowing = (operation, *IMPLIED_BY.get(operation, ()))
    return any(a.permission == Permission.ALLOW and _applies(a, principal, host, allowing) for a in matching)


def may_write_some_topic(acls: typing.Iterable[Acl], principal: str, host: str) -> bool:
    """KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster, or WRITE on
    any topic (an ALLOW for this principal and host that no DENY of the same pattern cancels)."""
    acls = list(acls)
    for a in acls:
        if (a.resource_type == ResourceType.TOPIC and a.permission == Permission.ALLOW
                and _applies(a, principal, host, (Operation.WRITE,))
                and not any(d.permission == Permission.DENY and d.resource_type == ResourceType.TOPIC
                            and d.pattern_type == a.pattern_type and d.resource_name == a.resource_name
                            and _applies(d, principal, host, (Operation.WRITE,)) for d in acls)):
            return True
    return False
