"""Schema version 3: the one-live-certificate rule and the CRL number as constraints, reads in
deferred SQLite transactions, and the in-place upgrade of version 2 stores (issue 9).

Every test runs against SQLite and PostgreSQL (the ``backend`` fixture) unless its name says
SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend
from sqlalchemy import text

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.errors import CAError, StoreError
from smimekit.store import Store, schema
from smimekit.store.base import DB_FILENAME

PASS = b"correct horse battery staple"
BASE = "http://pki.example.com"
FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256,
        "lint": False}
NOW = dt.datetime.now(dt.UTC)


def _home(data_dir: Path) -> CAHome:
    home = CAHome(data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url=BASE, key_type="p256",
                         country="GB"), PASS)
    return home


@pytest.fixture
def cax(backend: Backend) -> Iterator[CertificateAuthority]:
    home = _home(backend.data_dir)
    store = Store.open(backend.url, backend.data_dir)
    yield CertificateAuthority(home.unlock(PASS), store, actor="test")
    store.close()


def _live(cax: CertificateAuthority, email: str) -> list[str]:
    return sorted(r.purpose for r in cax.store.issued_for(email) if r.live)


# -- the constraints -----------------------------------------------------------------------


def test_crl_number_is_unique_per_issuer(cax: CertificateAuthority) -> None:
    cax.store.add_crl("aa" * 32, 7, NOW, NOW, b"one")
    cax.store.add_crl("bb" * 32, 7, NOW, NOW, b"other issuer: allowed")
    with pytest.raises(StoreError, match="refused by the schema"):
        cax.store.add_crl("aa" * 32, 7, NOW, NOW, b"two")


def test_second_live_certificate_is_refused_inside_the_issuing_transaction(
        cax: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    cax.issue_generated("jo@example.com", purpose="sign", **FAST)
    # a process whose prior read saw nothing (it read before the other one committed)
    monkeypatch.setattr(cax, "_refuse_duplicates", lambda *args: None)
    with pytest.raises(CAError, match=r"already holds a live certificate for sign.*--replace"):
        cax.issue_generated("jo@example.com", purpose="sign", **FAST)
    with pytest.raises(CAError, match="already holds a live certificate for both"):
        cax.issue_generated("jo@example.com", purpose="both", **FAST)
    assert _live(cax, "jo@example.com") == ["sign"]
    assert len(cax.store.issued_for("jo@example.com")) == 1  # the refusals left nothing
    cax.issue_generated("jo@example.com", purpose="encrypt", **FAST)  # the other purpose
    assert _live(cax, "jo@example.com") == ["encrypt", "sign"]


def test_revoked_renewed_or_expired_certificate_frees_its_slot(
        cax: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cax, "_refuse_duplicates", lambda *args: None)
    first = cax.issue_generated("al@example.com", purpose="sign", **FAST).items[0].record
    cax.revoke(serial=first.serial)
    second = cax.issue_generated("al@example.com", purpose="sign", **FAST).items[0].record
    renewed = cax.renew(second, lint=False)
    with pytest.raises(CAError, match="renewed already"):
        cax.renew(second, lint=False)
    assert [r.serial for r in cax.store.issued_for("al@example.com") if r.live] \
        == [renewed.record.serial]
    # short-lived certificate, then the next one issued after it expired
    cax.issue_generated("ex@example.com", purpose="sign", validity=dt.timedelta(days=1),
                        now=NOW - dt.timedelta(days=3), **FAST)
    cax.issue_generated("ex@example.com", purpose="sign", **FAST)


def test_replace_retires_the_old_certificate_in_the_same_transaction(
        cax: CertificateAuthority) -> None:
    old = cax.issue_generated("jo@example.com", purpose="both", **FAST).items[0].record
    new = cax.issue_generated("jo@example.com", purpose="sign", replace=True,
                              **FAST).items[0].record
    again = cax.store.issued_record(fingerprint=old.fingerprint)
    assert again is not None and again.renewed_by == new.fingerprint and not again.live
    assert _live(cax, "jo@example.com") == ["sign"]
    entry = cax.store.audit_entries()[-1]
    assert entry.details["replaced"] == [old.fingerprint]


# -- reads do not take the SQLite write lock ---------------------------------------------------


def test_ocsp_lookup_proceeds_while_a_sqlite_write_transaction_is_open(
        tmp_path: Path) -> None:
    home = _home(tmp_path)
    store = Store.open(None, tmp_path, busy_timeout=2.0)
    cax = CertificateAuthority(home.unlock(PASS), store)
    record = cax.issue_generated("oc@example.com", purpose="sign", **FAST).items[0].record
    writer = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO users (email, created_at) VALUES ('w@example.com',"
                       " '2026-01-01 00:00:00')")
        started = time.monotonic()
        found = store.issued_record(serial=record.serial,
                                    issuer_fingerprint=cax.issuer_fingerprint)
        latest = store.latest_crl(cax.issuer_fingerprint, with_der=False)
        elapsed = time.monotonic() - started
        assert found is not None and found.fingerprint == record.fingerprint
        assert latest is None or latest.number >= 1
        assert elapsed < 1.0, f"the read waited {elapsed:.2f} s for the write lock"
        # a write still waits for the lock, and says so when it times out
        quick = Store.open(None, tmp_path, busy_timeout=0.2, create=False)
        with pytest.raises(StoreError, match="locked"):
            quick.add_user("x@example.com")
        quick.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.close()


def test_a_write_inside_a_read_block_is_refused(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        with store.read(), pytest.raises(RuntimeError):
            store.add_user("r@example.com")
        assert store.get_user("r@example.com") is None


# -- the upgrade from version 2 ---------------------------------------------------------------


def _downgrade_to_v2(store: Store, *damage: str) -> None:
    """Turn a version 3 store into exactly the version 2 schema (the slot columns and the
    three version 3 indexes removed), data kept; then run the ``damage`` statements that
    version 2 allowed."""
    with store.transaction() as conn:
        for index in ("uq_issued_sign_slot", "uq_issued_encrypt_slot",
                      "uq_crl_publications_issuer_number"):
            conn.execute(text(f"DROP INDEX {index}"))
        for statement in damage:
            conn.execute(text(statement))
        conn.execute(text("ALTER TABLE issued DROP COLUMN sign_slot"))
        conn.execute(text("ALTER TABLE issued DROP COLUMN encrypt_slot"))
        conn.execute(text("UPDATE schema_meta SET value = '2' WHERE key = 'schema_version'"))


def _v2_store(backend: Backend, *damage: str) -> tuple[CAHome, list[str]]:
    """A version 2 store with a CA, a revoked and a live certificate, and two CRLs."""
    home = _home(backend.data_dir)
    with Store.open(backend.url, backend.data_dir) as store:
        cax = CertificateAuthority(home.unlock(PASS), store)
        cax.publish_crl()
        gone = cax.issue_generated("old@example.com", purpose="sign", **FAST).items[0]
        cax.revoke(serial=gone.record.serial)
        live = cax.issue_generated("keep@example.com", **FAST)
        _downgrade_to_v2(store, *damage)
    return home, [i.record.serial for i in live.items]


def test_v2_store_is_read_as_it_is_and_upgraded_by_the_first_write(backend: Backend) -> None:
    home, serials = _v2_store(backend)
    store = Store.open(backend.url, backend.data_dir, create=False)
    try:
        cax = CertificateAuthority(home.unlock(PASS), store)
        # reads work and write nothing
        assert store.schema_version() == 2
        assert sorted(r.serial for r in store.issued_for("keep@example.com")) == sorted(serials)
        latest = store.latest_crl(cax.issuer_fingerprint)
        assert latest is not None and latest.number == 2
        assert store.schema_version() == 2
        # the first write upgrades, in its own transaction
        with pytest.raises(CAError, match="already holds a live"):
            cax.issue_generated("keep@example.com", purpose="sign", **FAST)
        assert store.schema_version() == 2  # the refusal came before any write
        crl = cax.publish_crl()
        assert store.schema_version() == schema.SCHEMA_VERSION
        assert len(crl) == 1
        with store.read() as conn:
            slots = conn.execute(text(
                "SELECT purpose, sign_slot, encrypt_slot FROM issued"
                " WHERE email = 'keep@example.com' ORDER BY purpose")).all()
        assert [tuple(r) for r in slots] == [("encrypt", None, "keep@example.com"),
                                             ("sign", "keep@example.com", None)]
        monkey = CertificateAuthority(home.unlock(PASS), store)
        monkey._refuse_duplicates = lambda *args: None  # type: ignore[method-assign]
        with pytest.raises(CAError, match="already holds a live certificate for encrypt"):
            monkey.issue_generated("keep@example.com", purpose="encrypt", **FAST)
        with pytest.raises(StoreError, match="refused by the schema"):
            store.add_crl(cax.issuer_fingerprint, 3, NOW, NOW, b"x")
    finally:
        store.close()


def test_v2_store_with_duplicate_live_certificates_upgrades_keeping_the_newest(
        backend: Backend) -> None:
    home = _home(backend.data_dir)
    with Store.open(backend.url, backend.data_dir) as store:
        cax = CertificateAuthority(home.unlock(PASS), store)
        first = cax.issue_generated("two@example.com", purpose="sign", **FAST).items[0]
        second = cax.issue_generated("two@example.com", purpose="sign", replace=True,
                                     **FAST).items[0]
        # version 2's check-then-act race, replayed: both live
        _downgrade_to_v2(store, "UPDATE issued SET renewed_by = NULL")
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert [r.live for r in store.issued_for("two@example.com")] == [True, True]
        store.add_user("upgrade@example.com")  # the first write upgrades
        assert store.schema_version() == schema.SCHEMA_VERSION
        with store.read() as conn:
            rows = conn.execute(text(
                "SELECT serial, sign_slot FROM issued WHERE email = 'two@example.com'"
                " ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(first.record.serial, None),
                                            (second.record.serial, "two@example.com")]
        cax = CertificateAuthority(home.unlock(PASS), store)
        # the older one is still a valid certificate: revocable, and nothing was deleted
        cax.revoke(serial=first.record.serial)
        cax.renew(second.record, lint=False)


def test_v2_store_with_duplicate_crl_numbers_is_refused_with_a_clear_message(
        backend: Backend, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from smimekit.cli.main import main

    _v2_store(backend, "INSERT INTO crl_publications (issuer_fingerprint, crl_number,"
              " this_update, next_update, der, published_at) SELECT issuer_fingerprint,"
              " crl_number, this_update, next_update, der, published_at"
              " FROM crl_publications WHERE crl_number = '2'")
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        with pytest.raises(StoreError, match=r"number 2 \(2 CRLs\).*DELETE FROM"):
            store.add_user("x@example.com")
        assert store.schema_version() == 2  # nothing of the upgrade stayed
        assert store.get_user("x@example.com") is None
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS.decode())
    capsys.readouterr()
    assert main([*backend.cli_args(), "ca", "crl"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "published twice" in err[0] and "Traceback" not in err[0]
    # the operator's fix from the message, then the upgrade goes through
    fix = ("DELETE FROM crl_publications WHERE id NOT IN (SELECT max(id) FROM"
           " crl_publications GROUP BY issuer_fingerprint, crl_number)")
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        with store._engine.begin() as conn:  # raw, as the operator would with psql/sqlite3
            conn.execute(text(fix))
    assert main([*backend.cli_args(), "ca", "crl"]) == 0
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.schema_version() == schema.SCHEMA_VERSION


def test_v1_store_is_upgraded_to_v3_by_create_true_keeping_its_data(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        store.add_user("kept@example.com", "Kept")
        store.add_crl("aa" * 32, 1, NOW, NOW, b"crl")
        _downgrade_to_v2(store)
        with store.transaction() as conn:  # version 1: before the CA, no issued table
            conn.execute(text("DROP TABLE issued"))
            conn.execute(text("UPDATE schema_meta SET value = '1'"))
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.schema_version() == 1  # create=False: read as it is
    with Store.open(backend.url, backend.data_dir) as store:
        assert store.schema_version() == schema.SCHEMA_VERSION
        user = store.get_user("kept@example.com")
        assert user is not None and user.name == "Kept"
        assert store.issued_for("kept@example.com") == []
        with pytest.raises(StoreError, match="refused by the schema"):
            store.add_crl("aa" * 32, 1, NOW, NOW, b"again")
