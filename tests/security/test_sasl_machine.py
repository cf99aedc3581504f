"""The SASL state machine (chronik_trio/kafka/sasl.py) against RFC 7677's transcript and
against wrong or malformed tokens: no I/O, no broker."""

from __future__ import annotations

import base64

import pytest

from chronik_trio.kafka import sasl

RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"


def _store(**users):
    table = {name: {c.mechanism: c for c in creds} for name, creds in users.items()}
    return lambda user: table.get(user, {})


def _rfc7677_server():
    credential = sasl.credential_from_password(sasl.SCRAM_SHA_256, "pencil", RFC_SALT, 4096)
    return sasl.SaslServer(sasl.SCRAM_SHA_256, _store(user=[credential]), RFC_SERVER_NONCE)


def test_scram_sha_256_follows_the_rfc_7677_transcript_byte_for_byte():
    server = _rfc7677_server()
    first = server.receive(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = server.receive(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                           b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.state is sasl.SaslState.COMPLETE and server.principal == "user"


def test_scram_with_a_wrong_proof_fails_and_stays_failed():
    server = _rfc7677_server()
    server.receive(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    with pytest.raises(sasl.SaslFailed, match="invalid credentials"):
        server.receive(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                       b"p=" + base64.b64encode(bytes(32)))
    assert server.state is sasl.SaslState.FAILED and server.principal is None
    with pytest.raises(sasl.SaslFailed):
        server.receive(b"anything")


@pytest.mark.parametrize("token", [
    b"", b"\xff\xfe", b"p=tls-unique,,n=user,r=abc", b"n,,r=abc", b"n,,n=user", b"n,,n=us=2Xer,r=a",
    b"n,,n=user,r=abc,e=ext", b"n,,n=nobody,r=abc", b"x" * (sasl.TOKEN_BYTES_MAX + 1),
])
def test_malformed_or_unknown_scram_client_first_fails_cleanly(token):
    server = _rfc7677_server()
    with pytest.raises(sasl.SaslFailed):
        server.receive(token)
    assert server.state is sasl.SaslState.FAILED


def test_scram_client_final_with_the_wrong_nonce_or_binding_fails():
    for final in (b"c=biws,r=other,p=AAAA", b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
                  b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!"):
        server = _rfc7677_server()
        server.receive(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        with pytest.raises(sasl.SaslFailed):
            server.receive(final)


@pytest.mark.parametrize("mechanism", [sasl.SCRAM_SHA_256, sasl.SCRAM_SHA_512])
def test_plain_is_checked_against_the_scram_credential(mechanism):
    store = _store(alice=[sasl.credential_from_password(mechanism, "s3cret", b"salt", 4096)])
    ok = sasl.SaslServer(sasl.PLAIN, store, "n")
    assert ok.receive(b"\0alice\0s3cret") == b"" and ok.principal == "alice"
    for token in (b"\0alice\0wrong", b"\0bob\0s3cret", b"mallory\0alice\0s3cret", b"alice\0s3cret", b"\0\0"):
        server = sasl.SaslServer(sasl.PLAIN, store, "n")
        with pytest.raises(sasl.SaslFailed):
            server.receive(token)
        assert server.principal is None


def test_a_proof_spelt_with_other_unused_base64_bits_is_refused():
    # "...G4=" style endings: the last character before "=" carries unused low bits; "dAndVQ="
    # and "dAndVR=" decode to the same bytes. Only the canonical spelling is accepted.
    server = _rfc7677_server()
    server.receive(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    with pytest.raises(sasl.SaslFailed, match="not canonical"):
        server.receive(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                       b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR=")


def test_the_scram_client_follows_the_rfc_7677_transcript_and_checks_the_server():
    client = sasl.ScramClient(sasl.SCRAM_SHA_256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
    server = _rfc7677_server()
    assert client.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.final(server.receive(client.first()))
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client.verify(server.receive(final))
    with pytest.raises(sasl.SaslFailed, match="signature"):
        client.verify(b"v=" + base64.b64encode(bytes(32)))
    with pytest.raises(sasl.SaslFailed, match="server-first"):  # a server nonce not extending ours
        sasl.ScramClient(sasl.SCRAM_SHA_256, "user", "pencil", "abc").final(b"r=xyz,s=AAAA,i=4096")
