"""The store on both backends: schema, transactions, uniqueness, errors."""

from __future__ import annotations

import sqlite3
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from backends import PG_PORT, Backend
from cryptography.hazmat.primitives import hashes
from loopback import TcpRelay
from pki import Identity
from sqlalchemy import inspect, text

from smimekit.cli.main import main
from smimekit.errors import StoreError
from smimekit.store import DB_FILENAME, Store
from smimekit.store.schema import SCHEMA_VERSION

TABLES = {
    "audit_log",
    "certificates",
    "crl_publications",
    "escrow_records",
    "private_keys",
    "revocations",
    "schema_meta",
    "users",
}


def _open(backend: Backend, **kwargs: float) -> Store:
    return Store.open(backend.url, backend.data_dir, **kwargs)


def test_first_open_creates_every_table_and_records_the_version(backend: Backend) -> None:
    with _open(backend) as store:
        with store.transaction() as conn:
            assert TABLES <= set(inspect(conn).get_table_names())
        assert store.schema_version() == SCHEMA_VERSION
    with _open(backend) as store:  # a second open finds the schema and keeps it
        assert store.schema_version() == SCHEMA_VERSION


def test_sqlite_file_and_directory_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Store.open(None, data).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / DB_FILENAME).stat().st_mode) == 0o600


def test_sqlite_file_named_by_url_is_created_private(tmp_path: Path) -> None:
    # a store kept outside the data directory (docs/store.md, "Multi-node deployment"): the
    # new file and its WAL files are the owner's only, whatever the umask; the directory is
    # the operator's and is left as it is
    path = tmp_path / "store" / DB_FILENAME
    path.parent.mkdir()
    with Store.open(f"sqlite:///{path}", tmp_path / "data") as store:
        store.add_user("alice@example.org", "Alice", None)
        for made in (path, path.with_name(DB_FILENAME + "-wal"),
                     path.with_name(DB_FILENAME + "-shm")):
            assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
    path.chmod(0o640)  # an existing file keeps the mode its owner gave it
    Store.open(f"sqlite:///{path}", tmp_path / "data").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_users_round_trip_case_insensitively(backend: Backend) -> None:
    with _open(backend) as store:
        store.add_user("Alice@Example.ORG", "Alice", "Legal")
        user = store.get_user("alice@example.org")
        assert user is not None and (user.name, user.department) == ("Alice", "Legal")
        assert store.get_user("nobody@example.org") is None


def test_certificate_fields_are_stored(backend: Backend, alice: Identity) -> None:
    with _open(backend) as store:
        stored = store.add_certificate(alice.cert, "imported")
        fp = alice.cert.fingerprint(hashes.SHA256()).hex()
        again = store.get_certificate(fp.upper())
        assert again == stored
        assert stored.certificate == alice.cert
        assert alice.email.lower() in stored.emails
        assert stored.serial == format(alice.cert.serial_number, "x")
        assert stored.not_after == alice.cert.not_valid_after_utc
        assert stored.key_usage is not None and "digital_signature" in stored.key_usage
        assert [c.fingerprint for c in store.certificates_for(alice.email)] == [fp]


def test_duplicate_email_is_a_store_error(backend: Backend) -> None:
    with _open(backend) as store:
        store.add_user("bob@example.org")
        with pytest.raises(StoreError, match="already stored"):
            store.add_user("BOB@example.org")


def test_duplicate_certificate_is_a_store_error(backend: Backend, bob: Identity) -> None:
    with _open(backend) as store:
        store.add_certificate(bob.cert, "imported")
        with pytest.raises(StoreError, match="already stored"):
            store.add_certificate(bob.cert, "harvested")


def test_exception_mid_transaction_leaves_nothing_written(
    backend: Backend, alice: Identity
) -> None:
    with _open(backend) as store:
        with pytest.raises(RuntimeError, match="crash"):
            with store.transaction():
                store.add_user("carol@example.org")
                store.add_certificate(alice.cert, "issued")
                store.audit("ca", "ca.issue", "carol@example.org")
                raise RuntimeError("crash half-way through an issuance")
        assert store.get_user("carol@example.org") is None
        assert store.get_certificate(alice.cert.fingerprint(hashes.SHA256()).hex()) is None
        assert store.audit_count() == 0


def test_store_error_mid_transaction_rolls_back_earlier_writes(backend: Backend) -> None:
    with _open(backend) as store:
        store.add_user("dave@example.org")
        with pytest.raises(StoreError):
            with store.transaction():
                store.add_user("erin@example.org")
                store.add_user("dave@example.org")
        assert store.get_user("erin@example.org") is None


def test_store_error_inside_a_transaction_can_be_caught_there(backend: Backend) -> None:
    with _open(backend) as store:
        store.add_user("gina@example.org")
        with pytest.raises(RuntimeError), store.transaction():
            with pytest.raises(StoreError, match="already stored"):
                store.add_user("gina@example.org")
            raise RuntimeError("give up")
        assert store.get_user("gina@example.org") is not None


def test_locked_sqlite_database_is_a_clear_store_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store.open(None, data, busy_timeout=0.1)
    other = sqlite3.connect(data / DB_FILENAME, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="is locked by another process"):
            store.add_user("frank@example.org")
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.add_user("frank@example.org")  # works again once the lock is gone
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg://nobody@127.0.0.1:1/nowhere", "cannot use the database"),
        ("not a url", "bad database URL"),
        ("mysql://user@localhost/db", "unsupported database"),
    ],
)
def test_bad_database_url_is_a_clear_store_error(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store.open(url, tmp_path)


def test_bad_database_url_in_the_cli_is_one_line_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/nowhere"
    assert main(["--data-dir", str(tmp_path), "--database-url", url, "log", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error: cannot use the database")
    assert err.count("\n") == 1 and "Traceback" not in err and "secret" not in err


def test_issued_status_answers_at_once_when_the_server_is_back(backend: Backend) -> None:
    """The pool's connections die while the server is away (the relay between us drops
    them). Once it is back, the very first lookup is answered: the dead connection is
    noticed, the pool emptied and the read run again on a new one; while it is away, the
    lookup fails as a StoreError."""
    if backend.url is None:
        pytest.skip("SQLite has no server to lose")
    relay = TcpRelay(("127.0.0.1", PG_PORT))
    try:
        url = backend.url.replace(f":{PG_PORT}/", f":{relay.port}/")
        with Store.open(url, backend.data_dir, busy_timeout=2) as store:
            with ThreadPoolExecutor(max_workers=3) as pool:  # several pooled connections
                barrier = threading.Barrier(3)

                def lookup() -> None:
                    with store.read():  # hold a connection until all three have one
                        barrier.wait(timeout=10)
                    store.issued_status(serial="ab", issuer_fingerprint="f" * 64)

                for future in [pool.submit(lookup) for _ in range(3)]:
                    future.result(timeout=30)
            relay.cut()
            with pytest.raises(StoreError, match="cannot"):
                store.issued_status(serial="ab", issuer_fingerprint="f" * 64)
            relay.restore()
            for _ in range(4):
                assert store.issued_status(serial="ab", issuer_fingerprint="f" * 64) is None
    finally:
        relay.stop()


def test_raw_sql_sees_the_same_tables(backend: Backend) -> None:
    with _open(backend) as store, store.transaction() as conn:
        assert conn.execute(text("SELECT count(*) FROM users")).scalar_one() == 0


def test_issued_status_fails_as_a_store_error_and_recovers(backend: Backend) -> None:
    """The OCSP lookup's own read path (a pooled driver connection outside SQLAlchemy's
    statements): a database error is a StoreError (the responder answers tryLater), and the
    connection pool stays usable afterwards."""
    with _open(backend) as store:
        assert store.issued_status(serial="ab", issuer_fingerprint="f" * 64) is None

        def rename(old: str, new: str) -> None:
            with store.transaction() as conn:
                conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

        rename("revocations", "revocations_gone")
        for _ in range(2):
            with pytest.raises(StoreError, match="cannot read the store"):
                store.issued_status(serial="ab", issuer_fingerprint="f" * 64)
        rename("revocations_gone", "revocations")
        assert store.issued_status(serial="ab", issuer_fingerprint="f" * 64) is None
