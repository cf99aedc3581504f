"""Pure parts: __meta keeps SCRAM credentials and broker listeners through snapshots; the
listener config parses Kafka's syntax and refuses what cannot work."""

from __future__ import annotations

import pytest

from chronik_trio.cluster.meta import MetaState
from chronik_trio.kafka import sasl
from chronik_trio.node.config import ConfigError, NodeConfig
from chronik_trio.node.listeners import peer_tls
from chronik_trio.pb import meta_pb2


def _upsert(user: str, mechanism: str, password: str) -> meta_pb2.MetaCommand:
    c = sasl.credential_from_password(mechanism, password, b"salt-" + user.encode(), 4096)
    return meta_pb2.MetaCommand(scram_credential_upserted=meta_pb2.ScramCredentialUpserted(
        user=user, mechanism=mechanism, iterations=c.iterations, salt=c.salt, stored_key=c.stored_key,
        server_key=c.server_key))


def test_scram_credentials_and_listeners_survive_a_meta_snapshot():
    state = MetaState()
    state.apply(meta_pb2.MetaCommand(broker_registered=meta_pb2.BrokerRegistered(
        node_id=1, host="h", port=1, listeners=[meta_pb2.ListenerEndpoint(name="SSL", host="s", port=2)])))
    assert state.apply(_upsert("alice", sasl.SCRAM_SHA_256, "pw")).ok
    assert state.apply(_upsert("alice", sasl.SCRAM_SHA_512, "pw")).ok
    assert state.apply(_upsert("bob", sasl.SCRAM_SHA_512, "pw2")).ok
    assert state.apply(meta_pb2.MetaCommand(scram_credential_deleted=meta_pb2.ScramCredentialDeleted(
        user="bob", mechanism=sasl.SCRAM_SHA_512))).ok
    missing = state.apply(meta_pb2.MetaCommand(scram_credential_deleted=meta_pb2.ScramCredentialDeleted(
        user="bob", mechanism=sasl.SCRAM_SHA_512)))
    assert not missing.ok and missing.error.error_code == 91  # RESOURCE_NOT_FOUND
    restored = MetaState()
    restored.restore(state.snapshot())
    assert restored.scram_credentials == state.scram_credentials and set(restored.scram_credentials) == {"alice"}
    assert restored.brokers[1].endpoint("SSL") == ("s", 2) and restored.brokers[1].endpoint("OTHER") is None
    assert sasl.password_matches(restored.scram_credentials["alice"][sasl.SCRAM_SHA_512], "pw")


def test_listeners_parse_as_kafka_writes_them():
    config = NodeConfig(listeners="PLAINTEXT://127.0.0.1:9092,client://0.0.0.0:9093",
                        advertised_listeners="PLAINTEXT://127.0.0.1:9092,CLIENT://broker1.example:19093",
                        listener_security_protocol_map="CLIENT:SASL_SSL", ssl_certfile="c", ssl_keyfile="k")
    plain, client = config.kafka_listeners
    assert (plain.name, plain.security_protocol, plain.port) == ("PLAINTEXT", "PLAINTEXT", 9092)
    assert (client.name, client.security_protocol, client.host, client.advertised_host, client.advertised_port) == (
        "CLIENT", "SASL_SSL", "0.0.0.0", "broker1.example", 19093)
    assert client.uses_tls and client.uses_sasl and not plain.uses_tls


@pytest.mark.parametrize("values, message", [
    ({"listeners": "SSL://127.0.0.1:1"}, "needs ssl_certfile"),
    ({"listeners": "CLIENT://127.0.0.1:1"}, "no entry in listener_security_protocol_map"),
    ({"listeners": "127.0.0.1:1"}, "NAME://HOST:PORT"),
    ({"listeners": "A://127.0.0.1:1,a://127.0.0.1:2"}, "appears twice"),
    ({"listener_security_protocol_map": "X:TLS"}, "PROTOCOL one of"),
    ({"ssl_client_auth": "required"}, "needs ssl_cafile"),
    ({"sasl_enabled_mechanisms": "PLAIN,GSSAPI"}, "GSSAPI"),
    ({"listeners": "PLAINTEXT://127.0.0.1:1", "advertised_listeners": "OTHER://h:2"}, "missing from advertised"),
    ({"peers": "1@127.0.0.1:1", "peer_ssl_cafile": "ca.pem"}, "needs all of peer_ssl_cafile"),
    ({"peer_ssl_cafile": "ca.pem", "peer_ssl_certfile": "n.pem", "peer_ssl_keyfile": "n.key"}, "they need peers"),
    ({"authentication_timeout_ms": 0}, "authentication_timeout_ms must be positive"),
])
def test_bad_listener_config_is_refused_with_the_key_named(values, message):
    with pytest.raises(ConfigError, match=message):
        NodeConfig(**values).kafka_listeners


def test_peer_tls_files_that_do_not_load_are_a_config_error(tmp_path):
    missing = str(tmp_path / "missing.pem")
    config = NodeConfig(peers="1@127.0.0.1:1", peer_ssl_cafile=missing, peer_ssl_certfile=missing,
                        peer_ssl_keyfile=missing)
    with pytest.raises(ConfigError, match="peer TLS certificate, key or CA does not load"):
        peer_tls(config)
