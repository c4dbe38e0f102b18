"""Wrong keys and damaged ciphertext: one generic error, no padding oracle (RFC 3218), and
legacy algorithms refused by default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from properties.pki import Pki, cert_pem, key_pem, message

import smimekit
from malformed.cases import der_of, encrypted, openssl, openssl_run, pkcs7_mime, tail_flip
from smimekit import Cipher
from smimekit.errors import (
    DecryptionError,
    LegacyAlgorithmError,
    NoRecipientError,
    SignatureInvalidError,
    SmimeError,
)

GENERIC = str(DecryptionError())


def _flip_in(der: bytes, needle: bytes, offset: int) -> bytes:
    """Flip the low bit of the byte ``offset`` bytes into the first ``needle`` in ``der``."""
    at = der.index(needle) + offset
    return der[:at] + bytes([der[at] ^ 1]) + der[at + 1:]


def _non_canonical_x25519(der: bytes) -> bytes:
    """``der`` (AuthEnvelopedData to an X25519 recipient) with the top bit of the sender's
    ephemeral key set: RFC 7748's X25519 ignores that bit, so without a check the changed
    message gives the same shared secret and decrypts."""
    from asn1crypto import cms

    info = cms.ContentInfo.load(der)
    [kari] = [r.chosen for r in info["content"]["recipient_infos"]]
    point = bytes(kari["originator"].chosen["public_key"].native)
    assert len(point) == 32 and point[31] < 0x80 and der.count(point) == 1
    at = der.index(point) + 31
    return der[:at] + bytes([der[at] | 0x80]) + der[at + 1:]


def _wrong_p256_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


# Each case: (message to decrypt, key, cert) built from the PKI. All must fail the same way.
CASES: dict[str, Callable[[Pki], tuple[bytes, Any, Any]]] = {
    "rsa-v1.5-wrong-key": lambda k: (encrypted(k, "rsa"), k["rsa2"].key, None),
    "rsa-oaep-wrong-key": lambda k: (encrypted(k, "rsa", oaep=True), k["rsa2"].key, None),
    "rsa-v1.5-right-cert-wrong-key": lambda k: (encrypted(k, "rsa"), k["rsa2"].key,
                                                k["rsa"].cert),
    "rsa-oaep-right-cert-wrong-key": lambda k: (encrypted(k, "rsa", oaep=True), k["rsa2"].key,
                                                k["rsa"].cert),
    "ecdh-wrong-key": lambda k: (encrypted(k, "p256"), _wrong_p256_key(), None),
    "ecdh-right-cert-wrong-key": lambda k: (encrypted(k, "p256"), _wrong_p256_key(),
                                            k["p256"].cert),
    "gcm-tampered-ciphertext": lambda k: (
        pkcs7_mime(tail_flip(der_of(encrypted(k, "rsa")), 40), "authEnveloped-data"),
        k["rsa"].key, k["rsa"].cert),
    "gcm-tampered-tag": lambda k: (
        pkcs7_mime(tail_flip(der_of(encrypted(k, "rsa")), 3), "authEnveloped-data"),
        k["rsa"].key, k["rsa"].cert),
    "chacha-tampered-ciphertext": lambda k: (
        pkcs7_mime(tail_flip(der_of(encrypted(k, "x25519", cipher=Cipher.CHACHA20_POLY1305)),
                              40), "authEnveloped-data"),
        k["x25519"].key, k["x25519"].cert),
    "rsa-v1.5-tampered-encrypted-key": lambda k: (
        pkcs7_mime(_flip_in(der_of(encrypted(k, "rsa")), b"\x04\x82\x01\x00", 100),
                   "authEnveloped-data"),
        k["rsa"].key, k["rsa"].cert),
    "rsa-oaep-tampered-encrypted-key": lambda k: (
        pkcs7_mime(_flip_in(der_of(encrypted(k, "rsa", oaep=True)), b"\x04\x82\x01\x00", 100),
                   "authEnveloped-data"),
        k["rsa"].key, k["rsa"].cert),
    "x25519-non-canonical-ephemeral-key": lambda k: (
        pkcs7_mime(_non_canonical_x25519(der_of(encrypted(k, "x25519"))),
                   "authEnveloped-data"),
        k["x25519"].key, k["x25519"].cert),
    "gcm-tampered-nonce": lambda k: (
        pkcs7_mime(_flip_in(der_of(encrypted(k, "p256")), b"\x30\x11\x04\x0c", 6),
                   "authEnveloped-data"),
        k["p256"].key, k["p256"].cert),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_failed_unwrap_or_decrypt_is_one_generic_decryption_error(kit: Pki,
                                                                        case: str) -> None:
    sealed, key, cert = CASES[case](kit)
    with pytest.raises(DecryptionError) as info:
        smimekit.decrypt(sealed, key, cert)
    assert type(info.value) is DecryptionError
    assert str(info.value) == GENERIC


def test_the_generic_message_does_not_depend_on_the_failing_step(kit: Pki) -> None:
    messages = set()
    for case in ("rsa-v1.5-wrong-key", "rsa-oaep-wrong-key", "gcm-tampered-ciphertext",
                 "rsa-v1.5-tampered-encrypted-key"):
        sealed, key, cert = CASES[case](kit)
        try:
            smimekit.decrypt(sealed, key, cert)
        except SmimeError as exc:
            messages.add((type(exc), str(exc), repr(exc.args)))
    assert len(messages) == 1, messages


def test_decrypt_verify_fails_the_same_generic_way(kit: Pki) -> None:
    sealed, key, cert = CASES["rsa-v1.5-wrong-key"](kit)
    with pytest.raises(DecryptionError) as info:
        smimekit.decrypt_verify(sealed, key, cert, trust=[kit.ca])
    assert type(info.value) is DecryptionError
    assert str(info.value) == GENERIC


@pytest.mark.parametrize(
    ("recipient", "reader"),
    [("rsa", "rsa2"), ("p256", "p384"), ("x25519", "p256"), ("rsa", "p256"), ("p256", "rsa")],
)
def test_a_key_whose_certificate_is_not_a_recipient_is_no_recipient(
    kit: Pki, recipient: str, reader: str
) -> None:
    with pytest.raises(NoRecipientError):
        smimekit.decrypt(encrypted(kit, recipient), kit[reader].key, kit[reader].cert)


def test_a_key_type_that_cannot_decrypt_is_no_recipient(kit: Pki) -> None:
    with pytest.raises(NoRecipientError):
        smimekit.decrypt(encrypted(kit, "rsa"), kit["ed25519"].key, None)
    with pytest.raises(NoRecipientError):
        smimekit.decrypt(encrypted(kit, "rsa"), kit["p256"].key, None)


def test_no_key_at_all_is_no_recipient(kit: Pki) -> None:
    with pytest.raises(NoRecipientError):
        smimekit.decrypt(encrypted(kit, "rsa"), None)


# -- legacy content encryption -------------------------------------------------------------


@pytest.fixture(scope="module")
def des3_message(kit: Pki, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An EnvelopedData with 3DES-CBC to the rsa user, made by OpenSSL."""
    if openssl() is None:
        pytest.skip("openssl is not installed: cannot craft a 3DES EnvelopedData")
    work: Path = tmp_path_factory.mktemp("des3")
    (work / "rsa.pem").write_bytes(cert_pem(kit["rsa"].cert))
    (work / "in.txt").write_bytes(b"Content-Type: text/plain\r\n\r\nA legacy archive.\r\n")
    openssl_run("cms", "-encrypt", "-des3", "-in", work / "in.txt", "-out", work / "out.msg",
                "-recip", work / "rsa.pem")
    return (work / "out.msg").read_bytes()


def test_3des_is_refused_without_allow_legacy(kit: Pki, des3_message: bytes) -> None:
    user = kit["rsa"]
    with pytest.raises(LegacyAlgorithmError):
        smimekit.decrypt(des3_message, user.key, user.cert)
    with pytest.raises(LegacyAlgorithmError):
        smimekit.decrypt_verify(des3_message, user.key, user.cert, trust=[kit.ca])


def test_3des_is_refused_before_any_key_is_tried(kit: Pki, des3_message: bytes) -> None:
    """The policy answer must not depend on the key (no oracle through the legacy path)."""
    with pytest.raises(LegacyAlgorithmError):
        smimekit.decrypt(des3_message, kit["rsa2"].key, None)


def test_3des_opens_with_allow_legacy(kit: Pki, des3_message: bytes) -> None:
    user = kit["rsa"]
    opened = smimekit.decrypt(des3_message, user.key, user.cert, allow_legacy=True)
    assert opened.cipher == "3des-cbc"
    assert opened.content.endswith(b"\r\n\r\nA legacy archive.\r\n")


def _openssl_signed(kit: Pki, tmp_path: Path, *options: str) -> bytes:
    """rsa@example.org's opaque signed message, as ``openssl cms -sign -nodetach`` writes it
    with ``options``, a From field in front."""
    if openssl() is None:
        pytest.skip("openssl is not installed: cannot craft this signature")
    user = kit["rsa"]
    (tmp_path / "key.pem").write_bytes(key_pem(user.key))
    (tmp_path / "cert.pem").write_bytes(cert_pem(user.cert))
    (tmp_path / "in.txt").write_bytes(message())
    openssl_run("cms", "-sign", "-nodetach", *options, "-in", tmp_path / "in.txt", "-signer",
                tmp_path / "cert.pem", "-inkey", tmp_path / "key.pem", "-out",
                tmp_path / "out.msg")
    return b"From: rsa@example.org\r\n" + (tmp_path / "out.msg").read_bytes()


def test_sha1_signature_is_refused_without_allow_legacy(
    kit: Pki, tmp_path: Path
) -> None:
    signed_sha1 = _openssl_signed(kit, tmp_path, "-md", "sha1")
    with pytest.raises(LegacyAlgorithmError):
        smimekit.verify(signed_sha1, trust=[kit.ca])


@pytest.mark.parametrize("econtent_type", ["1.3.6.1.4.1.32473.1", None],
                         ids=["another-protocol", "id-data"])
def test_a_signature_over_another_content_type_is_not_a_mail_signature(
    kit: Pki, tmp_path: Path, econtent_type: str | None
) -> None:
    """OpenSSL signs the same MIME bytes under another eContentType (an OID of RFC 5612's
    documentation arc) instead of id-data: valid CMS, the content-type attribute agreeing,
    but a signature made for another protocol. S/MIME signs id-data (RFC 8551 3.1); the
    other is refused, by name."""
    sealed = _openssl_signed(kit, tmp_path, "-md", "sha256", "-binary",
                             *(["-econtent_type", econtent_type] if econtent_type else []))
    if econtent_type is None:
        assert smimekit.verify(sealed, trust=[kit.ca]).verdict.valid
        return
    with pytest.raises(SignatureInvalidError, match="not a MIME entity"):
        smimekit.verify(sealed, trust=[kit.ca])


# -- trial decryption without a certificate ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipients", "reader"),
    [(("p256", "p384"), "p384"), (("rsa", "rsa2"), "rsa2")],
    ids=["ecdh-other-curve-first", "rsa-other-key-first"],
)
def test_cbc_without_a_certificate_never_returns_another_slots_garbage(
    kit: Pki, recipients: tuple[str, str], reader: str
) -> None:
    """Key given without its certificate, so every slot of its type is tried.

    The first slot belongs to someone else: its unwrap fails, a random key stands in (RFC
    3218), and AES-CBC with a random key still ends in valid padding about once in 256
    tries. Decrypt must not hand that out as the message while our own slot is there.
    """
    user = kit[reader]
    sealed = smimekit.encrypt(message(b"The secret is 42.\r\n"),
                              [kit[r].cert for r in recipients], cipher=Cipher.AES128_CBC)
    expected = smimekit.decrypt(sealed, user.key, user.cert).content
    garbage = 0
    for _ in range(1200):
        try:
            opened = smimekit.decrypt(sealed, user.key, None)
        except DecryptionError:
            continue  # refusing is acceptable; releasing garbage is not
        garbage += opened.content != expected
    assert garbage == 0, f"{garbage} of 1200 decryptions returned garbage as the message"
