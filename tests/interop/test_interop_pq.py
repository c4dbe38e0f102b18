"""A message to ML-KEM and classical recipients still opens for the classical ones in peers
that know nothing of post-quantum CMS (OpenSSL 3.0, gpgsm 2.2, NSS cmsutil): they must skip
the KEMRecipientInfo (an ``ori``, RFC 5652 6.2.5) and use their own slot. Hybrid migration
depends on it: a sender cannot know which clients a recipient reads mail with."""

from __future__ import annotations

import pytest
from checks import Loaded, assert_is_original
from peers import MESSAGE, PeerError, Pki, openssl_decrypt, skip_unless_peer, smime_to_der
from pki import PKI

import smimekit

pytestmark = [pytest.mark.interop]


@pytest.fixture(scope="module")
def kem_cert() -> object:
    return PKI().person("kem-interop", "mlkem768").cert


@skip_unless_peer("openssl")
@pytest.mark.parametrize("cipher", [smimekit.Cipher.AES256_GCM, smimekit.Cipher.AES128_CBC])
@pytest.mark.parametrize("user", ["alice", "bob"])
def test_openssl_decrypts_its_slot_beside_an_ml_kem_recipient(
    pki: Pki, ids: Loaded, kem_cert: object, user: str, cipher: smimekit.Cipher
) -> None:
    enc = smimekit.encrypt(MESSAGE, [kem_cert, ids.certs[user]], cipher=cipher,  # type: ignore[list-item]
                           check_recipients=False)
    assert_is_original(openssl_decrypt(enc, pki[user].key, pki[user].cert))
    assert_is_original(openssl_decrypt(enc, pki[user].key))


@skip_unless_peer("gpgsm")
def test_gpgsm_decrypts_its_slot_beside_an_ml_kem_recipient(
    gpgsm, ids: Loaded, kem_cert: object  # type: ignore[no-untyped-def]
) -> None:
    enc = smimekit.encrypt(MESSAGE, [kem_cert, ids.certs["alice"]],  # type: ignore[list-item]
                           cipher=smimekit.Cipher.AES256_CBC, check_recipients=False)
    assert_is_original(gpgsm.decrypt(smime_to_der(enc).der))


@skip_unless_peer("nss")
def test_cmsutil_cannot_read_a_message_with_an_ml_kem_recipient(
    nss, ids: Loaded, kem_cert: object  # type: ignore[no-untyped-def]
) -> None:
    """NSS 3.87 rejects the whole message as bad DER when one RecipientInfo is an ori, as it
    does for a kari (tests/interop/README.md): a recipient who reads mail with Thunderbird
    needs a message without ML-KEM recipients until NSS learns to skip them. The same
    message without the ML-KEM recipient decodes."""
    enc = smimekit.encrypt(MESSAGE, [kem_cert, ids.certs["carol"]],  # type: ignore[list-item]
                           cipher=smimekit.Cipher.AES256_CBC, check_recipients=False)
    with pytest.raises(PeerError, match="SEC_ERROR_BAD_DER"):
        nss.decode(smime_to_der(enc).der)
    plain = smimekit.encrypt(MESSAGE, [ids.certs["carol"]], cipher=smimekit.Cipher.AES256_CBC,
                             check_recipients=False)
    assert_is_original(nss.decode(smime_to_der(plain).der))
