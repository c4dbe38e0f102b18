"""The store: one SQLAlchemy Core engine over SQLite (default) or PostgreSQL.

Every write runs in a transaction; :meth:`Store.transaction` groups several writes (and their
audit rows) into one, so an exception anywhere leaves nothing written. Database errors never
leave this module as SQLAlchemy exceptions: they become :class:`~smimekit.errors.StoreError`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, text
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
    def open(cls, url: str | None, data_dir: Path | str, *, busy_timeout: float = 5.0) -> Store:
        """Open (and on first use create) the store.

        ``url`` None means the SQLite file ``<data_dir>/smimekit.db`` (directory 0700, file
        0600); otherwise a SQLAlchemy URL, ``sqlite:///PATH`` or
        ``postgresql+psycopg://user@host/db``. ``busy_timeout`` is how long to wait for
        another writer's lock (SQLite) or for the server to answer (PostgreSQL), in seconds.

        Raises StoreError: bad URL, unreachable server, unwritable or locked file, a schema
        version this code does not know.
        """
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
            store._create_schema()
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
            elif row.value != str(schema.SCHEMA_VERSION):
                raise StoreError(
                    f"the database {self.description} has schema version {row.value}; this"
                    f" smimekit knows version {schema.SCHEMA_VERSION}"
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
            user_id = conn.execute(
                insert(schema.users)
                .values(email=email, name=name, department=department, created_at=_now())
                .returning(schema.users.c.id)
            ).scalar_one()
        return User(user_id, email, name, department)

    def get_user(self, email: str) -> User | None:
        """The user with this address (case-insensitive), or None."""
        with self.transaction() as conn:
            row = conn.execute(
                select(schema.users).where(schema.users.c.email == email.strip().lower())
            ).first()
        if row is None:
            return None
        return User(row.id, row.email, row.name, row.department)

    # -- certificates ----------------------------------------------------------------------

    def add_certificate(self, cert: x509.Certificate, source: str) -> StoredCertificate:
        """Store a certificate. Raises StoreError when the same certificate is stored already."""
        der = cert.public_bytes(serialization.Encoding.DER)
        usage = _key_usage(cert)
        values: dict[str, Any] = {
            "der": der,
            "subject": cert.subject.rfc4514_string(),
            "emails": json.dumps(certificate_emails(cert)),
            "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"),
            "not_before": cert.not_valid_before_utc,
            "not_after": cert.not_valid_after_utc,
            "key_usage": ",".join(usage) if usage is not None else None,
            "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
            "source": source,
            "added_at": _now(),
        }
        with self.transaction() as conn:
            cert_id = conn.execute(
                insert(schema.certificates).values(**values).returning(schema.certificates.c.id)
            ).scalar_one()
            row = conn.execute(
                select(schema.certificates).where(schema.certificates.c.id == cert_id)
            ).one()
        return _stored_certificate(row)

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
        log = schema.audit_log
        with self.transaction() as conn:
            if self.dialect == "postgresql":
                # Writers append one at a time; readers are not blocked.
                conn.execute(text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE"))
            last = conn.execute(select(log.c.id, log.c.hash).order_by(log.c.id.desc()).limit(1))
            row = last.first()
            id_, prev = (row.id + 1, row.hash) if row is not None else (1, GENESIS)
            digest = row_hash(prev, id_, at, actor, action, subject, details_json)
            conn.execute(
                insert(log).values(
                    id=id_,
                    at=at,
                    actor=actor,
                    action=action,
                    subject=subject,
                    details=details_json,
                    prev_hash=prev,
                    hash=digest,
                )
            )
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


def _sqlite_transactions(engine: Engine) -> None:
    # pysqlite's own transaction handling starts transactions late and never for DDL; take
    # it over so each transaction is one BEGIN IMMEDIATE ... COMMIT. IMMEDIATE takes the
    # write lock up front: the audit chain's "read the last hash, append" cannot interleave.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
