"""Key history: users' sealed encryption keys (what escrow recovers)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import insert, select

from smimekit.store import schema
from smimekit.store.base import StoreBase, _now, _utc


@dataclass(frozen=True)
class StoredKey:
    """A sealed private key in a user's key history."""

    id: int
    sealed: bytes
    owner: str
    purpose: str
    certificate_fingerprint: str | None
    created_at: dt.datetime
    retired_at: dt.datetime | None


class KeyRecords(StoreBase):
    """Queries of the private_keys table."""

    def add_private_key(
        self, sealed: bytes, *, owner: str, purpose: str, certificate_fingerprint: str
    ) -> int:
        """Keep a sealed (encrypted) private key in the owner's key history; its id."""
        with self.transaction() as conn:
            return int(conn.execute(insert(schema.private_keys).values(
                encrypted_pkcs8=sealed, owner=owner.strip().lower(), purpose=purpose,
                certificate_fingerprint=certificate_fingerprint, created_at=_now(),
            ).returning(schema.private_keys.c.id)).scalar_one())

    def private_keys_for(self, owner: str, purpose: str = "encrypt") -> list[StoredKey]:
        """The owner's key history for ``purpose``, oldest first."""
        k = schema.private_keys
        with self.read() as conn:
            rows = conn.execute(select(k).where((k.c.owner == owner.strip().lower())
                                                & (k.c.purpose == purpose))
                                .order_by(k.c.id)).all()
        return [StoredKey(row.id, row.encrypted_pkcs8, row.owner, row.purpose,
                          row.certificate_fingerprint, _utc(row.created_at),
                          _utc(row.retired_at) if row.retired_at else None) for row in rows]

    def retire_key(self, certificate_fingerprint: str, at: dt.datetime) -> None:
        """Mark the key of that certificate as no longer current (it stays in the history)."""
        k = schema.private_keys
        with self.transaction() as conn:
            conn.execute(k.update().where((k.c.certificate_fingerprint == certificate_fingerprint)
                                          & k.c.retired_at.is_(None)).values(retired_at=at))
