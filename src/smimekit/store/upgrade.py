"""In-place schema upgrades: versions 1 to 5 to 6, on SQLite and PostgreSQL.

Runs inside the first write transaction on an older store (or ``Store.open(create=True)``),
so an upgrade is whole or not at all: the ALTER TABLE and CREATE INDEX of both databases are
transactional. What changes from version 2 to 3:

* ``issued`` gains the live markers ``sign_slot`` and ``encrypt_slot`` (unique indexes). They
  are filled from the records: each live, unexpired certificate holds the slot of its
  purposes. Where an older store already holds two live certificates for one address and
  purpose (the check-then-act race of earlier versions), the newest keeps the slot; the older
  ones stay valid certificates but no longer count as the address's live certificate (revoke
  them with ``smimekit ca revoke --serial``). Nothing is deleted.
* ``crl_publications`` gains a unique index on (issuer, CRL number). A store whose CRLs
  already reuse a number (the CRL race of earlier versions) is refused with the duplicates
  named: those CRLs were signed and handed out, so which to keep is the operator's call.

From version 3 to 4 only a table is added, ``harvested_certificates``, from 4 to 5 only
``identities``, from 5 to 6 only the gateway's tables ``gateway_deliveries`` and
``gateway_keys`` (each created with the others that a store lacks); nothing existing changes.
The steps of 2 to 3 run only for a store older than 3: on a version 3 store they would hand
slots out again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, func, inspect, select, text

from smimekit.errors import StoreError
from smimekit.store import schema

_LOCK_SCHEMA = text("SELECT pg_advisory_xact_lock(7236818250186469937)")


def _version(conn: Connection) -> str | None:
    meta = schema.schema_meta
    return conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()


def upgrade_schema(conn: Connection, description: str) -> None:
    """Bring the store behind ``conn`` (in a write transaction) to the current version.

    Also creates any table the current code has and the database lacks.

    Raises:
        StoreError: a version this code does not know, or duplicate CRL numbers.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_SCHEMA)  # two processes upgrading at once: one at a time
    version = _version(conn)
    current = str(schema.SCHEMA_VERSION)
    if version is not None and version != current and version not in ("1", "2", "3", "4", "5"):
        raise StoreError(
            f"the database {description} has schema version {version}; this smimekit"
            f" knows version {schema.SCHEMA_VERSION}")
    schema.metadata.create_all(conn, checkfirst=True)  # tables a newer version added
    if version == current:
        return
    if version in ("1", "2"):
        _to_version_3(conn, description)
    conn.execute(schema.schema_meta.update()
                 .where(schema.schema_meta.c.key == "schema_version")
                 .values(value=current))


def _to_version_3(conn: Connection, description: str) -> None:
    columns = {c["name"] for c in inspect(conn).get_columns(schema.issued.name)}
    for name in ("sign_slot", "encrypt_slot"):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE issued ADD COLUMN {name} VARCHAR(320)"))
    _fill_slots(conn)
    _refuse_duplicate_crl_numbers(conn, description)
    for index in (schema.SIGN_SLOT_INDEX, schema.ENCRYPT_SLOT_INDEX, schema.CRL_NUMBER_INDEX):
        index.create(conn, checkfirst=True)


def _fill_slots(conn: Connection) -> None:
    i, r = schema.issued, schema.revocations
    rows = conn.execute(
        select(i.c.id, i.c.email, i.c.purpose, i.c.not_after)
        .select_from(i.outerjoin(r, (r.c.serial == i.c.serial)
                                 & (r.c.issuer_fingerprint == i.c.issuer_fingerprint)))
        .where(i.c.renewed_by.is_(None) & r.c.id.is_(None)
               & i.c.sign_slot.is_(None) & i.c.encrypt_slot.is_(None))
        .order_by(i.c.id.desc())).all()
    now = dt.datetime.now(dt.UTC)
    taken: set[tuple[str, str]] = set()
    for row in rows:  # newest first: the newest live certificate keeps the slot
        not_after = row.not_after if row.not_after.tzinfo else row.not_after.replace(
            tzinfo=dt.UTC)
        if not_after <= now:
            continue
        serves = ("sign", "encrypt") if row.purpose == "both" else (row.purpose,)
        values = {}
        for purpose in serves:
            if (row.email, purpose) not in taken:
                taken.add((row.email, purpose))
                values[f"{purpose}_slot"] = row.email
        if values:
            conn.execute(i.update().where(i.c.id == row.id).values(**values))


_KEEP_NEWEST_CRL = ("DELETE FROM crl_publications WHERE id NOT IN (SELECT max(id) FROM"
                    " crl_publications GROUP BY issuer_fingerprint, crl_number)")


def _refuse_duplicate_crl_numbers(conn: Connection, description: str) -> None:
    c = schema.crl_publications
    dups = conn.execute(
        select(c.c.issuer_fingerprint, c.c.crl_number, func.count().label("n"))
        .group_by(c.c.issuer_fingerprint, c.c.crl_number)
        .having(func.count() > 1)
        .order_by(c.c.issuer_fingerprint, c.c.crl_number)).all()
    if not dups:
        return
    named = ", ".join(f"issuer {d.issuer_fingerprint[:16]}... number {d.crl_number}"
                      f" ({d.n} CRLs)" for d in dups[:5])
    more = f" and {len(dups) - 5} more" if len(dups) > 5 else ""
    raise StoreError(
        f"cannot upgrade {description} to schema version {schema.SCHEMA_VERSION}: CRL"
        f" numbers were published twice ({named}{more}); keep one CRL per number, e.g. "
        + _KEEP_NEWEST_CRL + ", then run the command again (the next CRL gets a higher"
        " number and lists every revocation)")
