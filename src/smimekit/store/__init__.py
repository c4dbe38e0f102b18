"""Persistence: certificates, keys, users, revocations and the hash-chained audit log.

SQLite in the data directory by default, PostgreSQL by URL; see docs/store.md.
"""

from __future__ import annotations

from smimekit.store.audit import AuditEntry, AuditProblem
from smimekit.store.db import (
    DB_FILENAME,
    HarvestedCertificate,
    IssuedRecord,
    PublishedCrl,
    Revocation,
    Store,
    StoredCertificate,
    StoredKey,
    User,
)

__all__ = [
    "DB_FILENAME",
    "AuditEntry",
    "AuditProblem",
    "HarvestedCertificate",
    "IssuedRecord",
    "PublishedCrl",
    "Revocation",
    "Store",
    "StoredCertificate",
    "StoredKey",
    "User",
]
