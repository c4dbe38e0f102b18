"""The signer is bound to the From that the signature covers (RFC 8550 3, RFC 8551 3.1,
RFC 9788): a message signed with its own header block, a wrapped message/rfc822, a
mismatch with the unsigned outer From, and how addresses compare."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki import DATE, NOW, PKI, Identity, message

import smimekit
from smimekit.validation.verdict import Verdict

BOSS = "boss@corp.example"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def _verdict(data: bytes, trust: list) -> Verdict:
    return smimekit.verify(data, trust=trust, raise_for_failure=False).verdict


def _eml(sender: str = "alice@example.org") -> bytes:
    return (f"From: {sender}\nTo: bob@example.org\nSubject: signed as a whole\n"
            f"Date: {DATE}\nContent-Type: text/plain\n\nHello from openssl.\n").encode()


def _openssl_sign(tmp_path: Path, who: Identity, eml: bytes, *, opaque: bool = False) -> bytes:
    """``openssl cms -sign -in message.eml``: the header block goes inside the signature and
    the output has no From of its own."""
    (tmp_path / "message.eml").write_bytes(eml)
    (tmp_path / "key.pem").write_bytes(who.pem_key())
    (tmp_path / "cert.pem").write_bytes(who.pem_cert())
    args = ["openssl", "cms", "-sign", "-in", str(tmp_path / "message.eml"),
            "-signer", str(tmp_path / "cert.pem"), "-inkey", str(tmp_path / "key.pem")]
    if opaque:
        args.append("-nodetach")
    return subprocess.run(args, check=True, capture_output=True, timeout=30).stdout


@needs_openssl
@pytest.mark.interop
@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_openssl_signed_whole_message_binds_the_signed_from(
        tmp_path: Path, alice: Identity, trust: list, opaque: bool) -> None:
    signed = _openssl_sign(tmp_path, alice, _eml(), opaque=opaque)
    head = signed.split(b"\n\n", 1)[0]
    assert b"From:" not in head  # nothing outside the signature to bind to
    result = smimekit.verify(signed, trust=trust)
    v = result.verdict
    assert v.valid, v.summary()
    assert v.from_address == "alice@example.org" and v.unsigned_from is None
    assert v.signers[0].from_match is True
    assert result.as_message().get_all("From") == ["alice@example.org"]


@needs_openssl
@pytest.mark.interop
def test_openssl_signed_whole_message_of_someone_else_fails(
        tmp_path: Path, alice: Identity, trust: list) -> None:
    signed = _openssl_sign(tmp_path, alice, _eml(BOSS))
    v = _verdict(signed, trust)
    assert not v.valid and v.signers[0].from_match is False
    assert v.from_address == BOSS
    assert f"sender {BOSS} is not an address" in " ".join(v.all_reasons())


@needs_openssl
@pytest.mark.interop
def test_outer_from_added_to_an_openssl_signed_message_is_reported_as_a_mismatch(
        tmp_path: Path, alice: Identity, trust: list) -> None:
    signed = _openssl_sign(tmp_path, alice, _eml())
    forged = f"From: {BOSS}\n".encode() + signed
    v = _verdict(forged, trust)
    assert not v.valid and v.signers[0].from_match is False
    assert v.from_address == "alice@example.org"  # the signed From is authoritative
    assert v.unsigned_from == BOSS
    data = json.loads(v.to_json())
    assert data["unsigned_from"] == BOSS and data["from_address"] == "alice@example.org"
    assert f"outer From {BOSS} is not the signed From alice@example.org" in v.summary()
    assert v.summary().count("outer From") == 1


@needs_openssl
@pytest.mark.interop
def test_same_outer_and_signed_from_in_other_case_is_no_mismatch(
        tmp_path: Path, alice: Identity, trust: list) -> None:
    signed = _openssl_sign(tmp_path, alice, _eml("Alice@EXAMPLE.org"))
    v = _verdict(b"From: ALICE@example.ORG\n" + signed, trust)
    assert v.valid, v.summary()
    assert v.unsigned_from is None and v.from_address == "Alice@EXAMPLE.org"


def _wrapped(outer_from: str | None, inner_from: str) -> bytes:
    inner = (f"From: {inner_from}\r\nTo: bob@example.org\r\nSubject: notice\r\n"
             f"Date: {DATE}\r\nContent-Type: text/plain\r\n\r\nwrapped\r\n").encode()
    outer = message(sender=outer_from or "x", body=inner,
                    headers=b"Content-Type: message/rfc822\r\n")
    if outer_from is None:
        outer = outer.replace(b"From: x\r\n", b"")
    return outer


def test_wrapped_message_binds_its_from_when_the_outer_has_none(alice: Identity,
                                                               trust: list) -> None:
    signed = smimekit.sign(_wrapped(None, "alice@example.org"), alice.key, alice.cert)
    v = _verdict(signed, trust)
    assert v.valid, v.summary()
    assert v.from_address == "alice@example.org" and v.unsigned_from is None


def test_wrapped_message_mismatch_reports_the_outer_from(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(_wrapped(BOSS, "alice@example.org"), alice.key, alice.cert)
    v = _verdict(signed, trust)
    assert not v.valid and v.unsigned_from == BOSS and v.from_address == "alice@example.org"
    assert v.signers[0].from_match is False


@pytest.mark.parametrize("sender", ["ALICE@example.org", "Alice@Example.ORG",
                                    "alice@EXAMPLE.ORG"])
def test_local_part_and_domain_compare_ignoring_case(alice: Identity, trust: list,
                                                     sender: str) -> None:
    """Like NSS and Thunderbird, the local part is compared ignoring case too."""
    signed = smimekit.sign(message(sender=sender), alice.key, alice.cert)
    v = _verdict(signed, trust)
    assert v.valid, v.summary()
    assert v.signers[0].from_match is True


def test_mixed_case_certificate_address_matches_lower_case_from(pki: PKI, trust: list) -> None:
    carol = pki.person("carol", "p256", email="Carol.Smith@Example.org",
                       issuer=(pki.root_key, pki.root))
    signed = smimekit.sign(message(sender="carol.smith@example.org"), carol.key, carol.cert)
    assert _verdict(signed, trust).valid


# -- internationalised addresses (RFC 9598) -------------------------------------------------


def _person_with_san(pki: PKI, name: str, san: list[x509.GeneralName]) -> Identity:
    """An end entity whose subjectAltName is exactly ``san``, issued by the test root."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(pki.root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(pki.root_key, hashes.SHA256())
    )
    return Identity(key, cert, name)


def _utf8_mailbox(address: str) -> x509.OtherName:
    data = address.encode()
    return x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.9"),
                          bytes([0x0C, len(data)]) + data)


@pytest.mark.parametrize("sender", ["anna@bücher.example.org", "Anna <ANNA@Bücher.Example.org>",
                                    "anna@xn--bcher-kva.example.org"])
def test_a_label_certificate_matches_a_u_label_from(pki: PKI, trust: list, sender: str) -> None:
    anna = _person_with_san(pki, "anna", [x509.RFC822Name("anna@xn--bcher-kva.example.org")])
    signed = smimekit.sign(message(sender=sender), anna.key, anna.cert)
    v = _verdict(signed, trust)
    assert v.valid, v.summary()


@pytest.mark.parametrize("stored", ["jürgen@xn--bcher-kva.example.org",  # RFC 9598: A-labels
                                    "jürgen@bücher.example.org"])         # RFC 8398: U-labels
def test_smtputf8mailbox_matches_a_utf8_from(pki: PKI, trust: list, stored: str) -> None:
    juergen = _person_with_san(pki, "juergen", [_utf8_mailbox(stored)])
    signed = smimekit.sign(message(sender="Jürgen <JÜRGEN@bücher.example.org>"), juergen.key,
                           juergen.cert)
    v = _verdict(signed, trust)
    assert v.valid, v.summary()
    assert v.signers[0].email == (stored,)


@pytest.mark.parametrize("sender", ["x@☃.example.org", "x@xn--zz.example.org",
                                    "jürgen@xn--bcher-kva.example.org"])
def test_other_or_invalid_internationalised_from_fails_without_a_traceback(
        pki: PKI, trust: list, sender: str) -> None:
    other = _person_with_san(pki, "other", [_utf8_mailbox("jürgen@example.org")])
    signed = smimekit.sign(message(sender=sender), other.key, other.cert)
    v = _verdict(signed, trust)
    assert not v.valid and v.signers[0].from_match is False
    assert "is not an address of the signer's certificate" in " ".join(v.all_reasons())


# -- RFC 9788 header protection -------------------------------------------------------------


def _hp_payload(hp: str, sender: str = "alice@example.org") -> bytes:
    """An RFC 9788 Cryptographic Payload: the protected header fields on the content."""
    return (f'Content-Type: text/plain; charset=utf-8; hp="{hp}"\r\nFrom: {sender}\r\n'
            f"To: bob@example.org\r\nSubject: the real subject\r\nDate: {DATE}\r\n"
            "Message-ID: <hp@example.org>\r\n\r\nProtected.\r\n").encode()


def _hp_signed(who: Identity, payload: bytes, outer: bytes) -> bytes:
    from smimekit.cms.signed import SignerSpec, sign_data
    from smimekit.smime.canonical import Entity
    from smimekit.smime.message import build_multipart_signed

    der = sign_data(payload, [SignerSpec(who.key, who.cert)])
    headers = Entity.parse(outer + b"\r\n").headers if outer else ()
    return build_multipart_signed(headers, payload, der, "sha-256")


def test_rfc9788_signed_header_protection_binds_the_protected_from(
        alice: Identity, trust: list) -> None:
    signed = _hp_signed(alice, _hp_payload("clear"),
                        f"From: alice@example.org\r\nSubject: the real subject\r\nDate: {DATE}"
                        "\r\n".encode())
    result = smimekit.verify(signed, trust=trust)
    assert result.verdict.valid and result.verdict.unsigned_from is None
    released = result.as_message()
    assert released.get_all("From") == ["alice@example.org"]
    assert released.get_all("Subject") == ["the real subject"]


def test_rfc9788_encrypted_header_protection_without_outer_from(
        alice: Identity, bob: Identity, trust: list) -> None:
    """hp="cipher": the outer Subject is obscured and the outer block has no From at all;
    the signer is bound to the From inside the encryption, which is what is shown."""
    inner = _hp_signed(alice, _hp_payload("cipher"), b"")
    sealed = smimekit.encrypt(b"To: bob@example.org\r\nSubject: [...]\r\n" + inner, [bob.cert],
                              check_recipients=False)
    result = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust)
    v = result.verdict
    assert v.valid, v.summary()
    assert [layer.kind for layer in v.layers] == ["encrypted", "signed"]
    assert v.from_address == "alice@example.org" and v.unsigned_from is None
    released = result.as_message()
    assert released.get_all("Subject") == ["the real subject"]
    assert released.get_all("From") == ["alice@example.org"]


def test_rfc9788_protected_from_of_someone_else_fails(alice: Identity, bob: Identity,
                                                      trust: list) -> None:
    inner = _hp_signed(alice, _hp_payload("cipher", BOSS), b"")
    sealed = smimekit.encrypt(b"From: alice@example.org\r\nSubject: [...]\r\n" + inner,
                              [bob.cert], check_recipients=False)
    v = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust,
                                raise_for_failure=False).verdict
    assert not v.valid and v.from_address == BOSS and v.unsigned_from == "alice@example.org"
