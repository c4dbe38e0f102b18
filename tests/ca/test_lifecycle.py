"""Bulk lifecycle: enrol from CSV, renew what expires, notify holders. Every test that
touches the store runs on SQLite and PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from smimekit.ca.issuance import CertificateAuthority, Issuance, SubscriberKeyType
from smimekit.ca.lifecycle import (
    Delivery,
    ResultsLog,
    RowResult,
    RowStatus,
    due_for_renewal,
    enroll_rows,
    expiring,
    notify,
    read_enrolment_csv,
    renew_due,
)
from smimekit.ca.profiles import Purpose
from smimekit.cli.ca import new_passphrase, write_bundle
from smimekit.errors import CAError

P256 = SubscriberKeyType.P256
FAST = {"sign_key": P256, "encrypt_key": P256}
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _deliver(cax: CertificateAuthority, out: Path) -> Callable[[Issuance], Delivery]:
    def deliver(issuance: Issuance) -> Delivery:
        passphrase = new_passphrase() if any(i.key for i in issuance.items) else None
        files = write_bundle(cax, issuance, out, passphrase=passphrase or "", legacy=False,
                             mobileconfig=False)
        return Delivery(tuple(files), passphrase)
    return deliver


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


# -- reading the CSV -----------------------------------------------------------------------


def test_csv_tolerates_bom_blank_lines_any_column_order_and_extra_columns(
        tmp_path: Path) -> None:
    rows = read_enrolment_csv(_write(tmp_path / "u.csv", (
        "Department,Phone,Email,Name\r\n\r\n"
        "Sales,123,ada@example.com,Ada Lovelace\r\n"
        ",,,\r\n"
        "  ,, grace@example.com ,\r\n"
        '"R&D, Lab",9,\u00e9mile@example.com,\u00c9mile Zola\n'), bom=True))
    assert [(r.line, r.email, r.name, r.department, r.error) for r in rows] == [
        (3, "ada@example.com", "Ada Lovelace", "Sales", None),
        (5, "grace@example.com", None, None, None),
        (6, "\u00e9mile@example.com", "\u00c9mile Zola", "R&D, Lab", None),
    ]


def test_csv_rows_without_address_or_repeating_one_carry_their_error(tmp_path: Path) -> None:
    rows = read_enrolment_csv(_write(tmp_path / "u.csv", "email,name\n"
                                     "a@example.com,A\n,No Address\nA@Example.com,Again\n"))
    assert [r.error for r in rows] == [None, "no email address in this row",
                                       "duplicate of line 2"]


@pytest.mark.parametrize(("content", "message"), [
    (b"name,department\nAda,Sales\n", "no 'email' column (found 'name', 'department')"),
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"email\n\xff\xfe@example.com\n", "not UTF-8 text (line 2)"),
])
def test_csv_that_cannot_be_used_at_all_is_one_ca_error(tmp_path: Path, content: bytes,
                                                          message: str) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(content)
    with pytest.raises(CAError) as info:
        read_enrolment_csv(path)
    assert message in str(info.value)


def test_missing_csv_is_a_ca_error(tmp_path: Path) -> None:
    with pytest.raises(CAError, match=r"cannot read .*nope\.csv: No such file"):
        read_enrolment_csv(tmp_path / "nope.csv")


# -- enrolment -----------------------------------------------------------------------------


def _batch_csv(path: Path) -> Path:
    lines = ["email,name,department"]
    lines += [f"user{i:02d}@example.com,User Number{i:02d},Dept {i % 3}" for i in range(21)]
    lines += ["not-an-address,Bad Address,X",      # refused by the CA
              "nameless@example.com,,X",           # sponsored profile needs a name
              "USER03@example.com,Dup Licate,X",   # duplicate of line 5
              ",No Address,X"]
    return _write(path, "\n".join(lines) + "\n")


@pytest.mark.slow
def test_enrol_25_rows_issues_good_ones_reports_bad_ones_and_rerun_skips(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    rows = read_enrolment_csv(_batch_csv(tmp_path / "users.csv"))
    out = tmp_path / "out"
    log = ResultsLog(out / "results.csv")
    # files are the CLI's business (tests/cli); here only what the callback returns
    def deliver(issuance: Issuance) -> Delivery:
        return Delivery((out / f"{issuance.email}.p12",), "secret")

    results = list(enroll_rows(cax, rows, profile="sponsored-strict", deliver=deliver,
                               results=log, **FAST))
    assert len(results) == 25
    by_status = {s: [r for r in results if r.status is s] for s in RowStatus}
    assert len(by_status[RowStatus.OK]) == 21 and len(by_status[RowStatus.ERROR]) == 4
    errors = {r.line: r.message for r in by_status[RowStatus.ERROR]}
    assert "'not-an-address' is not a mailbox address" in errors[23]
    assert "needs the person's given name and surname" in errors[24]
    assert errors[25] == "duplicate of line 5" and errors[26] == "no email address in this row"

    ok = by_status[RowStatus.OK][0]
    assert len(ok.serials) == 2 and ok.passphrase == "secret"
    assert ok.files == (out / "user00@example.com.p12",) and ok.issuance is not None
    cert = ok.issuance.items[0].cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "User Number00"
    user = cax.store.get_user("user01@example.com")
    assert user is not None and user.department == "Dept 1"

    # the results file: header + one row per input row, private, and readable back
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert len(log.path.read_text().splitlines()) == 26
    assert log.previous()["user00@example.com"].serials == ok.serials

    issued = len(cax.store.issued_records(live_only=False))
    again = list(enroll_rows(cax, rows, profile="sponsored-strict", results=log,
                             **FAST))
    assert [r.status for r in again].count(RowStatus.SKIPPED) == 21
    assert [r.status for r in again].count(RowStatus.ERROR) == 4
    assert len(cax.store.issued_records(live_only=False)) == issued == 42
    assert cax.store.verify_audit_log() == []


def test_enrol_issues_only_the_purpose_a_person_lacks(cax: CertificateAuthority,
                                                      tmp_path: Path) -> None:
    cax.issue_generated("ada@example.com", purpose="sign", **FAST)
    rows = read_enrolment_csv(_write(tmp_path / "u.csv", "email\nada@example.com\n"))
    [result] = enroll_rows(cax, rows, **FAST)
    assert result.status is RowStatus.OK and result.issuance is not None
    assert [i.purpose.value for i in result.issuance.items] == ["encrypt"]
    [again] = enroll_rows(cax, rows, **FAST)
    assert again.status is RowStatus.SKIPPED and len(again.serials) == 2


def test_expired_revoked_or_foreign_certificates_do_not_count_as_held(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    cax.issue_generated("old@example.com", validity=dt.timedelta(days=10),
                        now=NOW - dt.timedelta(days=20), **FAST)
    cax.issue_generated("gone@example.com", **FAST)
    cax.revoke(email="gone@example.com")
    rows = read_enrolment_csv(_write(tmp_path / "u.csv",
                                     "email\nold@example.com\ngone@example.com\n"))
    assert [r.status for r in enroll_rows(cax, rows, **FAST)] == [
        RowStatus.OK, RowStatus.OK]


def test_an_ok_row_whose_commit_was_lost_is_issued_again_and_said_so(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "results.csv")
    rows = read_enrolment_csv(_write(tmp_path / "u.csv", "email\nada@example.com\n"))
    # what a kill between the fsync of the row and the commit leaves: a row, no records
    log.path.write_text("email,status,serials,files,p12_passphrase,message\r\n"
                        "ada@example.com,ok,1234abcd 5678ef,,x,\r\nada@exa")  # torn last line
    [result] = enroll_rows(cax, rows, results=log, **FAST)
    assert result.status is RowStatus.OK and "earlier 'ok' row" in result.message
    assert log.path.read_text().splitlines()[-1].startswith("ada@example.com,ok,")
    assert log.previous()["ada@example.com"].serials == result.serials


def test_a_failure_while_writing_files_leaves_no_certificate(cax: CertificateAuthority,
                                                             tmp_path: Path) -> None:
    def deliver(issuance: Issuance) -> Delivery:
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    rows = read_enrolment_csv(_write(tmp_path / "u.csv", "email\nada@example.com\n"))
    [result] = enroll_rows(cax, rows, deliver=deliver, **FAST)
    assert result.status is RowStatus.ERROR
    assert result.message == f"cannot write {tmp_path / 'out'}: Permission denied"
    assert cax.store.issued_for("ada@example.com") == []


def test_a_results_row_that_cannot_be_written_undoes_the_person(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    class FullDisk(ResultsLog):
        def append(self, result: RowResult) -> None:
            if result.status is RowStatus.OK:
                raise OSError(28, "No space left on device", str(self.path))
            super().append(result)

    written = tmp_path / "ada.pem"

    def deliver(issuance: Issuance) -> Delivery:
        written.write_text("certificate")
        return Delivery((written,), "secret")

    log = FullDisk(tmp_path / "results.csv")
    rows = read_enrolment_csv(_write(tmp_path / "u.csv", "email\nada@example.com\n"))
    [result] = enroll_rows(cax, rows, deliver=deliver, results=log, **FAST)
    assert result.status is RowStatus.ERROR
    assert result.message == f"cannot write {log.path}: No space left on device"
    assert not written.exists() and cax.store.issued_for("ada@example.com") == []
    assert log.previous()["ada@example.com"].status is RowStatus.ERROR


def test_unknown_purpose_fails_the_batch_before_any_row(cax: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="unknown purpose"):
        list(enroll_rows(cax, [], purpose="everything"))
    with pytest.raises(CAError, match="unknown profile"):
        list(enroll_rows(cax, [], profile="nope"))


# -- renewal -------------------------------------------------------------------------------


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))


@pytest.mark.slow
def test_renew_due_rekeys_encryption_keeps_csr_keys_and_is_idempotent(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    short = dt.timedelta(days=20)
    first = cax.issue_generated("ada@example.com", validity=short, **FAST)
    own_key = ec.generate_private_key(ec.SECP256R1())
    csr = cax.issue_csr(_csr(own_key), email="bob@example.com", purpose="sign",
                        validity=short)
    cax.issue_generated("later@example.com", **FAST)

    later = NOW + dt.timedelta(days=5)  # time moves on; 15 days left
    assert due_for_renewal(cax.store, dt.timedelta(days=14), now=later) == []
    due = due_for_renewal(cax.store, dt.timedelta(days=30), now=later,
                          issuer_fingerprint=cax.issuer_fingerprint)
    assert sorted((r.email, r.purpose) for r in due) == [
        ("ada@example.com", "encrypt"), ("ada@example.com", "sign"),
        ("bob@example.com", "sign")]

    log = ResultsLog(tmp_path / "out" / "renewals.csv")
    results = list(renew_due(cax, due, now=later, deliver=_deliver(cax, tmp_path / "out"),
                             results=log))
    assert [(r.email, r.status) for r in results] == [("ada@example.com", RowStatus.OK),
                                                      ("bob@example.com", RowStatus.OK)]
    ada, bob = results
    assert ada.issuance is not None and bob.issuance is not None
    old_encrypt = first.item(Purpose.ENCRYPT)
    assert old_encrypt is not None
    new_encrypt = next(i for i in ada.issuance.items if i.purpose.value == "encrypt")
    assert new_encrypt.key is not None
    assert new_encrypt.cert.public_key() != old_encrypt.cert.public_key()
    assert new_encrypt.cert.not_valid_before_utc == later

    # the key history holds both encryption keys, and each opens against its certificate
    history = cax.key_history("ada@example.com")
    assert [c for _, c in history] == [old_encrypt.cert, new_encrypt.cert]
    assert all(k.public_key() == c.public_key() for k, c in history)
    old_record = cax.store.issued_record(fingerprint=old_encrypt.record.fingerprint)
    assert old_record is not None and old_record.renewed_by == new_encrypt.record.fingerprint

    # a key the holder made stays theirs: same key, no PKCS#12, just the certificate
    [renewed_sign] = bob.issuance.items
    assert renewed_sign.key is None and bob.passphrase is None
    assert renewed_sign.cert.public_key() == csr.items[0].cert.public_key()
    assert [f.suffix for f in bob.files] == [".pem"]

    # the new PKCS#12 opens with its passphrase
    p12 = next(f for f in ada.files if f.name.endswith(".encrypt.p12"))
    assert ada.passphrase is not None
    loaded = pkcs12.load_pkcs12(p12.read_bytes(), ada.passphrase.encode())
    certs = [c.certificate for c in [loaded.cert, *loaded.additional_certs] if c is not None]
    assert new_encrypt.cert in certs and old_encrypt.cert in certs

    assert due_for_renewal(cax.store, dt.timedelta(days=30), now=later) == []
    assert {r.status for r in renew_due(cax, due, now=later)} == {RowStatus.SKIPPED}
    assert len(log.path.read_text().splitlines()) == 3
    assert cax.store.verify_audit_log() == []


def test_expired_certificates_are_not_renewed(cax: CertificateAuthority) -> None:
    cax.issue_generated("old@example.com", validity=dt.timedelta(days=10),
                        now=NOW - dt.timedelta(days=20), **FAST)
    assert due_for_renewal(cax.store, dt.timedelta(days=30), now=NOW) == []


# -- expiry notices ------------------------------------------------------------------------


class MemoryMailer:
    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.sent: list[EmailMessage] = []
        self.refuse = refuse

    def send(self, message: EmailMessage) -> None:
        if message["To"] in self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        self.sent.append(message)


def test_notify_tells_each_holder_once_a_week_and_the_admins(
        cax: CertificateAuthority) -> None:
    short = dt.timedelta(days=20)
    cax.issue_generated("ada@example.com", name="Ada Lovelace", validity=short, now=NOW,
                        **FAST)
    key = ec.generate_private_key(ec.SECP256R1())
    cax.issue_csr(_csr(key), email="bob@example.com", purpose="sign", validity=short,
                  now=NOW)
    cax.issue_generated("calm@example.com", now=NOW, **FAST)

    items = expiring(cax.store, dt.timedelta(days=30), now=NOW)
    assert [(i.record.email, i.days_left) for i in items] == [
        ("ada@example.com", 19), ("ada@example.com", 19), ("bob@example.com", 19)]
    mailer = MemoryMailer()
    report = notify(cax.store, items, mailer=mailer, sender="ca@example.com",
                    admins=["admin@example.com"], within=dt.timedelta(days=30),
                    organization="Example Ltd", now=NOW, actor="test")
    assert report.notified == ["ada@example.com", "bob@example.com"]
    assert report.admins == ["admin@example.com"] and report.failed == []
    assert [m["To"] for m in mailer.sent] == ["ada@example.com", "bob@example.com",
                                              "admin@example.com"]
    ada, bob, admin = (m.get_content() for m in mailer.sent)
    assert "Hello Ada Lovelace" in ada and "new PKCS#12 file from your administrator" in ada
    assert "keep the old one to read old mail" in ada and "certificate request" not in ada
    assert "send a new\n    certificate request (CSR)" in bob and "PKCS#12" not in bob
    assert mailer.sent[0]["Subject"].startswith("Your S/MIME certificate expires on")
    assert "bob@example.com" in admin and "notified now" in admin

    # within the week: nobody again, and no admin summary either
    items = expiring(cax.store, dt.timedelta(days=30), now=NOW + dt.timedelta(days=3))
    again = notify(cax.store, items, mailer=mailer, sender="ca@example.com",
                   admins=["admin@example.com"], within=dt.timedelta(days=30),
                   organization="Example Ltd", now=NOW + dt.timedelta(days=3))
    assert again.notified == [] and len(again.recent) == 2 and len(mailer.sent) == 3
    # after a week: told again
    items = expiring(cax.store, dt.timedelta(days=30), now=NOW + dt.timedelta(days=8))
    later = notify(cax.store, items, mailer=mailer, sender="ca@example.com", admins=[],
                   within=dt.timedelta(days=30), organization="Example Ltd",
                   now=NOW + dt.timedelta(days=8))
    assert later.notified == ["ada@example.com", "bob@example.com"]
    notices = [e for e in cax.store.audit_entries() if e.action == "ca.notify"]
    assert len(notices) == 2 and notices[0].details["notified"] == report.notified
    assert cax.store.verify_audit_log() == []


def test_a_holder_whose_mail_fails_is_reported_and_told_next_time(
        cax: CertificateAuthority) -> None:
    short = dt.timedelta(days=20)
    for who in ("ada", "bob"):
        cax.issue_generated(f"{who}@example.com", validity=short, now=NOW, **FAST)
    items = expiring(cax.store, dt.timedelta(days=30), now=NOW)
    mailer = MemoryMailer(refuse=("ada@example.com",))
    report = notify(cax.store, items, mailer=mailer, sender="ca@example.com", admins=[],
                    within=dt.timedelta(days=30), organization="Example Ltd", now=NOW)
    assert report.failed == [("ada@example.com", "connection refused")]
    assert report.notified == ["bob@example.com"]
    items = expiring(cax.store, dt.timedelta(days=30), now=NOW)
    retry = notify(cax.store, items, mailer=MemoryMailer(), sender="ca@example.com",
                   admins=[], within=dt.timedelta(days=30), organization="Example Ltd",
                   now=NOW)
    assert retry.notified == ["ada@example.com"] and retry.recent == ["bob@example.com"]
