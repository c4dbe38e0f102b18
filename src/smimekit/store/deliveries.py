"""The gateway's delivery journal (schema version 6): what the next hop accepted, per message.

:mod:`smimekit.gateway.journal` keys each message by a hash of its envelope and content and
each recipient copy by ``"<copy>:<recipient>"``; a row says the next hop accepted that copy.
Only hashes, addresses and the next hop's reply are kept, never message content.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from smimekit.store import schema
from smimekit.store.base import StoreBase, _now

_D = schema.gateway_deliveries


class DeliveryRecords(StoreBase):
    """Queries of the gateway_deliveries table."""

    def delivered_keys(self, message_key: str, *older: str) -> frozenset[str]:
        """The delivery keys the next hop has accepted of ``message_key`` (or of the
        ``older`` keys the same message was journalled under before, gateway/journal.py).

        Raises StoreError on database failures.
        """
        with self.read() as conn:
            if self._pending_upgrade is not None:
                return frozenset()  # a store older than version 6 has journalled nothing
            keys = (message_key, *older)
            where = _D.c.message_key == message_key if not older \
                else _D.c.message_key.in_(keys)
            rows = conn.execute(select(_D.c.delivery_key).where(where)).scalars()
            return frozenset(rows)

    def record_delivered(self, message_key: str, delivery_keys: Iterable[str], node: str,
                         reply: str, at: dt.datetime | None = None) -> None:
        """Record that the next hop accepted these copies of ``message_key``.

        A key recorded already (another node delivered it too) is left as it is. Raises
        StoreError on database failures.
        """
        when = at or _now()
        values = [{"message_key": message_key, "delivery_key": key, "node": node[:255],
                   "reply": reply[:255], "delivered_at": when} for key in delivery_keys]
        if not values:
            return
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self.transaction() as conn:
            conn.execute(make(_D).on_conflict_do_nothing(
                index_elements=["message_key", "delivery_key"]), values)

    def prune_deliveries(self, before: dt.datetime) -> int:
        """Forget deliveries recorded before ``before`` (older than any retry); how many.

        Raises StoreError on database failures.
        """
        with self.transaction() as conn:
            return conn.execute(delete(_D).where(_D.c.delivered_at < before)).rowcount
