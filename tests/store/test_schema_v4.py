"""Schema version 4: the harvested_certificates table, and the in-place upgrade of version 3
stores (issue 10). Every test runs against SQLite and PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import datetime as dt

import pytest
from backends import Backend
from pki import PKI
from sqlalchemy import inspect, text

from smimekit.errors import StoreError
from smimekit.store import Store, schema
from smimekit.store.harvested import Recorded

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _downgrade_to_v3(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(text("DROP TABLE identities"))  # version 5's
        conn.execute(text("DROP TABLE harvested_certificates"))
        conn.execute(text("UPDATE schema_meta SET value = '3' WHERE key = 'schema_version'"))


def _tables(store: Store) -> set[str]:
    with store.read() as conn:
        return set(inspect(conn).get_table_names())


def test_v3_store_is_read_as_it_is_and_upgraded_by_the_first_write(
        backend: Backend, pki: PKI) -> None:
    person = pki.person("vera", "p256")
    with Store.open(backend.url, backend.data_dir) as store:
        store.add_user("kept@example.com", "Kept")
        # the v2 -> v3 upgrade left an older live record without its slot; a v3 -> v4
        # upgrade must not hand the slot out again (it would collide with the newer one)
        with store.transaction() as conn:
            for n, slot in ((1, None), (2, "two@example.com")):
                conn.execute(text(
                    "INSERT INTO certificates (der, subject, emails, issuer, serial,"
                    " not_before, not_after, fingerprint, source, added_at) VALUES"
                    " (:der, 's', '[]', 'i', :serial, :nb, :na, :fp, 'issued', :nb)"),
                    {"der": b"x", "serial": f"{n}", "nb": NOW, "fp": f"{n:064x}",
                     "na": NOW + dt.timedelta(days=30)})
                conn.execute(text(
                    "INSERT INTO issued (fingerprint, serial, issuer_fingerprint, email,"
                    " purpose, profile, key_origin, issued_at, not_after, sign_slot) VALUES"
                    " (:fp, :serial, 'aa', 'two@example.com', 'sign', 'p', 'generated',"
                    " :nb, :na, :slot)"),
                    {"fp": f"{n:064x}", "serial": f"{n}", "nb": NOW, "slot": slot,
                     "na": NOW + dt.timedelta(days=30)})
        _downgrade_to_v3(store)
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.schema_version() == 3
        assert "harvested_certificates" not in _tables(store)
        assert store.harvested_for("vera@example.org") == []  # reads need no upgrade
        assert store.harvested_count() == 0
        assert store.schema_version() == 3
        outcome = store.record_harvested("vera@example.org", person.cert, role="signer",
                                         preferred=False, seen_at=NOW, message_ref="m")
        assert outcome is Recorded.NEW
        assert store.schema_version() == schema.SCHEMA_VERSION  # 3 -> 4 -> current
        assert [r.certificate for r in store.harvested_for("vera@example.org")] \
            == [person.cert]
        user = store.get_user("kept@example.com")
        assert user is not None and user.name == "Kept"
        with store.read() as conn:
            slots = conn.execute(text("SELECT serial, sign_slot FROM issued ORDER BY serial"))
            assert [tuple(r) for r in slots] == [("1", None), ("2", "two@example.com")]


def test_create_true_upgrades_a_v3_store_at_once(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        _downgrade_to_v3(store)
    with Store.open(backend.url, backend.data_dir) as store:
        assert store.schema_version() == schema.SCHEMA_VERSION
        assert {"harvested_certificates", "identities"} <= _tables(store)


def test_a_version_newer_than_the_current_is_refused(backend: Backend) -> None:
    newer = schema.SCHEMA_VERSION + 1
    with Store.open(backend.url, backend.data_dir) as store, store.transaction() as conn:
        conn.execute(text(f"UPDATE schema_meta SET value = '{newer}'"))
    with pytest.raises(StoreError, match=f"schema version {newer}; this smimekit knows"
                                         f" version {schema.SCHEMA_VERSION}"):
        Store.open(backend.url, backend.data_dir, create=False)


def test_one_row_per_address_and_certificate_and_seen_times_only_widen(
        backend: Backend, pki: PKI) -> None:
    person, inter = pki.person("wim", "p256"), pki.inter
    later, earlier = NOW + dt.timedelta(hours=1), NOW - dt.timedelta(days=3)
    with Store.open(backend.url, backend.data_dir) as store:
        def record(seen: dt.datetime, ref: str, **kw: object) -> Recorded:
            return store.record_harvested("wim@example.org", person.cert, seen_at=seen,
                                          message_ref=ref, **kw)  # type: ignore[arg-type]

        assert record(NOW, "a", role="encryption", preferred=False) is Recorded.NEW
        assert record(NOW, "a", role="encryption", preferred=False) is Recorded.UNCHANGED
        assert record(later, "b", role="encryption", preferred=False, chain=[inter]) \
            is Recorded.UPDATED
        assert record(earlier, "c", role="signer", preferred=True) is Recorded.UPDATED
        (row,) = store.harvested_for("wim@example.org")
        assert (row.first_seen, row.last_seen, row.message_ref) == (earlier, later, "b")
        assert row.preferred and row.role == "signer" and row.chain == (inter,)
        # the same certificate for another address is another row
        assert store.record_harvested("other@example.org", person.cert, role="signer",
                                      preferred=False, seen_at=NOW,
                                      message_ref="d") is Recorded.NEW
        assert store.harvested_count() == 2
        with pytest.raises(ValueError):
            record(NOW, "e", role="owner", preferred=False)
