"""The audit log's hash chain: canonical form of a row, its hash, and the chain check.

Each row carries ``prev_hash`` (the previous row's ``hash``; 64 zeros for the first row)
and ``hash = SHA-256(prev_hash || canonical JSON of id, at, actor, action, subject,
details)``. The id is in the hash, so moving a row's contents to another id breaks it;
``prev_hash`` links each row to the one before, so removing or reordering rows breaks
the chain at the first row after the change. Removing rows from the *end* leaves a shorter
but intact chain: only a copy of the head hash kept elsewhere can show that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    """Position in the chain, from 1, without gaps."""
    at: str
    """When, ISO 8601 UTC (``2026-11-28T14:40:47.123456Z``)."""
    actor: str
    """Who did it (a user, an operator, ``system``)."""
    action: str
    """What was done (``ca.issue``, ``key.retire``, ...)."""
    subject: str
    """What it was done to (a fingerprint, an address, a serial)."""
    details: dict[str, Any]
    """Anything else, as JSON-compatible values."""
    prev_hash: str
    """The previous row's ``hash``; 64 zeros for the first row."""
    hash: str
    """SHA-256 over ``prev_hash`` and the canonical JSON of the fields above, hex."""


@dataclass(frozen=True)
class AuditProblem:
    """A place where the audit log is not what it was written as."""

    row_id: int
    """The first row at which the problem shows."""
    message: str
    """What is wrong, in one line."""

    def __str__(self) -> str:
        return f"row {self.row_id}: {self.message}"


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(
    prev_hash: str, id_: int, at: str, actor: str, action: str, subject: str, details: str
) -> str:
    """The hash of one row; ``details`` is its canonical JSON text."""
    body = canonical_json(
        {
            "id": id_,
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": json.loads(details),
        }
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


def verify_rows(
    rows: Iterable[tuple[int, str, str, str, str, str, str, str]],
) -> list[AuditProblem]:
    """Check ``(id, at, actor, action, subject, details, prev_hash, hash)`` rows in id order."""
    problems: list[AuditProblem] = []
    expected_id, expected_prev = 1, GENESIS
    for id_, at, actor, action, subject, details, prev_hash, stored in rows:
        if id_ != expected_id:
            problems.append(
                AuditProblem(id_, f"expected row {expected_id} here: rows removed or renumbered")
            )
        if prev_hash != expected_prev:
            problems.append(
                AuditProblem(id_, "chain broken: the previous row was removed, reordered or edited")
            )
        try:
            computed = row_hash(prev_hash, id_, at, actor, action, subject, details)
        except (ValueError, TypeError):
            computed = ""
        if computed != stored:
            problems.append(AuditProblem(id_, "contents do not match the row's hash: edited"))
        expected_id, expected_prev = id_ + 1, stored
    return problems
