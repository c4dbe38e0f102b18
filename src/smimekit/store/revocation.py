"""Revocations and the CRLs our CA published."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import insert, select, text

from smimekit.store import schema
from smimekit.store.base import StoreBase, _now, _utc

_LOCK_ISSUER = text("SELECT pg_advisory_xact_lock(:key)")


def _issuer_key(issuer_fingerprint: str) -> int:
    """The advisory-lock key of an issuer's CRL sequence (a signed 64-bit integer)."""
    digest = hashlib.sha256(b"smimekit-crl:" + issuer_fingerprint.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class Revocation:
    """A revoked serial of one issuer."""

    serial: str
    revoked_at: dt.datetime
    reason: str | None


@dataclass(frozen=True)
class PublishedCrl:
    """A CRL the CA published."""

    number: int
    next_update: dt.datetime | None
    der: bytes | None
    """None when not asked for."""


class RevocationRecords(StoreBase):
    """Queries of the revocations and crl_publications tables."""

    def lock_crl_issuer(self, issuer_fingerprint: str) -> None:
        """Serialise CRL publication and revocation for one issuer, until the current write
        transaction ends. Take it FIRST in the transaction, before reading the last CRL number
        or the revocations.

        PostgreSQL: ``pg_advisory_xact_lock`` on a key derived from the issuer. SQLite: the
        write transaction holds the database's one write lock already (BEGIN IMMEDIATE)."""
        with self.transaction() as conn:
            if self.dialect == "postgresql":
                conn.execute(_LOCK_ISSUER, {"key": _issuer_key(issuer_fingerprint)})

    def add_revocation(
        self, serial: str, issuer_fingerprint: str, revoked_at: dt.datetime, reason: str | None
    ) -> bool:
        """Revoke; False (and nothing written) when it is revoked already. The certificate
        stops being its address's live one (its slots are freed)."""
        r = schema.revocations
        with self.transaction() as conn:
            exists = conn.execute(select(r.c.id).where(
                (r.c.serial == serial.lower()) & (r.c.issuer_fingerprint == issuer_fingerprint)
            )).first()
            if exists is not None:
                return False
            conn.execute(insert(r).values(serial=serial.lower(),
                                          issuer_fingerprint=issuer_fingerprint,
                                          revoked_at=revoked_at, reason=reason))
            i = schema.issued
            conn.execute(i.update().where((i.c.serial == serial.lower())
                                          & (i.c.issuer_fingerprint == issuer_fingerprint))
                         .values(sign_slot=None, encrypt_slot=None))
        return True

    def revocations(self, issuer_fingerprint: str) -> list[Revocation]:
        """Every revocation by this issuer, in serial order of insertion."""
        r = schema.revocations
        with self.read() as conn:
            rows = conn.execute(select(r.c.serial, r.c.revoked_at, r.c.reason)
                                .where(r.c.issuer_fingerprint == issuer_fingerprint)
                                .order_by(r.c.id)).all()
        return [Revocation(row.serial, _utc(row.revoked_at), row.reason) for row in rows]

    def add_crl(
        self, issuer_fingerprint: str, number: int, this_update: dt.datetime,
        next_update: dt.datetime, der: bytes,
    ) -> None:
        """Record a published CRL."""
        with self.transaction() as conn:
            conn.execute(insert(schema.crl_publications).values(
                issuer_fingerprint=issuer_fingerprint, crl_number=str(number),
                this_update=this_update, next_update=next_update, der=der,
                published_at=_now()))

    def latest_crl(self, issuer_fingerprint: str, *, with_der: bool = True
                   ) -> PublishedCrl | None:
        """The newest CRL published for this issuer, if any; ``with_der=False`` leaves its
        DER (megabytes for a large CRL) in the database."""
        c = schema.crl_publications
        columns = [c.c.crl_number, c.c.next_update] + ([c.c.der] if with_der else [])
        with self.read() as conn:
            row = conn.execute(select(*columns)
                               .where(c.c.issuer_fingerprint == issuer_fingerprint)
                               .order_by(c.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return PublishedCrl(int(row.crl_number),
                            _utc(row.next_update) if row.next_update else None,
                            bytes(row.der) if with_der else None)
