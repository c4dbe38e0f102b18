"""The CA with its store: CA files at rest, CSR and generated issuance, key history, renewal,
revocation with CRLs, the offline root, and all-or-nothing transactions. Every store test runs
on SQLite and PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from smimekit.ca.authority import lint
from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.profiles import Purpose
from smimekit.errors import CAError, PassphraseError, StoreError
from smimekit.keys.protect import unprotect_key
from smimekit.store import Store, schema
from smimekit.validation.verdict import cert_emails

PASS = b"correct horse battery staple"
BASE = "http://pki.example.com"
FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256}


def make_ca(data_dir: Path, **config: object) -> CAHome:
    home = CAHome(data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url=BASE, key_type="p256",
                         country="GB", **config), PASS)  # type: ignore[arg-type]
    return home


@pytest.fixture
def cax(backend: Backend) -> CertificateAuthority:
    home = make_ca(backend.data_dir)
    store = Store.open(backend.url, backend.data_dir)
    yield CertificateAuthority(home.unlock(PASS), store, actor="test")
    store.close()


def csr_for(email: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


# -- the CA's files ------------------------------------------------------------------------


def test_ca_files_private_and_keys_encrypted(tmp_path: Path) -> None:
    home = make_ca(tmp_path)
    assert stat.S_IMODE(home.path.stat().st_mode) == 0o700
    for name in ("root", "issuing", "ocsp", "vault"):
        key_file = home.path / f"{name}.p12"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        data = key_file.read_bytes()
        assert b"PRIVATE KEY" not in data
        with pytest.raises(PassphraseError):
            unprotect_key(data, b"wrong passphrase")
        unprotect_key(data, PASS)
    config = json.loads((home.path / "ca.json").read_text())
    assert PASS.decode() not in json.dumps(config)
    assert config["organization"] == "Example Ltd"


def test_no_second_ca_and_no_leftovers(tmp_path: Path) -> None:
    home = make_ca(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CAError, match="exists already"):
        make_ca(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert home.exists()


def test_wrong_passphrase_refused(tmp_path: Path) -> None:
    home = make_ca(tmp_path)
    with pytest.raises(PassphraseError, match="CA passphrase"):
        home.unlock(b"not the passphrase")


def test_locked_ca_cannot_sign(tmp_path: Path) -> None:
    home = make_ca(tmp_path)
    locked = home.unlock(None)
    with pytest.raises(CAError, match="locked"):
        locked.authority.signer.sign(b"x")


def test_missing_file_named(tmp_path: Path) -> None:
    home = make_ca(tmp_path)
    (home.path / "issuing.pem").unlink()
    with pytest.raises(CAError, match=r"issuing\.pem is missing"):
        home.unlock(PASS)


def test_offline_root_export_and_import(tmp_path: Path) -> None:
    home = make_ca(tmp_path / "data")
    target = tmp_path / "usb" / "root.p12"
    target.parent.mkdir()
    home.export_root(target, remove=True)
    assert not home.has_root_key() and target.is_file()
    home.unlock(PASS)  # issuing still works without the root
    with pytest.raises(CAError, match="offline"):
        home.unlock(PASS, root=True)
    other = make_ca(tmp_path / "other")
    with pytest.raises(CAError, match="not this CA's root key"):
        home.import_root(other.path / "root.p12", PASS)
    home.import_root(target, PASS)
    assert home.unlock(PASS, root=True).authority.root_signer is not None


# -- issuance ------------------------------------------------------------------------------


def test_csr_issuance_recorded_and_audited(cax: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuance = cax.issue_csr(csr_for("alice@example.com", key), email="Alice@Example.com",
                             purpose="both")
    (item,) = issuance.items
    assert item.key is None and item.purpose is Purpose.BOTH
    assert item.cert.public_key() == key.public_key()
    san = item.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    item.cert.verify_directly_issued_by(cax.ca.authority.cert)
    record = cax.store.issued_record(fingerprint=item.record.fingerprint)
    assert record is not None and record.key_origin == "csr" and record.live
    assert [e.action for e in cax.store.audit_entries()][-1] == "ca.issue"
    assert cax.store.verify_audit_log() == []
    assert cax.store.private_keys_for("alice@example.com") == []


def test_csr_without_proof_of_possession_refused(cax: CertificateAuthority) -> None:
    good = csr_for("a@example.com", ec.generate_private_key(ec.SECP256R1()))
    der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
    tampered = der[:-8] + bytes(b ^ 0xFF for b in der[-8:])
    with pytest.raises(CAError, match=r"proof of possession|cannot be read"):
        cax.issue_csr(tampered, email="a@example.com", purpose="sign")
    assert cax.store.issued_for("a@example.com") == []


@pytest.mark.parametrize("bad", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAA"])
def test_unreadable_csr(cax: CertificateAuthority, bad: bytes) -> None:
    with pytest.raises(CAError, match="CSR"):
        cax.issue_csr(bad, email="a@example.com", purpose="sign")


@pytest.mark.parametrize("email", ["", "no-at-sign", "a b@example.com", "a@nodot"])
def test_bad_address_refused(cax: CertificateAuthority, email: str) -> None:
    with pytest.raises(CAError, match="mailbox address"):
        cax.issue_generated(email, **FAST)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _no_lint_findings_above_info(cert: x509.Certificate) -> None:
    findings = lint(cert)
    assert [str(f) for f in findings if f.severity not in ("INFO",)] == []


def test_idn_domain_is_certified_as_a_labels(cax: CertificateAuthority) -> None:
    """RFC 9598 3 / RFC 5280 7.5: an internationalised domain goes into rfc822Name as
    A-labels (IDNA 2008: ß stays ß, it is not mapped to ss as IDNA 2003 would)."""
    (item,) = cax.issue_generated("Alice@Bücher.Example.org", purpose="sign", **FAST).items
    assert _san(item.cert).get_values_for_type(x509.RFC822Name) == [
        "alice@xn--bcher-kva.example.org"]
    assert item.cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == (
        "alice@xn--bcher-kva.example.org")
    assert item.record.email == "alice@xn--bcher-kva.example.org"
    _no_lint_findings_above_info(item.cert)
    (strasse,) = cax.issue_generated("x@straße.example.org", purpose="sign", **FAST).items
    assert _san(strasse.cert).get_values_for_type(x509.RFC822Name) == [
        "x@xn--strae-oqa.example.org"]


def test_utf8_local_part_is_certified_as_smtputf8mailbox(cax: CertificateAuthority) -> None:
    (item,) = cax.issue_generated("Jürgen@bücher.example.org", purpose="sign", **FAST).items
    san = _san(item.cert)
    assert san.get_values_for_type(x509.RFC822Name) == []
    (other,) = san.get_values_for_type(x509.OtherName)
    assert other.type_id.dotted_string == "1.3.6.1.5.5.7.8.9"
    utf8 = "jürgen@xn--bcher-kva.example.org".encode()
    assert other.value == bytes([0x0C, len(utf8)]) + utf8  # a DER UTF8String
    # emailAddress is an IA5String: left out; the CN carries the address in UTF-8
    assert item.cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS) == []
    assert item.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "jürgen@xn--bcher-kva.example.org")
    assert cert_emails(item.cert) == ["jürgen@xn--bcher-kva.example.org"]
    _no_lint_findings_above_info(item.cert)


@pytest.mark.parametrize("email", [
    "y@☃.example.org",             # a symbol: not IDNA 2008
    "x@xn--zz.example.org",        # not a valid A-label
    "x@-bad.example.org",          # hyphen at the start of a label
    "x@bu\u0308cher.exa mple.org",   # space in the domain
    "x@\u0308a.example.org",        # a leading combining mark
    "x@ab--c\u00fc.example.org",   # '--' in positions 3 and 4
    "j\u00fc rgen@example.org",     # space in a UTF-8 local part
    "a@b@\u00fc.example.org",       # '@' in the local part
])
def test_invalid_internationalised_address_is_refused_not_a_traceback(
        cax: CertificateAuthority, email: str) -> None:
    with pytest.raises(CAError, match="is not a mailbox address"):
        cax.issue_generated(email, **FAST)
    assert cax.store.issued_records() == []


def test_upper_case_a_label_is_the_same_domain(cax: CertificateAuthority) -> None:
    (item,) = cax.issue_generated("x@XN--bcher-KVA.example.org", purpose="sign", **FAST).items
    assert item.record.email == "x@xn--bcher-kva.example.org"


def test_u_label_and_a_label_forms_are_one_holder(cax: CertificateAuthority) -> None:
    cax.issue_generated("ann@bücher.example.org", **FAST)
    with pytest.raises(CAError, match="already holds a live sign certificate"):
        cax.issue_generated("ANN@xn--bcher-kva.example.org", purpose="sign", **FAST)
    assert len(cax.key_history("Ann@Bücher.example.org")) == 1
    revoked = cax.revoke(email="ann@BÜCHER.example.org", reason="superseded")
    assert len(revoked) == 2


def test_generated_dual_key_pairs(cax: CertificateAuthority) -> None:
    issuance = cax.issue_generated("bob@example.com", name="Bob Builder", **FAST)
    sign, enc = issuance.item(Purpose.SIGN), issuance.item(Purpose.ENCRYPT)
    assert sign is not None and enc is not None
    assert sign.key is not None and enc.key is not None
    ku_sign = sign.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    ku_enc = enc.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku_sign.digital_signature and not ku_sign.key_agreement
    assert ku_enc.key_agreement and not ku_enc.digital_signature
    # the encryption key is kept (sealed) for the key history; the signing key never
    assert cax.store.private_keys_for("bob@example.com", "sign") == []
    history = cax.key_history("bob@example.com")
    assert [c for _, c in history] == [enc.cert]
    assert history[0][0].public_key() == enc.key.public_key()
    sealed = cax.store.private_keys_for("bob@example.com")[0].sealed
    assert enc.key.private_bytes(serialization.Encoding.DER,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()) not in sealed


def test_sponsored_profile_needs_a_name(backend: Backend) -> None:
    home = make_ca(backend.data_dir, organization_identifier="NTRGB-12345678",
                   default_profile="sponsored-strict")
    with Store.open(backend.url, backend.data_dir) as store:
        cax = CertificateAuthority(home.unlock(PASS), store)
        with pytest.raises(CAError, match="given name and surname"):
            cax.issue_generated("c@example.com", **FAST)
        issuance = cax.issue_generated("c@example.com", name="Carol Example", **FAST)
        subject = issuance.items[0].cert.subject
        assert subject.get_attributes_for_oid(NameOID.SURNAME)[0].value == "Example"
        assert subject.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Carol"


def test_issuance_is_all_or_nothing(cax: CertificateAuthority,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise StoreError("simulated crash while writing the audit row")

    monkeypatch.setattr(cax.store, "audit", fail)
    with pytest.raises(StoreError, match="simulated"):
        cax.issue_generated("dan@example.com", **FAST)
    monkeypatch.undo()
    assert cax.store.issued_for("dan@example.com") == []
    assert cax.store.private_keys_for("dan@example.com") == []
    assert cax.store.certificates_for("dan@example.com") == []
    assert cax.store.get_user("dan@example.com") is None


# -- renewal -------------------------------------------------------------------------------


def test_renewal_rekeys_encryption_and_keeps_history(cax: CertificateAuthority) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=700)
    first = cax.issue_generated("erin@example.com", now=past, **FAST)
    enc = first.item(Purpose.ENCRYPT)
    assert enc is not None and enc.key is not None
    renewed = cax.renew(enc.record)
    assert renewed.key is not None
    assert renewed.cert.public_key() != enc.cert.public_key()
    old = cax.store.issued_record(fingerprint=enc.record.fingerprint)
    assert old is not None and old.renewed_by == renewed.record.fingerprint
    history = cax.key_history("erin@example.com")
    assert [c for _, c in history] == [enc.cert, renewed.cert]
    keys = cax.store.private_keys_for("erin@example.com")
    assert keys[0].retired_at is not None and keys[1].retired_at is None
    with pytest.raises(CAError, match="renewed already"):
        cax.renew(old)


def test_renewal_keeps_a_csr_signing_key(cax: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = cax.issue_csr(csr_for("f@example.com", key), email="f@example.com",
                           purpose="sign")
    renewed = cax.renew(issued.items[0].record)
    assert renewed.key is None and renewed.cert.public_key() == key.public_key()


# -- revocation ----------------------------------------------------------------------------


def test_revoke_publishes_a_crl(cax: CertificateAuthority) -> None:
    issuance = cax.issue_generated("gus@example.com", **FAST)
    sign = issuance.item(Purpose.SIGN)
    assert sign is not None
    serial_colons = ":".join(f"{b:02X}" for b in sign.cert.serial_number.to_bytes(20, "big"))
    (done,) = cax.revoke(serial=serial_colons, reason="key-compromise")
    assert done.revoked_at is not None and done.reason is not None
    latest = cax.store.latest_crl(cax.issuer_fingerprint)
    assert latest is not None and latest.der is not None
    crl = x509.load_der_x509_crl(latest.der)
    assert crl.is_signature_valid(cax.ca.authority.cert.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(sign.cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason \
        is x509.ReasonFlags.key_compromise
    with pytest.raises(CAError, match="already revoked"):
        cax.revoke(serial=sign.record.serial)
    with pytest.raises(CAError, match="revoked"):
        cax.renew(cax.store.issued_record(fingerprint=sign.record.fingerprint))  # type: ignore[arg-type]
    # by address: only the live encryption certificate is left
    (enc,) = cax.revoke(email="gus@example.com", reason="affiliation-changed")
    assert enc.purpose == "encrypt"
    with pytest.raises(CAError, match="no live certificate"):
        cax.revoke(email="gus@example.com")
    numbers = [e.details.get("number") for e in cax.store.audit_entries()
               if e.action == "ca.crl"]
    assert numbers == sorted(numbers) and len(numbers) >= 2


@pytest.mark.parametrize("serial,match", [("zz", "hexadecimal"), ("abcdef", "no certificate")])
def test_revoke_bad_serial(cax: CertificateAuthority, serial: str, match: str) -> None:
    with pytest.raises(CAError, match=match):
        cax.revoke(serial=serial)


def test_bad_reason(cax: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="reason"):
        cax.revoke(email="x@example.com", reason="because")


# -- tampering -----------------------------------------------------------------------------


def test_tampered_key_history_detected(cax: CertificateAuthority) -> None:
    cax.issue_generated("hal@example.com", **FAST)
    cax.issue_generated("ivy@example.com", **FAST)
    k = schema.private_keys
    with cax.store.transaction() as conn:
        rows = conn.execute(k.select().order_by(k.c.id)).all()
        # swap Hal's sealed key for Ivy's: it opens, but belongs to another certificate
        conn.execute(k.update().where(k.c.id == rows[0].id)
                     .values(encrypted_pkcs8=rows[1].encrypted_pkcs8))
    with pytest.raises(CAError, match="does not belong"):
        cax.key_history("hal@example.com")
    with cax.store.transaction() as conn:
        flipped = bytearray(rows[1].encrypted_pkcs8)
        flipped[-20] ^= 1
        conn.execute(k.update().where(k.c.id == rows[1].id)
                     .values(encrypted_pkcs8=bytes(flipped)))
    with pytest.raises(CAError, match="damaged or tampered"):
        cax.key_history("ivy@example.com")


def test_duplicate_live_certificate_refused(cax: CertificateAuthority) -> None:
    cax.issue_generated("jo@example.com", purpose="sign", **FAST)
    with pytest.raises(CAError, match="already holds a live sign certificate"):
        cax.issue_generated("jo@example.com", **FAST)
    with pytest.raises(CAError, match="already holds"):
        cax.issue_csr(csr_for("jo@example.com", ec.generate_private_key(ec.SECP256R1())),
                      email="jo@example.com", purpose="both")
    cax.issue_generated("jo@example.com", purpose="encrypt", **FAST)  # the missing half
    cax.issue_generated("jo@example.com", purpose="sign", replace=True, **FAST)
    assert len(cax.store.issued_for("jo@example.com")) == 3


def test_a_key_that_signs_is_never_kept(cax: CertificateAuthority) -> None:
    issuance = cax.issue_generated("kim@example.com", purpose="both", **FAST)
    (item,) = issuance.items
    assert item.purpose is Purpose.BOTH and item.key is not None
    assert item.record.purpose == "both"
    assert cax.store.private_keys_for("kim@example.com", "encrypt") == []
    assert cax.store.private_keys_for("kim@example.com", "sign") == []
    renewed = cax.renew(item.record)
    assert renewed.key is not None and cax.store.private_keys_for("kim@example.com") == []


def test_current_crl_follows_publications(cax: CertificateAuthority) -> None:
    first = cax.current_crl()  # ca init published none here: this publishes number 1
    assert cax.current_crl() == first
    issued = cax.issue_generated("lee@example.com", purpose="sign", **FAST)
    cax.revoke(serial=issued.items[0].record.serial)  # publishes number 2
    second = x509.load_der_x509_crl(cax.current_crl())
    assert second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert len(second) == 1
    # less than half its life left: a fresh one is published
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    third = x509.load_der_x509_crl(cax.current_crl(now=later))
    assert third.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
