"""The store: one SQLAlchemy Core engine over SQLite (default) or PostgreSQL.

Every write runs in a transaction; :meth:`Store.transaction` groups several writes (and their
audit rows) into one, so an exception anywhere leaves nothing written. Database errors never
leave this module as SQLAlchemy exceptions: they become :class:`~smimekit.errors.StoreError`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from smimekit.errors import StoreError
from smimekit.store import schema
from smimekit.store.audit import (
    GENESIS,
    AuditEntry,
    AuditProblem,
    canonical_json,
    row_hash,
    verify_rows,
)

DB_FILENAME = "smimekit.db"
_UPGRADABLE = frozenset({"1"})  # versions whose upgrade only adds tables

_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything we write is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


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
    return select(i, r.c.revoked_at, r.c.reason).select_from(
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
_ISSUED_FOR_EMAIL = _issued_select().where(
    schema.issued.c.email == bindparam("email")).order_by(schema.issued.c.id)
_LAST_AUDIT_ROW = (select(schema.audit_log.c.id, schema.audit_log.c.hash)
                   .order_by(schema.audit_log.c.id.desc()).limit(1))
_INSERT_AUDIT = insert(schema.audit_log)
_LOCK_AUDIT_LOG = text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")


def _key_usage(cert: x509.Certificate) -> list[str] | None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    names = [name for name in _KEY_USAGES if getattr(ku, name)]
    if ku.key_agreement:
        names += [n for n in ("encipher_only", "decipher_only") if getattr(ku, n)]
    return names


class Store:
    """Certificates, keys, users, revocations and the audit log, in one database.

    Open with :meth:`open`; close with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, engine: Engine, description: str) -> None:
        self._engine = engine
        self.description = description
        """Where the data lives, for messages (the SQLite path, or the URL without password)."""
        self._current: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
            f"smimekit-store-{id(self)}", default=None
        )

    @classmethod
    def open(cls, url: str | None, data_dir: Path | str, *, busy_timeout: float = 5.0,
             create: bool = True) -> Store:
        """Open (and on first use create) the store.

        ``url`` None means the SQLite file ``<data_dir>/smimekit.db`` (directory 0700, file
        0600); otherwise a SQLAlchemy URL, ``sqlite:///PATH`` or
        ``postgresql+psycopg://user@host/db``. ``busy_timeout`` is how long to wait for
        another writer's lock (SQLite) or for the server to answer (PostgreSQL), in seconds.
        ``create`` False opens only a store that exists: no directory, file, table or schema
        row is created (nor a version 1 store upgraded) and its absence is an error.

        Raises StoreError: bad URL, unreachable server, unwritable or locked file, a schema
        version this code does not know; with ``create`` False, no store there.
        """
        if url is None and not create:
            path = Path(data_dir) / DB_FILENAME
            if not path.is_file():
                raise StoreError(f"no store at {path}")
            url = f"sqlite:///{path}"
        elif url is not None and not create and url.startswith("sqlite:"):
            database = _sqlite_path(url)
            if database is not None and not Path(database).is_file():
                raise StoreError(f"no store at {database}")
        if url is None:
            directory = Path(data_dir)
            path = directory / DB_FILENAME
            try:
                if not directory.exists():
                    directory.mkdir(parents=True, mode=0o700)
                    os.chmod(directory, 0o700)
                if not path.exists():
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(
                    f"cannot create the database {path}: {exc.strerror or exc}"
                ) from None
            url = f"sqlite:///{path}"
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(
                "bad database URL: expected e.g. postgresql+psycopg://user@host/db"
            ) from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"unsupported database {backend!r}: use SQLite or postgresql+psycopg://..."
            )
        if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        description = str(parsed.database) if backend == "sqlite" else parsed.render_as_string(True)
        try:
            if backend == "sqlite":
                engine = create_engine(parsed, connect_args={"timeout": busy_timeout})
                _sqlite_transactions(engine)
            else:
                engine = create_engine(
                    parsed, connect_args={"connect_timeout": max(1, round(busy_timeout))}
                )
        except (ArgumentError, NoSuchModuleError) as exc:
            raise StoreError(f"bad database URL {description}: {_first_line(exc)}") from None
        store = cls(engine, description)
        try:
            if create:
                store._create_schema()
            else:
                store._check_schema()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        """Release every connection."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    # -- transactions and errors ---------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on any exception.

        Nested calls join the outer transaction. Raises StoreError on database failures.
        """
        current = self._current.get()
        if current is not None:
            try:
                yield current
            except SQLAlchemyError as exc:
                raise self._translate(exc) from None
            return
        try:
            with self._engine.begin() as conn:
                token = self._current.set(conn)
                try:
                    yield conn
                finally:
                    self._current.reset(token)
        except SQLAlchemyError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: SQLAlchemyError) -> StoreError:
        detail = _first_line(exc)
        if isinstance(exc, IntegrityError):
            return StoreError(f"already stored, or refused by the schema: {detail}")
        if isinstance(exc, OperationalError):
            lowered = detail.lower()
            if "locked" in lowered or "busy" in lowered:
                return StoreError(
                    f"the database {self.description} is locked by another process;"
                    " try again when it has finished"
                )
            return StoreError(f"cannot use the database {self.description}: {detail}")
        return StoreError(f"database error on {self.description}: {detail}")

    def _create_schema(self) -> None:
        with self.transaction() as conn:
            schema.metadata.create_all(conn, checkfirst=True)
            row = conn.execute(
                select(schema.schema_meta.c.value).where(
                    schema.schema_meta.c.key == "schema_version"
                )
            ).first()
            if row is None:
                conn.execute(
                    insert(schema.schema_meta).values(
                        key="schema_version", value=str(schema.SCHEMA_VERSION)
                    )
                )
            elif row.value in _UPGRADABLE:
                # create_all above added the tables the newer version has
                conn.execute(
                    schema.schema_meta.update()
                    .where(schema.schema_meta.c.key == "schema_version")
                    .values(value=str(schema.SCHEMA_VERSION))
                )
            elif row.value != str(schema.SCHEMA_VERSION):
                raise StoreError(
                    f"the database {self.description} has schema version {row.value}; this"
                    f" smimekit knows version {schema.SCHEMA_VERSION}"
                )

    def _check_schema(self) -> None:
        """The store exists and has a version this code reads; writes nothing."""
        with self.transaction() as conn:
            if not inspect(conn).has_table(schema.schema_meta.name):
                raise StoreError(f"no smimekit store in {self.description}")
            row = conn.execute(
                select(schema.schema_meta.c.value).where(
                    schema.schema_meta.c.key == "schema_version"
                )
            ).first()
        if row is None or (row.value != str(schema.SCHEMA_VERSION)
                           and row.value not in _UPGRADABLE):
            raise StoreError(
                f"the database {self.description} has schema version"
                f" {row.value if row else 'none'}; this smimekit knows version"
                f" {schema.SCHEMA_VERSION}"
            )

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self.transaction() as conn:
            value = conn.execute(
                select(schema.schema_meta.c.value).where(
                    schema.schema_meta.c.key == "schema_version"
                )
            ).scalar_one()
        return int(value)

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
        with self.transaction() as conn:
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
        with self.transaction() as conn:
            row = conn.execute(
                select(schema.certificates).where(
                    schema.certificates.c.fingerprint == fingerprint.lower()
                )
            ).first()
        return _stored_certificate(row) if row is not None else None

    def certificates_for(self, email: str) -> list[StoredCertificate]:
        """Every stored certificate that names this address."""
        needle = f'%"{email.strip().lower()}"%'
        with self.transaction() as conn:
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
                return self.add_user(email, name, department)
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
        """Store a certificate our CA issued, with its issuance record (one transaction)."""
        with self.transaction() as conn:
            stored = self.add_certificate(cert, "issued")
            values: dict[str, Any] = {
                "fingerprint": stored.fingerprint,
                "serial": stored.serial,
                "issuer_fingerprint": issuer_fingerprint,
                "email": email.strip().lower(),
                "purpose": purpose,
                "profile": profile,
                "key_origin": key_origin,
                "issued_at": _now(),
                "not_after": stored.not_after,
            }
            record_id = conn.execute(_INSERT_ISSUED, values).scalar_one()
        # What was just written, without reading it back: a new record is neither renewed,
        # notified nor revoked (revocations are only recorded for issued certificates, and
        # the serial is new: unique per issuer in ``issued``).
        return IssuedRecord(id=record_id, **values, renewed_by=None, notified_at=None,
                            revoked_at=None, reason=None)

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
        with self.transaction() as conn:
            row = conn.execute(query, params).first()
        return _issued(row) if row is not None else None

    def issued_for(self, email: str) -> list[IssuedRecord]:
        """Everything our CA issued to this address, oldest first."""
        with self.transaction() as conn:
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
        with self.transaction() as conn:
            rows = conn.execute(query).all()
        return [_issued(row) for row in rows]

    def mark_renewed(self, fingerprint: str, successor: str) -> None:
        """Record that ``successor`` replaced the certificate ``fingerprint``."""
        with self.transaction() as conn:
            conn.execute(schema.issued.update()
                         .where(schema.issued.c.fingerprint == fingerprint)
                         .values(renewed_by=successor))

    def mark_notified(self, fingerprint: str, at: dt.datetime) -> None:
        """Record when the holder was told the certificate expires."""
        with self.transaction() as conn:
            conn.execute(schema.issued.update()
                         .where(schema.issued.c.fingerprint == fingerprint)
                         .values(notified_at=at))

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
        with self.transaction() as conn:
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

    # -- audit log -------------------------------------------------------------------------

    def audit(
        self, actor: str, action: str, subject: str, details: dict[str, Any] | None = None
    ) -> AuditEntry:
        """Append a row to the audit log, inside the current transaction (or its own).

        Raises StoreError on database failures, TypeError/ValueError when ``details`` is not
        JSON-serialisable.
        """
        details_json = canonical_json(details or {})
        at = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.transaction() as conn:
            if self.dialect == "postgresql":
                # Writers append one at a time; readers are not blocked.
                conn.execute(_LOCK_AUDIT_LOG)
            # The head of the chain is read in the writer's transaction every time (one primary
            # key lookup): another process may have appended since this one last did.
            row = conn.execute(_LAST_AUDIT_ROW).first()
            id_, prev = (row.id + 1, row.hash) if row is not None else (1, GENESIS)
            digest = row_hash(prev, id_, at, actor, action, subject, details_json)
            conn.execute(_INSERT_AUDIT, {
                "id": id_,
                "at": at,
                "actor": actor,
                "action": action,
                "subject": subject,
                "details": details_json,
                "prev_hash": prev,
                "hash": digest,
            })
        return AuditEntry(id_, at, actor, action, subject, json.loads(details_json), prev, digest)

    def audit_entries(self, limit: int | None = None) -> list[AuditEntry]:
        """The audit log in order; with ``limit``, only the last ``limit`` rows."""
        log = schema.audit_log
        query = select(log).order_by(log.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.transaction() as conn:
            rows = conn.execute(query).all()
        return [
            AuditEntry(
                r.id, r.at, r.actor, r.action, r.subject, json.loads(r.details), r.prev_hash, r.hash
            )
            for r in reversed(rows)
        ]

    def audit_count(self) -> int:
        """How many rows the audit log holds."""
        with self.transaction() as conn:
            return int(
                conn.execute(select(func.count()).select_from(schema.audit_log)).scalar_one()
            )

    def verify_audit_log(self) -> list[AuditProblem]:
        """Every place the hash chain is broken (edited, removed or reordered rows); [] if intact.

        Raises StoreError on database failures.
        """
        log = schema.audit_log
        columns = (
            log.c.id,
            log.c.at,
            log.c.actor,
            log.c.action,
            log.c.subject,
            log.c.details,
            log.c.prev_hash,
            log.c.hash,
        )
        with self.transaction() as conn:
            rows = conn.execute(select(*columns).order_by(log.c.id)).all()
        return verify_rows(tuple(r) for r in rows)


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


def _sqlite_path(url: str) -> str | None:
    """The file a ``sqlite:`` URL names (None: in memory, or not parseable here)."""
    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    return database if database and database != ":memory:" else None


def _sqlite_transactions(engine: Engine) -> None:
    """Transactions and journal of a SQLite store.

    pysqlite's own transaction handling starts transactions late and never for DDL; take it
    over so each transaction is one ``BEGIN IMMEDIATE ... COMMIT``. IMMEDIATE takes the write
    lock up front: the audit chain's "read the last hash, append" cannot interleave.

    The journal is a write-ahead log (``journal_mode=WAL``, kept in the file, with
    ``-wal`` and ``-shm`` files beside it) with ``synchronous=NORMAL``: a commit appends to
    the log without waiting for the disk; the log is synced when it is copied into the
    database (checkpoint). The trade-off: the database stays consistent whatever happens, and
    a crash of the *process* loses nothing; a power cut or an operating-system crash may lose
    the last transactions committed before it (each whole, never half of one: an issuance
    disappears with its audit row). A certificate handed out just before such a cut can thus
    be missing from the records. SQLite's default, the rollback journal with
    ``synchronous=FULL``, waits for the disk several times per commit: CSR issuance ran 4-7
    times slower with it (docs/store.md, docs/benchmarks.md). WAL needs the file on a
    local file system (not NFS), as SQLite's locking does anyway.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if mode not in ("wal", "memory"):
            try:
                mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError:
                pass  # another process holds a lock: the next connection switches
        if mode == "wal":
            # NORMAL is safe with WAL only; a rollback journal keeps FULL.
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
