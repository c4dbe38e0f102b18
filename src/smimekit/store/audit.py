"""The audit log's hash chain: canonical form of a row, its hash, and the chain check.

Each row carries ``prev_hash`` (the previous row's ``hash``; 64 zeros for the first row)
and ``hash = SHA-256(prev_hash || canonical JSON of id, at, actor, action, subject,
details)``. The id is in the hash, so moving a row's contents to another id breaks it;
``prev_hash`` links each row to the one before, so removing or reordering rows breaks
the chain at the first row after the change. Removing rows from the *end* leaves a shorter
but intact chain: only a copy of the head hash kept elsewhere can show that.

The chain rules are public, so anyone who can write to the database can rewrite history and
re-hash it. What anchors the log is :class:`AuditKey`: a 32-byte HMAC-SHA256 key kept outside
the database (``<data-dir>/ca/audit.key``). Each row written with the key gets a MAC over its
hash (which chains everything before it), stored in the ``audit_mac`` table; a row without a
MAC is *unanchored* and :func:`check_anchors` reports it rather than counting it as valid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
AUDIT_KEY_BYTES = 32
_MAC_LABEL = b"smimekit audit row v1\x00"
_KEY_ID_LABEL = b"smimekit audit key id v1\x00"


class AuditKey:
    """The HMAC-SHA256 key that anchors audit rows; never printed, never stored in the database.

    Its :attr:`key_id` (16 hex digits of a labelled SHA-256 of the key) is stored beside each
    MAC so that a row anchored under another key is told apart from an edited one.
    """

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != AUDIT_KEY_BYTES:
            raise ValueError(f"an audit key is {AUDIT_KEY_BYTES} bytes, not {len(key)}")
        self._key = key
        self.key_id = hashlib.sha256(_KEY_ID_LABEL + key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> AuditKey:
        """A new random key."""
        return cls(secrets.token_bytes(AUDIT_KEY_BYTES))

    @classmethod
    def from_text(cls, text: str) -> AuditKey:
        """Read the key file's form (64 hex digits). Raises ValueError if it is not that."""
        value = text.strip()
        if len(value) != 2 * AUDIT_KEY_BYTES:
            raise ValueError("not 64 hex digits")
        return cls(bytes.fromhex(value))

    def to_text(self) -> str:
        """The key file's form: 64 hex digits and a newline."""
        return self._key.hex() + "\n"

    def mac(self, row_hash_hex: str) -> str:
        """HMAC-SHA256 over a row's hash (which covers its id, contents and the chain), hex."""
        return hmac.new(self._key, _MAC_LABEL + row_hash_hex.encode("ascii"),
                        hashlib.sha256).hexdigest()

    def check(self, row_hash_hex: str, mac: str) -> bool:
        """Constant-time: is ``mac`` this key's MAC of the row hash?"""
        return hmac.compare_digest(self.mac(row_hash_hex), mac)

    def __repr__(self) -> str:
        return f"AuditKey(key_id={self.key_id!r})"


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


@dataclass(frozen=True)
class AnchorReport:
    """What the MACs say about a chain (see :func:`check_anchors`)."""

    problems: list[AuditProblem]
    """Rows whose MAC is wrong or under another key, and MACs of rows that are not there."""
    unanchored: list[int]
    """Rows with no MAC: written without the audit key, or their MAC removed."""


def check_anchors(
    hashes: Iterable[tuple[int, str]], macs: dict[int, tuple[str, str]], key: AuditKey
) -> AnchorReport:
    """Check ``(id, hash)`` rows against ``macs`` (id -> (key id, MAC)) under ``key``."""
    problems: list[AuditProblem] = []
    unanchored: list[int] = []
    seen: set[int] = set()
    for id_, stored in hashes:
        seen.add(id_)
        found = macs.get(id_)
        if found is None:
            unanchored.append(id_)
            continue
        key_id, mac = found
        if key_id != key.key_id:
            problems.append(AuditProblem(
                id_, f"anchored under audit key {key_id}, not this CA's key {key.key_id}"))
        elif not key.check(stored, mac):
            problems.append(AuditProblem(
                id_, "MAC does not match: edited or re-hashed without the audit key"))
    for id_ in sorted(set(macs) - seen):
        problems.append(AuditProblem(
            id_, "a MAC for a row that is not in the log: rows removed"))
    return AnchorReport(problems, unanchored)
