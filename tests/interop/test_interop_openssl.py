"""smimekit <-> OpenSSL 3.0 (``openssl cms``), both directions.

Every case checks the recovered entity (Content-* headers and exact body bytes) against the
original, that the outer headers survive, and the verification outcome.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from checks import Loaded, assert_complete_message, assert_is_protected, assert_valid_signature
from peers import (
    ENTITY,
    MESSAGE,
    PASSWORD,
    PeerError,
    Pki,
    crlf,
    from_header,
    header,
    lf,
    message,
    openssl_cms_print,
    openssl_decrypt,
    openssl_encrypt,
    openssl_sign,
    openssl_verify,
    outer_headers,
    skip_unless_peer,
    smime_to_der,
    with_outer_headers,
)

import smimekit
from smimekit.errors import DecryptionError, SignatureInvalidError, UntrustedError

pytestmark = [pytest.mark.interop, skip_unless_peer("openssl")]


# id -> (user, pss)
SIGNERS = {
    "rsa2048-pkcs1": ("alice", False),
    "rsa2048-pss": ("alice", True),
    "rsa3072-pkcs1": ("carol", False),
    "rsa3072-pss": ("carol", True),
    "ecdsa-p256": ("bob", False),
    "ecdsa-p384": ("dave", False),
    "ecdsa-p521": ("erin", False),
}
DIGESTS = {
    "sha256": smimekit.Digest.SHA256,
    "sha384": smimekit.Digest.SHA384,
    "sha512": smimekit.Digest.SHA512,
}
# id -> (user, oaep)
RECIPIENTS = {
    "rsa2048-pkcs1": ("alice", False),
    "rsa2048-oaep": ("alice", True),
    "rsa3072-pkcs1": ("carol", False),
    "rsa3072-oaep": ("carol", True),
    "ecdh-p256": ("bob", False),
    "ecdh-p384": ("dave", False),
    "ecdh-p521": ("erin", False),
}
# id -> (smimekit option, OID of the content-encryption algorithm)
CIPHERS = {
    "aes128-cbc": (smimekit.Cipher.AES128_CBC, "2.16.840.1.101.3.4.1.2"),
    "aes256-cbc": (smimekit.Cipher.AES256_CBC, "2.16.840.1.101.3.4.1.42"),
    "aes128-gcm": (smimekit.Cipher.AES128_GCM, "2.16.840.1.101.3.4.1.6"),
    "aes256-gcm": (smimekit.Cipher.AES256_GCM, "2.16.840.1.101.3.4.1.46"),
}
DIGEST_OIDS = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
               "sha512": "2.16.840.1.101.3.4.2.3"}
ECDSA_OIDS = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3",
              "sha512": "1.2.840.10045.4.3.4"}
RSASSA_PSS = "1.2.840.113549.1.1.10"
RSAES_OAEP = "1.2.840.113549.1.1.7"
# id -> (user, openssl -keyopt list): what openssl cms -encrypt can do on this machine
OPENSSL_RECIPIENTS = {
    "rsa-pkcs1": ("alice", []),
    "rsa-oaep-sha1": ("alice", ["rsa_padding_mode:oaep"]),
    "rsa-oaep-sha256": ("carol", ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"]),
    "ecdh-p256-sha1kdf": ("bob", []),
    "ecdh-p256-sha256kdf": ("bob", ["ecdh_kdf_md:sha256"]),
    "ecdh-p384-sha384kdf": ("dave", ["ecdh_kdf_md:sha384"]),
    "ecdh-p521-sha512kdf": ("erin", ["ecdh_kdf_md:sha512"]),
}



# --- signatures -----------------------------------------------------------------------------


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize("digest", sorted(DIGESTS))
@pytest.mark.parametrize("signer", sorted(SIGNERS))
def test_smimekit_signs_openssl_verifies(
    pki: Pki, ids: Loaded, signer: str, digest: str, opaque: bool
) -> None:
    user, pss = SIGNERS[signer]
    key, cert = ids[user]
    signed = smimekit.sign(message(user), key, cert, chain=[ids.inter], opaque=opaque,
                           digest=DIGESTS[digest], pss=pss)
    assert header(signed, "From") == from_header(user)
    ext = smime_to_der(signed)
    assert (ext.signed_part is None) == opaque
    assert_is_protected(openssl_verify(signed, pki.root_cert), "clear", sender=user)
    printed = openssl_cms_print(ext.der)
    assert f"({DIGEST_OIDS[digest]})" in printed
    if pss:
        assert f"({RSASSA_PSS})" in printed
    elif user in ("bob", "dave", "erin"):
        assert f"({ECDSA_OIDS[digest]})" in printed


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize("digest", sorted(DIGESTS))
@pytest.mark.parametrize("signer", sorted(SIGNERS))
def test_openssl_signs_smimekit_verifies(
    pki: Pki, ids: Loaded, signer: str, digest: str, opaque: bool
) -> None:
    user, pss = SIGNERS[signer]
    u = pki[user]
    msg = with_outer_headers(openssl_sign(ENTITY, u.key, u.cert, chain=[pki.inter_cert],
                                          detached=not opaque, digest=digest, pss=pss),
                             sender=user)
    verified = smimekit.verify(msg, trust=[ids.root])
    assert_complete_message(verified.content, sender=user)
    assert_valid_signature(verified, user)


def test_openssl_signature_over_other_content_is_refused(pki: Pki, ids: Loaded) -> None:
    """Negative control: the matrix's positive verifications can fail."""
    u = pki["alice"]
    msg = with_outer_headers(openssl_sign(ENTITY, u.key, u.cert, chain=[pki.inter_cert]))
    tampered = msg.replace(b"Hello from", b"Jello from")
    assert tampered != msg
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(tampered, trust=[ids.root])


def test_openssl_signature_under_unknown_root_is_untrusted(pki: Pki, ids: Loaded) -> None:
    u = pki["bob"]
    msg = with_outer_headers(openssl_sign(ENTITY, u.key, u.cert, chain=[pki.inter_cert]),
                             sender="bob")
    with pytest.raises(UntrustedError):
        smimekit.verify(msg, trust=[ids.certs["carol"]])


def test_smimekit_signature_over_other_content_is_refused_by_openssl(
    pki: Pki, ids: Loaded
) -> None:
    key, cert = ids["alice"]
    signed = smimekit.sign(MESSAGE, key, cert, chain=[ids.inter])
    tampered = signed.replace(b"Hello from", b"Jello from")
    assert tampered != signed
    with pytest.raises(PeerError, match="content verify error"):
        openssl_verify(tampered, pki.root_cert)


# --- encryption -----------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
@pytest.mark.parametrize("recipient", sorted(RECIPIENTS))
def test_smimekit_encrypts_openssl_decrypts(
    pki: Pki, ids: Loaded, recipient: str, cipher: str
) -> None:
    user, oaep = RECIPIENTS[recipient]
    enc = smimekit.encrypt(MESSAGE, [ids.certs[user]], cipher=CIPHERS[cipher][0], oaep=oaep)
    assert header(enc, "From") == from_header("alice")
    ext = smime_to_der(enc)
    gcm = cipher.endswith("gcm")
    assert ext.smime_type == ("authEnveloped-data" if gcm else "enveloped-data")
    assert_is_protected(openssl_decrypt(enc, pki[user].key, pki[user].cert), "cipher")
    printed = openssl_cms_print(ext.der)
    assert f"({CIPHERS[cipher][1]})" in printed
    assert (f"({RSAES_OAEP})" in printed) == oaep


@pytest.mark.parametrize("cipher", ["aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"])
@pytest.mark.parametrize("recipient", sorted(OPENSSL_RECIPIENTS))
def test_openssl_encrypts_smimekit_decrypts(
    pki: Pki, ids: Loaded, recipient: str, cipher: str
) -> None:
    user, keyopts = OPENSSL_RECIPIENTS[recipient]
    msg = with_outer_headers(openssl_encrypt(ENTITY, [(pki[user].cert, keyopts)],
                                             cipher=cipher))
    key, cert = ids[user]
    assert_complete_message(smimekit.decrypt(msg, key, cert).content)


def test_openssl_message_decrypts_without_naming_the_certificate(pki: Pki, ids: Loaded) -> None:
    msg = with_outer_headers(openssl_encrypt(ENTITY, [(pki["carol"].cert, [])]))
    assert_complete_message(smimekit.decrypt(msg, ids.keys["carol"]).content)


def test_openssl_message_for_someone_else_is_not_decrypted(pki: Pki, ids: Loaded) -> None:
    msg = with_outer_headers(openssl_encrypt(ENTITY, [(pki["alice"].cert, [])]))
    key, cert = ids["carol"]
    with pytest.raises(DecryptionError):
        smimekit.decrypt(msg, key, cert)


# --- several recipients in one message ------------------------------------------------------


@pytest.mark.parametrize("cipher", ["aes256-gcm", "aes128-cbc"])
def test_smimekit_multi_recipient_rsa_and_ec_each_decrypt_with_openssl(
    pki: Pki, ids: Loaded, cipher: str
) -> None:
    people = ["alice", "bob", "carol", "dave"]
    enc = smimekit.encrypt(MESSAGE, [ids.certs[p] for p in people], cipher=CIPHERS[cipher][0])
    for p in people:
        assert_is_protected(openssl_decrypt(enc, pki[p].key, pki[p].cert), "cipher")


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "aes-256-cbc"])
def test_openssl_multi_recipient_rsa_and_ec_each_decrypt_with_smimekit(
    pki: Pki, ids: Loaded, cipher: str
) -> None:
    recips = [(pki["alice"].cert, ["rsa_padding_mode:oaep"]),
              (pki["bob"].cert, ["ecdh_kdf_md:sha256"]),
              (pki["carol"].cert, []),
              (pki["dave"].cert, [])]
    msg = with_outer_headers(openssl_encrypt(ENTITY, recips, cipher=cipher))
    for p in ("alice", "bob", "carol", "dave"):
        key, cert = ids[p]
        assert_complete_message(smimekit.decrypt(msg, key, cert).content)


# --- sign, then encrypt ---------------------------------------------------------------------


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize(("signer", "recipient"), [("alice", "bob"), ("dave", "carol")])
def test_smimekit_sign_then_encrypt_opened_by_openssl(
    pki: Pki, ids: Loaded, signer: str, recipient: str, opaque: bool
) -> None:
    key, cert = ids[signer]
    enc = smimekit.sign_encrypt(message(signer, recipient), key, cert, [ids.certs[recipient]],
                                chain=[ids.inter], opaque=opaque)
    assert header(enc, "From") == from_header(signer)
    inner = openssl_decrypt(enc, pki[recipient].key, pki[recipient].cert)
    assert (smime_to_der(inner).signed_part is None) == opaque
    assert_is_protected(openssl_verify(inner, pki.root_cert), "cipher", signer, recipient)


def test_openssl_sign_then_encrypt_opened_by_smimekit(pki: Pki, ids: Loaded) -> None:
    a = pki["alice"]
    signed = openssl_sign(ENTITY, a.key, a.cert, chain=[pki.inter_cert])
    msg = with_outer_headers(openssl_encrypt(signed, [(pki["bob"].cert, ["ecdh_kdf_md:sha256"])],
                                             cipher="aes-256-gcm"))
    key, cert = ids["bob"]
    verified = smimekit.decrypt_verify(msg, key, cert, trust=[ids.root])
    assert_complete_message(verified.content)
    assert_valid_signature(verified, "alice")
    assert verified.verdict.encrypted


# --- keys and certificates from PKCS#12 -----------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["p12-aes", "p12-legacy"])
def test_smimekit_signs_with_pkcs12_key_openssl_verifies(
    pki: Pki, ids: Loaded, legacy: bool
) -> None:
    p12 = pki["alice"].p12_legacy if legacy else pki["alice"].p12
    key = smimekit.load_private_key(p12, PASSWORD)
    certs = smimekit.load_certificates(p12, PASSWORD)
    cert = next(c for c in certs if c == ids.certs["alice"])
    signed = smimekit.sign(MESSAGE, key, cert, chain=[ids.inter])
    assert_is_protected(openssl_verify(signed, pki.root_cert), "clear")


def test_openssl_encrypts_smimekit_decrypts_with_pkcs12_key(pki: Pki, ids: Loaded) -> None:
    p12 = pki["bob"].p12
    key = smimekit.load_private_key(p12, PASSWORD)
    cert = next(c for c in smimekit.load_certificates(p12, PASSWORD) if c == ids.certs["bob"])
    msg = with_outer_headers(openssl_encrypt(ENTITY, [(pki["bob"].cert, ["ecdh_kdf_md:sha256"])],
                                             cipher="aes-128-gcm"))
    assert_complete_message(smimekit.decrypt(msg, key, cert).content)


# --- line endings and 8-bit text ------------------------------------------------------------


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_smimekit_signs_lf_only_input_canonically_for_openssl(
    pki: Pki, ids: Loaded, opaque: bool
) -> None:
    """A message with bare LF line ends (as read from a Unix mbox) is signed over its CRLF
    form; openssl_verify checks the exact bytes of the signed part for detached."""
    key, cert = ids["alice"]
    signed = smimekit.sign(lf(MESSAGE), key, cert, chain=[ids.inter], opaque=opaque)
    assert_is_protected(openssl_verify(signed, pki.root_cert), "clear")


UTF8_BODY = "Grüße aus Köln, naïve café: 20 €.\nLine with trailing space \n".encode()
UTF8_MESSAGE = (outer_headers("alice") + b"MIME-Version: 1.0\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + crlf(UTF8_BODY))


def _decoded_body(entity: bytes) -> bytes:
    part = email.message_from_bytes(crlf(entity), policy=email.policy.compat32)
    assert part.get_content_type() == "text/plain"
    assert part.get_content_charset() == "utf-8"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return crlf(payload)


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_smimekit_signs_8bit_utf8_text_openssl_verifies_same_text(
    pki: Pki, ids: Loaded, opaque: bool
) -> None:
    """8-bit text is made 7-bit (RFC 8551 3.1.2) before signing; what OpenSSL verifies
    decodes to the same UTF-8 text."""
    key, cert = ids["alice"]
    signed = smimekit.sign(UTF8_MESSAGE, key, cert, chain=[ids.inter], opaque=opaque)
    assert max(signed) < 0x80
    assert _decoded_body(openssl_verify(signed, pki.root_cert)) == crlf(UTF8_BODY)


def test_smimekit_encrypts_8bit_utf8_text_openssl_decrypts_same_text(
    pki: Pki, ids: Loaded
) -> None:
    enc = smimekit.encrypt(UTF8_MESSAGE, [ids.certs["bob"]])
    plain = openssl_decrypt(enc, pki["bob"].key, pki["bob"].cert)
    assert _decoded_body(plain) == crlf(UTF8_BODY)
