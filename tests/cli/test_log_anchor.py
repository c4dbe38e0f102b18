"""``smimekit log verify | show | head | init-key | anchor``: an audit log anchored under the
CA's audit key (<data-dir>/ca/audit.key), on SQLite and PostgreSQL, through the real CLI."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from backends import Backend
from sqlalchemy import text

from smimekit.ca.home import CAHome
from smimekit.cli.main import main
from smimekit.store import Store
from smimekit.store.audit import row_hash

PASS = "correct horse battery staple"
INIT = ["ca", "init", "--org", "Example Ltd", "--base-url", "http://pki.example.com",
        "--key-type", "p256", "--country", "GB"]


@pytest.fixture(autouse=True)
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    monkeypatch.delenv("SMIMEKIT_DATABASE_URL", raising=False)


def run(backend: Backend, *args: str) -> int:
    return main([*backend.cli_args(), *args])


def error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    return captured.err


def sql(backend: Backend, statement: str, **params: object) -> None:
    with Store.open(backend.url, backend.data_dir, create=False) as store, \
            store.transaction() as conn:
        conn.execute(text(statement), params)


def keyed_store(backend: Backend) -> Store:
    """The store as a command that can read <data-dir>/ca sees it: rows it writes are anchored."""
    store = Store.open(backend.url, backend.data_dir, create=False)
    store.use_audit_key(CAHome(backend.data_dir).audit_key())
    return store


def ca(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(backend, *INIT) == 0
    capsys.readouterr()


def rehash(backend: Backend) -> None:
    """The attacker's tool: recompute every row's hash with the public chain rules."""
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        prev = "0" * 64
        with store.transaction() as conn:
            rows = conn.execute(text(
                "SELECT id, at, actor, action, subject, details FROM audit_log ORDER BY id"
            )).all()
            for r in rows:
                digest = row_hash(prev, r.id, r.at, r.actor, r.action, r.subject, r.details)
                conn.execute(text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :i"),
                             {"p": prev, "h": digest, "i": r.id})
                prev = digest


def test_normal_operation_is_intact_and_anchored(
        backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    key_file = backend.data_dir / "ca" / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert run(backend, "ca", "issue", "--email", "alice@example.com", "--key-type", "p256",
               "--out", str(tmp_path / "alice")) == 0
    assert run(backend, "ca", "revoke", "--email", "alice@example.com") == 0
    assert run(backend, "ca", "crl") == 0
    capsys.readouterr()
    assert run(backend, "log", "verify") == 0
    out = capsys.readouterr().out
    key_id = CAHome(backend.data_dir).audit_key().key_id
    assert out.startswith("audit log intact: ") and f"all anchored under audit key {key_id}" in out
    # the key never reaches the database
    secret = key_file.read_text().strip()
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        dump = repr([store.audit_entries(), store.audit_macs()])
    assert secret not in dump


def test_removed_escrow_recover_rows_rehashed_fail_at_the_first_changed_row(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    with keyed_store(backend) as store:
        first = store.audit("cli:officer", "escrow.recover", "leaver@example.com",
                            {"outcome": "recovered"}).id
        store.audit("cli:officer", "escrow.recover", "boss@example.com", {"outcome": "recovered"})
        store.audit("cli:op", "ca.crl", "Example Ltd", {})
        store.audit("cli:op", "ca.crl", "Example Ltd", {})
    assert run(backend, "log", "verify") == 0
    capsys.readouterr()
    # the attack: remove both rows (and their MACs), close the gap, re-hash the chain
    sql(backend, "DELETE FROM audit_log WHERE action = 'escrow.recover'")
    sql(backend, "DELETE FROM audit_mac WHERE audit_id IN (:a, :b)", a=first, b=first + 1)
    sql(backend, "UPDATE audit_log SET id = id - 2 WHERE id > :b", b=first + 1)
    sql(backend, "UPDATE audit_mac SET audit_id = audit_id - 2 WHERE audit_id > :b", b=first + 1)
    rehash(backend)
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.verify_audit_log() == []  # the unkeyed chain alone says "intact"
    assert run(backend, "log", "verify") == 1
    assert error(capsys).startswith(f"smimekit: error: audit log broken at row {first}:"
                                    " MAC does not match")
    # dropping the MACs of the rewritten rows too only changes the wording, not the verdict
    sql(backend, "DELETE FROM audit_mac WHERE audit_id >= :a", a=first)
    assert run(backend, "log", "verify") == 1
    assert f"audit log not anchored at row {first}:" in error(capsys)


def test_edited_row_fails_even_when_rehashed(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    assert run(backend, "ca", "crl") == 0
    capsys.readouterr()
    sql(backend, "UPDATE audit_log SET actor = 'cli:someone-else' WHERE id = 2")
    assert run(backend, "log", "verify") == 1
    assert "audit log broken at row 2: contents do not match" in error(capsys)
    rehash(backend)
    assert run(backend, "log", "verify") == 1
    assert "audit log broken at row 2: MAC does not match" in error(capsys)


def test_truncation_is_detected_with_the_kept_head(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    assert run(backend, "ca", "crl") == 0
    capsys.readouterr()
    assert run(backend, "log", "head") == 0
    head_id, head = capsys.readouterr().out.split()
    assert run(backend, "ca", "crl") == 0
    capsys.readouterr()
    # the log grew: the kept head is still in the chain
    assert run(backend, "log", "verify", "--expect-head", head.upper()) == 0
    assert f"the head you kept is row {head_id}, 1 rows since" in capsys.readouterr().out
    # cut the end off, MACs and all: the chain and the MACs left are consistent...
    sql(backend, "DELETE FROM audit_log WHERE id >= :i", i=int(head_id))
    sql(backend, "DELETE FROM audit_mac WHERE audit_id >= :i", i=int(head_id))
    assert run(backend, "log", "verify") == 0
    capsys.readouterr()
    # ...only the head kept elsewhere shows it
    assert run(backend, "log", "verify", "--expect-head", head) == 1
    assert "is not in the audit log: rows were cut off the end" in error(capsys)
    assert run(backend, "log", "verify", "--expect-head", "abc") == 2


def test_empty_store_fails_verification(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    Store.open(backend.url, backend.data_dir).close()
    assert run(backend, "log", "verify") == 1
    assert "the audit log in" in (err := error(capsys)) and "is empty" in err
    assert run(backend, "log", "head") == 1
    assert "empty" in error(capsys)


def test_emptied_ca_store_fails_verification(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    sql(backend, "DELETE FROM audit_mac")
    sql(backend, "DELETE FROM audit_log")
    assert run(backend, "log", "verify") == 1
    assert "is empty" in error(capsys)


def test_store_without_a_ca_init_row_fails_verification(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    # a whole new history written with the public rules, without ca.init
    sql(backend, "DELETE FROM audit_mac")
    sql(backend, "DELETE FROM audit_log")
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        store.audit("cli:op", "ca.crl", "Example Ltd", {})
    assert run(backend, "log", "verify") == 1
    assert "the audit log has no ca.init row" in error(capsys)


def test_missing_key_file_is_a_clear_error(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    key_file = backend.data_dir / "ca" / "audit.key"
    key_file.unlink()
    assert run(backend, "log", "verify") == 1
    err = error(capsys)
    assert f"no audit key at {key_file}" in err and "restore it from your backup" in err


def test_rows_written_without_the_key_are_reported_then_anchored_on_review(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    # a process without access to <data-dir>/ca writes a row: unanchored
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        late = store.audit("cli:node2", "ca.crl", "Example Ltd", {}).id
    assert run(backend, "log", "verify") == 1
    err = error(capsys)
    assert f"audit log not anchored at row {late}: row {late} without a MAC" in err
    assert run(backend, "log", "show") == 0
    last = capsys.readouterr().out.splitlines()[-1].split("\t")
    assert last[0] == str(late) and last[-1] == "UNANCHORED" and len(last[-2]) == 64
    assert run(backend, "log", "anchor", "--through", str(late)) == 0
    assert f"anchored row {late}" in capsys.readouterr().out
    assert run(backend, "log", "verify") == 0
    capsys.readouterr()
    # a forged row appended after the review is not blessed by the next keyed command
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        forged = store.audit("cli:mallory", "escrow.recover", "ceo@example.com", {}).id
    assert run(backend, "ca", "crl") == 0
    capsys.readouterr()
    assert run(backend, "log", "verify") == 1
    assert f"not anchored at row {forged}" in error(capsys)


def test_anchor_refuses_a_log_whose_macs_were_all_removed(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    sql(backend, "UPDATE audit_log SET subject = 'Evil Ltd' WHERE id = 1")
    sql(backend, "DELETE FROM audit_mac")
    rehash(backend)
    assert run(backend, "log", "verify") == 1
    assert "not anchored at row 1" in error(capsys)
    assert run(backend, "log", "anchor", "--through", "1") == 1
    assert "no row of this audit log is anchored under this audit key" in error(capsys)
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.audit_macs() == {}


def test_show_and_head_print_the_hashes_to_keep(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    assert run(backend, "log", "show") == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert lines[0][3] == "ca.init"
    assert {line[-1] for line in lines} == {"anchored"}
    assert run(backend, "log", "head") == 0
    assert capsys.readouterr().out.split() == [lines[-1][0], lines[-1][-2]]


def test_init_key_for_a_ca_made_before_audit_keys(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    ca(backend, capsys)
    home = CAHome(backend.data_dir)
    # as a CA made before this change: no key file, no MACs
    home.audit_key_path.unlink()
    sql(backend, "DELETE FROM audit_mac")
    assert run(backend, "ca", "crl") == 0  # still works, its row unanchored
    capsys.readouterr()
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        before = store.audit_count()
    assert run(backend, "log", "init-key") == 0
    out = capsys.readouterr().out
    assert f"rows 1..{before} were written before it" in out
    assert stat.S_IMODE(home.audit_key_path.stat().st_mode) == 0o600
    assert run(backend, "log", "verify") == 1
    assert "not anchored at row 1:" in error(capsys)
    assert run(backend, "log", "anchor", "--through", str(before)) == 0
    capsys.readouterr()
    assert run(backend, "log", "verify") == 0
    capsys.readouterr()
    # a lost key is not silently replaced: the MACs name the key to restore
    home.audit_key_path.unlink()
    assert run(backend, "log", "init-key") == 1
    assert "restore" in error(capsys)


def test_audit_key_is_read_once_per_process_on_the_issuance_path(
        backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ca(backend, capsys)
    reads: list[Path] = []
    original = CAHome.audit_key

    def counting(self: CAHome) -> object:
        reads.append(self.audit_key_path)
        return original(self)

    monkeypatch.setattr(CAHome, "audit_key", counting)
    users = tmp_path / "users.csv"
    users.write_text("email,name\na@example.org,A\nb@example.org,B\nc@example.org,C\n")
    passfile = tmp_path / "ca.pass"
    passfile.write_text(PASS + "\n")  # the CA passphrase
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        before = store.audit_count()
    assert run(backend, "ca", "enroll", "--csv", str(users), "--out", str(tmp_path / "out"),
               "--key-type", "p256", "--purpose", "sign",
               "--passphrase-file", str(passfile)) == 0
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.audit_count() - before >= 3
    assert len(reads) == 1  # one file read for the whole batch, not one per row
    capsys.readouterr()
    assert run(backend, "log", "verify") == 0
