"""Dual-key senders: SMIMEEncryptionKeyPreference (RFC 8551 2.5.3) written on signing, read
(with Microsoft's variant) on verifying, and the sent copy of sign_encrypt."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pki import PKI, Identity, message

import smimekit
from smimekit.cms import der
from smimekit.cms.keyinfo import cert_der, issuer_and_serial_der, subject_key_id
from smimekit.cms.signed import SignerSpec, sign_data, verify_signed_data
from smimekit.errors import EncryptionError, NoRecipientError
from smimekit.smime.wrap import unwrap

CONTENT = b"Content-Type: text/plain\r\n\r\nHello.\r\n"


@pytest.fixture(scope="module")
def dual(pki: PKI) -> tuple[Identity, Identity]:
    """Dana's two certificates: P-256 signing-only, RSA encryption-only (one address)."""
    sign = pki.person("dana-sign", "p256", email="dana@example.org", key_usage="sign")
    enc = pki.person("dana-enc", "rsa2048", email="dana@example.org", key_usage="encrypt")
    return sign, enc


def _signed_data(der: bytes) -> cms.SignedData:
    return cms.ContentInfo.load(der)["content"]


def test_sign_writes_the_rfc8551_attribute_naming_the_encryption_certificate(
        dual: tuple[Identity, Identity]) -> None:
    sign, enc = dual
    sd = _signed_data(sign_data(CONTENT, [SignerSpec(sign.key, sign.cert,
                                                     encryption_cert=enc.cert)],
                                certificates=[enc.cert]))
    attrs = {a["type"].dotted: a for a in sd["signer_infos"][0]["signed_attrs"]}
    pref = attrs["1.2.840.113549.1.9.16.2.11"]["values"][0]
    # asn1crypto decodes it as RFC 8551's CHOICE: [0] IMPLICIT IssuerAndSerialNumber
    assert pref.name == "issuer_and_serial_number"
    assert pref.chosen["serial_number"].native == enc.cert.serial_number
    assert b"\x30" + pref.dump()[1:] == issuer_and_serial_der(enc.cert)
    assert cert_der(enc.cert) in [c.chosen.dump() for c in sd["certificates"]]


def test_sign_without_encryption_certificate_writes_no_preference(
        dual: tuple[Identity, Identity]) -> None:
    sign, _ = dual
    sd = _signed_data(sign_data(CONTENT, [SignerSpec(sign.key, sign.cert)]))
    types = [a["type"].dotted for a in sd["signer_infos"][0]["signed_attrs"]]
    assert "1.2.840.113549.1.9.16.2.11" not in types


def test_verify_reports_the_announced_encryption_certificate(
        pki: PKI, dual: tuple[Identity, Identity]) -> None:
    sign, enc = dual
    signed = smimekit.sign(message(sender=sign.email), sign.key, sign.cert,
                           chain=[pki.inter], encryption_cert=enc.cert)
    verified = smimekit.verify(signed, trust=[pki.root], revocation=None)
    signer = verified.verdict.signers[0]
    assert verified.verdict.valid
    assert signer.encryption_cert is not None
    assert signer.encryption_cert.sha256 == enc.cert.fingerprint(hashes.SHA256()).hex()
    assert signer.encryption_key_preference is not None
    assert signer.encryption_key_preference.endswith(f"serial {enc.cert.serial_number:x}")
    assert "encrypt answers to: " in verified.verdict.summary()
    assert '"encryption_cert"' in verified.verdict.to_json()


def _sign_with_attributes(who: Identity, extra: list[tuple[str, bytes]]) -> bytes:
    """A SignedData over CONTENT whose signed attributes add ``extra`` (OID, DER value)."""
    digest = hashlib.sha256(CONTENT).digest()
    # written by hand: asn1crypto refuses to build a malformed value
    raw = der.set_of(
        der.seq(der.oid("1.2.840.113549.1.9.3"), der.set_of(der.oid("1.2.840.113549.1.7.1"))),
        der.seq(der.oid("1.2.840.113549.1.9.4"), der.set_of(der.octets(digest))),
        *(der.seq(der.oid(oid), der.set_of(value)) for oid, value in extra),
    )
    attrs = cms.CMSAttributes.load(raw)
    assert isinstance(who.key, ec.EllipticCurvePrivateKey)
    signature = who.key.sign(raw, ec.ECDSA(hashes.SHA256()))
    sd = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data"},
        "certificates": [cms.CertificateChoices.load(cert_der(who.cert))],
        "signer_infos": [{
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber
                                         .load(issuer_and_serial_der(who.cert))}),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump()


def test_microsoft_preference_and_ski_forms_are_read(dual: tuple[Identity, Identity]) -> None:
    sign, enc = dual
    ms = ("1.3.6.1.4.1.311.16.4", issuer_and_serial_der(enc.cert))
    signed = _sign_with_attributes(sign, [ms])
    result = verify_signed_data(signed, detached_content=CONTENT, extra_certs=[enc.cert])
    pref = result.signers[0].encryption_preference
    assert pref is not None and pref.certificate == enc.cert

    ski = subject_key_id(enc.cert)
    alt_key_id = ("1.2.840.113549.1.9.16.2.11", b"\x82" + bytes([len(ski)]) + ski)
    signed = _sign_with_attributes(sign, [alt_key_id])
    pref = verify_signed_data(signed, detached_content=CONTENT,
                              extra_certs=[enc.cert]).signers[0].encryption_preference
    assert pref is not None and pref.certificate == enc.cert
    assert pref.identifier == f"ski {ski.hex()}"


@pytest.mark.parametrize("value", [b"\x02\x01\x05", b"\xa0\x03\x02\x01\x05", b"\x05\x00"],
                         ids=["integer", "bad-issuer-serial", "null"])
def test_malformed_preference_is_ignored_never_fails_verification(
        dual: tuple[Identity, Identity], value: bytes) -> None:
    sign, _ = dual
    signed = _sign_with_attributes(sign, [("1.2.840.113549.1.9.16.2.11", value)])
    result = verify_signed_data(signed, detached_content=CONTENT)
    assert result.signers[0].encryption_preference is None


def test_preference_for_a_certificate_the_message_lacks_is_named_without_it(
        dual: tuple[Identity, Identity]) -> None:
    sign, enc = dual
    signed = sign_data(CONTENT, [SignerSpec(sign.key, sign.cert, encryption_cert=enc.cert)])
    pref = verify_signed_data(signed, detached_content=CONTENT).signers[0].encryption_preference
    assert pref is not None and pref.certificate is None
    assert pref.identifier.endswith(f"serial {enc.cert.serial_number:x}")


def test_sign_encrypt_keeps_the_sent_copy_for_a_dual_key_sender(
        pki: PKI, dual: tuple[Identity, Identity], bob: Identity) -> None:
    sign, enc = dual
    sealed = smimekit.sign_encrypt(message(sender=sign.email), sign.key, sign.cert, [bob.cert],
                                   chain=[pki.inter], encryption_cert=enc.cert,
                                   self_copy_required=True)
    # the sender opens the sent copy with the encryption key
    result = smimekit.decrypt_verify(sealed, enc.key, enc.cert, trust=[pki.root],
                                     revocation=None)
    assert result.verdict.valid
    assert result.verdict.signers[0].encryption_cert is not None


def test_sign_encrypt_refuses_a_signing_only_sender_without_encryption_certificate(
        dual: tuple[Identity, Identity], bob: Identity) -> None:
    sign, _ = dual
    with pytest.raises(EncryptionError, match=r"cannot receive mail.*--self-cert.*--no-self"):
        smimekit.sign_encrypt(message(sender=sign.email), sign.key, sign.cert, [bob.cert],
                              self_copy_required=True)
    # include_self=False, or the library's lenient default, leave the sender out
    for kwargs in ({"include_self": False, "self_copy_required": True}, {}):
        sealed = smimekit.sign_encrypt(message(sender=sign.email), sign.key, sign.cert,
                                       [bob.cert], **kwargs)  # type: ignore[arg-type]
        assert len(unwrap(sealed, keys=[(bob.key, bob.cert)]).layers) == 2


def test_an_unfit_encryption_certificate_is_refused_for_the_sent_copy(
        pki: PKI, dual: tuple[Identity, Identity], bob: Identity) -> None:
    sign, _ = dual
    expired = pki.person("dana-old", "rsa2048", email="dana@example.org", key_usage="encrypt",
                         not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                         not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(EncryptionError, match=r"encryption certificate .* cannot take the sent"):
        smimekit.sign_encrypt(message(sender=sign.email), sign.key, sign.cert, [bob.cert],
                              encryption_cert=expired.cert, check_recipients=False)
    with pytest.raises(NoRecipientError):
        smimekit.decrypt(smimekit.sign_encrypt(
            message(sender=sign.email), sign.key, sign.cert, [bob.cert], include_self=False),
            sign.key, sign.cert)
