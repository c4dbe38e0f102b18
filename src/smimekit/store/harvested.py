"""Certificates kept from signed mail that validated (``directory harvest``, schema version 4).

One row per (address, certificate). A message seen again moves ``last_seen`` forward (never
back: an older message read later changes nothing but ``first_seen``); a newer certificate
for the same address is a row of its own beside the older one, and the resolver ranks them.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from smimekit.store import schema
from smimekit.store.base import StoreBase, _utc

ROLES = ("signer", "encryption")


class Recorded(enum.Enum):
    """What :meth:`HarvestedRecords.record_harvested` did."""

    NEW = "new"
    """The address had no such certificate yet."""
    UPDATED = "updated"
    """Known already: last (or first) seen moved, or it is now known as preferred."""
    UNCHANGED = "unchanged"
    """Known already and nothing changed (the same message read again)."""


@dataclass(frozen=True)
class HarvestedCertificate:
    """One certificate kept for one address."""

    id: int
    address: str
    """The sender's address, in :func:`smimekit.mailbox.comparable` form."""
    der: bytes
    fingerprint: str
    """SHA-256 of ``der``, lower-case hex."""
    chain_der: tuple[bytes, ...]
    """The intermediates that came with it (DER each)."""
    role: str
    """``signer`` (it signed the message) or ``encryption`` (named by the sender's
    SMIMEEncryptionKeyPreference)."""
    preferred: bool
    """A message of the sender named it in SMIMEEncryptionKeyPreference."""
    not_after: dt.datetime
    first_seen: dt.datetime
    last_seen: dt.datetime
    message_ref: str
    """Where the message of ``last_seen`` is: archive, location, Message-ID (no content)."""

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return tuple(x509.load_der_x509_certificate(d) for d in self.chain_der)


def _split_der(blob: bytes) -> tuple[bytes, ...]:
    """DER certificates written one after the other, split by their outer lengths."""
    out: list[bytes] = []
    i = 0
    while i + 2 <= len(blob):
        first = blob[i + 1]
        if first < 0x80:
            head, length = 2, first
        else:
            n = first & 0x7F
            head, length = 2 + n, int.from_bytes(blob[i + 2:i + 2 + n], "big")
        out.append(blob[i:i + head + length])
        i += head + length
    return tuple(out)


_H = schema.harvested_certificates
_BY_ADDRESS = select(_H).where(_H.c.address == bindparam("address")).order_by(_H.c.id)
_ONE = select(_H).where((_H.c.address == bindparam("address"))
                        & (_H.c.fingerprint == bindparam("fingerprint")))


def _row(row: object) -> HarvestedCertificate:
    r = row._mapping  # type: ignore[attr-defined]
    return HarvestedCertificate(
        id=r["id"], address=r["address"], der=bytes(r["der"]), fingerprint=r["fingerprint"],
        chain_der=_split_der(bytes(r["chain_der"])), role=r["role"],
        preferred=bool(r["preferred"]), not_after=_utc(r["not_after"]),
        first_seen=_utc(r["first_seen"]), last_seen=_utc(r["last_seen"]),
        message_ref=r["message_ref"])


def _changes(known: HarvestedCertificate, seen_at: dt.datetime, preferred: bool, role: str,
             chain: Sequence[x509.Certificate], chain_der: bytes, message_ref: str
             ) -> dict[str, object]:
    changes: dict[str, object] = {}
    if seen_at > known.last_seen:
        changes.update(last_seen=seen_at, message_ref=message_ref)
        if chain:
            changes["chain_der"] = chain_der
    if seen_at < known.first_seen:
        changes["first_seen"] = seen_at
    if preferred and not known.preferred:
        changes["preferred"] = True
    if role == "signer" and known.role != "signer":
        changes["role"] = "signer"  # it signed mail itself: it is the sender's
    return changes


class HarvestedRecords(StoreBase):
    """Queries of the harvested_certificates table."""

    def record_harvested(
        self,
        address: str,
        cert: x509.Certificate,
        *,
        chain: Sequence[x509.Certificate] = (),
        role: str,
        preferred: bool,
        seen_at: dt.datetime,
        message_ref: str,
    ) -> Recorded:
        """Keep ``cert`` for ``address`` (already in comparable form), seen at ``seen_at``.

        Known already: ``last_seen`` (with the chain and ``message_ref`` of that message)
        moves only forward, ``first_seen`` only back, ``preferred`` once set stays set.
        Safe against another process recording the same certificate at the same time.

        Raises:
            ValueError: an unknown ``role``.
            StoreError: the database cannot be written.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        seen_at = _utc(seen_at)
        der = cert.public_bytes(serialization.Encoding.DER)
        fingerprint = hashlib.sha256(der).hexdigest()
        chain_der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in chain)
        values: dict[str, object] = {
            "address": address, "der": der, "fingerprint": fingerprint, "chain_der": chain_der,
            "role": role, "preferred": preferred, "not_after": cert.not_valid_after_utc,
            "first_seen": seen_at, "last_seen": seen_at, "message_ref": message_ref,
        }
        key = {"address": address, "fingerprint": fingerprint}
        if self._pending_upgrade is None and self._current.get() is None:
            # the common case, a certificate seen before in an older or the same message:
            # answered by a read, without taking the write lock
            with self.read() as conn:
                row = conn.execute(_ONE, key).first()
            if row is not None and not _changes(_row(row), seen_at, preferred, role, chain,
                                                chain_der, message_ref):
                return Recorded.UNCHANGED
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self.transaction() as conn:
            inserted = conn.execute(
                insert(_H).values(**values)
                .on_conflict_do_nothing(index_elements=["address", "fingerprint"])
                .returning(_H.c.id)).first()
            if inserted is not None:
                return Recorded.NEW
            known = _row(conn.execute(_ONE, key).one())
            changes = _changes(known, seen_at, preferred, role, chain, chain_der, message_ref)
            if not changes:
                return Recorded.UNCHANGED
            conn.execute(_H.update().where(_H.c.id == known.id).values(**changes))
        return Recorded.UPDATED

    def harvested_for(self, address: str) -> list[HarvestedCertificate]:
        """The certificates kept for ``address`` (comparable form), oldest row first."""
        with self.read() as conn:
            if self._pending_upgrade is not None:
                return []  # a store older than version 4 has no harvested certificates
            rows = conn.execute(_BY_ADDRESS, {"address": address}).all()
        return [_row(r) for r in rows]

    def harvested_count(self) -> int:
        """How many (address, certificate) rows are kept."""
        from sqlalchemy import func

        with self.read() as conn:
            if self._pending_upgrade is not None:
                return 0
            return int(conn.execute(select(func.count()).select_from(_H)).scalar_one())
