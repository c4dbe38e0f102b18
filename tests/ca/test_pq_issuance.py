"""A post-quantum CA with its store (SQLite and PostgreSQL): ``ca init --key-type ml-dsa-65``
makes ML-DSA root, issuing and OCSP keys, kept at rest in smimekit's own PKCS#12; dual-key
people get an ML-DSA signing and an ML-KEM encryption certificate, the ML-KEM key sealed in
the vault; renewal keeps the parameter set; CRLs and OCSP answers are ML-DSA signed; a
signing-only ML-DSA certificate from a CSR."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.ocsp import OCSPResponder, store_lookup
from smimekit.ca.profiles import Purpose
from smimekit.errors import CAError, PassphraseError
from smimekit.store import Store

PASS = b"correct horse battery staple"
ML_DSA_65 = "2.16.840.1.101.3.4.3.18"
PQ_DUAL = {"sign_key": SubscriberKeyType.ML_DSA_65, "encrypt_key": SubscriberKeyType.ML_KEM_768}


@pytest.fixture
def pq_home(backend: Backend) -> CAHome:
    home = CAHome(backend.data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                         key_type="ml-dsa-65", country="GB"), PASS)
    return home


@pytest.fixture
def pq_cax(backend: Backend, pq_home: CAHome) -> Iterator[CertificateAuthority]:
    store = Store.open(backend.url, backend.data_dir)
    try:
        yield CertificateAuthority(pq_home.unlock(PASS, root=True), store, actor="test")
    finally:
        store.close()


def test_ml_dsa_ca_keys_at_rest_and_every_ca_certificate(pq_home: CAHome) -> None:
    for name in ("root", "issuing", "ocsp"):
        cert = pq_home.certificate(name)
        assert isinstance(cert.public_key(), mldsa.MLDSA65PublicKey), name
        assert cert.signature_algorithm_oid.dotted_string == ML_DSA_65, name
    unlocked = pq_home.unlock(PASS, root=True)
    assert unlocked.authority.signer.public_key() == pq_home.certificate("issuing").public_key()
    assert isinstance(unlocked.ocsp_key, mldsa.MLDSA65PrivateKey)
    root_crl = x509.load_der_x509_crl(pq_home.root_crl())
    assert root_crl.signature_algorithm_oid.dotted_string == ML_DSA_65
    assert root_crl.is_signature_valid(pq_home.certificate("root").public_key())  # type: ignore[arg-type]
    with pytest.raises(PassphraseError):
        pq_home.unlock(b"wrong passphrase")


def test_dual_pq_person_and_the_vault(pq_cax: CertificateAuthority) -> None:
    issued = pq_cax.issue_generated("alice@example.com", purpose="dual", **PQ_DUAL)
    sign, encrypt = issued.item(Purpose.SIGN), issued.item(Purpose.ENCRYPT)
    assert sign is not None and encrypt is not None
    assert isinstance(sign.key, mldsa.MLDSA65PrivateKey)
    assert isinstance(encrypt.key, mlkem.MLKEM768PrivateKey)
    for item in (sign, encrypt):
        assert item.cert.signature_algorithm_oid.dotted_string == ML_DSA_65
        item.cert.verify_directly_issued_by(pq_cax.ca.authority.cert)
    # the ML-KEM key is kept (sealed to the vault); the ML-DSA key never is
    history = pq_cax.key_history("alice@example.com")
    assert [(k.public_key(), c) for k, c in history] == [(encrypt.key.public_key(), encrypt.cert)]
    assert pq_cax.store.private_keys_for("alice@example.com", "sign") == []


def test_renewal_keeps_the_parameter_set(pq_cax: CertificateAuthority) -> None:
    issued = pq_cax.issue_generated(
        "bob@example.com", purpose="dual", sign_key=SubscriberKeyType.ML_DSA_87,
        encrypt_key=SubscriberKeyType.ML_KEM_1024)
    for purpose, kind in ((Purpose.ENCRYPT, mlkem.MLKEM1024PrivateKey),
                          (Purpose.SIGN, mldsa.MLDSA87PrivateKey)):
        item = issued.item(purpose)
        assert item is not None
        renewed = pq_cax.renew(item.record)
        assert isinstance(renewed.key, kind)
        assert renewed.key.public_key() != item.key.public_key()  # type: ignore[union-attr]
    # the old and the new ML-KEM key are both in the history
    assert len(pq_cax.key_history("bob@example.com")) == 2


def test_wrong_key_types_are_refused_before_anything_is_issued(
        pq_cax: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="cannot sign"):
        pq_cax.issue_generated("carol@example.com", purpose="dual",
                               sign_key=SubscriberKeyType.ML_KEM_768,
                               encrypt_key=SubscriberKeyType.ML_KEM_768)
    with pytest.raises(CAError, match="no post-quantum key both"):
        pq_cax.issue_generated("carol@example.com", purpose="both",
                               encrypt_key=SubscriberKeyType.ML_KEM_768)
    assert pq_cax.store.issued_for("carol@example.com") == []


def test_ml_dsa_csr_for_a_signing_certificate(pq_cax: CertificateAuthority) -> None:
    key = mldsa.MLDSA44PrivateKey.generate()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
           .sign(key, None)).public_bytes(serialization.Encoding.PEM)
    issued = pq_cax.issue_csr(csr, email="dave@example.com", purpose="sign")
    assert issued.items[0].cert.public_key() == key.public_key()
    with pytest.raises(CAError, match="only sign"):
        pq_cax.issue_csr(csr, email="dave2@example.com", purpose="encrypt")


def test_revocation_publishes_an_ml_dsa_crl_and_ocsp_says_revoked(
        pq_cax: CertificateAuthority) -> None:
    issued = pq_cax.issue_generated("erin@example.com", purpose="dual", **PQ_DUAL)
    enc = issued.item(Purpose.ENCRYPT)
    assert enc is not None
    pq_cax.revoke(serial=enc.record.serial, reason="key-compromise")
    crl = x509.load_der_x509_crl(pq_cax.current_crl())
    assert crl.signature_algorithm_oid.dotted_string == ML_DSA_65
    assert crl.is_signature_valid(pq_cax.ca.authority.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(enc.cert.serial_number) is not None

    ca = pq_cax.ca
    assert ca.ocsp_key is not None
    responder = OCSPResponder(ca.authority.cert, ca.ocsp_cert, ca.ocsp_key,
                              store_lookup(pq_cax.store, pq_cax.issuer_fingerprint))
    request = ocsp.OCSPRequestBuilder().add_certificate(
        enc.cert, ca.authority.cert, hashes.SHA256()).build()
    answer = ocsp.load_der_ocsp_response(
        responder.respond(request.public_bytes(serialization.Encoding.DER)))
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.signature_algorithm_oid.dotted_string == ML_DSA_65
    ca.ocsp_cert.public_key().verify(answer.signature, answer.tbs_response_bytes)  # type: ignore[call-arg, union-attr]


def test_replacing_the_ocsp_signer_keeps_it_post_quantum(
        pq_home: CAHome, pq_cax: CertificateAuthority) -> None:
    fresh = pq_home.replace_ocsp_signer(pq_cax.ca, PASS,
                                        now=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert isinstance(fresh.ocsp_key, mldsa.MLDSA65PrivateKey)
    assert fresh.ocsp_cert.signature_algorithm_oid.dotted_string == ML_DSA_65
    opened = pq_home.open_ocsp_signer(PASS, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert opened.key.public_key() == fresh.ocsp_cert.public_key()


def test_escrow_deposit_takes_ml_kem_keys_and_refuses_ml_dsa_keys(
        pq_cax: CertificateAuthority) -> None:
    from smimekit.errors import EscrowError
    from smimekit.escrow.ceremony import check_deposit

    issued = pq_cax.issue_generated("gina@example.com", purpose="dual", **PQ_DUAL)
    sign, encrypt = issued.item(Purpose.SIGN), issued.item(Purpose.ENCRYPT)
    assert sign is not None and encrypt is not None
    assert encrypt.key is not None and sign.key is not None
    check_deposit(encrypt.key, encrypt.cert, "gina@example.com")  # keyEncipherment only
    with pytest.raises(EscrowError, match="allows signing"):
        check_deposit(sign.key, sign.cert, "gina@example.com")


def test_ml_dsa_root_goes_offline_and_comes_back(pq_home: CAHome, tmp_path: Path) -> None:
    target = tmp_path / "usb" / "root.p12"
    target.parent.mkdir()
    pq_home.export_root(target, remove=True)
    assert not pq_home.has_root_key()
    with pytest.raises(CAError, match="offline"):
        pq_home.unlock(PASS, root=True)
    with pytest.raises(PassphraseError):
        pq_home.import_root(target, b"wrong passphrase")
    pq_home.import_root(target, PASS)
    unlocked = pq_home.unlock(PASS, root=True)
    crl = pq_home.publish_root_crl(unlocked)
    assert crl.signature_algorithm_oid.dotted_string == ML_DSA_65
    assert crl.is_signature_valid(pq_home.certificate("root").public_key())  # type: ignore[arg-type]
