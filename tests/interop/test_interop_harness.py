"""The harness proves itself: peer -> peer round trips, without smimekit.

If one of these fails, the matrix results mean nothing. They also prove that each verifier the
matrix relies on really rejects a tampered message (a harness that always says "good" would
make every smimekit test pass).
"""

from __future__ import annotations

import pytest
from peers import (
    ENTITY,
    LIMITATIONS,
    PASSWORD,
    Gpgsm,
    NssDb,
    PeerError,
    Pki,
    crlf,
    der_to_smime,
    detached_to_smime,
    openssl_cms_print,
    openssl_decrypt,
    openssl_encrypt,
    openssl_sign,
    openssl_verify,
    run,
    skip_unless_peer,
    smime_to_der,
    with_outer_headers,
)

pytestmark = [pytest.mark.interop, skip_unless_peer("openssl")]

TAMPERED = ENTITY.replace(b"Hello", b"Jello")


@pytest.mark.parametrize("name", ["alice", "bob", "carol", "dave", "erin"])
def test_pki_end_entity_chains_to_root_for_smime(pki: Pki, name: str) -> None:
    # OpenSSL's smimeencrypt purpose demands keyEncipherment, which EC certificates
    # (keyAgreement) do not have: only the RSA ones are checked for it.
    purposes = ["smimesign", "smimeencrypt"] if pki[name].kind == "rsa" else ["smimesign"]
    for purpose in purposes:
        run(["openssl", "verify", "-CAfile", pki.root_cert, "-untrusted", pki.inter_cert,
             "-purpose", purpose, pki[name].cert])
    text = run(["openssl", "x509", "-in", pki[name].cert, "-noout", "-ext",
                "subjectAltName,extendedKeyUsage"]).stdout.decode()
    assert f"email:{name}@example.org" in text
    assert "E-mail Protection" in text


@pytest.mark.parametrize("legacy", [False, True], ids=["aes", "legacy"])
def test_pki_pkcs12_opens_with_known_password(pki: Pki, legacy: bool) -> None:
    user = pki["alice"]
    p12 = user.p12_legacy if legacy else user.p12
    cmd = ["openssl", "pkcs12", "-in", p12, "-passin", f"pass:{PASSWORD}", "-noenc", "-info"]
    if legacy:
        cmd.append("-legacy")
    proc = run(cmd)
    assert b"BEGIN PRIVATE KEY" in proc.stdout
    assert (b"pbeWithSHA1And3-KeyTripleDES-CBC" in proc.stderr) == legacy


@pytest.mark.parametrize(
    ("signer", "pss", "detached"),
    [("alice", False, True), ("alice", True, False), ("bob", False, True), ("dave", False, False)],
)
def test_openssl_signs_openssl_verifies(pki: Pki, signer: str, pss: bool, detached: bool) -> None:
    user = pki[signer]
    msg = with_outer_headers(
        openssl_sign(ENTITY, user.key, user.cert, chain=[pki.inter_cert], detached=detached,
                     pss=pss)
    )
    assert crlf(openssl_verify(msg, pki.root_cert)) == ENTITY
    ext = smime_to_der(msg)
    if detached:
        assert ext.signed_part == ENTITY
        forged = detached_to_smime(TAMPERED, ext.der)
        with pytest.raises(PeerError, match="content verify error"):
            openssl_verify(forged, pki.root_cert)


@pytest.mark.parametrize(
    ("recipient", "keyopts", "cipher"),
    [
        ("alice", [], "aes-128-cbc"),
        ("alice", ["rsa_padding_mode:oaep"], "aes-256-gcm"),
        ("bob", [], "aes-256-cbc"),
        ("bob", ["ecdh_kdf_md:sha256"], "aes-128-gcm"),
    ],
)
def test_openssl_encrypts_openssl_decrypts(
    pki: Pki, recipient: str, keyopts: list[str], cipher: str
) -> None:
    user = pki[recipient]
    msg = with_outer_headers(openssl_encrypt(ENTITY, [(user.cert, keyopts)], cipher=cipher))
    assert openssl_decrypt(msg, user.key, user.cert) == ENTITY
    with pytest.raises(PeerError):
        openssl_decrypt(msg, pki["carol"].key, pki["carol"].cert)


# --- NSS ------------------------------------------------------------------------------------


@skip_unless_peer("nss")
@pytest.mark.parametrize("recipient", ["alice", "carol"])
def test_cmsutil_encrypts_cmsutil_decrypts(nss: NssDb, pki: Pki, recipient: str) -> None:
    der = nss.encrypt(ENTITY, [pki[recipient].email])
    assert "rsaEncryption" in openssl_cms_print(der)
    assert nss.decode(der) == ENTITY


@skip_unless_peer("nss")
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_cmsutil_signs_cmsutil_verifies_and_rejects_tampering(
    nss: NssDb, detached: bool
) -> None:
    der = nss.sign(ENTITY, "alice", detached=detached)
    if detached:
        assert nss.decode(der, content=ENTITY) == ENTITY
        with pytest.raises(PeerError, match="DigestMismatch"):
            nss.decode(der, content=TAMPERED)
    else:
        assert nss.decode(der) == ENTITY


@skip_unless_peer("nss")
def test_cmsutil_refuses_signer_without_trusted_root(nss: NssDb, pki: Pki, tmp_path) -> None:
    der = nss.sign(ENTITY, "alice", detached=False)
    bare = NssDb(tmp_path / "bare")
    with pytest.raises(PeerError, match=r"SigningCertNotTrusted|UNKNOWN_ISSUER"):
        bare.decode(der)


@skip_unless_peer("nss")
def test_smime_helpers_carry_openssl_signature_to_cmsutil(nss: NssDb, pki: Pki) -> None:
    """smime_to_der/der_to_smime are faithful: openssl's S/MIME -> DER -> cmsutil, and
    cmsutil's DER -> S/MIME -> openssl."""
    user = pki["alice"]
    msg = openssl_sign(ENTITY, user.key, user.cert, chain=[pki.inter_cert])
    ext = smime_to_der(with_outer_headers(msg))
    assert ext.signed_part == ENTITY
    assert nss.decode(ext.der, content=ext.signed_part) == ENTITY

    opaque = der_to_smime(nss.sign(ENTITY, "bob", detached=False), "signed-data")
    assert crlf(openssl_verify(opaque, pki.root_cert)) == ENTITY
    detached = detached_to_smime(ENTITY, nss.sign(ENTITY, "bob", detached=True))
    assert crlf(openssl_verify(detached, pki.root_cert)) == ENTITY


# --- gpgsm ----------------------------------------------------------------------------------


@skip_unless_peer("gpgsm")
def test_gpgsm_encrypts_gpgsm_decrypts(gpgsm: Gpgsm, pki: Pki) -> None:
    der = gpgsm.encrypt(ENTITY, [pki["alice"].email])
    assert gpgsm.decrypt(der) == ENTITY
    msg = der_to_smime(der, "enveloped-data")
    assert openssl_decrypt(msg, pki["alice"].key) == ENTITY


@skip_unless_peer("gpgsm")
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_gpgsm_signs_gpgsm_and_openssl_verify(gpgsm: Gpgsm, pki: Pki, detached: bool) -> None:
    der = gpgsm.sign(ENTITY, pki["alice"].email, detached=detached)
    if detached:
        gpgsm.verify(der, ENTITY)
        with pytest.raises(PeerError, match="message digest attribute does not match"):
            gpgsm.verify(der, TAMPERED)
        msg = detached_to_smime(ENTITY, der)
    else:
        gpgsm.verify(der)
        msg = der_to_smime(der, "signed-data")
    assert crlf(openssl_verify(msg, pki.root_cert)) == ENTITY


# --- the limitations the matrix skips, proved on every run ----------------------------------


def _openssl_enveloped(pki: Pki, who: str, keyopts: list[str], cipher: str) -> bytes:
    return smime_to_der(openssl_encrypt(ENTITY, [(pki[who].cert, keyopts)], cipher=cipher)).der


def _openssl_detached(pki: Pki, who: str, digest: str) -> tuple[bytes, bytes]:
    user = pki[who]
    ext = smime_to_der(openssl_sign(ENTITY, user.key, user.cert, chain=[pki.inter_cert],
                                    digest=digest))
    assert ext.signed_part is not None
    return ext.der, ext.signed_part


GPGSM_LIMITATIONS = {
    "gpgsm-oaep": ("No secret key", lambda p, g: g.decrypt(
        _openssl_enveloped(p, "alice", ["rsa_padding_mode:oaep"], "aes-256-cbc"))),
    "gpgsm-gcm": ("Buffer too short", lambda p, g: g.decrypt(
        _openssl_enveloped(p, "alice", [], "aes-256-gcm"))),
    "gpgsm-ecdh": ("Wrong key usage", lambda p, g: g.encrypt(ENTITY, [p["bob"].email])),
    "gpgsm-ecdh-p12": ("Segmentation fault", lambda p, g: g.import_p12(p["bob"].p12_legacy)),
    "gpgsm-p521": ("multiple of 8 bits", lambda p, g: g.verify(
        *_openssl_detached(p, "erin", "sha512"))),
    "gpgsm-p384-sha256": ("256 bit hash is not valid", lambda p, g: g.verify(
        *_openssl_detached(p, "dave", "sha256"))),
}
NSS_LIMITATIONS = {
    "nss-oaep": ("SEC_ERROR_UNSUPPORTED_KEYALG", lambda p, n: n.decode(
        _openssl_enveloped(p, "alice", ["rsa_padding_mode:oaep"], "aes-256-cbc"))),
    "nss-gcm": ("SEC_ERROR_UNRECOGNIZED_OID", lambda p, n: n.decode(
        _openssl_enveloped(p, "alice", [], "aes-128-gcm"))),
    "nss-ecdh": ("SEC_ERROR_BAD_DER", lambda p, n: n.decode(
        _openssl_enveloped(p, "bob", ["ecdh_kdf_md:sha256"], "aes-256-cbc"))),
    "nss-ecdh-encrypt": ("SEC_ERROR_INVALID_ALGORITHM", lambda p, n: n.encrypt(
        ENTITY, [p["bob"].email])),
    "nss-kari-any": ("SEC_ERROR_BAD_DER", lambda p, n: n.decode(smime_to_der(openssl_encrypt(
        ENTITY, [(p["alice"].cert, []), (p["bob"].cert, [])])).der)),
}


def _reason_key(case: str) -> str:
    return case.removesuffix("-p12").removesuffix("-encrypt")


@skip_unless_peer("gpgsm")
@pytest.mark.parametrize("case", sorted(GPGSM_LIMITATIONS))
def test_gpgsm_limitation_still_holds(gpgsm: Gpgsm, pki: Pki, case: str) -> None:
    """Each gpgsm skip reason in peers.LIMITATIONS is a fact about the installed gpgsm."""
    assert _reason_key(case) in LIMITATIONS
    expected, attempt = GPGSM_LIMITATIONS[case]
    with pytest.raises(PeerError, match=expected):
        attempt(pki, gpgsm)


@skip_unless_peer("nss")
@pytest.mark.parametrize("case", sorted(NSS_LIMITATIONS))
def test_nss_limitation_still_holds(nss: NssDb, pki: Pki, case: str) -> None:
    """Each NSS skip reason in peers.LIMITATIONS is a fact about the installed NSS."""
    assert _reason_key(case) in LIMITATIONS
    expected, attempt = NSS_LIMITATIONS[case]
    with pytest.raises(PeerError, match=expected):
        attempt(pki, nss)


def test_every_limitation_is_proved() -> None:
    proved = {_reason_key(c) for c in (*GPGSM_LIMITATIONS, *NSS_LIMITATIONS)}
    assert proved == set(LIMITATIONS)
