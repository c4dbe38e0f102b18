"""The store: one facade over SQLite (default) or PostgreSQL.

:class:`Store` joins the queries of each concern, written beside it: users, certificates and
issuance (:mod:`~smimekit.store.certificates`), revocations and CRLs
(:mod:`~smimekit.store.revocation`), the key history that escrow holds
(:mod:`~smimekit.store.keys`), the certificates kept from signed mail
(:mod:`~smimekit.store.harvested`), the people ``ca sync`` manages
(:mod:`~smimekit.store.identities`), the gateway's delivery journal
(:mod:`~smimekit.store.deliveries`), the keys the mail gateway holds
(:mod:`~smimekit.store.gateway_keys`) and the audit log (:mod:`~smimekit.store.auditlog`), all
on the engine, transactions and schema of :mod:`~smimekit.store.base`.
"""

from __future__ import annotations

from smimekit.store.auditlog import AuditRecords
from smimekit.store.base import DB_FILENAME
from smimekit.store.certificates import (
    CertificateRecords,
    IssuedRecord,
    IssuedStatus,
    StoredCertificate,
    User,
    certificate_emails,
)
from smimekit.store.deliveries import DeliveryRecords
from smimekit.store.gateway_keys import GatewayKeyRecords, GatewayKeyRow
from smimekit.store.harvested import HarvestedCertificate, HarvestedRecords, Recorded
from smimekit.store.identities import IdentityRecords, KnownIdentity
from smimekit.store.keys import KeyRecords, StoredKey
from smimekit.store.revocation import PublishedCrl, Revocation, RevocationRecords

__all__ = [
    "DB_FILENAME",
    "GatewayKeyRow",
    "HarvestedCertificate",
    "IssuedRecord",
    "IssuedStatus",
    "KnownIdentity",
    "PublishedCrl",
    "Recorded",
    "Revocation",
    "Store",
    "StoredCertificate",
    "StoredKey",
    "User",
    "certificate_emails",
]


class Store(CertificateRecords, RevocationRecords, KeyRecords, HarvestedRecords, IdentityRecords,
            DeliveryRecords, GatewayKeyRecords, AuditRecords):
    """Certificates, keys, users, revocations, harvested certificates and the audit log, in
    one database.

    Open with :meth:`open`; close with :meth:`close` (or use it as a context manager).
    """
