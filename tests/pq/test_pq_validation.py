"""Validation accepts ML-DSA signatures on certificates, CRLs and OCSP responses (RFC 9881),
and applies the S/MIME end-entity rules: an ML-DSA certificate signs mail, an ML-KEM
certificate (RFC 9935) only receives it."""

from __future__ import annotations

import datetime as dt

import pytest
from corpus.vectors import corpus_path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pki import NOW, PKI, ml_dsa_pki

from smimekit.validation.certinfo import cert_info, signed_by
from smimekit.validation.path import Purpose, usage_problems, validate
from smimekit.validation.recipients import can_receive_mail
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy, check_chain

R5 = ("pqc-cms", "hackathon-certs-r5", "ossl35")


def _cert(name: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(corpus_path(*R5, name).read_bytes())


@pytest.mark.parametrize("kind", ["mldsa44", "mldsa65", "mldsa87"])
def test_ml_dsa_signer_under_an_ml_dsa_chain_validates(kind: str) -> None:
    pki = ml_dsa_pki()
    who = pki.person(f"pq-sign-{kind}", kind)
    result = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root])
    assert result.ok, result.reasons + result.usage_reasons
    assert result.chain == (who.cert, pki.inter, pki.root)


@pytest.mark.parametrize("kind", ["mlkem768", "mlkem1024"])
def test_ml_kem_recipient_under_a_classical_chain_validates(pki: PKI, kind: str) -> None:
    who = pki.person(f"pq-recv-{kind}", kind)
    result = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                      purpose=Purpose.ENCRYPT)
    assert result.ok, result.reasons + result.usage_reasons
    assert can_receive_mail(who.cert)


def test_ml_kem_certificate_cannot_sign_and_ml_dsa_cannot_receive() -> None:
    pki = ml_dsa_pki()
    kem = pki.person("pq-kem-only", "mlkem768")
    dsa = pki.person("pq-dsa-only", "mldsa65")
    assert any("ML-KEM key cannot sign" in p for p in usage_problems(kem.cert, Purpose.SIGN))
    assert any("ML-DSA key cannot receive" in p
               for p in usage_problems(dsa.cert, Purpose.ENCRYPT))
    assert not can_receive_mail(dsa.cert)


def test_ml_kem_certificate_needs_key_encipherment(pki: PKI) -> None:
    # RFC 9935 5: keyEncipherment is the one key usage of an ML-KEM certificate.
    wrong = pki.person("pq-kem-ku", "mlkem768", key_usage="sign")
    problems = usage_problems(wrong.cert, Purpose.ENCRYPT)
    assert any("keyEncipherment" in p for p in problems)


def test_tampered_ml_dsa_certificate_signature_gives_no_path() -> None:
    pki = ml_dsa_pki()
    who = pki.person("pq-tamper", "mldsa65")
    der = bytearray(who.cert.public_bytes(serialization.Encoding.DER))
    der[-10] ^= 0x01  # inside the ML-DSA signature
    forged = x509.load_der_x509_certificate(bytes(der))
    result = validate(forged, intermediates=[pki.inter], anchors=[pki.root])
    assert not result.trusted


def test_signature_of_one_parameter_set_is_not_accepted_under_another() -> None:
    # An ML-DSA-65 issuer key, but the child claims ML-DSA-44: refused by OID before verify.
    pki = ml_dsa_pki()
    child = cert_info(pki.inter)
    der = bytearray(pki.inter.public_bytes(serialization.Encoding.DER))
    oid65 = bytes.fromhex("0609608648016503040312")
    oid44 = bytes.fromhex("0609608648016503040311")
    assert der.count(oid65) >= 2  # tbs signature, outer signatureAlgorithm (and the SPKI)
    relabelled = x509.load_der_x509_certificate(bytes(der).replace(oid65, oid44))
    assert signed_by(child, cert_info(pki.root))
    assert not signed_by(cert_info(relabelled), cert_info(pki.root))


@pytest.mark.parametrize("stem", ["ml-dsa-44-2.16.840.1.101.3.4.3.17",
                                  "ml-dsa-65-2.16.840.1.101.3.4.3.18",
                                  "ml-dsa-87-2.16.840.1.101.3.4.3.19"])
def test_openssl_35_ml_dsa_trust_anchors_are_self_signed(stem: str) -> None:
    ta = _cert(f"{stem}_ta.der")
    assert signed_by(cert_info(ta), cert_info(ta))
    at = ta.not_valid_before_utc + dt.timedelta(days=1)
    assert validate(ta, anchors=[ta], at=at).trusted


@pytest.mark.parametrize(("ee", "ta"), [
    ("ml-kem-768-2.16.840.1.101.3.4.4.2_ee.der", "ml-dsa-65-2.16.840.1.101.3.4.3.18_ta.der"),
    ("ml-kem-1024-2.16.840.1.101.3.4.4.3_ee.der", "ml-dsa-87-2.16.840.1.101.3.4.3.19_ta.der"),
])
def test_openssl_35_ml_kem_certificates_chain_to_their_ml_dsa_anchor(ee: str, ta: str) -> None:
    leaf, anchor = _cert(ee), _cert(ta)
    assert signed_by(cert_info(leaf), cert_info(anchor))
    assert cert_info(leaf).is_ml_kem


def test_ml_kem_512_certificate_is_named_unsupported() -> None:
    info = cert_info(_cert("ml-kem-512-2.16.840.1.101.3.4.4.1_ee.der"))
    assert info.key_error == "ML-KEM-512 public keys are not supported"


def _crl(pki: PKI, revoked: list[x509.Certificate], key: object) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(pki.inter.subject)
               .last_update(NOW - dt.timedelta(hours=1))
               .next_update(NOW + dt.timedelta(days=1))
               .add_extension(x509.CRLNumber(1), False))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(NOW - dt.timedelta(hours=2)).build())
    return builder.sign(key, None)  # type: ignore[arg-type]


def test_crl_signed_with_ml_dsa_revokes_and_a_foreign_one_does_not_count() -> None:
    pki = ml_dsa_pki()
    who = pki.person("pq-revoked", "mldsa65")
    chain = (who.cert, pki.inter, pki.root)
    root_crl = (x509.CertificateRevocationListBuilder().issuer_name(pki.root.subject)
                .last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=1))
                .add_extension(x509.CRLNumber(1), False).sign(pki.root_key, None))
    good = _crl(pki, [who.cert], pki.inter_key)
    report = check_chain(chain, options=RevocationOptions(
        policy=RevocationPolicy.HARD, crls=[good, root_crl]))
    assert report.revoked
    foreign = _crl(pki, [], ml_dsa_pki_other_key())
    report = check_chain(chain, options=RevocationOptions(
        policy=RevocationPolicy.HARD, crls=[foreign, root_crl]))
    assert not report.ok and not report.revoked


def ml_dsa_pki_other_key() -> object:
    from pki import new_key
    return new_key("mldsa65#stranger")


def test_ocsp_response_signed_with_ml_dsa_is_accepted() -> None:
    pki = ml_dsa_pki()
    who = pki.person("pq-ocsp", "mldsa65")
    root_crl = (x509.CertificateRevocationListBuilder().issuer_name(pki.root.subject)
                .last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=1))
                .add_extension(x509.CRLNumber(1), False).sign(pki.root_key, None))
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(cert=who.cert, issuer=pki.inter, algorithm=hashes.SHA256(),
                      cert_status=ocsp.OCSPCertStatus.GOOD,
                      this_update=NOW - dt.timedelta(minutes=5),
                      next_update=NOW + dt.timedelta(hours=1),
                      revocation_time=None, revocation_reason=None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, pki.inter)
        .sign(pki.inter_key, None)
    )
    der = response.public_bytes(serialization.Encoding.DER)
    report = check_chain((who.cert, pki.inter, pki.root), options=RevocationOptions(
        policy=RevocationPolicy.HARD, ocsp_responses=[der], crls=[root_crl]))
    assert report.ok, report.reasons
    assert report.statuses[0].status == "good"


def test_rfc9936_example_certificate_is_signed_by_its_ml_dsa_65_root() -> None:
    example = ("pqc-cms", "lamps-cms-kyber-example")
    leaf = x509.load_pem_x509_certificate(corpus_path(*example, "ML-KEM-512.pem").read_bytes())
    root = x509.load_pem_x509_certificate(
        corpus_path(*example, "mldsa65RootCA.pem").read_bytes())
    assert signed_by(cert_info(root), cert_info(root))
    assert signed_by(cert_info(leaf), cert_info(root))
    result = validate(leaf, anchors=[root], at=_at_example(leaf), purpose=Purpose.ENCRYPT)
    assert result.reasons == ("CN=ML-KEM-512,ST=Bliss,C=PT: ML-KEM-512 public keys are not"
                              " supported",)
    assert result.usage_reasons == ()  # keyEncipherment, as RFC 9935 wants


def _at_example(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc + dt.timedelta(days=1)
