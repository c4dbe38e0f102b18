"""The audit log's table: append a row to the hash chain, read it, check it (the chain's
rules are in :mod:`smimekit.store.audit`)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, insert, select, text

from smimekit.store import schema
from smimekit.store.audit import (
    GENESIS,
    AuditEntry,
    AuditProblem,
    canonical_json,
    row_hash,
    verify_rows,
)
from smimekit.store.base import StoreBase, _now

_LAST_AUDIT_ROW = (select(schema.audit_log.c.id, schema.audit_log.c.hash)
                   .order_by(schema.audit_log.c.id.desc()).limit(1))
_INSERT_AUDIT = insert(schema.audit_log)
_LOCK_AUDIT_LOG = text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")


class AuditRecords(StoreBase):
    """Queries of the audit_log table."""

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
