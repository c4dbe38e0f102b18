"""Schema version 6: the gateway_keys table (the mail gateway's held keys), and the in-place
upgrade of version 5 stores. Every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from backends import Backend
from sqlalchemy import inspect, text

from smimekit.store import Store, schema

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _downgrade_to_v5(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(text("DROP TABLE gateway_keys"))
        conn.execute(text("UPDATE schema_meta SET value = '5' WHERE key = 'schema_version'"))


def test_v5_store_is_read_as_it_is_and_upgraded_by_the_first_write(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        _downgrade_to_v5(store)
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.schema_version() == 5
        assert store.gateway_keys() == [] and store.gateway_organisation_keys() == []
        with store.read() as conn:
            assert "gateway_keys" not in inspect(conn).get_table_names()
        assert store.add_gateway_key(address="A@example.org", purpose="sign",
                                     certificate=b"der", chain=b"", fingerprint="ab" * 32,
                                     sealed=b"sealed", not_after=NOW)
        assert store.schema_version() == schema.SCHEMA_VERSION == 6
        [row] = store.gateway_keys("a@example.org")
        assert (row.address, row.purpose, row.not_after, row.retired_at) == (
            "a@example.org", "sign", NOW, None)


def test_the_first_master_key_stored_wins(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        assert store.gateway_master_key() is None
        assert store.set_gateway_master_key("first") == "first"
        assert store.set_gateway_master_key("second") == "first"
        assert store.gateway_master_key() == "first"
