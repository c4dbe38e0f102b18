"""The people ``ca sync`` manages, by the identity source's stable id (schema version 5).

A row says: the person with this id in the organisation's directory (or HR export) holds
certificates of our CA for ``email`` under ``name``. A leaver's row stays, with ``left_at``;
the person coming back clears it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from smimekit.store import schema
from smimekit.store.base import StoreBase, _utc

_I = schema.identities


@dataclass(frozen=True)
class KnownIdentity:
    """One person as the CA last certified them."""

    external_id: str
    email: str
    """The certified address, in :func:`smimekit.mailbox.comparable` form."""
    name: str | None
    seen_at: dt.datetime
    left_at: dt.datetime | None


class IdentityRecords(StoreBase):
    """Queries of the identities table."""

    def identities(self) -> dict[str, KnownIdentity]:
        """Every person known to ``ca sync`` (leavers too), by external id."""
        with self.read() as conn:
            if self._pending_upgrade is not None:
                return {}  # a store older than version 5 has no identities table yet
            rows = conn.execute(select(_I.c.external_id, _I.c.email, _I.c.name, _I.c.seen_at,
                                       _I.c.left_at)).all()
        return {r.external_id: KnownIdentity(
            r.external_id, r.email, r.name, _utc(r.seen_at),
            _utc(r.left_at) if r.left_at is not None else None) for r in rows}

    def record_identity(self, external_id: str, email: str, name: str | None,
                        at: dt.datetime) -> None:
        """Remember (or update) who ``external_id`` is; a leaver coming back is current
        again."""
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        values = {"email": email, "name": name, "seen_at": at, "left_at": None}
        with self.transaction() as conn:
            conn.execute(make(_I).values(external_id=external_id, **values)
                         .on_conflict_do_update(index_elements=["external_id"], set_=values))

    def mark_left(self, external_id: str, at: dt.datetime) -> None:
        """Record that the person left the identity source."""
        with self.transaction() as conn:
            conn.execute(_I.update().where(_I.c.external_id == external_id)
                         .values(left_at=at))
