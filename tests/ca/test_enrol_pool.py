"""Enrolment with worker processes (:mod:`smimekit.ca.enrol_pool`, issue 9): the same outcome
as the one-process path, files under their final names only for recorded people, and the
leftovers of a killed run cleared. On SQLite and PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from smimekit.ca.bundle import BundleOptions, remove_leftovers
from smimekit.ca.enrol_pool import enroll_rows_pooled
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.lifecycle import ResultsLog, Row, RowResult, RowStatus, read_enrolment_csv

P256 = SubscriberKeyType.P256
FAST = {"sign_key": P256, "encrypt_key": P256}
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _csv(path: Path, text: str) -> list[Row]:
    path.write_text(text)
    return read_enrolment_csv(path)


@pytest.mark.slow
def test_pooled_enrolment_records_in_input_order_and_reports_bad_rows(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    rows = _csv(tmp_path / "u.csv", "email,name\n" + "".join(
        f"user{i}@example.com,User {i}\n" for i in range(6)) + "bad address,X\n"
        "user7@example.com,Seven\nUSER1@example.com,Again\n")
    out = tmp_path / "out"
    out.mkdir()
    log = ResultsLog(out / "results.csv")
    results = list(enroll_rows_pooled(cax, rows, workers=2, bundle=BundleOptions(out),
                                      results=log, **FAST))
    assert [(r.email, r.status) for r in results] == [
        *((f"user{i}@example.com", RowStatus.OK) for i in range(6)),
        ("bad address", RowStatus.ERROR), ("user7@example.com", RowStatus.OK),
        ("USER1@example.com", RowStatus.ERROR)]
    assert results[6].message == "'bad address' is not a mailbox address"
    assert results[8].message == "duplicate of line 3"
    lines = log.path.read_text().splitlines()[1:]  # the results file, in input order too
    assert [line.split(",")[0] for line in lines] == [r.email for r in results]
    for result in results:
        if result.status is not RowStatus.OK:
            continue
        live = [r for r in cax.store.issued_for(result.email) if r.live]
        assert sorted(r.purpose for r in live) == ["encrypt", "sign"]
        assert sorted(r.serial for r in live) == sorted(result.serials)
        for path in result.files:
            if path.suffix == ".p12":
                loaded = pkcs12.load_pkcs12(path.read_bytes(), result.passphrase.encode())
                assert loaded.key is not None and loaded.cert is not None
                assert loaded.key.public_key() == loaded.cert.certificate.public_key()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert cax.store.verify_audit_log() == []
    again = list(enroll_rows_pooled(cax, rows, workers=2, bundle=BundleOptions(out), **FAST))
    assert [r.status for r in again].count(RowStatus.SKIPPED) == 7


def test_pooled_enrolment_signs_outside_the_write_transaction(
        cax: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_transaction: list[bool] = []
    sign = cax._sign

    def spy(*args: Any, **kwargs: Any) -> Any:
        in_transaction.append(cax.store._current.get() is not None)
        assert kwargs.get("lint", args[5] if len(args) > 5 else None) is False  # in a worker
        return sign(*args, **kwargs)

    monkeypatch.setattr(cax, "_sign", spy)
    rows = [Row(2, "b@example.com"), Row(3, "c@example.com")]
    results = list(enroll_rows_pooled(cax, rows, workers=2,
                                      bundle=BundleOptions(tmp_path), **FAST))
    assert [r.status for r in results] == [RowStatus.OK, RowStatus.OK]
    assert in_transaction == [False] * 4


def test_files_that_cannot_be_written_fail_their_row_and_record_nothing(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "out"
    not_a_folder.write_text("a file where the folder should be")
    rows = [Row(2, "a@example.com"), Row(3, "b@example.com")]
    results = list(enroll_rows_pooled(cax, rows, workers=2,
                                      bundle=BundleOptions(not_a_folder), **FAST))
    assert [r.status for r in results] == [RowStatus.ERROR] * 2
    assert all(r.message.startswith("cannot write ") and "Not a directory" in r.message
               for r in results), results
    assert cax.store.issued_records(live_only=False) == []


def test_a_results_row_that_cannot_be_written_undoes_the_person_and_their_files(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    class FullDisk(ResultsLog):
        def append(self, result: RowResult) -> None:
            if result.status is RowStatus.OK:
                raise OSError(28, "No space left on device", str(self.path))
            super().append(result)

    out = tmp_path / "out"
    out.mkdir()
    log = FullDisk(tmp_path / "results.csv")
    [result] = enroll_rows_pooled(cax, [Row(2, "ada@example.com")], workers=2,
                                  bundle=BundleOptions(out), results=log, **FAST)
    assert result.status is RowStatus.ERROR
    assert result.message == f"cannot write {log.path}: No space left on device"
    assert list(out.iterdir()) == []  # neither published nor staged files stay
    assert cax.store.issued_for("ada@example.com") == []


@pytest.mark.slow
def test_a_person_enrolled_again_gets_their_old_encryption_key_in_the_pkcs12(
        cax: CertificateAuthority, tmp_path: Path) -> None:
    old = cax.issue_generated("old@example.com", validity=dt.timedelta(days=10),
                              now=NOW - dt.timedelta(days=20), **FAST)
    [result] = enroll_rows_pooled(cax, [Row(2, "old@example.com")], workers=2,
                                  bundle=BundleOptions(tmp_path), **FAST)
    assert result.status is RowStatus.OK and result.passphrase is not None
    loaded = pkcs12.load_pkcs12((tmp_path / "old@example.com.encrypt.p12").read_bytes(),
                                result.passphrase.encode())
    old_cert = old.items[1].cert
    assert old_cert in [c.certificate for c in loaded.additional_certs]


def test_remove_leftovers_takes_only_temporary_files_of_ours(tmp_path: Path) -> None:
    ours = [".ada@example.com.sign.p12.abcd1234.part", ".ada@example.com.encrypt.pem.x_9y8z7w",
            ".bo@example.com.encrypt.3f2a.p12.k2j3h4g5", ".c@example.com.both.mobileconfig."
                                                         "qwertyui.part"]
    theirs = ["ada@example.com.sign.p12", ".profile", "results.csv", ".notes.sign.pem.txt",
              ".ada@example.com.sign.p12.abc.part", ".x.sign.key.abcd1234"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    os.mkdir(tmp_path / ".d@example.com.sign.pem.abcd1234")  # not a file: stays
    assert remove_leftovers(tmp_path) == len(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*theirs, ".d@example.com.sign.pem.abcd1234"])
    assert remove_leftovers(tmp_path / "missing") == 0
