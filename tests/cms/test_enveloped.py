"""EnvelopedData / AuthEnvelopedData: every cipher and recipient type, and the failures."""

from __future__ import annotations

import pytest
from asn1crypto import cms, core
from pki import PKI, Identity

from smimekit.cms import Cipher, RecipientOptions, decrypt_enveloped, encrypt_enveloped
from smimekit.errors import (
    DecryptionError,
    EncryptionError,
    LegacyAlgorithmError,
    MalformedError,
    NoRecipientError,
)

PLAIN = b"Content-Type: text/plain\r\n\r\nsecret words\r\n"
KINDS = ["rsa2048", "rsa3072", "p256", "p384", "p521", "x25519", "x448"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cipher", list(Cipher))
def test_round_trip_every_cipher_and_recipient_type(pki: PKI, kind: str, cipher: Cipher) -> None:
    who = pki.person(f"r-{kind}", kind)
    der = encrypt_enveloped(PLAIN, [who.cert], cipher=cipher)
    out = decrypt_enveloped(der, [(who.key, who.cert)])
    assert out.content == PLAIN
    assert out.cipher == cipher.value
    assert out.authenticated == cipher.authenticated
    kind_name = cms.ContentInfo.load(der)["content_type"].native
    assert kind_name == ("authenticated_enveloped_data" if cipher.authenticated
                         else "enveloped_data")


@pytest.mark.parametrize("oaep", [False, True])
def test_rsa_key_transport_modes(alice: Identity, oaep: bool) -> None:
    der = encrypt_enveloped(PLAIN, [alice.cert], options=RecipientOptions(oaep=oaep))
    out = decrypt_enveloped(der, [(alice.key, alice.cert)])
    assert out.recipient == ("ktri-rsaes_oaep" if oaep else "ktri-rsaes_pkcs1v15")


@pytest.mark.parametrize(("kind", "scheme"), [
    ("p256", "sha256kdf"), ("p384", "sha384kdf"), ("p521", "sha512kdf"),
    ("x25519", "hkdf_sha256"), ("x448", "hkdf_sha512"),
])
def test_key_agreement_kdf_fits_the_curve(pki: PKI, kind: str, scheme: str) -> None:
    who = pki.person(f"r-{kind}", kind)
    der = encrypt_enveloped(PLAIN, [who.cert])
    assert decrypt_enveloped(der, [(who.key, None)]).recipient.endswith(scheme)


def test_ecdh_with_the_sha1_kdf_openssl_uses_by_default_is_read(bob: Identity) -> None:
    der = encrypt_enveloped(PLAIN, [bob.cert], options=RecipientOptions(ecdh_kdf="sha1"))
    assert decrypt_enveloped(der, [(bob.key, bob.cert)]).content == PLAIN


def test_every_recipient_opens_a_multi_recipient_message(pki: PKI) -> None:
    people = [pki.person(f"r-{k}", k) for k in ("rsa2048", "p256", "x25519")]
    der = encrypt_enveloped(PLAIN, [p.cert for p in people])
    for p in people:
        assert decrypt_enveloped(der, [(p.key, p.cert)]).content == PLAIN


def test_key_history_finds_the_matching_old_key(pki: PKI) -> None:
    old = pki.person("hist-old", "rsa2048")
    new = pki.person("hist-new", "p256")
    der = encrypt_enveloped(PLAIN, [old.cert])
    assert decrypt_enveloped(der, [(new.key, new.cert), (old.key, old.cert)]).content == PLAIN


def test_no_matching_recipient(pki: PKI, alice: Identity) -> None:
    other = pki.person("other", "rsa2048")
    der = encrypt_enveloped(PLAIN, [alice.cert])
    with pytest.raises(NoRecipientError):
        decrypt_enveloped(der, [(other.key, other.cert)])


def _tamper(der: bytes, path: str) -> bytes:
    info = cms.ContentInfo.load(der)
    body = info["content"]
    if path == "mac":
        mac = bytearray(body["mac"].native)
        mac[0] ^= 1
        body["mac"] = bytes(mac)
    else:
        field = ("auth_encrypted_content_info" if info["content_type"].native.startswith("auth")
                 else "encrypted_content_info")
        ct = bytearray(body[field]["encrypted_content"].native)
        # For CBC: the last byte of the next-to-last block flips the final padding byte,
        # which always breaks the padding (CBC itself has no integrity to catch more).
        ct[len(ct) - 17 if path == "padding" else len(ct) // 2] ^= 1
        body[field]["encrypted_content"] = bytes(ct)
    return info.dump(force=True)


@pytest.mark.parametrize("cipher", [Cipher.AES256_GCM, Cipher.AES128_GCM,
                                    Cipher.CHACHA20_POLY1305])
@pytest.mark.parametrize("where", ["mac", "ciphertext"])
def test_gcm_tag_mismatch_releases_no_plaintext(alice: Identity, cipher: Cipher, where: str
                                                ) -> None:
    der = _tamper(encrypt_enveloped(PLAIN, [alice.cert], cipher=cipher), where)
    with pytest.raises(DecryptionError) as info:
        decrypt_enveloped(der, [(alice.key, alice.cert)])
    assert not isinstance(info.value, NoRecipientError)


def test_failures_give_one_generic_message_no_oracle(pki: PKI, alice: Identity) -> None:
    """Wrong key for v1.5, wrong key for OAEP, tampered CBC: the same words every time."""
    messages = set()
    impostor = pki.person("impostor", "rsa2048", fresh_key=True)
    for oaep in (False, True):
        # Same certificate, wrong private key: the unwrap fails inside, and RFC 3218 goes on
        # with a random content key. CBC has no integrity, so about one message in 256 then
        # ends in valid padding and yields garbage instead of an error (OpenSSL does the
        # same; failing early instead would be the oracle). Such a draw says nothing about
        # the error's words: never the plaintext, and try a fresh message.
        for _ in range(8):
            der = encrypt_enveloped(PLAIN, [alice.cert], cipher=Cipher.AES256_CBC,
                                    options=RecipientOptions(oaep=oaep))
            try:
                garbage = decrypt_enveloped(der, [(impostor.key, alice.cert)])
            except DecryptionError as exc:
                messages.add(str(exc))
                break
            assert PLAIN not in garbage.content
        else:
            pytest.fail("a wrong key decrypted to valid padding 8 times in a row")
        with pytest.raises(DecryptionError) as exc:
            decrypt_enveloped(_tamper(der, "padding"), [(alice.key, alice.cert)])
        messages.add(str(exc.value))
    assert messages == {str(DecryptionError())}


def test_legacy_3des_is_refused_unless_allowed(alice: Identity) -> None:
    der = encrypt_enveloped(PLAIN, [alice.cert], cipher=Cipher.AES256_CBC)
    info = cms.ContentInfo.load(der)
    eci = info["content"]["encrypted_content_info"]
    eci["content_encryption_algorithm"] = {"algorithm": "tripledes_3key",
                                           "parameters": core.OctetString(b"\x00" * 8)}
    with pytest.raises(LegacyAlgorithmError, match="3des"):
        decrypt_enveloped(info.dump(force=True), [(alice.key, alice.cert)])


def test_no_recipients_is_refused() -> None:
    with pytest.raises(EncryptionError):
        encrypt_enveloped(PLAIN, [])


def test_signing_only_key_cannot_be_a_recipient(pki: PKI) -> None:
    ed = pki.person("ed", "ed25519")
    with pytest.raises(EncryptionError, match="cannot receive"):
        encrypt_enveloped(PLAIN, [ed.cert])


def test_signed_data_is_not_an_encrypted_message(alice: Identity) -> None:
    from smimekit.cms import SignerSpec, sign_data

    with pytest.raises(MalformedError, match="not an encrypted message"):
        decrypt_enveloped(sign_data(PLAIN, [SignerSpec(alice.key, alice.cert)]),
                          [(alice.key, alice.cert)])
