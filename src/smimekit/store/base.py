"""The store's engine, transactions and schema: what every table's queries build on.

:class:`StoreBase` opens one SQLAlchemy Core engine over SQLite (default) or PostgreSQL.
Every write runs in a transaction; :meth:`StoreBase.transaction` groups several writes (and
their audit rows) into one, so an exception anywhere leaves nothing written. Database errors
never leave the store as SQLAlchemy exceptions: they become
:class:`~smimekit.errors.StoreError`. The queries live beside it, one module per concern,
and :class:`smimekit.store.db.Store` joins them.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
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

DB_FILENAME = "smimekit.db"
UPGRADABLE = frozenset({"1", "2", "3", "4", "5"})
"""Older schema versions this code reads as they are and upgrades in place (on the first write
transaction, or ``create=True``); their tables are a subset of today's, and every query
names its columns, so reads need no upgrade."""
# Two processes creating or upgrading the same PostgreSQL store at once: one at a time.
_LOCK_SCHEMA = text("SELECT pg_advisory_xact_lock(7236818250186469937)")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything we write is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


class StoreBase:
    """The engine, transactions and schema of a store (the queries are in the mixins that
    :class:`~smimekit.store.db.Store` joins).

    Open with :meth:`open`; close with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, engine: Engine, description: str) -> None:
        self._engine = engine
        self.description = description
        """Where the data lives, for messages (the SQLite path, or the URL without password)."""
        self._current: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
            f"smimekit-store-{id(self)}", default=None
        )
        self._reading: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"smimekit-store-reading-{id(self)}", default=False
        )
        self._pending_upgrade: str | None = None
        """The older schema version found by a ``create=False`` open: the first write
        transaction upgrades it."""

    @classmethod
    def open(cls, url: str | None, data_dir: Path | str, *, busy_timeout: float = 5.0,
             create: bool = True) -> Self:
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
        elif url is not None and url.startswith("sqlite:"):
            database = _sqlite_path(url)
            if database is not None and not database.startswith("file:"):
                # SQLite would create it (and its -wal and -shm files, which take the
                # database file's mode) with the umask: make it the owner's only, as the
                # default store is. A missing directory is left to SQLite's own error.
                try:
                    os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                except (FileExistsError, FileNotFoundError):
                    pass
                except OSError as exc:
                    raise StoreError(
                        f"cannot create the database {database}: {exc.strerror or exc}"
                    ) from None
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

    def __enter__(self) -> Self:
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
        """One write transaction: committed when the block ends, rolled back on any exception.

        On SQLite it takes the write lock when it begins (``BEGIN IMMEDIATE``): one writer at a
        time, so a read-then-write inside it cannot interleave with another writer. The first
        write transaction on a store of an older schema version upgrades it first, in the same
        transaction (:func:`smimekit.store.upgrade.upgrade_schema`).

        Nested calls join the outer transaction. Raises StoreError on database failures, and
        RuntimeError when called inside a :meth:`read` block (a read transaction cannot
        become a write one without risking SQLITE_BUSY).
        """
        current = self._current.get()
        if current is not None:
            if self._reading.get():
                raise RuntimeError("a write transaction inside a read() block")
            try:
                yield current
            except SQLAlchemyError as exc:
                raise self._translate(exc) from None
            return
        upgrading = self._pending_upgrade is not None
        try:
            with self._engine.begin() as conn:
                token = self._current.set(conn)
                try:
                    if upgrading:
                        from smimekit.store.upgrade import upgrade_schema

                        upgrade_schema(conn, self.description)
                    yield conn
                finally:
                    self._current.reset(token)
        except SQLAlchemyError as exc:
            raise self._translate(exc) from None
        if upgrading:
            self._pending_upgrade = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction for queries; inside a :meth:`transaction` it joins it.

        On SQLite it begins DEFERRED (plain ``BEGIN``): under WAL it reads a snapshot and
        neither takes nor waits for the write lock, so OCSP lookups proceed while a writer
        (an enrolment) holds it. Nothing may be written in it. Raises StoreError on database
        failures.
        """
        current = self._current.get()
        if current is not None:
            try:
                yield current
            except SQLAlchemyError as exc:
                raise self._translate(exc) from None
            return
        try:
            with self._engine.connect() as conn:
                conn.execution_options(smimekit_read=True)
                with conn.begin():
                    token = self._current.set(conn)
                    reading = self._reading.set(True)
                    try:
                        yield conn
                    finally:
                        self._reading.reset(reading)
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
        from smimekit.store.upgrade import upgrade_schema

        with self.transaction() as conn:
            if self.dialect == "postgresql":
                conn.execute(_LOCK_SCHEMA)
            row = conn.execute(
                select(schema.schema_meta.c.value).where(
                    schema.schema_meta.c.key == "schema_version"
                )
            ).first() if inspect(conn).has_table(schema.schema_meta.name) else None
            if row is None:
                schema.metadata.create_all(conn, checkfirst=True)
                conn.execute(
                    insert(schema.schema_meta).values(
                        key="schema_version", value=str(schema.SCHEMA_VERSION)
                    )
                )
            else:
                # adds what a newer version has (or refuses a version it does not know)
                upgrade_schema(conn, self.description)

    def _check_schema(self) -> None:
        """The store exists and has a version this code reads; writes nothing."""
        with self.read() as conn:
            if not inspect(conn).has_table(schema.schema_meta.name):
                raise StoreError(f"no smimekit store in {self.description}")
            row = conn.execute(
                select(schema.schema_meta.c.value).where(
                    schema.schema_meta.c.key == "schema_version"
                )
            ).first()
        if row is None or (row.value != str(schema.SCHEMA_VERSION)
                           and row.value not in UPGRADABLE):
            raise StoreError(
                f"the database {self.description} has schema version"
                f" {row.value if row else 'none'}; this smimekit knows version"
                f" {schema.SCHEMA_VERSION}"
            )
        if row.value != str(schema.SCHEMA_VERSION):
            # readable as it is; upgraded by the first write transaction, never by a read
            self._pending_upgrade = row.value

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self.read() as conn:
            value = conn.execute(
                select(schema.schema_meta.c.value).where(
                    schema.schema_meta.c.key == "schema_version"
                )
            ).scalar_one()
        return int(value)


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
    over so each write transaction is one ``BEGIN IMMEDIATE ... COMMIT``. IMMEDIATE takes the
    write lock up front: the audit chain's "read the last hash, append" and the CRL's "read the
    last number and the revocations, insert" cannot interleave. Read transactions
    (:meth:`StoreBase.read`) begin DEFERRED and, under WAL, never wait for a writer.

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
        # Store.read(): DEFERRED, a WAL snapshot without the write lock; every other
        # transaction takes the write lock up front.
        if conn.get_execution_options().get("smimekit_read"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
