"""The ``store`` source: encryption certificates our own CA issued (the store's records).

What it gives: every encryption (or ``both``) certificate issued to the address that was not
replaced by a renewal, with our issuing CA certificate as its chain. Revoked and expired ones
are given too, so that a lookup can say *why* the address has nothing usable ("revoked",
"expired") instead of "nothing here"; the resolver refuses them as it refuses any candidate.

:func:`our_ca_revocation` hands the resolver what the CA itself knows of revocation (its
newest CRL from the store and the root's CRL), so that a revocation is seen at once, without
the network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from smimekit.directory.sources import Candidate, Found
from smimekit.errors import CAError, DirectoryError, StoreError

if TYPE_CHECKING:
    from smimekit.ca.home import CAHome
    from smimekit.config import Config
    from smimekit.store import Store

__all__ = ["StoreSource", "our_ca_chain", "our_ca_revocation"]

log = logging.getLogger(__name__)

ENCRYPTING_PURPOSES = ("encrypt", "both")


class StoreSource:
    """Certificates our CA issued, from its store (see the module docstring)."""

    name = "store"

    def __init__(self, store: Store, chain: tuple[x509.Certificate, ...] = ()) -> None:
        self.store = store
        self.chain = chain
        """Our issuing CA certificate (and root), sent along with every candidate."""

    @classmethod
    def from_config(cls, config: Config, *, store: Store | None, data_dir: Path
                    ) -> StoreSource | None:
        """The source over ``store``; None without a store (nothing to ask)."""
        if store is None:
            return None
        return cls(store, our_ca_chain(data_dir))

    def find(self, address: str) -> Found:
        """The encryption certificates issued to ``address`` and not replaced since.

        Raises:
            DirectoryError: the store cannot be read.
        """
        try:
            records = self.store.issued_for(address)
            found: list[Candidate] = []
            for record in records:
                if record.renewed_by is not None or record.purpose not in ENCRYPTING_PURPOSES:
                    continue
                stored = self.store.get_certificate(record.fingerprint)
                if stored is None:  # pragma: no cover - the schema ties them together
                    continue
                found.append(Candidate(
                    certificate=stored.certificate, source=self.name, chain=self.chain,
                    where=f"issued by our CA on {record.issued_at:%Y-%m-%d}",
                    first_seen=record.issued_at))
        except StoreError as exc:
            raise DirectoryError(f"cannot read the store: {exc}", source=self.name) from None
        return Found(found)


def _ca_home(data_dir: Path) -> CAHome | None:
    from smimekit.ca.home import CAHome

    home = CAHome(data_dir)
    return home if home.exists() else None


def our_ca_chain(data_dir: Path) -> tuple[x509.Certificate, ...]:
    """The issuing CA and root certificates of the CA in ``data_dir``; none without one (or
    when they cannot be read: logged)."""
    home = _ca_home(data_dir)
    if home is None:
        return ()
    try:
        return (home.certificate("issuing"), home.certificate("root"))
    except CAError as exc:
        log.warning("the CA's certificates are not sent along", extra={"error": str(exc)})
        return ()


def our_ca_revocation(store: Store | None, data_dir: Path) -> list[bytes]:
    """The CRLs our CA has published (DER): the issuing CA's newest from the store, and the
    root's from the CA folder; none without a CA. Never raises: a CRL that cannot be read
    leaves revocation to the network and the cache, as for anyone else's certificate."""
    home = _ca_home(data_dir)
    if home is None:
        return []
    crls: list[bytes] = []
    try:
        crls.append(home.root_crl())
        if store is not None:
            issuing = home.certificate("issuing")
            from cryptography.hazmat.primitives import hashes

            latest = store.latest_crl(issuing.fingerprint(hashes.SHA256()).hex())
            if latest is not None and latest.der is not None:
                crls.append(latest.der)
    except (CAError, StoreError) as exc:
        log.warning("our CA's CRLs not used", extra={"error": str(exc)})
    return crls
