"""What the checks of ``smimekit assess`` read, loaded once per assessment (checks.py).

Only reads: the CA directory, the store (users, certificates, issuance records, the audit
log) and the archives through archive/classify.py's ``scan`` (no key is used).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from smimekit.audit.model import DrillReport
from smimekit.config import Config
from smimekit.store import Store, schema


def utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Cert:
    """A certificate in the store with what the checks need of it."""

    fingerprint: str
    cert: x509.Certificate
    emails: tuple[str, ...]
    source: str


@dataclass
class Facts:
    """What the checks read, loaded once per assessment."""

    data_dir: Path
    store: Store
    config: Config
    at: dt.datetime
    domains: tuple[str, ...]
    archives: tuple[Path, ...] = ()
    drill: DrillReport | None = None
    scans: list[dict[str, Any]] = field(default_factory=list)

    # -- the CA ------------------------------------------------------------------------

    @cached_property
    def home(self) -> Any:
        from smimekit.ca.home import CAHome

        home = CAHome(self.data_dir)
        return home if home.exists() else None

    @cached_property
    def ca_certs(self) -> dict[str, x509.Certificate]:
        if self.home is None:
            return {}
        return {name: self.home.certificate(name) for name in ("root", "issuing")}

    @cached_property
    def issuing_fingerprint(self) -> str | None:
        issuing = self.ca_certs.get("issuing")
        return issuing.fingerprint(hashes.SHA256()).hex() if issuing else None

    def ours(self, cert: x509.Certificate) -> bool:
        return any(cert.issuer == ca.subject for ca in self.ca_certs.values())

    # -- the store ---------------------------------------------------------------------

    @cached_property
    def users(self) -> list[tuple[str, str | None, str | None]]:
        u = schema.users
        with self.store.read() as conn:
            rows = conn.execute(select(u.c.email, u.c.name, u.c.department)
                                .order_by(u.c.email)).all()
        return [(row[0].lower(), row[1], row[2]) for row in rows]

    @cached_property
    def certificates(self) -> list[Cert]:
        c = schema.certificates
        with self.store.read() as conn:
            rows = conn.execute(select(c.c.fingerprint, c.c.der, c.c.emails, c.c.source)).all()
        out = []
        for fp, der, emails, source in rows:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                continue
            out.append(Cert(fp, cert, tuple(e.lower() for e in json.loads(emails)), source))
        return out

    @cached_property
    def issued(self) -> list[Any]:
        return self.store.issued_records(live_only=False)

    @cached_property
    def live_issued(self) -> list[Any]:
        return [r for r in self.issued if r.revoked_at is None and r.renewed_by is None
                and utc(r.not_after) > self.at]

    @cached_property
    def revoked_fingerprints(self) -> set[str]:
        return {r.fingerprint for r in self.issued if r.revoked_at is not None}

    @cached_property
    def audit(self) -> list[Any]:
        return self.store.audit_entries()

    def internal(self, email: str) -> bool:
        domain = email.rpartition("@")[2].lower()
        return any(domain == d or domain.endswith("." + d) for d in self.domains)

    def host_inside(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in ("localhost", "127.0.0.1", "::1") or any(
            host == d or host.endswith("." + d) for d in self.domains)

    def in_use(self, cert: x509.Certificate) -> bool:
        return utc(cert.not_valid_before_utc) <= self.at < utc(cert.not_valid_after_utc)

    @cached_property
    def internal_in_use(self) -> list[Cert]:
        """Unexpired certificates in the store for internal addresses, not revoked by us."""
        return [c for c in self.certificates
                if c.source != "harvested" and self.in_use(c.cert)
                and c.fingerprint not in self.revoked_fingerprints
                and any(self.internal(e) for e in c.emails)]
