"""What the data directory knows about certificates: the local CA's own chain, and the
encryption certificate our CA issued to a sender who signs with another one (dual keys).

Message commands call these on every run, so nothing heavy is imported here: the CA's
certificates are read as files (the layout of :mod:`smimekit.ca.home`), and the store is
the caller's, opened only when the data directory holds a CA.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smimekit.validation.recipients import can_receive_mail
from smimekit.validation.verdict import cert_emails

if TYPE_CHECKING:
    from smimekit.store import Store

log = logging.getLogger(__name__)

ENCRYPTING_PURPOSES = ("encrypt", "both")
# <data-dir>/ca as CAHome writes it: ca.json marks a complete CA (created all or nothing).
_CA_DIR, _CA_CONFIG, _CA_CHAIN = "ca", "ca.json", ("issuing.pem", "root.pem")


def has_ca(data_dir: Path) -> bool:
    """True when ``ca init`` has run in ``data_dir``."""
    return (Path(data_dir) / _CA_DIR / _CA_CONFIG).is_file()


def local_ca_chain(data_dir: Path) -> list[x509.Certificate]:
    """The issuing CA and root certificates of the data directory's CA (none without one).

    Only candidates for path building: an unreadable file gives none, it never fails a
    message command.
    """
    if not has_ca(data_dir):
        return []
    certs = []
    for name in _CA_CHAIN:
        path = Path(data_dir) / _CA_DIR / name
        try:
            certs.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning("local CA certificate not used", extra={"file": str(path),
                                                                 "error": str(exc)})
    return certs


def issued_encryption_cert(signing: x509.Certificate, store: Store) -> x509.Certificate | None:
    """The newest live certificate our CA issued (per ``store``) for receiving mail at an
    address of ``signing``, other than ``signing`` itself, that is fit for it now; None
    when there is none.

    Raises:
        StoreError: the store cannot be read.
    """
    own = signing.fingerprint(hashes.SHA256()).hex()
    found: list[tuple[dt.datetime, x509.Certificate]] = []
    for email in cert_emails(signing):
        for record in store.issued_for(email):
            if (
                not record.live
                or record.purpose not in ENCRYPTING_PURPOSES
                or record.fingerprint == own
            ):
                continue
            stored = store.get_certificate(record.fingerprint)
            if stored is not None and can_receive_mail(stored.certificate):
                found.append((record.issued_at, stored.certificate))
    if not found:
        return None
    return max(found, key=lambda item: item[0])[1]
