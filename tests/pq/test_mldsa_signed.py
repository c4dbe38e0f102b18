"""ML-DSA in SignedData (RFC 9882): OpenSSL 3.5's and CryptoNext's messages verify and chain to
their trust anchors, SLH-DSA and HashML-DSA are named unsupported, and what we write
round-trips with and without signed attributes.

Vectors: ``pqc-cms/hackathon-cms-v3/{ossl35,cryptonext}`` in the shared corpus (the IETF
hackathon's CMS v3 artifacts; README.md of ``pqc-cms``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from asn1crypto import cms
from corpus.vectors import corpus_path
from cryptography import x509
from pki import PKI, ml_dsa_pki

from smimekit.cms.signed import SignerSpec, sign_data, verify_signed_data
from smimekit.errors import SignatureInvalidError, UnsupportedError
from smimekit.validation.path import validate

OSSL = ("pqc-cms", "hackathon-cms-v3", "ossl35")
CN = ("pqc-cms", "hackathon-cms-v3", "cryptonext", "artifacts_cms_v3")
ML_DSA = {"ml-dsa-44": "2.16.840.1.101.3.4.3.17", "ml-dsa-65": "2.16.840.1.101.3.4.3.18",
          "ml-dsa-87": "2.16.840.1.101.3.4.3.19"}
SLH_DSA = [f"slh-dsa-{h}-{n}{v}-2.16.840.1.101.3.4.3.{oid}"
           for (h, n, v), oid in zip(
               [(h, n, v) for h in ("sha2", "shake") for n in (128, 192, 256) for v in "sf"],
               [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31], strict=True)]
CONTENT = b"Content-Type: text/plain\r\n\r\nsigned after the quantum computer\r\n"


def _anchor(*parts: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(corpus_path(*parts, "ta.der").read_bytes())


def _at(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc + dt.timedelta(days=30)


@pytest.mark.parametrize("name", sorted(ML_DSA))
def test_openssl_35_ml_dsa_signed_data_verifies_and_chains(name: str) -> None:
    path: Path = corpus_path(*OSSL, f"{name}-{ML_DSA[name]}_signed_attrs.der")
    result = verify_signed_data(path.read_bytes())
    assert result.content == corpus_path(*OSSL, "expected_plaintext.txt").read_bytes()
    (signer,) = result.signers
    assert signer.signature_algorithm == name
    anchor = _anchor(*OSSL)
    chain = validate(signer.certificate, intermediates=result.certificates, anchors=[anchor],
                     at=_at(signer.certificate))
    assert chain.trusted, chain.reasons


@pytest.mark.parametrize("stem", SLH_DSA)
def test_openssl_35_slh_dsa_is_reported_unsupported(stem: str) -> None:
    with pytest.raises(UnsupportedError, match="SLH-DSA signatures are not supported"):
        verify_signed_data(corpus_path(*OSSL, f"{stem}_signed_attrs.der").read_bytes())


@pytest.mark.parametrize("name", sorted(ML_DSA))
def test_cryptonext_ml_dsa_signed_data_verifies_and_chains(name: str) -> None:
    path = corpus_path(*CN, f"{name.upper()}-{ML_DSA[name]}_signed_attrs.der")
    result = verify_signed_data(path.read_bytes())
    # CryptoNext signed a MIME entity whose body is the expected plaintext.
    expected = corpus_path(*CN, "expected_plaintext.txt").read_bytes()
    assert result.content == b"Content-Type: text/plain\r\n\r\n" + expected
    (signer,) = result.signers
    assert signer.signature_algorithm == name
    assert signer.digest_algorithm == "sha512"
    anchor = _anchor(*CN)
    chain = validate(signer.certificate, intermediates=result.certificates, anchors=[anchor],
                     at=_at(signer.certificate))
    assert chain.trusted, chain.reasons


@pytest.mark.parametrize("oid", ["32", "33", "34"])
def test_cryptonext_hash_ml_dsa_is_reported_unsupported(oid: str) -> None:
    size = {"32": 44, "33": 65, "34": 87}[oid]
    path = corpus_path(*CN, f"HASH-ML-DSA-{size}-2.16.840.1.101.3.4.3.{oid}_signed_attrs.der")
    with pytest.raises(UnsupportedError, match="HashML-DSA signatures are not supported"):
        verify_signed_data(path.read_bytes())


# -- what we write ---------------------------------------------------------------------------


def _signer_info(der: bytes) -> cms.SignerInfo:
    return cms.ContentInfo.load(der)["content"]["signer_infos"][0]


@pytest.mark.parametrize("kind", ["mldsa44", "mldsa65", "mldsa87"])
@pytest.mark.parametrize("attributes", [True, False])
@pytest.mark.parametrize("detached", [True, False])
def test_round_trip(kind: str, attributes: bool, detached: bool) -> None:
    pki = ml_dsa_pki()
    who = pki.person(f"sd-{kind}", kind)
    der = sign_data(CONTENT, [SignerSpec(who.key, who.cert)], detached=detached,
                    signed_attributes=attributes, certificates=[pki.inter])
    si = _signer_info(der)
    name = f"ml-dsa-{kind[5:]}"
    assert si["signature_algorithm"]["algorithm"].dotted == ML_DSA[name]
    assert si["signature_algorithm"]["parameters"].native is None  # absent (RFC 9882 3)
    assert si["digest_algorithm"]["algorithm"].native == "sha512"
    assert (si["signed_attrs"].native is not None) == attributes
    result = verify_signed_data(der, detached_content=CONTENT if detached else None)
    assert result.content == CONTENT
    assert result.signers[0].signature_algorithm == name
    assert validate(who.cert, intermediates=result.certificates, anchors=[pki.root]).ok


@pytest.mark.parametrize("attributes", [True, False])
def test_altered_content_fails(attributes: bool) -> None:
    who = ml_dsa_pki().person("sd-alter", "mldsa65")
    der = sign_data(CONTENT, [SignerSpec(who.key, who.cert)], signed_attributes=attributes)
    with pytest.raises(SignatureInvalidError):
        verify_signed_data(der, detached_content=CONTENT.replace(b"after", b"AFTER"))


def test_altered_signature_fails() -> None:
    who = ml_dsa_pki().person("sd-sig", "mldsa65")
    der = bytearray(sign_data(CONTENT, [SignerSpec(who.key, who.cert)]))
    der[-50] ^= 0x01  # inside the signature, the last field of the SignedData
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_signed_data(bytes(der), detached_content=CONTENT)


def test_ml_dsa_and_rsa_signers_in_one_signed_data(pki: PKI) -> None:
    pq = ml_dsa_pki().person("sd-mixed-pq", "mldsa87")
    classic = pki.person("sd-mixed-rsa", "rsa2048")
    der = sign_data(CONTENT, [SignerSpec(pq.key, pq.cert), SignerSpec(classic.key, classic.cert)])
    result = verify_signed_data(der, detached_content=CONTENT)
    assert sorted(s.signature_algorithm for s in result.signers) == ["ml-dsa-87", "rsa-pkcs1v15"]


def test_digest_weaker_than_the_parameter_set_is_refused() -> None:
    # RFC 9882 4: ML-DSA-87 needs a 256-bit collision-resistant digest. Without signed
    # attributes the signature covers the content, so relabelling SHA-512 as SHA-256 keeps
    # the signature valid: only the strength rule refuses it.
    who = ml_dsa_pki().person("sd-weak", "mldsa87")
    der = sign_data(CONTENT, [SignerSpec(who.key, who.cert)], signed_attributes=False)
    sha512 = bytes.fromhex("0609608648016503040203")
    sha256 = bytes.fromhex("0609608648016503040201")
    assert der.count(sha512) == 2
    with pytest.raises(SignatureInvalidError, match="SHA256 is too weak a digest for ML-DSA-87"):
        verify_signed_data(der.replace(sha512, sha256), detached_content=CONTENT)


def test_signature_oid_of_another_parameter_set_is_a_mismatch() -> None:
    who = ml_dsa_pki().person("sd-oid", "mldsa65")
    der = sign_data(CONTENT, [SignerSpec(who.key, who.cert)])
    # Only the SignerInfo's signatureAlgorithm (the last one in the message) is relabelled.
    head, found, tail = der.rpartition(bytes.fromhex("300b0609608648016503040312"))
    assert found
    relabelled = head + bytes.fromhex("300b0609608648016503040311") + tail
    with pytest.raises(SignatureInvalidError, match="does not fit the certificate's key type"):
        verify_signed_data(relabelled, detached_content=CONTENT)


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "ed25519"])
def test_without_signed_attributes_classical_keys_round_trip_too(pki: PKI, kind: str) -> None:
    who = pki.person(f"sd-noattr-{kind}", kind)
    der = sign_data(CONTENT, [SignerSpec(who.key, who.cert)], signed_attributes=False)
    assert _signer_info(der)["signed_attrs"].native is None
    assert verify_signed_data(der, detached_content=CONTENT).content == CONTENT
    with pytest.raises(SignatureInvalidError):
        verify_signed_data(der, detached_content=CONTENT + b"x")


def test_ml_dsa_signature_algorithm_with_null_parameters_is_refused() -> None:
    # RFC 9882 3: parameters MUST be absent; NULL would make the unsigned field malleable.
    from asn1crypto import core

    who = ml_dsa_pki().person("sd-null", "mldsa65")
    info = cms.ContentInfo.load(sign_data(CONTENT, [SignerSpec(who.key, who.cert)]))
    # Re-encoded by asn1crypto, which cannot re-encode an ML-DSA certificate: the signer's
    # certificate is passed beside the message instead.
    info["content"]["certificates"] = None
    info["content"]["signer_infos"][0]["signature_algorithm"]["parameters"] = core.Null()
    rebuilt = info.dump(force=True)
    assert bytes.fromhex("300d06096086480165030403120500") in rebuilt
    with pytest.raises(SignatureInvalidError, match="with parameters"):
        verify_signed_data(rebuilt, detached_content=CONTENT, extra_certs=[who.cert])


def test_every_bit_flip_in_an_ml_dsa_signer_info_is_refused() -> None:
    """One bit flipped in each byte of the SignerInfo in turn, outside the signature value
    (where any change obviously fails): each one is an SmimeError, never a valid result."""
    from smimekit.errors import SmimeError

    who = ml_dsa_pki().person("sd-sweep", "mldsa44")
    der = sign_data(CONTENT, [SignerSpec(who.key, who.cert)])
    si = _signer_info(der)
    raw, signature = si.dump(), si["signature"].native
    start = der.index(raw)
    sig_at = raw.index(signature)
    accepted = []
    for offset in [*range(sig_at), *range(sig_at, len(raw), 97)]:
        tampered = bytearray(der)
        tampered[start + offset] ^= 1 << (offset % 8)
        try:
            verify_signed_data(bytes(tampered), detached_content=CONTENT)
        except SmimeError:
            continue
        accepted.append(offset)
    assert accepted == []


def test_sender_with_an_ml_kem_certificate_announces_kem_capabilities() -> None:
    pki = ml_dsa_pki()
    signer, kem_cert = pki.person("sd-caps", "mldsa65"), pki.person("sd-caps", "mlkem768")
    plain = sign_data(CONTENT, [SignerSpec(signer.key, signer.cert)])
    announced = sign_data(CONTENT, [SignerSpec(signer.key, signer.cert,
                                               encryption_cert=kem_cert.cert)])

    def capabilities(der: bytes) -> list[str]:
        for attr in _signer_info(der)["signed_attrs"]:
            if attr["type"].native == "smime_capabilities":
                return [c["capability_id"].dotted for c in attr["values"][0]]
        raise AssertionError("no SMIMECapabilities")

    assert "2.16.840.1.101.3.4.4.2" not in capabilities(plain)
    assert capabilities(announced)[-4:] == ["2.16.840.1.101.3.4.4.3", "2.16.840.1.101.3.4.4.2",
                                            "1.2.840.113549.1.9.16.3.28",
                                            "2.16.840.1.101.3.4.1.45"]
    (result,) = verify_signed_data(announced, detached_content=CONTENT).signers
    assert result.encryption_preference is not None
