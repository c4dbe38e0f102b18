"""Post-quantum subscriber certificates under the S/MIME BR as amended by ballot SMC013
(BR 1.0.11): ML-DSA signing certificates (RFC 9881) and ML-KEM encryption certificates
(RFC 9935), issued by a classical or an ML-DSA CA, and what pkilint says about them.

The byte strings of the AlgorithmIdentifiers are the ones BR 7.1.3.1.4, 7.1.3.1.5 and 7.1.3.2.4
require (OID, parameters absent)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from smimekit.ca.authority import Authority, CAKeyType, lint
from smimekit.ca.crl import build_crl
from smimekit.ca.issuance import SubscriberKeyType, check_key_types
from smimekit.ca.ocsp import OCSPResponder, build_responder_certificate, store_lookup
from smimekit.ca.profiles import PROFILES, KeyType, Purpose, SubjectInfo, key_type_of, key_usage
from smimekit.errors import CAError
from smimekit.keys.signer import LocalSigner

INFO = SubjectInfo("alice@example.org", organization="Example Ltd",
                   organization_identifier="NTRGB-12345678", given_name="Alice",
                   surname="Smith", country="GB")

# BR 7.1.3.1.4 / 7.1.3.1.5: subjectPublicKeyInfo algorithm, byte for byte
SPKI_ALGORITHM = {
    "ml-dsa-44": "300b0609608648016503040311",
    "ml-dsa-65": "300b0609608648016503040312",
    "ml-dsa-87": "300b0609608648016503040313",
    "ml-kem-768": "300b0609608648016503040402",
    "ml-kem-1024": "300b0609608648016503040403",
}
PQ_SUBSCRIBER = [SubscriberKeyType(name) for name in SPKI_ALGORITHM]


def _spki_algorithm(cert: x509.Certificate) -> str:
    from smimekit.cms import der as der_mod

    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    parts = der_mod.children(spki)
    assert parts is not None
    return parts[0][1].hex()


def _signature_algorithm(der: bytes) -> str:
    # Certificate, CertificateList: SEQUENCE { tbs, signatureAlgorithm, signature }
    from smimekit.cms import der as der_mod

    parts = der_mod.children(der)
    assert parts is not None
    return parts[1][1].hex()


@pytest.fixture(scope="module")
def ml_dsa_ca() -> Authority:
    return Authority.create("Example Ltd", base_url="http://pki.example.com",
                            key_type=CAKeyType.ML_DSA_65, country="GB")


@pytest.fixture(scope="module")
def classical_ca() -> Authority:
    return Authority.create("Example Ltd", base_url="http://pki.example.com",
                            key_type=CAKeyType.P256, country="GB")


def _purpose(kind: SubscriberKeyType) -> Purpose:
    return Purpose.SIGN if kind.can_sign else Purpose.ENCRYPT


@pytest.mark.parametrize("kind", PQ_SUBSCRIBER, ids=lambda k: k.value)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_pq_certificates_are_lint_clean_under_every_profile(
        ml_dsa_ca: Authority, kind: SubscriberKeyType, profile: str) -> None:
    private = kind.generate()
    cert = ml_dsa_ca.issue(PROFILES[profile], INFO, private.public_key(), _purpose(kind))
    findings = lint(cert)
    # pkilint 0.13 knows ML-DSA and ML-KEM: nothing above INFO
    assert [f for f in findings if f.severity not in ("INFO",)] == []
    assert _spki_algorithm(cert) == SPKI_ALGORITHM[kind.value]
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value


def test_ml_dsa_certificate_only_signs(classical_ca: Authority) -> None:
    cert = classical_ca.issue(PROFILES["mailbox-strict"], INFO,
                              mldsa.MLDSA65PrivateKey.generate().public_key(), Purpose.SIGN)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)


def test_ml_kem_certificate_has_key_encipherment_alone(classical_ca: Authority) -> None:
    # RFC 9935 5: keyEncipherment is the only key usage an ML-KEM certificate may assert
    cert = classical_ca.issue(PROFILES["sponsored-strict"], INFO,
                              mlkem.MLKEM1024PrivateKey.generate().public_key(), Purpose.ENCRYPT)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage == x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)
    assert [f for f in lint(cert) if f.is_error] == []


@pytest.mark.parametrize(("public", "purpose", "words"), [
    (lambda: mldsa.MLDSA44PrivateKey.generate().public_key(), Purpose.ENCRYPT, "only sign"),
    (lambda: mldsa.MLDSA87PrivateKey.generate().public_key(), Purpose.BOTH, "only sign"),
    (lambda: mlkem.MLKEM768PrivateKey.generate().public_key(), Purpose.SIGN, "only receive"),
    (lambda: mlkem.MLKEM1024PrivateKey.generate().public_key(), Purpose.BOTH, "only receive"),
])
def test_pq_key_for_the_wrong_purpose_is_refused(public: Any, purpose: Purpose,
                                                 words: str) -> None:
    with pytest.raises(CAError, match=words):
        key_usage(key_type_of(public()), purpose)


def test_key_types_are_told_apart() -> None:
    assert key_type_of(mldsa.MLDSA65PrivateKey.generate().public_key()) is KeyType.ML_DSA
    assert key_type_of(mlkem.MLKEM768PrivateKey.generate().public_key()) is KeyType.ML_KEM


def test_linter_refuses_an_ml_kem_certificate_that_claims_to_sign(
        classical_ca: Authority) -> None:
    """pkilint checks the SMC013 key usage itself: a hand-made ML-KEM certificate with
    digitalSignature is an ERROR, so issuance would refuse it."""
    public = mlkem.MLKEM768PrivateKey.generate().public_key()
    good = classical_ca.issue(PROFILES["mailbox-strict"], INFO, public, Purpose.ENCRYPT)
    builder = x509.CertificateBuilder(
        issuer_name=good.issuer, subject_name=good.subject, public_key=public,
        serial_number=x509.random_serial_number(), not_valid_before=good.not_valid_before_utc,
        not_valid_after=good.not_valid_after_utc)
    for extension in good.extensions:
        value = extension.value
        if isinstance(value, x509.KeyUsage):
            value = x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False)
        builder = builder.add_extension(value, extension.critical)
    signer = classical_ca.signer
    assert isinstance(signer, LocalSigner)
    from smimekit.keys.signer import sign_builder

    bad = sign_builder(builder, signer)
    assert isinstance(bad, x509.Certificate)
    codes = {f.code for f in lint(bad) if f.is_error}
    assert "cabf.smime.prohibited_ku_present" in codes


def test_ml_dsa_ca_signs_with_the_br_algorithm_identifier(ml_dsa_ca: Authority) -> None:
    # BR 7.1.3.2.4: id-ml-dsa-65, parameters absent
    expected = "300b0609608648016503040312"
    cert = ml_dsa_ca.issue(PROFILES["mailbox-strict"], INFO,
                           mlkem.MLKEM768PrivateKey.generate().public_key(), Purpose.ENCRYPT)
    for der in (cert.public_bytes(serialization.Encoding.DER),
                ml_dsa_ca.cert.public_bytes(serialization.Encoding.DER),
                ml_dsa_ca.root.public_bytes(serialization.Encoding.DER)):
        assert _signature_algorithm(der) == expected
    cert.verify_directly_issued_by(ml_dsa_ca.cert)
    ml_dsa_ca.cert.verify_directly_issued_by(ml_dsa_ca.root)


@pytest.mark.parametrize("ca_key", [CAKeyType.ML_DSA_65, CAKeyType.ML_DSA_87],
                         ids=lambda k: k.value)
def test_ml_dsa_ca_publishes_ml_dsa_crls(ca_key: CAKeyType) -> None:
    ca = Authority.create("Example Ltd", base_url="http://pki.example.com", key_type=ca_key)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    crl = build_crl(ca.cert, ca.signer, [], number=1, this_update=now,
                    next_update=now + dt.timedelta(days=7))
    oid = {"ml-dsa-65": "2.16.840.1.101.3.4.3.18", "ml-dsa-87": "2.16.840.1.101.3.4.3.19"}
    assert crl.signature_algorithm_oid.dotted_string == oid[ca_key.value]
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]


def test_ml_dsa_crl_algorithm_identifier_bytes(ml_dsa_ca: Authority) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    crl = build_crl(ml_dsa_ca.cert, ml_dsa_ca.signer, [], number=2, this_update=now,
                    next_update=now + dt.timedelta(days=7))
    assert _signature_algorithm(crl.public_bytes(serialization.Encoding.DER)) == (
        "300b0609608648016503040312")


def test_ml_dsa_ocsp_responder_signs_answers_with_ml_dsa(ml_dsa_ca: Authority) -> None:
    from cryptography.hazmat.primitives import hashes

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    responder_key = mldsa.MLDSA65PrivateKey.generate()
    responder_cert = build_responder_certificate(ml_dsa_ca.cert, ml_dsa_ca.signer,
                                                 responder_key.public_key(), now=now)
    assert responder_cert.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"
    subscriber = ml_dsa_ca.issue(PROFILES["mailbox-strict"], INFO,
                                 mldsa.MLDSA44PrivateKey.generate().public_key(), Purpose.SIGN)

    class _Records:
        def issued_status(self, *, serial: str, issuer_fingerprint: str) -> None:
            return None

    responder = OCSPResponder(ml_dsa_ca.cert, responder_cert, responder_key,
                              store_lookup(_Records(), "x"))  # type: ignore[arg-type]
    request = (ocsp.OCSPRequestBuilder()
               .add_certificate(subscriber, ml_dsa_ca.cert, hashes.SHA256()).build())
    answer = ocsp.load_der_ocsp_response(
        responder.respond(request.public_bytes(serialization.Encoding.DER)))
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"
    responder_key.public_key().verify(answer.signature, answer.tbs_response_bytes)


@pytest.mark.parametrize(("purpose", "sign", "encrypt", "words"), [
    ("dual", "ml-kem-768", "ml-kem-768", "cannot sign"),
    ("dual", "ml-dsa-65", "ml-dsa-65", "cannot receive"),
    ("sign", "ml-kem-1024", "p256", "cannot sign"),
    ("encrypt", "p256", "ml-dsa-44", "cannot receive"),
    ("both", "ml-dsa-65", "ml-kem-768", "no post-quantum key both"),
    ("both", "rsa3072", "ml-kem-768", "no post-quantum key both"),
])
def test_generated_key_types_are_checked_before_any_key_is_made(
        purpose: str, sign: str, encrypt: str, words: str) -> None:
    with pytest.raises(CAError, match=words):
        check_key_types(purpose, SubscriberKeyType(sign), SubscriberKeyType(encrypt))


def test_dual_ml_dsa_and_ml_kem_is_accepted() -> None:
    check_key_types("dual", SubscriberKeyType.ML_DSA_65, SubscriberKeyType.ML_KEM_768)
    check_key_types("sign", SubscriberKeyType.ML_DSA_87, SubscriberKeyType.RSA3072)
    check_key_types("encrypt", SubscriberKeyType.P256, SubscriberKeyType.ML_KEM_1024)


def test_ml_dsa_ca_key_cannot_live_in_a_token() -> None:
    from smimekit.ca.home import CAConfig, Pkcs11Ref

    config = CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                      key_type="ml-dsa-65", pkcs11=Pkcs11Ref("/x.so", "t", "k"))
    with pytest.raises(CAError, match="PKCS#11"):
        config.check()
