"""The keys the mail gateway holds for users (schema version 6); sealing is gateway/keys.py's.

Rows are never deleted: a retired key keeps decrypting the mail sent to it. A key kept inside
the PKCS#11 token has no sealed blob: its ``sealed`` holds where it is (``pkcs11:`` and the
token's label and the object's ID; gateway/keys.py ``token_reference``). The gateway's
master key, sealed under the key passphrase, is one row of ``schema_meta``; the first node to
store one wins, and every other node reads that one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from smimekit.store import schema
from smimekit.store.base import StoreBase, _now, _utc

_K = schema.gateway_keys
MASTER_KEY = "gateway_master_key"


@dataclass(frozen=True)
class GatewayKeyRow:
    """One key the gateway holds, still sealed."""

    id: int
    address: str
    """Lower case; "" for the organisation's key."""
    purpose: str
    """``sign``, ``encrypt``, ``both`` or ``organisation``."""
    certificate: bytes
    chain: bytes
    """The CA certificates, PEM, concatenated."""
    fingerprint: str
    sealed: bytes
    """The key sealed under the master key, or ``pkcs11:{...}`` for a key inside the token."""
    not_after: dt.datetime
    created_at: dt.datetime
    retired_at: dt.datetime | None


def _row(r: object) -> GatewayKeyRow:
    return GatewayKeyRow(
        r.id, r.address, r.purpose, r.certificate, r.chain, r.fingerprint,  # type: ignore[attr-defined]
        r.sealed, _utc(r.not_after), _utc(r.created_at),  # type: ignore[attr-defined]
        _utc(r.retired_at) if r.retired_at is not None else None)  # type: ignore[attr-defined]


class GatewayKeyRecords(StoreBase):
    """Queries of the gateway_keys table and the sealed master key."""

    def add_gateway_key(self, *, address: str, purpose: str, certificate: bytes, chain: bytes,
                        fingerprint: str, sealed: bytes, not_after: dt.datetime) -> bool:
        """Keep a sealed key; False when that certificate's key is held already."""
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self.transaction() as conn:
            done = conn.execute(make(_K).values(
                address=address.strip().lower(), purpose=purpose, certificate=certificate,
                chain=chain, fingerprint=fingerprint.lower(), sealed=sealed,
                not_after=not_after, created_at=_now(),
            ).on_conflict_do_nothing(index_elements=["fingerprint"]).returning(_K.c.id))
            return done.first() is not None

    def gateway_keys(self, address: str | None = None) -> list[GatewayKeyRow]:
        """The keys held for ``address`` (every one when None), oldest first."""
        with self.read() as conn:
            if self._pending_upgrade is not None:
                return []  # a store older than version 6 holds no gateway keys
            query = select(_K).order_by(_K.c.id)
            if address is not None:
                query = query.where(_K.c.address == address.strip().lower())
            return [_row(r) for r in conn.execute(query).all()]

    def gateway_organisation_keys(self) -> list[GatewayKeyRow]:
        """The organisation's signing keys, oldest first."""
        with self.read() as conn:
            if self._pending_upgrade is not None:
                return []
            return [_row(r) for r in conn.execute(
                select(_K).where(_K.c.purpose == "organisation").order_by(_K.c.id)).all()]

    def retire_gateway_key(self, fingerprint: str, at: dt.datetime) -> bool:
        """Mark a held key as no longer current (it still decrypts); False when no current
        key has that certificate fingerprint."""
        with self.transaction() as conn:
            done = conn.execute(_K.update().where((_K.c.fingerprint == fingerprint.lower())
                                                  & _K.c.retired_at.is_(None))
                                .values(retired_at=at).returning(_K.c.id))
            return bool(done.all())

    def set_gateway_key_sealed(self, fingerprint: str, old: bytes, new: bytes) -> bool:
        """Replace a held key's ``sealed`` with ``new`` (its token reference, once the key is
        in the token) if it still is ``old``; False when it is not (another process changed
        it, or no such key)."""
        with self.transaction() as conn:
            done = conn.execute(_K.update().where((_K.c.fingerprint == fingerprint.lower())
                                                  & (_K.c.sealed == old))
                                .values(sealed=new).returning(_K.c.id))
            return bool(done.all())

    def replace_gateway_master_key(self, old: str, new: str) -> bool:
        """Replace the sealed master key ``old`` with ``new`` (the same master key sealed
        another way); False when the stored one is not ``old`` any more."""
        meta = schema.schema_meta
        with self.transaction() as conn:
            done = conn.execute(meta.update().where((meta.c.key == MASTER_KEY)
                                                    & (meta.c.value == old))
                                .values(value=new).returning(meta.c.key))
            return bool(done.all())

    def gateway_master_key(self) -> str | None:
        """The sealed master key (text), or None before the first key is imported."""
        meta = schema.schema_meta
        with self.read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == MASTER_KEY)).scalar()

    def set_gateway_master_key(self, sealed: str) -> str:
        """Store ``sealed`` unless another process stored one first; the one that counts."""
        meta = schema.schema_meta
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self.transaction() as conn:
            conn.execute(make(meta).values(key=MASTER_KEY, value=sealed)
                         .on_conflict_do_nothing(index_elements=["key"]))
        stored = self.gateway_master_key()
        assert stored is not None  # inserted above, or by the process that won
        return stored
