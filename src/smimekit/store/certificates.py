"""Users, certificates and our CA's issuance records (their renewal and notices)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from smimekit.errors import StoreError
from smimekit.store import schema
from smimekit.store.base import StoreBase, _first_line, _now, _utc

_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


class LiveCertificateExists(StoreError):
    """The address already holds a live certificate for the purpose (the unique live slot
    refused a second one)."""

    def __init__(self, email: str, purpose: str) -> None:
        super().__init__(f"{email} already holds a live certificate for {purpose}")
        self.email = email
        self.purpose = purpose


class IssuedStatus(NamedTuple):
    """What :meth:`CertificateRecords.issued_status` finds for a serial our CA issued."""

    revoked_at: dt.datetime | None
    """When revoked (UTC), or None."""
    reason: str | None
    """The recorded revocation reason (RFC 5280 name), or None."""


@dataclass(frozen=True)
class User:
    """A person the organisation issues certificates to."""

    id: int
    email: str
    name: str | None
    department: str | None


@dataclass(frozen=True)
class StoredCertificate:
    """A certificate row; ``certificate`` parses ``der`` on demand."""

    id: int
    der: bytes
    subject: str
    emails: tuple[str, ...]
    issuer: str
    serial: str
    """Lower-case hex."""
    not_before: dt.datetime
    not_after: dt.datetime
    key_usage: tuple[str, ...] | None
    fingerprint: str
    """SHA-256 of the DER, lower-case hex."""
    source: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True)
class IssuedRecord:
    """A certificate our CA issued, and where it is in its life."""

    id: int
    fingerprint: str
    serial: str
    """Lower-case hex."""
    issuer_fingerprint: str
    email: str
    purpose: str
    """``sign``, ``encrypt`` or ``both``."""
    profile: str
    key_origin: str
    """``csr`` (the holder made the key) or ``generated`` (we did)."""
    issued_at: dt.datetime
    not_after: dt.datetime
    renewed_by: str | None
    notified_at: dt.datetime | None
    revoked_at: dt.datetime | None
    reason: str | None

    @property
    def live(self) -> bool:
        """Neither revoked nor replaced (it may still have expired)."""
        return self.revoked_at is None and self.renewed_by is None


def _lost(driver: Any) -> bool:
    """Whether a driver connection is gone for good (psycopg marks it ``broken`` or
    ``closed`` when the server or the network dropped it; sqlite3 connections never are)."""
    return bool(getattr(driver, "broken", False) or getattr(driver, "closed", False))


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """Addresses from the SAN (rfc822Name) then the subject's emailAddress, lower-cased."""
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found += san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        pass
    found += [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.OID_EMAIL_ADDRESS)]
    out: list[str] = []
    for email in (e.lower() for e in found):
        if email not in out:
            out.append(email)
    return out


def _issued_select() -> Any:
    i, r = schema.issued, schema.revocations
    # Named columns, not the slot markers: a version 2 store reads without an upgrade.
    columns = [c for c in i.c if c.name not in ("sign_slot", "encrypt_slot")]
    return select(*columns, r.c.revoked_at, r.c.reason).select_from(
        i.outerjoin(r, (r.c.serial == i.c.serial)
                    & (r.c.issuer_fingerprint == i.c.issuer_fingerprint)))


# The statements of the hot paths (issuance, the OCSP lookup, the audit append) are built
# once, their values passed at execution: building a statement with its values on every call
# cost SQLAlchemy more than the database took to run it.
_USER_BY_EMAIL = select(schema.users).where(schema.users.c.email == bindparam("email"))
_INSERT_USER = insert(schema.users).returning(schema.users.c.id)
_INSERT_CERTIFICATE = insert(schema.certificates).returning(schema.certificates.c.id)
_INSERT_ISSUED = insert(schema.issued).returning(schema.issued.c.id)
_ISSUED_BY_FINGERPRINT = _issued_select().where(
    schema.issued.c.fingerprint == bindparam("fingerprint"))
_ISSUED_BY_SERIAL = _issued_select().where(
    (schema.issued.c.serial == bindparam("serial"))
    & (schema.issued.c.issuer_fingerprint == bindparam("issuer_fingerprint")))
_STATUS_BY_SERIAL = select(schema.issued.c.id, schema.revocations.c.revoked_at,
                           schema.revocations.c.reason).select_from(
    schema.issued.outerjoin(schema.revocations, (
        schema.revocations.c.serial == schema.issued.c.serial)
        & (schema.revocations.c.issuer_fingerprint == schema.issued.c.issuer_fingerprint))
).where((schema.issued.c.serial == bindparam("serial"))
        & (schema.issued.c.issuer_fingerprint == bindparam("issuer_fingerprint")))
_ISSUED_FOR_EMAIL = _issued_select().where(
    schema.issued.c.email == bindparam("email")).order_by(schema.issued.c.id)
def _key_usage(cert: x509.Certificate) -> list[str] | None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    names = [name for name in _KEY_USAGES if getattr(ku, name)]
    if ku.key_agreement:
        names += [n for n in ("encipher_only", "decipher_only") if getattr(ku, n)]
    return names


class CertificateRecords(StoreBase):
    """Queries of the users, certificates and issued tables."""

    # -- users -----------------------------------------------------------------------------

    def add_user(self, email: str, name: str | None = None, department: str | None = None) -> User:
        """Add a user. Raises StoreError when the address is already taken."""
        email = email.strip().lower()
        with self.transaction() as conn:
            user_id = conn.execute(_INSERT_USER, {
                "email": email, "name": name, "department": department, "created_at": _now(),
            }).scalar_one()
        return User(user_id, email, name, department)

    def get_user(self, email: str) -> User | None:
        """The user with this address (case-insensitive), or None."""
        with self.read() as conn:
            row = conn.execute(_USER_BY_EMAIL, {"email": email.strip().lower()}).first()
        if row is None:
            return None
        return User(row.id, row.email, row.name, row.department)

    # -- certificates ----------------------------------------------------------------------

    def add_certificate(self, cert: x509.Certificate, source: str) -> StoredCertificate:
        """Store a certificate. Raises StoreError when the same certificate is stored already."""
        der = cert.public_bytes(serialization.Encoding.DER)
        usage = _key_usage(cert)
        emails = certificate_emails(cert)
        values: dict[str, Any] = {
            "der": der,
            "subject": cert.subject.rfc4514_string(),
            "emails": json.dumps(emails),
            "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"),
            "not_before": cert.not_valid_before_utc,
            "not_after": cert.not_valid_after_utc,
            "key_usage": ",".join(usage) if usage is not None else None,
            "fingerprint": hashlib.sha256(der).hexdigest(),  # = cert.fingerprint(SHA256)
            "source": source,
            "added_at": _now(),
        }
        with self.transaction() as conn:
            cert_id = conn.execute(_INSERT_CERTIFICATE, values).scalar_one()
        # The row is what was just written: no need to read it back.
        return StoredCertificate(
            id=cert_id, der=der, subject=values["subject"], emails=tuple(emails),
            issuer=values["issuer"], serial=values["serial"],
            not_before=values["not_before"], not_after=values["not_after"],
            key_usage=tuple(values["key_usage"].split(",")) if usage is not None else None,
            fingerprint=values["fingerprint"], source=source,
        )

    def get_certificate(self, fingerprint: str) -> StoredCertificate | None:
        """The certificate with this SHA-256 fingerprint (hex), or None."""
        with self.read() as conn:
            row = conn.execute(
                select(schema.certificates).where(
                    schema.certificates.c.fingerprint == fingerprint.lower()
                )
            ).first()
        return _stored_certificate(row) if row is not None else None

    def certificates_for(self, email: str) -> list[StoredCertificate]:
        """Every stored certificate that names this address."""
        needle = f'%"{email.strip().lower()}"%'
        with self.read() as conn:
            rows = conn.execute(
                select(schema.certificates)
                .where(schema.certificates.c.emails.like(needle))
                .order_by(schema.certificates.c.id)
            ).all()
        found = [_stored_certificate(r) for r in rows]
        return [c for c in found if email.strip().lower() in c.emails]

    # -- our CA's records ---------------------------------------------------------------------

    def upsert_user(
        self, email: str, name: str | None = None, department: str | None = None
    ) -> User:
        """The user with this address, created if missing; a given name or department is
        updated."""
        email = email.strip().lower()
        with self.transaction() as conn:
            row = conn.execute(_USER_BY_EMAIL, {"email": email}).first()
            if row is None:
                # Another process may add the same person meanwhile (PostgreSQL runs
                # writers side by side): insert unless present, then read whichever row won.
                make = pg_insert if self.dialect == "postgresql" else sqlite_insert
                conn.execute(make(schema.users).values(
                    email=email, name=name, department=department, created_at=_now(),
                ).on_conflict_do_nothing(index_elements=["email"]))
                row = conn.execute(_USER_BY_EMAIL, {"email": email}).one()
            changes = {k: v for k, v in (("name", name), ("department", department))
                       if v is not None and getattr(row, k) != v}
            if changes:
                conn.execute(schema.users.update().where(schema.users.c.id == row.id)
                             .values(**changes))
            return User(row.id, row.email, changes.get("name", row.name),
                        changes.get("department", row.department))

    def record_issuance(
        self,
        cert: x509.Certificate,
        *,
        email: str,
        purpose: str,
        profile: str,
        key_origin: str,
        issuer_fingerprint: str,
    ) -> IssuedRecord:
        """Store a certificate our CA issued, with its issuance record (one transaction).

        The record takes the address's live slot of each purpose it serves: the unique
        indexes refuse a second live certificate for an address and purpose, whatever was
        read before. Slots held by certificates expired by now are freed first.

        Raises:
            LiveCertificateExists: the address holds a live certificate for the purpose.
            StoreError: the certificate is stored already, or the database failed.
        """
        email = email.strip().lower()
        serves = ("sign", "encrypt") if purpose == "both" else (purpose,)
        i = schema.issued
        with self.transaction() as conn:
            for p in serves:
                slot = i.c[f"{p}_slot"]
                conn.execute(i.update().where((slot == email) & (i.c.not_after <= _now()))
                             .values({slot: None}))
            stored = self.add_certificate(cert, "issued")
            values: dict[str, Any] = {
                "fingerprint": stored.fingerprint,
                "serial": stored.serial,
                "issuer_fingerprint": issuer_fingerprint,
                "email": email,
                "purpose": purpose,
                "profile": profile,
                "key_origin": key_origin,
                "issued_at": _now(),
                "not_after": stored.not_after,
            }
            slots = {f"{p}_slot": email for p in serves}
            try:
                record_id = conn.execute(_INSERT_ISSUED, {**values, **slots}).scalar_one()
            except IntegrityError as exc:
                if "slot" in str(exc.orig):
                    raise LiveCertificateExists(email, purpose) from None
                raise
        # What was just written, without reading it back: a new record is neither renewed,
        # notified nor revoked (revocations are only recorded for issued certificates, and
        # the serial is new: unique per issuer in ``issued``).
        return IssuedRecord(id=record_id, **values, renewed_by=None, notified_at=None,
                            revoked_at=None, reason=None)

    def retire_live(self, email: str, purpose: str, successor: str | None = None
                    ) -> list[str]:
        """Free the live slots that a new certificate for ``purpose`` needs, in the current
        transaction: every certificate holding one (``both`` one holds two) stops being the
        address's live certificate and, when ``successor`` is given, records it as its
        replacement. Returns the fingerprints retired."""
        email = email.strip().lower()
        serves = ("sign", "encrypt") if purpose == "both" else (purpose,)
        i = schema.issued
        holders = or_(*(i.c[f"{p}_slot"] == email for p in serves))
        with self.transaction() as conn:
            found = [row.fingerprint for row in conn.execute(
                select(i.c.fingerprint).where(holders)).all()]
            if found:
                conn.execute(i.update().where(i.c.fingerprint.in_(found))
                             .values(sign_slot=None, encrypt_slot=None))
        return found

    def _issued_query(self) -> Any:
        return _issued_select()

    def issued_record(
        self, *, fingerprint: str | None = None, serial: str | None = None,
        issuer_fingerprint: str | None = None,
    ) -> IssuedRecord | None:
        """The issuance record by certificate fingerprint, or by serial (hex) and issuer."""
        if fingerprint is not None:
            query, params = _ISSUED_BY_FINGERPRINT, {"fingerprint": fingerprint.lower()}
        elif serial is not None and issuer_fingerprint is not None:
            query, params = _ISSUED_BY_SERIAL, {"serial": serial.lower(),
                                                "issuer_fingerprint": issuer_fingerprint}
        else:
            raise ValueError("give a fingerprint, or a serial and its issuer")
        with self.read() as conn:
            row = conn.execute(query, params).first()
        return _issued(row) if row is not None else None

    def issued_status(self, *, serial: str, issuer_fingerprint: str) -> IssuedStatus | None:
        """Whether our CA issued this serial (hex) and, if so, its revocation: what an OCSP
        answer needs, on every request, at the least cost.

        One SELECT on a pooled driver connection, outside SQLAlchemy's statement machinery:
        through :meth:`issued_record` the same read cost 130-240 us, of which the database
        took 15. A single statement needs no explicit transaction to be consistent (SQLite
        in autocommit and PostgreSQL each run it in a snapshot of its own), so none is
        opened. Inside a :meth:`transaction` or :meth:`read` block it joins that one.

        Raises:
            StoreError: the database cannot be read.
        """
        params = {"serial": serial.lower(), "issuer_fingerprint": issuer_fingerprint}
        if self._current.get() is not None:
            with self.read() as conn:
                row = conn.execute(_STATUS_BY_SERIAL, params).first()
            return _issued_status(row[1], row[2]) if row is not None else None
        sql, bind, parse_time = self._status_sql()
        row = self._raw_fetchone(sql, bind(params))
        if row is None:
            return None
        revoked_at = parse_time(row[1]) if parse_time is not None and row[1] is not None \
            else row[1]
        return _issued_status(revoked_at, row[2])

    def _raw_fetchone(self, sql: str, values: Any) -> Any:
        """One statement on a pooled driver connection, in autocommit; its first row.

        A pooled connection may have died while the database was away (restarted, or the
        network cut): the driver's error then says the connection is lost. Every pooled
        connection is as stale as this one, so the pool is emptied and the statement is run
        once more on a new connection; the first request after the database is back is
        answered, on whichever worker it lands. Any other error, or a second failure, is a
        :class:`StoreError`.
        """
        for attempt in (1, 2):
            try:
                fairy = self._engine.raw_connection()
            except SQLAlchemyError as exc:
                raise self._translate(exc) from None
            except self._engine.dialect.loaded_dbapi.Error as exc:  # the pool does not wrap
                raise StoreError(f"cannot use the database {self.description}:"
                                 f" {_first_line(exc)}") from None
            driver: Any = fairy.driver_connection
            try:
                # psycopg would open a transaction for the SELECT and roll it back when the
                # connection goes back to the pool: two more round trips
                autocommit = getattr(driver, "autocommit", None)
                if autocommit is False:
                    driver.autocommit = True
                try:
                    cursor = fairy.cursor()
                    cursor.execute(sql, values)
                    row = cursor.fetchone()
                    cursor.close()
                finally:
                    if autocommit is False and not _lost(driver):
                        driver.autocommit = False
                return row
            except Exception as exc:  # the driver's own errors (sqlite3, psycopg)
                lost = _lost(driver)
                fairy.invalidate()
                if lost and attempt == 1:
                    self._engine.dispose()  # the others died with it
                    continue
                raise StoreError(f"cannot read the store: {_first_line(exc)}") from None
            finally:
                fairy.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _status_sql(self) -> tuple[str, Callable[[dict[str, str]], Any], Any]:
        """The status query compiled once for this database's driver, how to pass it its
        values, and how to read its timestamp (SQLite hands back text)."""
        cached = getattr(self, "_status_sql_cached", None)
        if cached is None:
            dialect = self._engine.dialect
            compiled = _STATUS_BY_SERIAL.compile(dialect=dialect)
            order = compiled.positiontup  # sqlite3: ? marks; psycopg: %(name)s marks

            def bind(params: dict[str, str]) -> Any:
                return params if order is None else tuple(params[k] for k in order)
            parse_time = schema.revocations.c.revoked_at.type.dialect_impl(
                dialect).result_processor(dialect, None)
            cached = (str(compiled), bind, parse_time)
            self._status_sql_cached = cached
        return cached

    def issued_for(self, email: str) -> list[IssuedRecord]:
        """Everything our CA issued to this address, oldest first."""
        with self.read() as conn:
            rows = conn.execute(_ISSUED_FOR_EMAIL, {"email": email.strip().lower()}).all()
        return [_issued(r) for r in rows]

    def issued_records(
        self, *, expiring_before: dt.datetime | None = None, live_only: bool = True,
        after_id: int = 0, limit: int | None = None,
    ) -> list[IssuedRecord]:
        """Issuance records in issue order; ``live_only`` drops revoked and renewed ones;
        ``expiring_before`` keeps those whose notAfter is earlier."""
        i, r = schema.issued, schema.revocations
        query = self._issued_query().where(i.c.id > after_id)
        if live_only:
            query = query.where(i.c.renewed_by.is_(None) & r.c.revoked_at.is_(None))
        if expiring_before is not None:
            query = query.where(i.c.not_after < expiring_before)
        query = query.order_by(i.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.read() as conn:
            rows = conn.execute(query).all()
        return [_issued(row) for row in rows]

    def mark_renewed(self, fingerprint: str, successor: str) -> bool:
        """Record that ``successor`` (a fingerprint; it may be recorded after this, in the same
        transaction) replaced the certificate ``fingerprint``, and free its live slots.

        Returns False when it was renewed already (nothing written): checked by the update
        itself, so two concurrent renewals cannot both succeed."""
        i = schema.issued
        with self.transaction() as conn:
            result = conn.execute(
                i.update().where((i.c.fingerprint == fingerprint) & i.c.renewed_by.is_(None))
                .values(renewed_by=successor, sign_slot=None, encrypt_slot=None))
            return bool(result.rowcount)

    def mark_notified(self, fingerprint: str, at: dt.datetime) -> None:
        """Record when the holder was told the certificate expires."""
        with self.transaction() as conn:
            conn.execute(schema.issued.update()
                         .where(schema.issued.c.fingerprint == fingerprint)
                         .values(notified_at=at))


def _issued_status(revoked_at: dt.datetime | None, reason: str | None) -> IssuedStatus:
    return IssuedStatus(_utc(revoked_at) if revoked_at is not None else None, reason)


def _issued(row: Any) -> IssuedRecord:
    return IssuedRecord(
        id=row.id, fingerprint=row.fingerprint, serial=row.serial,
        issuer_fingerprint=row.issuer_fingerprint, email=row.email, purpose=row.purpose,
        profile=row.profile, key_origin=row.key_origin, issued_at=_utc(row.issued_at),
        not_after=_utc(row.not_after), renewed_by=row.renewed_by,
        notified_at=_utc(row.notified_at) if row.notified_at else None,
        revoked_at=_utc(row.revoked_at) if row.revoked_at else None, reason=row.reason,
    )


def _stored_certificate(row: Any) -> StoredCertificate:
    return StoredCertificate(
        id=row.id,
        der=bytes(row.der),
        subject=row.subject,
        emails=tuple(json.loads(row.emails)),
        issuer=row.issuer,
        serial=row.serial,
        not_before=_utc(row.not_before),
        not_after=_utc(row.not_after),
        key_usage=tuple(row.key_usage.split(",")) if row.key_usage is not None else None,
        fingerprint=row.fingerprint,
        source=row.source,
    )
