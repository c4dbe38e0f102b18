"""The delivery journal: exactly once across Postfix's retries.

The gateway answers 4xx when anything of a message could not be passed on, and Postfix hands
the whole message over again later. Whatever the next hop already accepted must not be sent a
second time: before a :class:`~smimekit.gateway.model.Delivery` goes out, the recipients the
journal knows as delivered are left out of it; after the next hop's 250 they are recorded.

A message is known by :func:`message_key` (SHA-256 of the reverse-path and the data as
Postfix sent them, which every retry repeats exactly: Postfix's own Received header with its
queue id makes two submissions of the same text differ). The recipients are not part of it:
Postfix may group a message's recipients differently on a retry (a recipient limit, some
deferred and some not), and a copy delivered in the first grouping must be known in the next.
A recipient copy is known by its :func:`delivery_keys` entry ``"<copy>:<recipient>"``: the
processor's output is not byte-stable (signatures carry a time, encryption a fresh key), so
the keys name who gets which copy, not the bytes.

Upgrade: journals written before this (schema 6 as first released) keyed a message on its
recipient list too (:func:`legacy_message_key`). A retry that meets such rows is looked up
under both keys, so a message half delivered before the upgrade is not delivered twice
after it (in the grouping it had then: the old key never knew another). Rows are pruned
after :data:`~smimekit.cli.gateway.JOURNAL_DAYS`; past that the old key finds nothing and
can be dropped. :class:`StoreJournal` keeps them in the store (shared by every node on one
PostgreSQL database); :class:`MemoryJournal` is for tests.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from smimekit.gateway.model import Delivery, Envelope

if TYPE_CHECKING:
    from smimekit.store import Store


class Journal(Protocol):
    def delivered(self, message_key: str, *older: str) -> frozenset[str]:
        """The delivery keys of the message already accepted by the next hop (recorded
        under ``message_key`` or any of the ``older`` keys of the same message).

        Raises StoreError when the journal cannot be read.
        """
        ...

    def record(self, message_key: str, delivery_keys: Sequence[str], reply: str) -> None:
        """Record that the next hop accepted these copies (``reply``: its answer).

        Raises StoreError when the journal cannot be written.
        """
        ...


_KEY_V2 = b"smimekit journal v2\0"


def message_key(envelope: Envelope) -> str:
    """SHA-256 (hex) of the reverse-path and the data: what identifies the message whatever
    recipients Postfix hands over with it this time."""
    sender = envelope.mail_from.encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(_KEY_V2 + len(sender).to_bytes(4, "big") + sender + b"\0data\0")
    digest.update(envelope.data)
    return digest.hexdigest()


def legacy_message_key(envelope: Envelope) -> str:
    """The key journals written before :func:`message_key` left out the recipients: SHA-256
    (hex) of the reverse-path, the recipients (in order) and the data. Only read, to find
    rows recorded before the upgrade."""
    digest = hashlib.sha256()
    for part in (envelope.mail_from, *envelope.recipients):
        encoded = part.encode("utf-8", "surrogateescape")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
    digest.update(b"\0data\0")
    digest.update(envelope.data)
    return digest.hexdigest()


def delivery_keys(deliveries: Sequence[Delivery]) -> list[list[str]]:
    """For each delivery, the key of each of its recipients: ``"<copy>:<recipient>"``, where
    copy counts the earlier deliveries that name the same recipient (0 for the first)."""
    seen: dict[str, int] = {}
    keys: list[list[str]] = []
    for delivery in deliveries:
        row = []
        for recipient in delivery.recipients:
            folded = recipient.lower()
            copy = seen.get(folded, 0)
            seen[folded] = copy + 1
            row.append(f"{copy}:{folded}")
        keys.append(row)
    return keys


def node_name() -> str:
    """This gateway process as the journal names it: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class StoreJournal:
    """The journal in the store's ``gateway_deliveries`` table."""

    def __init__(self, store: Store, node: str | None = None) -> None:
        self._store = store
        self._node = node or node_name()

    def delivered(self, message_key: str, *older: str) -> frozenset[str]:
        return self._store.delivered_keys(message_key, *older)

    def record(self, message_key: str, delivery_keys: Sequence[str], reply: str) -> None:
        self._store.record_delivered(message_key, delivery_keys, self._node, reply)


class MemoryJournal:
    """A journal in memory (tests; one process only)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = {}

    def delivered(self, message_key: str, *older: str) -> frozenset[str]:
        return frozenset(k for m in (message_key, *older) for k in self.rows.get(m, {}))

    def record(self, message_key: str, delivery_keys: Sequence[str], reply: str) -> None:
        row = self.rows.setdefault(message_key, {})
        for key in delivery_keys:
            row.setdefault(key, reply)
