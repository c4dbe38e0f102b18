"""The hash-chained audit log: intact, edited, removed and reordered rows; ``smimekit log``."""

from __future__ import annotations

import itertools

import pytest
from backends import Backend
from sqlalchemy import text

from smimekit.cli.main import main
from smimekit.store import Store


def _store_with_rows(backend: Backend, count: int = 4) -> Store:
    store = Store.open(backend.url, backend.data_dir)
    for i in range(1, count + 1):
        store.audit("operator", "user.add", f"user{i}@example.org", {"n": i, "note": "é"})
    return store


def _sql(store: Store, statement: str, **params: object) -> None:
    with store.transaction() as conn:
        conn.execute(text(statement), params)


def test_intact_chain_has_no_problems(backend: Backend) -> None:
    with _store_with_rows(backend) as store:
        assert store.verify_audit_log() == []
        entries = store.audit_entries()
        assert [e.id for e in entries] == [1, 2, 3, 4]
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
        assert entries[2].details == {"n": 3, "note": "é"}
        assert [e.id for e in store.audit_entries(limit=2)] == [3, 4]


def test_audit_rows_join_the_callers_transaction(backend: Backend) -> None:
    with _store_with_rows(backend, 1) as store:
        with pytest.raises(ValueError, match="boom"), store.transaction():
            store.audit("operator", "key.retire", "k1")
            raise ValueError("boom")
        assert store.audit_count() == 1
        assert store.verify_audit_log() == []


def test_edited_row_is_detected(backend: Backend) -> None:
    with _store_with_rows(backend) as store:
        _sql(store, "UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
        problems = store.verify_audit_log()
        assert problems and problems[0].row_id == 2 and "edited" in problems[0].message


def test_edited_details_are_detected(backend: Backend) -> None:
    with _store_with_rows(backend) as store:
        _sql(store, "UPDATE audit_log SET details = :d WHERE id = 3", d='{"n":99,"note":"é"}')
        assert [p.row_id for p in store.verify_audit_log()] == [3]


def test_removed_row_is_detected(backend: Backend) -> None:
    with _store_with_rows(backend) as store:
        _sql(store, "DELETE FROM audit_log WHERE id = 2")
        problems = store.verify_audit_log()
        assert problems and problems[0].row_id == 3
        assert "removed" in problems[0].message


def test_removed_and_renumbered_rows_are_detected(backend: Backend) -> None:
    with _store_with_rows(backend) as store:
        _sql(store, "DELETE FROM audit_log WHERE id = 2")
        _sql(store, "UPDATE audit_log SET id = id - 1 WHERE id > 2")
        problems = store.verify_audit_log()
        assert problems and problems[0].row_id == 2


def test_reordered_rows_are_detected(backend: Backend) -> None:
    with _store_with_rows(backend) as store:
        # Swap the contents of rows 2 and 3, keeping each row's own hash fields with it.
        _sql(store, "UPDATE audit_log SET id = 100 WHERE id = 2")
        _sql(store, "UPDATE audit_log SET id = 2 WHERE id = 3")
        _sql(store, "UPDATE audit_log SET id = 3 WHERE id = 100")
        problems = store.verify_audit_log()
        assert problems and problems[0].row_id == 2


def test_cli_log_verify_exit_codes(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    _store_with_rows(backend).close()
    # issue 9: an intact chain is not enough; rows that no 'ca init' began are not a CA's log
    # (tests/cli/test_log_anchor.py: the anchored log of a real CA verifies)
    assert main([*backend.cli_args(), "log", "verify"]) == 1
    assert "the audit log has no ca.init row" in capsys.readouterr().err
    with Store.open(backend.url, backend.data_dir) as store:
        _sql(store, "UPDATE audit_log SET subject = 'someone-else' WHERE id = 3")
    assert main([*backend.cli_args(), "log", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("smimekit: error: audit log broken at row 3:")


def test_cli_log_show(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    # no store yet: a read command says so and creates none (issue 8: it used to create one)
    assert main([*backend.cli_args(), "log", "show"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert not backend.data_dir.exists()
    Store.open(backend.url, backend.data_dir).close()
    assert main([*backend.cli_args(), "log", "show"]) == 0
    assert "empty" in capsys.readouterr().out
    _store_with_rows(backend).close()
    assert main([*backend.cli_args(), "log", "show", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["3", "4"]
    assert "user4@example.org" in lines[1]
