"""RFC 8551 SMIMEEncryptionKeyPreference against the peers: our signatures carrying it verify
in ``openssl cms``, gpgsm and NSS ``cmsutil``; NSS's own signatures carrying it (and
Microsoft's 1.3.6.1.4.1.311.16.4, which NSS adds beside it) are read, the announced
certificate reported in the verdict.

The announced certificate here is carol's (RSA-3072) for a P-256 signer, bob: the attribute's
structure is what the peers meet, whoever it names.
"""

from __future__ import annotations

import pytest
from checks import Loaded, assert_is_protected, assert_valid_signature
from cryptography.hazmat.primitives import hashes
from peers import (
    ENTITY,
    Pki,
    der_to_smime,
    detached_to_smime,
    message,
    missing_binaries,
    openssl_cms_print,
    openssl_verify,
    smime_to_der,
)

import smimekit

pytestmark = pytest.mark.interop

ENCRYPT_KEY_PREF = "1.2.840.113549.1.9.16.2.11"


def _need(peer: str) -> None:
    missing = missing_binaries(peer)
    if missing:
        pytest.skip(f"interop peer {peer!r} not installed (missing: {', '.join(missing)})")


def _signed(ids: Loaded, opaque: bool) -> bytes:
    key, cert = ids["bob"]
    return smimekit.sign(message("bob"), key, cert, chain=[ids.inter], opaque=opaque,
                         encryption_cert=ids.certs["carol"])


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_signature_with_key_preference_verifies_in_openssl(
        pki: Pki, ids: Loaded, opaque: bool) -> None:
    signed = _signed(ids, opaque)
    assert_is_protected(openssl_verify(signed, pki.root_cert), "clear", sender="bob")
    printed = openssl_cms_print(smime_to_der(signed).der)
    assert "id-smime-aa-encrypKeyPref" in printed or ENCRYPT_KEY_PREF in printed
    assert "Carol" in printed  # the announced certificate travels in the SignedData


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_signature_with_key_preference_verifies_in_gpgsm(
        gpgsm, ids: Loaded, opaque: bool) -> None:
    _need("gpgsm")
    ext = smime_to_der(_signed(ids, opaque))
    status = gpgsm.verify(ext.der, ext.signed_part)
    assert "TRUST_FULLY" in status


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_signature_with_key_preference_verifies_in_cmsutil(
        nss, ids: Loaded, opaque: bool) -> None:
    _need("nss")
    ext = smime_to_der(_signed(ids, opaque))
    assert_is_protected(nss.decode(ext.der, content=ext.signed_part), "clear", sender="bob")


def _fingerprint(cert: object) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()  # type: ignore[attr-defined]


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("preferred", [None, "carol"], ids=["own-cert", "other-cert"])
def test_cmsutil_key_preference_is_reported_in_the_verdict(
        nss, ids: Loaded, detached: bool, preferred: str | None) -> None:
    _need("nss")
    der = nss.sign(ENTITY, "bob", detached=detached,
                   key_preference=preferred if preferred else True)
    msg = (detached_to_smime(ENTITY, der, sender="bob") if detached
           else der_to_smime(der, "signed-data", sender="bob"))
    verified = smimekit.verify(msg, trust=[ids.root], extra_certs=[ids.certs["carol"]],
                               revocation=None)
    assert_valid_signature(verified, "bob")
    signer = verified.verdict.signers[0]
    expected = ids.certs[preferred or "bob"]
    assert signer.encryption_key_preference is not None
    assert signer.encryption_cert is not None
    assert signer.encryption_cert.sha256 == _fingerprint(expected)
