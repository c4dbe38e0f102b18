"""Schema version 5: the identities table of ``ca sync``, and the in-place upgrade of version
4 stores (issue 10). Every test runs against SQLite and PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import datetime as dt

from backends import Backend
from sqlalchemy import inspect, text

from smimekit.store import Store, schema

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _downgrade_to_v4(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(text("DROP TABLE identities"))
        conn.execute(text("UPDATE schema_meta SET value = '4' WHERE key = 'schema_version'"))


def _tables(store: Store) -> set[str]:
    with store.read() as conn:
        return set(inspect(conn).get_table_names())


def test_v4_store_is_read_as_it_is_and_upgraded_by_the_first_write(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        store.add_user("kept@example.com", "Kept")
        _downgrade_to_v4(store)
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.schema_version() == 4
        assert store.identities() == {}  # read without the table, no upgrade
        assert "identities" not in _tables(store) and store.schema_version() == 4
        store.record_identity("e1", "ann@example.org", "Ann", NOW)
        assert store.schema_version() == schema.SCHEMA_VERSION
        [known] = store.identities().values()
        assert (known.external_id, known.email, known.name, known.seen_at, known.left_at) \
            == ("e1", "ann@example.org", "Ann", NOW, None)
        user = store.get_user("kept@example.com")
        assert user is not None and user.name == "Kept"


def test_create_true_upgrades_a_v4_store_at_once(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        _downgrade_to_v4(store)
    with Store.open(backend.url, backend.data_dir) as store:
        assert store.schema_version() == schema.SCHEMA_VERSION and "identities" in _tables(store)


def test_an_identity_is_updated_in_place_leaves_and_comes_back(backend: Backend) -> None:
    later = NOW + dt.timedelta(days=1)
    with Store.open(backend.url, backend.data_dir) as store:
        store.record_identity("e1", "ann@example.org", "Ann", NOW)
        store.record_identity("e1", "ann.archer@example.org", "Ann Archer", later)
        store.mark_left("e1", later)
        [known] = store.identities().values()
        assert (known.email, known.name, known.left_at) \
            == ("ann.archer@example.org", "Ann Archer", later)
        store.record_identity("e1", "ann.archer@example.org", "Ann Archer", later)
        assert store.identities()["e1"].left_at is None
