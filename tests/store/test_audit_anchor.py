"""The audit log anchored under an audit key kept outside the database (store/audit.py
AuditKey, the audit_mac table): rewriting history with the public chain rules is detected."""

from __future__ import annotations

import pytest
from backends import Backend
from sqlalchemy import text

from smimekit.errors import StoreError
from smimekit.store import Store
from smimekit.store.audit import AuditKey, row_hash

KEY = AuditKey(bytes(range(32)))


def _sql(store: Store, statement: str, **params: object) -> None:
    with store.transaction() as conn:
        conn.execute(text(statement), params)


def _store(backend: Backend, key: AuditKey | None, count: int = 4) -> Store:
    store = Store.open(backend.url, backend.data_dir)
    store.use_audit_key(key)
    for i in range(1, count + 1):
        store.audit("operator", "user.add", f"user{i}@example.org", {"n": i})
    return store


def rehash_from(store: Store, first: int) -> None:
    """What anyone with write access to the database can do: recompute every hash from
    ``first`` on with the public chain rules, so that the chain checks out again."""
    entries = [e for e in store.audit_entries() if e.id >= first]
    prev = next((e.hash for e in store.audit_entries() if e.id == first - 1), "0" * 64)
    for e in entries:
        details = store_details(store, e.id)
        digest = row_hash(prev, e.id, e.at, e.actor, e.action, e.subject, details)
        _sql(store, "UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :i",
             p=prev, h=digest, i=e.id)
        prev = digest


def store_details(store: Store, id_: int) -> str:
    with store.transaction() as conn:
        return str(conn.execute(text("SELECT details FROM audit_log WHERE id = :i"),
                                {"i": id_}).scalar_one())


def test_rows_written_with_the_key_are_anchored(backend: Backend) -> None:
    with _store(backend, KEY) as store:
        report = store.check_audit_anchors(KEY)
        assert report.problems == [] and report.unanchored == []
        assert sorted(store.audit_macs()) == [1, 2, 3, 4]
        assert {key_id for key_id, _ in store.audit_macs().values()} == {KEY.key_id}


def test_rows_written_without_the_key_are_unanchored_not_valid(backend: Backend) -> None:
    with _store(backend, KEY, 2) as store:
        store.use_audit_key(None)
        store.audit("operator", "user.add", "late@example.org")
        report = store.check_audit_anchors(KEY)
        assert report.problems == [] and report.unanchored == [3]


def test_rows_removed_and_rehashed_fail_their_mac(backend: Backend) -> None:
    with _store(backend, KEY, 6) as store:
        _sql(store, "DELETE FROM audit_log WHERE id IN (3, 4)")
        _sql(store, "UPDATE audit_log SET id = id - 2 WHERE id > 4")
        rehash_from(store, 3)
        assert store.verify_audit_log() == []  # the public chain rules are satisfied
        problems = store.check_audit_anchors(KEY).problems
        assert problems[0].row_id == 3 and "MAC does not match" in problems[0].message
        assert [p.row_id for p in problems if "not in the log" in p.message] == [5, 6]


def test_mac_under_another_key_is_reported(backend: Backend) -> None:
    with _store(backend, KEY, 2) as store:
        other = AuditKey.generate()
        problems = store.check_audit_anchors(other).problems
        assert [p.row_id for p in problems] == [1, 2]
        assert KEY.key_id in problems[0].message


def test_anchor_marks_rows_only_up_to_the_named_row(backend: Backend) -> None:
    with _store(backend, KEY, 1) as store:  # row 1 written with the key, like ca.init
        store.use_audit_key(None)
        for n in (2, 3, 4):
            store.audit("node2", "user.add", f"user{n}@example.org")
        assert store.anchor_audit_rows(KEY, 3) == [2, 3]
        report = store.check_audit_anchors(KEY)
        assert report.problems == [] and report.unanchored == [4]
        assert store.anchor_audit_rows(KEY, 3) == []


def test_anchor_refuses_a_log_the_key_vouches_for_nowhere(backend: Backend) -> None:
    with _store(backend, None, 3) as store:
        with pytest.raises(StoreError, match="no row of this audit log is anchored"):
            store.anchor_audit_rows(KEY, 3)
        assert store.audit_macs() == {}


def test_anchor_refuses_a_broken_chain(backend: Backend) -> None:
    with _store(backend, None, 4) as store:
        _sql(store, "UPDATE audit_log SET subject = 'x' WHERE id = 2")
        with pytest.raises(StoreError, match="refusing to anchor: audit log broken at row 2"):
            store.anchor_audit_rows(KEY, 4)
        assert store.audit_macs() == {}


def test_anchor_refuses_rows_after_a_bad_mac(backend: Backend) -> None:
    with _store(backend, KEY, 3) as store:
        _sql(store, "UPDATE audit_log SET subject = 'x' WHERE id = 2")
        rehash_from(store, 2)
        store.use_audit_key(None)
        store.audit("mallory", "user.add", "forged@example.org")
        with pytest.raises(StoreError, match="row 2: MAC does not match"):
            store.anchor_audit_rows(KEY, 4)


def test_store_without_the_mac_table_reads_as_unanchored(backend: Backend) -> None:
    with _store(backend, None, 2) as store:
        _sql(store, "DROP TABLE audit_mac")
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.audit_macs() == {}
        assert store.check_audit_anchors(KEY).unanchored == [1, 2]
        store.use_audit_key(KEY)
        store.audit("operator", "user.add", "x@example.org")  # the table is made on need
        assert store.check_audit_anchors(KEY).unanchored == [1, 2]


def test_audit_key_text_round_trip_and_repr_hides_the_key() -> None:
    key = AuditKey.generate()
    assert AuditKey.from_text(key.to_text()).key_id == key.key_id
    assert key.to_text().strip() not in repr(key)
    with pytest.raises(ValueError):
        AuditKey.from_text("00" * 31)


def test_anchor_refuses_a_forged_row_that_a_later_anchored_row_contradicts(
        backend: Backend) -> None:
    with _store(backend, KEY, 1) as store:
        store.use_audit_key(None)
        store.audit("node2", "user.add", "a@example.org")  # 2, 3: written without the key
        store.audit("node2", "escrow.recover", "ceo@example.org")
        store.use_audit_key(KEY)
        store.audit("operator", "ca.crl", "Example Ltd")  # 4: anchored
        # row 3 rewritten and the chain re-hashed from there; row 4's MAC no longer fits
        _sql(store, "UPDATE audit_log SET subject = 'nobody@example.org' WHERE id = 3")
        rehash_from(store, 3)
        with pytest.raises(StoreError, match="refusing to anchor: audit log broken at row 4"):
            store.anchor_audit_rows(KEY, 3)
        assert sorted(store.audit_macs()) == [1, 4]
