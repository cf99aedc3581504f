"""ACLs against a real node with the authorizer on: allowed operations work for real
clients, denied ones get Kafka's codes (TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED), deny
wins, prefixed patterns, a certificate principal, Metadata lists only describable topics,
every denial is an audit line, and `chronik-trio admin acl` manages them."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from chronik_trio.cluster.acls import Operation

from tests.kafka_wire import Record, build_batch

from .node import USERS, confluent_conf, confluent_round_trip, plain_wire, secure_node

pytestmark = pytest.mark.timeout(180)
TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED = 29, 30, 31
FIND_COORDINATOR, DESCRIBE_CLUSTER, CREATE_ACLS = 10, 60, 30
DESCRIBE_CONFIGS, INCREMENTAL_ALTER_CONFIGS, RESOURCE_GROUP, DESCRIBE_GROUPS = 32, 44, 32, 15
CERT_PRINCIPAL = "User:CN=alice,OU=eng,O=example"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # The loopback PLAINTEXT listener is the operators' (its ANONYMOUS principal is a super user).
    with secure_node(tmp_path_factory.mktemp("acls"), (
            "--authorizer-enabled", "--super-users", "User:ANONYMOUS;User:admin")) as secure:
        for args in (["--allow", "--principal", "User:alice", "--operation", "write", "--operation", "read",
                      "--operation", "create", "--topic", "alice-", "--prefixed"],
                     ["--principal", "User:alice", "--operation", "read", "--group", "alice-", "--prefixed"],
                     ["--principal", "User:alice", "--operation", "describe-configs", "--group", "alice-cfg"],
                     ["--deny", "--principal", "User:alice", "--operation", "write", "--topic", "alice-readonly"],
                     ["--principal", CERT_PRINCIPAL, "--operation", "read", "--topic", "alice-certs"]):
            done = secure.admin("acl", "add", *args)
            assert done.returncode == 0, done.stderr
        for topic in ("alice-readonly", "alice-certs", "shared"):
            assert secure.admin("create-topic", topic, "--partitions", "1").returncode == 0
        yield secure


def _produce_code(conn, topic: str) -> int:
    return int(conn.produce(topic, 0, build_batch([Record(b"k", b"v")])).error_code)


def test_an_allowed_user_produces_and_consumes_with_confluent_kafka_over_sasl_ssl(node):
    topic = f"alice-{uuid.uuid4().hex[:8]}"
    conf = confluent_conf(node, "SASL_SSL", "SCRAM-SHA-512", "alice", USERS["alice"])
    # auto-created: alice may CREATE alice-*; and read in groups alice-*
    confluent_round_trip(conf, topic, b"allowed", group=f"alice-{topic}")


def test_denied_operations_get_kafkas_codes_and_an_audit_line(node):
    with plain_wire(node, "bob") as conn:
        assert _produce_code(conn, "shared") == TOPIC_DENIED
        coordinator = conn.request(FIND_COORDINATOR, {"key": "alice-group", "key_type": 0}, version=3)
        assert int(coordinator.error_code) == GROUP_DENIED
        assert int(conn.request(DESCRIBE_CLUSTER, {}, version=0).error_code) == CLUSTER_DENIED
        created = conn.request(CREATE_ACLS, {"creations": [{
            "resource_type": 2, "resource_name": "shared", "resource_pattern_type": 3, "principal": "User:bob",
            "host": "*", "operation": 4, "permission_type": 3}]}, version=3)
        assert [int(r.error_code) for r in created.results] == [CLUSTER_DENIED]
        assert int(conn.create_topics(["bob-topic"])["bob-topic"]) == TOPIC_DENIED
    log = node.broker.log_text()
    assert "DENIED principal=User:bob host=127.0.0.1 operation=WRITE resource=TOPIC:shared api=Produce" in log
    assert "operation=ALTER resource=CLUSTER:kafka-cluster api=CreateAcls" in log


def test_a_denied_acks_0_produce_closes_the_connection_unanswered(node):
    with plain_wire(node, "bob") as conn:
        conn.send_no_response(0, 9, {"acks": 0, "timeout": 1000, "topic_data": [
            {"name": "shared", "partition_data": [{"index": 0, "records": build_batch([Record(b"k", b"v")])}]}]})
        assert conn.wait_closed() == b""
    assert "an acks=0 Produce by User:bob was denied" in node.broker.log_text()


def test_deny_wins_over_a_prefixed_allow(node):
    with plain_wire(node, "alice") as conn:
        assert _produce_code(conn, "alice-certs") == 0  # the prefixed ALLOW
        assert _produce_code(conn, "alice-readonly") == TOPIC_DENIED  # the literal DENY wins
        assert _produce_code(conn, "shared") == TOPIC_DENIED  # no ACL, no access


def test_metadata_lists_only_the_topics_the_principal_may_describe(node):
    with plain_wire(node, "alice", listener="SASL_SSL") as conn:
        names = {t.name for t in conn.metadata(None).topics}
        assert {"alice-readonly", "alice-certs"} <= names and "shared" not in names
        (shared,) = conn.metadata(["shared"]).topics
        assert int(shared.error_code) == TOPIC_DENIED
    with plain_wire(node, "bob") as conn:
        assert {t.name for t in conn.metadata(None).topics} == set()


def test_a_client_certificate_principal_is_authorized_by_its_acls(node):
    with node.tls_wire("SSL", cert="alice") as conn:
        assert _produce_code(conn, "alice-certs") == TOPIC_DENIED  # only READ granted
        fetched = conn.fetch("alice-certs", 0, 0)
        assert int(fetched.error_code) == 0


def test_admin_acl_lists_and_removes(node):
    listed = node.admin("acl", "list", "--principal", "User:alice")
    assert listed.returncode == 0, listed.stderr
    assert "alice-readonly" in listed.stdout and "DENY" in listed.stdout and "PREFIXED" in listed.stdout
    removed = node.admin("acl", "remove", "--principal", "User:alice", "--operation", "write",
                         "--topic", "alice-", "--prefixed")
    assert removed.returncode == 0 and "removed 1 ACL(s)" in removed.stdout, removed.stderr
    with plain_wire(node, "alice") as conn:
        assert _produce_code(conn, "alice-certs") == TOPIC_DENIED
    node.admin("acl", "add", "--principal", "User:alice", "--operation", "write", "--topic", "alice-", "--prefixed")


def test_admin_over_sasl_ssl_and_mutual_tls_acts_as_its_principal(node, tmp_path):
    """`chronik-trio admin` with a --command-config (SASL_SSL, SCRAM-SHA-512) is alice, so the
    authorizer lets it create her prefixed topics only; with her client certificate over SSL it
    is User:CN=alice,...; a wrong password or an untrusted broker certificate exits 2."""
    config = tmp_path / "alice.properties"
    config.write_text(f"security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=alice\n"
                      f"sasl.password={USERS['alice']}\nssl.ca.location={node.certs.ca}\n")
    as_alice = ("--command-config", str(config))
    created = node.admin(*as_alice, "create-topic", "alice-by-admin", listener="SASL_SSL")
    assert created.returncode == 0, created.stderr
    refused = node.admin(*as_alice, "create-topic", "not-alices", listener="SASL_SSL")
    assert refused.returncode == 1 and "TOPIC_AUTHORIZATION_FAILED" in refused.stderr
    listed = node.admin(*as_alice, "topics", listener="SASL_SSL")
    assert listed.returncode == 0 and "alice-by-admin" in listed.stdout and "shared" not in listed.stdout
    plain = node.admin("--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN",
                       "--command-config", str(config), "topics", listener="SASL_PLAINTEXT")
    assert plain.returncode == 0 and "alice-by-admin" in plain.stdout, plain.stderr
    wrong = tmp_path / "wrong.properties"
    wrong.write_text(config.read_text().replace(USERS["alice"], "not-her-password"))
    denied = node.admin("--command-config", str(wrong), "topics", listener="SASL_SSL")
    assert denied.returncode == 2 and "SASL_AUTHENTICATION_FAILED" in denied.stderr
    by_cert = node.admin("--security-protocol", "SSL", "--ssl-cafile", node.certs.ca,
                         "--ssl-certfile", node.certs.path("alice.pem"), "--ssl-keyfile", node.certs.path("alice.key"),
                         "topics", listener="SSL")
    assert by_cert.returncode == 0 and "alice-certs" in by_cert.stdout and "alice-by-admin" not in by_cert.stdout
    untrusted = node.admin("--security-protocol", "SSL", "--ssl-cafile", node.certs.path("other-ca.pem"),
                           "topics", listener="SSL")
    assert untrusted.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_group_configs_need_describe_configs_and_alter_configs_on_the_group(node):
    def describe(conn, group):
        return conn.request(DESCRIBE_CONFIGS, {"resources": [
            {"resource_type": RESOURCE_GROUP, "resource_name": group, "configuration_keys": None}]}, version=4)

    with plain_wire(node, "alice") as conn:
        (allowed,) = describe(conn, "alice-cfg").results
        assert int(allowed.error_code) == 0
        assert "consumer.session.timeout.ms" in {c.name for c in allowed.configs}
        (denied,) = describe(conn, "alice-other").results
        assert int(denied.error_code) == GROUP_DENIED
        altered = conn.request(INCREMENTAL_ALTER_CONFIGS, {"resources": [
            {"resource_type": RESOURCE_GROUP, "resource_name": "alice-cfg", "configs": [
                {"name": "consumer.session.timeout.ms", "config_operation": 0, "value": "50000"}]}],
            "validate_only": False}, version=1)
        assert [int(r.error_code) for r in altered.responses] == [GROUP_DENIED]
    assert "operation=ALTER_CONFIGS resource=GROUP:alice-cfg" in node.broker.log_text()


def test_authorized_operations_are_the_principals_own(node):
    """KIP-430: a topic's and a group's authorized operations are what alice's ACLs allow
    (DESCRIBE implied by READ; her denied WRITE on alice-readonly left out)."""
    conf = confluent_conf(node, "SASL_SSL", "SCRAM-SHA-512", "alice", USERS["alice"])
    admin = AdminClient(conf)
    topic = admin.describe_topics(TopicCollection(["alice-readonly"]), include_authorized_operations=True)[
        "alice-readonly"].result(timeout=30)
    assert {op.name for op in topic.authorized_operations} == {"READ", "CREATE", "DESCRIBE"}
    with plain_wire(node, "alice") as conn:
        (group,) = conn.request(DESCRIBE_GROUPS, {"groups": ["alice-cfg"], "include_authorized_operations": True},
                                version=5).groups
    operations = {op.name for op in Operation if group.authorized_operations & (1 << op)}
    assert operations == {"READ", "DESCRIBE", "DESCRIBE_CONFIGS"}
