"""The audit log's tables: append a row to the hash chain (and its MAC when the store holds
the audit key), read it, check it (the chain's rules are in :mod:`smimekit.store.audit`)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, insert, inspect, select, text

from smimekit.errors import StoreError
from smimekit.store import schema
from smimekit.store.audit import (
    GENESIS,
    AnchorReport,
    AuditEntry,
    AuditKey,
    AuditProblem,
    canonical_json,
    check_anchors,
    row_hash,
    verify_rows,
)
from smimekit.store.base import StoreBase, _now

_LAST_AUDIT_ROW = (select(schema.audit_log.c.id, schema.audit_log.c.hash)
                   .order_by(schema.audit_log.c.id.desc()).limit(1))
_INSERT_AUDIT = insert(schema.audit_log)
_INSERT_MAC = insert(schema.audit_mac)
_LOCK_AUDIT_LOG = text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")


class AuditRecords(StoreBase):
    """Queries of the audit_log and audit_mac tables."""

    _audit_key: AuditKey | None = None
    _mac_table_ready = False

    def use_audit_key(self, key: AuditKey | None) -> None:
        """Anchor every row this store object appends from now on with ``key`` (None: stop).

        The key is held in memory for the life of the object: one HMAC per row, no file read.
        """
        self._audit_key = key

    @property
    def audit_key(self) -> AuditKey | None:
        """The key rows are anchored with, if any."""
        return self._audit_key

    def _ensure_mac_table(self, conn: Connection) -> None:
        # Stores made before the audit_mac table get it on their first anchored row: a new
        # table, no schema version change.
        if not self._mac_table_ready:
            schema.audit_mac.create(conn, checkfirst=True)
            self._mac_table_ready = True

    def _has_mac_table(self, conn: Connection) -> bool:
        return self._mac_table_ready or inspect(conn).has_table(schema.audit_mac.name)

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
            key = self._audit_key
            if key is not None:
                try:
                    self._ensure_mac_table(conn)
                except BaseException:
                    self._mac_table_ready = False
                    raise
                conn.execute(_INSERT_MAC, {"audit_id": id_, "key_id": key.key_id,
                                           "mac": key.mac(digest)})
        return AuditEntry(id_, at, actor, action, subject, json.loads(details_json), prev, digest)

    def audit_entries(self, limit: int | None = None) -> list[AuditEntry]:
        """The audit log in order; with ``limit``, only the last ``limit`` rows."""
        log = schema.audit_log
        query = select(log).order_by(log.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.read() as conn:
            rows = conn.execute(query).all()
        return [
            AuditEntry(
                r.id, r.at, r.actor, r.action, r.subject, json.loads(r.details), r.prev_hash, r.hash
            )
            for r in reversed(rows)
        ]

    def audit_count(self) -> int:
        """How many rows the audit log holds."""
        with self.read() as conn:
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
        with self.read() as conn:
            rows = conn.execute(select(*columns).order_by(log.c.id)).all()
        return verify_rows(tuple(r) for r in rows)

    def audit_macs(self) -> dict[int, tuple[str, str]]:
        """Every stored MAC: row id -> (key id, MAC); {} when the store has no audit_mac table."""
        mac = schema.audit_mac
        with self.read() as conn:
            if not self._has_mac_table(conn):
                return {}
            rows = conn.execute(select(mac.c.audit_id, mac.c.key_id, mac.c.mac)).all()
        return {r.audit_id: (r.key_id, r.mac) for r in rows}

    def audit_head(self) -> tuple[int, str] | None:
        """The last row's id and hash (None: the log is empty)."""
        with self.read() as conn:
            row = conn.execute(_LAST_AUDIT_ROW).first()
        return (row.id, row.hash) if row is not None else None

    def check_audit_anchors(self, key: AuditKey) -> AnchorReport:
        """The MACs of every row under ``key``: wrong or foreign MACs, and unanchored rows.

        Raises StoreError on database failures.
        """
        log = schema.audit_log
        with self.read() as conn:  # one snapshot for the MACs and the rows
            macs = self.audit_macs()
            rows = conn.execute(select(log.c.id, log.c.hash).order_by(log.c.id)).all()
        return check_anchors(((r.id, r.hash) for r in rows), macs, key)

    def anchor_audit_rows(self, key: AuditKey, through: int) -> list[int]:
        """MAC the unanchored rows up to ``through``, after checking the whole log.

        Refused unless the whole chain is intact, every MAC there is right and of this key,
        and some row already carries one (``ca.init``, or the row ``log init-key`` wrote):
        rows are only anchored in a history the key already vouches for, and only up to a
        row the operator named (rows appended after it stay unanchored). Returns the ids
        anchored, in order.

        Raises StoreError: no such row, a broken chain or a bad MAC anywhere, no row
        anchored under ``key``.
        """
        log = schema.audit_log
        mac = schema.audit_mac
        columns = (log.c.id, log.c.at, log.c.actor, log.c.action, log.c.subject,
                   log.c.details, log.c.prev_hash, log.c.hash)
        with self.transaction() as conn:
            if self.dialect == "postgresql":
                conn.execute(_LOCK_AUDIT_LOG)
            rows = conn.execute(select(*columns).order_by(log.c.id)).all()
            hashes = {r.id: r.hash for r in rows}
            if through not in hashes:
                raise StoreError(f"the audit log has no row {through}")
            self._ensure_mac_table(conn)
            macs = {r.audit_id: (r.key_id, r.mac) for r in conn.execute(
                select(mac.c.audit_id, mac.c.key_id, mac.c.mac))}
            report = check_anchors(((r.id, r.hash) for r in rows), macs, key)
            problems = verify_rows(tuple(r) for r in rows) + report.problems
            if problems:
                first = min(problems, key=lambda p: p.row_id)
                raise StoreError(f"refusing to anchor: audit log broken at {first}")
            # With the chain intact, a good MAC on a row vouches for every row before it as
            # it was when that row was written; with none, the MACs were removed (or it is
            # another log) and nothing is re-blessed.
            if len(report.unanchored) == len(rows):
                raise StoreError("refusing to anchor: no row of this audit log is anchored"
                                 " under this audit key (its MACs were removed, or it is"
                                 " another log)")
            anchored = [id_ for id_ in report.unanchored if id_ <= through]
            for id_ in anchored:
                conn.execute(_INSERT_MAC, {"audit_id": id_, "key_id": key.key_id,
                                           "mac": key.mac(hashes[id_])})
        return anchored
