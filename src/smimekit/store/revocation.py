"""Revocations and the CRLs our CA published."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import insert, select

from smimekit.store import schema
from smimekit.store.base import StoreBase, _now, _utc


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

    def add_revocation(
        self, serial: str, issuer_fingerprint: str, revoked_at: dt.datetime, reason: str | None
    ) -> bool:
        """Revoke; False (and nothing written) when it is revoked already."""
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
        return True

    def revocations(self, issuer_fingerprint: str) -> list[Revocation]:
        """Every revocation by this issuer, in serial order of insertion."""
        r = schema.revocations
        with self.transaction() as conn:
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
        with self.transaction() as conn:
            row = conn.execute(select(*columns)
                               .where(c.c.issuer_fingerprint == issuer_fingerprint)
                               .order_by(c.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return PublishedCrl(int(row.crl_number),
                            _utc(row.next_update) if row.next_update else None,
                            bytes(row.der) if with_der else None)
