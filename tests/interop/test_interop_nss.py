"""smimekit <-> NSS 3.87 (``cmsutil``, Thunderbird's S/MIME engine), both directions.

cmsutil speaks bare DER CMS; the S/MIME wrapping is done by ``peers``. What NSS 3.87 cannot do
(OAEP, AES-GCM, ECDH) is skipped with the reason from ``peers.LIMITATIONS``; each of those
reasons is re-proved on every run by ``test_interop_harness.py``.
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

pytestmark = [pytest.mark.interop, skip_unless_peer("nss")]




# --- smimekit encrypts, cmsutil decrypts ----------------------------------------------------

ENCRYPT_CASES = {
    # id: (recipient, cipher, oaep, limitation or None)
    "rsa2048-pkcs1-aes128-cbc": ("alice", smimekit.Cipher.AES128_CBC, False, None),
    "rsa2048-pkcs1-aes256-cbc": ("alice", smimekit.Cipher.AES256_CBC, False, None),
    "rsa3072-pkcs1-aes256-cbc": ("carol", smimekit.Cipher.AES256_CBC, False, None),
    "rsa2048-oaep-aes256-cbc": ("alice", smimekit.Cipher.AES256_CBC, True, "nss-oaep"),
    "rsa2048-pkcs1-aes128-gcm": ("alice", smimekit.Cipher.AES128_GCM, False, "nss-gcm"),
    "rsa2048-pkcs1-aes256-gcm": ("alice", smimekit.Cipher.AES256_GCM, False, "nss-gcm"),
    "ecdh-p256-aes256-cbc": ("bob", smimekit.Cipher.AES256_CBC, False, "nss-ecdh"),
    "ecdh-p384-aes256-cbc": ("dave", smimekit.Cipher.AES256_CBC, False, "nss-ecdh"),
}


@pytest.mark.parametrize("case", list(ENCRYPT_CASES))
def test_smimekit_encrypts_cmsutil_decrypts(nss, ids: Loaded, case: str) -> None:
    recipient, cipher, oaep, limitation = ENCRYPT_CASES[case]
    if limitation:
        pytest.skip(LIMITATIONS[limitation])
    enc = smimekit.encrypt(MESSAGE, [ids.certs[recipient]], cipher=cipher, oaep=oaep)
    ext = smime_to_der(enc)
    assert ext.smime_type == "enveloped-data"
    assert_is_protected(nss.decode(ext.der), "cipher")


def test_smimekit_encrypts_to_rsa_and_ec_cmsutil_decrypts_as_rsa(nss, ids: Loaded) -> None:
    """NSS cannot use the EC recipient; it cannot even skip over it to its own RSA one."""
    pytest.skip(LIMITATIONS["nss-kari-any"])
    enc = smimekit.encrypt(MESSAGE, [ids.certs["bob"], ids.certs["carol"]],
                           cipher=smimekit.Cipher.AES128_CBC)
    assert_is_protected(nss.decode(smime_to_der(enc).der), "cipher")


# --- cmsutil encrypts, smimekit decrypts ----------------------------------------------------


@pytest.mark.parametrize("recipient", ["alice", "carol"])
def test_cmsutil_encrypts_smimekit_decrypts(nss, ids: Loaded, recipient: str) -> None:
    der = nss.encrypt(ENTITY, [f"{recipient}@example.org"])
    key, cert = ids[recipient]
    assert_complete_message(smimekit.decrypt(der_to_smime(der, "enveloped-data"), key,
                                             cert).content)


def test_smimekit_encrypts_to_two_rsa_cmsutil_decrypts_as_each(nss, ids: Loaded) -> None:
    enc = smimekit.encrypt(MESSAGE, [ids.certs["alice"], ids.certs["carol"]],
                           cipher=smimekit.Cipher.AES256_CBC)
    assert_is_protected(nss.decode(smime_to_der(enc).der), "cipher")


def test_cmsutil_encrypts_to_two_smimekit_decrypts_as_each(nss, ids: Loaded) -> None:
    msg = der_to_smime(nss.encrypt(ENTITY, ["alice", "carol"]), "enveloped-data")
    for who in ("alice", "carol"):
        key, cert = ids[who]
        assert_complete_message(smimekit.decrypt(msg, key, cert).content)


# --- smimekit signs, cmsutil verifies -------------------------------------------------------

SIGNERS = {
    # id: (signer, pss)
    "rsa2048-pkcs1": ("alice", False),
    "rsa2048-pss": ("alice", True),
    "rsa3072-pkcs1": ("carol", False),
    "ecdsa-p256": ("bob", False),
    "ecdsa-p384": ("dave", False),
    "ecdsa-p521": ("erin", False),
}
DIGESTS = {
    "sha256": smimekit.Digest.SHA256,
    "sha384": smimekit.Digest.SHA384,
    "sha512": smimekit.Digest.SHA512,
}


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize("digest", sorted(DIGESTS))
@pytest.mark.parametrize("signer", sorted(SIGNERS))
def test_smimekit_signs_cmsutil_verifies(
    nss, ids: Loaded, signer: str, digest: str, opaque: bool
) -> None:
    user, pss = SIGNERS[signer]
    key, cert = ids[user]
    signed = smimekit.sign(message(user), key, cert, chain=[ids.inter], opaque=opaque,
                           digest=DIGESTS[digest], pss=pss)
    ext = smime_to_der(signed)
    if opaque:
        assert ext.signed_part is None
        assert_is_protected(nss.decode(ext.der), "clear", sender=user)
    else:
        assert ext.signed_part is not None
        assert_is_protected(nss.decode(ext.der, content=ext.signed_part), "clear", sender=user)


def test_smimekit_detached_signature_refused_by_cmsutil_for_other_content(
    nss, ids: Loaded
) -> None:
    key, cert = ids["bob"]
    ext = smime_to_der(smimekit.sign(message("bob"), key, cert, chain=[ids.inter]))
    assert ext.signed_part is not None
    with pytest.raises(PeerError, match="DigestMismatch"):
        nss.decode(ext.der, content=ext.signed_part.replace(b"Hello", b"Jello"))


# --- cmsutil signs, smimekit verifies -------------------------------------------------------


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("digest", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("signer", ["alice", "bob", "carol", "dave", "erin"])
def test_cmsutil_signs_smimekit_verifies(
    nss, ids: Loaded, signer: str, digest: str, detached: bool
) -> None:
    der = nss.sign(ENTITY, signer, detached=detached, digest=digest)
    msg = (detached_to_smime(ENTITY, der, micalg=digest.lower().replace("sha", "sha-"),
                             sender=signer)
           if detached else der_to_smime(der, "signed-data", sender=signer))
    verified = smimekit.verify(msg, trust=[ids.root])
    assert_complete_message(verified.content, sender=signer)
    assert_valid_signature(verified, signer)


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("signer", ["alice", "bob"])
def test_cmsutil_signs_without_key_preference_smimekit_verifies(
    nss, ids: Loaded, signer: str, detached: bool
) -> None:
    """``-Y NONE``: no encryption-key-preference attributes; isolates the attribute set."""
    der = nss.sign(ENTITY, signer, detached=detached, key_preference=False)
    msg = (detached_to_smime(ENTITY, der, sender=signer) if detached
           else der_to_smime(der, "signed-data", sender=signer))
    verified = smimekit.verify(msg, trust=[ids.root])
    assert_complete_message(verified.content, sender=signer)
    assert_valid_signature(verified, signer)


def test_cmsutil_detached_signature_over_other_content_fails_in_smimekit(
    nss, ids: Loaded
) -> None:
    der = nss.sign(ENTITY, "carol", detached=True, key_preference=False)
    msg = detached_to_smime(ENTITY.replace(b"Hello", b"Jello"), der, sender="carol")
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(msg, trust=[ids.root])


def test_pkcs12_loaded_key_signs_for_cmsutil(nss, pki: Pki, ids: Loaded) -> None:
    key = smimekit.load_private_key(pki["dave"].p12, PASSWORD)
    cert = next(c for c in smimekit.load_certificates(pki["dave"].p12, PASSWORD)
                if c == ids.certs["dave"])
    ext = smime_to_der(smimekit.sign(message("dave"), key, cert, chain=[ids.inter],
                                     digest=smimekit.Digest.SHA384))
    assert_is_protected(nss.decode(ext.der, content=ext.signed_part), "clear", sender="dave")


def test_cmsutil_encrypts_smimekit_decrypts_with_pkcs12_key(nss, pki: Pki, ids: Loaded) -> None:
    key = smimekit.load_private_key(pki["carol"].p12, PASSWORD)
    cert = next(c for c in smimekit.load_certificates(pki["carol"].p12, PASSWORD)
                if c == ids.certs["carol"])
    der = nss.encrypt(ENTITY, ["carol"])
    assert_complete_message(smimekit.decrypt(der_to_smime(der, "enveloped-data"), key,
                                             cert).content)
