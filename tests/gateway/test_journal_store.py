"""The delivery journal in the store (schema version 6), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt

from backends import Backend
from sqlalchemy import inspect, text

from smimekit.gateway.journal import (
    StoreJournal,
    delivery_keys,
    legacy_message_key,
    message_key,
)
from smimekit.gateway.model import Delivery, Envelope
from smimekit.store import Store, schema

KEY = "ab" * 32


def test_recorded_copies_are_known_to_every_node(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as one, \
            Store.open(backend.url, backend.data_dir) as other:
        StoreJournal(one, "node-1").record(KEY, ["0:bob@example.net"], "2.0.0 Ok: queued as A")
        # a second node delivering the same copy too (both were cut off mid-reply) is no error
        StoreJournal(other, "node-2").record(KEY, ["0:bob@example.net", "1:ann@example.org"],
                                             "2.0.0 Ok: queued as B")
        assert StoreJournal(other).delivered(KEY) == {"0:bob@example.net", "1:ann@example.org"}
        assert StoreJournal(one).delivered("cd" * 32) == frozenset()
        # a message's rows under its old key (before the upgrade) and its new one
        StoreJournal(one).record("cd" * 32, ["0:carol@example.net"], "ok")
        assert StoreJournal(other).delivered("ef" * 32, KEY, "cd" * 32) == {
            "0:bob@example.net", "1:ann@example.org", "0:carol@example.net"}
        assert StoreJournal(other).delivered("ef" * 32) == frozenset()


def test_old_rows_are_pruned(backend: Backend) -> None:
    now = dt.datetime.now(dt.UTC)
    with Store.open(backend.url, backend.data_dir) as store:
        store.record_delivered(KEY, ["0:old@example.net"], "n", "ok", now - dt.timedelta(days=9))
        store.record_delivered(KEY, ["0:new@example.net"], "n", "ok", now)
        assert store.prune_deliveries(now - dt.timedelta(days=7)) == 1
        assert store.delivered_keys(KEY) == {"0:new@example.net"}


def test_v5_store_gains_the_journal_on_first_write(backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        with store.transaction() as conn:
            conn.execute(text("DROP TABLE gateway_deliveries"))
            conn.execute(text("UPDATE schema_meta SET value = '5'"
                              " WHERE key = 'schema_version'"))
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert store.schema_version() == 5
        assert store.delivered_keys(KEY) == frozenset()  # read without the table
        store.record_delivered(KEY, ["0:bob@example.net"], "n", "ok")
        assert store.schema_version() == schema.SCHEMA_VERSION == 6
        with store.read() as conn:
            assert "gateway_deliveries" in inspect(conn).get_table_names()
        assert store.delivered_keys(KEY) == {"0:bob@example.net"}


def test_keys_name_the_message_and_its_copies_not_the_grouping_or_bytes() -> None:
    envelope = Envelope("ann@example.org", ("bob@example.net", "Ann@Example.org"), b"x\r\n")
    # the message is its sender and data, however Postfix groups its recipients (item 12)
    for group in ((), ("bob@example.net",), ("Ann@Example.org", "bob@example.net")):
        assert message_key(envelope) == message_key(
            Envelope("ann@example.org", group, b"x\r\n"))
    assert message_key(envelope) != message_key(dataclasses.replace(envelope, data=b"y\r\n"))
    assert message_key(envelope) != message_key(dataclasses.replace(envelope, mail_from=""))
    # the key of journals written before: the recipient list was part of it
    assert legacy_message_key(envelope) != legacy_message_key(
        Envelope("ann@example.org", ("bob@example.net",), b"x\r\n"))
    assert legacy_message_key(envelope) != message_key(envelope)
    deliveries = [Delivery("ann@example.org", ("bob@example.net", "Ann@Example.org"), b"1"),
                  Delivery("", ("ann@example.org",), b"password")]
    assert delivery_keys(deliveries) == [["0:bob@example.net", "0:ann@example.org"],
                                         ["1:ann@example.org"]]
