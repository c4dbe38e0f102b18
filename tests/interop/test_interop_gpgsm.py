"""smimekit <-> GnuPG gpgsm 2.2.40, both directions.

gpgsm speaks bare DER CMS; the S/MIME wrapping is done by ``peers`` (a mail client's job).
What gpgsm 2.2.40 cannot do is skipped with the reason from ``peers.LIMITATIONS``; each of
those reasons is re-proved on every run by ``test_interop_harness.py``.
"""

from __future__ import annotations

import pytest
from checks import (
    Loaded,
    assert_complete_message,
    assert_is_protected,
    assert_valid_signature,
)
from peers import (
    ENTITY,
    LIMITATIONS,
    MESSAGE,
    PASSWORD,
    PeerError,
    Pki,
    der_to_smime,
    detached_to_smime,
    message,
    skip_unless_peer,
    smime_to_der,
)

import smimekit
from smimekit.errors import SignatureInvalidError

pytestmark = [pytest.mark.interop, skip_unless_peer("gpgsm")]

GPGSM_CIPHERS = ("AES128", "AES256")  # --cipher-algo; gpgsm only writes CBC



# --- smimekit encrypts, gpgsm decrypts ------------------------------------------------------

ENCRYPT_CASES = {
    # id: (recipient, cipher, oaep, limitation or None)
    "rsa-pkcs1-aes128-cbc": ("alice", smimekit.Cipher.AES128_CBC, False, None),
    "rsa-pkcs1-aes256-cbc": ("alice", smimekit.Cipher.AES256_CBC, False, None),
    "rsa-oaep-aes256-cbc": ("alice", smimekit.Cipher.AES256_CBC, True, "gpgsm-oaep"),
    "rsa-pkcs1-aes128-gcm": ("alice", smimekit.Cipher.AES128_GCM, False, "gpgsm-gcm"),
    "rsa-pkcs1-aes256-gcm": ("alice", smimekit.Cipher.AES256_GCM, False, "gpgsm-gcm"),
    "ecdh-p256-aes256-cbc": ("bob", smimekit.Cipher.AES256_CBC, False, "gpgsm-ecdh"),
}


@pytest.mark.parametrize("case", list(ENCRYPT_CASES))
def test_smimekit_encrypts_gpgsm_decrypts(gpgsm, ids: Loaded, case: str) -> None:
    recipient, cipher, oaep, limitation = ENCRYPT_CASES[case]
    if limitation:
        pytest.skip(LIMITATIONS[limitation])
    enc = smimekit.encrypt(MESSAGE, [ids.certs[recipient]], cipher=cipher, oaep=oaep)
    ext = smime_to_der(enc)
    assert ext.smime_type == "enveloped-data"
    assert_is_protected(gpgsm.decrypt(ext.der), "cipher")


def test_smimekit_encrypts_to_gpgsm_and_another_recipient(gpgsm, ids: Loaded) -> None:
    """alice (gpgsm) shares the message with an EC recipient gpgsm cannot use itself."""
    enc = smimekit.encrypt(MESSAGE, [ids.certs["bob"], ids.certs["alice"]],
                           cipher=smimekit.Cipher.AES256_CBC)
    assert_is_protected(gpgsm.decrypt(smime_to_der(enc).der), "cipher")


# --- gpgsm encrypts, smimekit decrypts ------------------------------------------------------


@pytest.mark.parametrize("cipher", GPGSM_CIPHERS)
def test_gpgsm_encrypts_smimekit_decrypts(gpgsm, pki: Pki, ids: Loaded, cipher: str) -> None:
    der = gpgsm.encrypt(ENTITY, [pki["alice"].email], cipher=cipher)
    key, cert = ids["alice"]
    assert_complete_message(smimekit.decrypt(der_to_smime(der, "enveloped-data"), key,
                                             cert).content)


def test_gpgsm_encrypts_to_two_smimekit_decrypts_as_each(gpgsm, pki: Pki, ids: Loaded) -> None:
    der = gpgsm.encrypt(ENTITY, [pki["alice"].email, pki["carol"].email])
    msg = der_to_smime(der, "enveloped-data")
    for who in ("alice", "carol"):
        key, cert = ids[who]
        assert_complete_message(smimekit.decrypt(msg, key, cert).content)


# --- smimekit signs, gpgsm verifies ---------------------------------------------------------

SIGN_CASES = {
    # id: (signer, digest, pss, limitation or None)
    "rsa-pkcs1-sha256": ("alice", smimekit.Digest.SHA256, False, None),
    "rsa-pkcs1-sha384": ("alice", smimekit.Digest.SHA384, False, None),
    "rsa-pkcs1-sha512": ("carol", smimekit.Digest.SHA512, False, None),
    "rsa-pss-sha256": ("alice", smimekit.Digest.SHA256, True, None),
    "rsa-pss-sha512": ("carol", smimekit.Digest.SHA512, True, None),
    "ecdsa-p256-sha256": ("bob", smimekit.Digest.SHA256, False, None),
    "ecdsa-p384-sha384": ("dave", smimekit.Digest.SHA384, False, None),
    "ecdsa-p384-sha256": ("dave", smimekit.Digest.SHA256, False, "gpgsm-p384-sha256"),
    "ecdsa-p521-sha512": ("erin", smimekit.Digest.SHA512, False, "gpgsm-p521"),
}


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize("case", list(SIGN_CASES))
def test_smimekit_signs_gpgsm_verifies(gpgsm, ids: Loaded, case: str, opaque: bool) -> None:
    signer, digest, pss, limitation = SIGN_CASES[case]
    if limitation:
        pytest.skip(LIMITATIONS[limitation])
    key, cert = ids[signer]
    signed = smimekit.sign(message(signer), key, cert, chain=[ids.inter], opaque=opaque,
                           digest=digest, pss=pss)
    ext = smime_to_der(signed)
    if opaque:
        assert ext.signed_part is None
        status = gpgsm.verify(ext.der)
    else:
        # the signature file and the canonical (CRLF) signed part, as PEERS.md says
        assert ext.signed_part is not None
        assert_is_protected(ext.signed_part, "clear", sender=signer)
        status = gpgsm.verify(ext.der, ext.signed_part)
    assert "TRUST_FULLY" in status


def test_smimekit_detached_signature_refused_by_gpgsm_for_other_content(
    gpgsm, ids: Loaded
) -> None:
    key, cert = ids["alice"]
    ext = smime_to_der(smimekit.sign(MESSAGE, key, cert, chain=[ids.inter]))
    assert ext.signed_part is not None
    with pytest.raises(PeerError, match="message digest attribute does not match"):
        gpgsm.verify(ext.der, ext.signed_part.replace(b"Hello", b"Jello"))


# --- gpgsm signs, smimekit verifies ---------------------------------------------------------


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_gpgsm_signs_smimekit_verifies(gpgsm, pki: Pki, ids: Loaded, detached: bool) -> None:
    der = gpgsm.sign(ENTITY, pki["alice"].email, detached=detached)
    msg = detached_to_smime(ENTITY, der) if detached else der_to_smime(der, "signed-data")
    verified = smimekit.verify(msg, trust=[ids.root])
    assert_complete_message(verified.content)
    assert_valid_signature(verified, "alice")


def test_gpgsm_detached_signature_over_other_content_fails_in_smimekit(
    gpgsm, pki: Pki, ids: Loaded
) -> None:
    der = gpgsm.sign(ENTITY, pki["alice"].email, detached=True)
    msg = detached_to_smime(ENTITY.replace(b"Hello", b"Jello"), der)
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(msg, trust=[ids.root])


def test_gpgsm_encrypts_smimekit_decrypts_with_legacy_pkcs12_key(
    gpgsm, pki: Pki, ids: Loaded
) -> None:
    """The very file gpgsm imported (3DES/RC2 PKCS#12) also opens in smimekit."""
    p12 = pki["alice"].p12_legacy
    key = smimekit.load_private_key(p12, PASSWORD)
    cert = next(c for c in smimekit.load_certificates(p12, PASSWORD) if c == ids.certs["alice"])
    der = gpgsm.encrypt(ENTITY, [pki["alice"].email], cipher="AES128")
    assert_complete_message(smimekit.decrypt(der_to_smime(der, "enveloped-data"), key,
                                             cert).content)
