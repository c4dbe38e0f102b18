"""What the data directory knows about certificates: the local CA's own chain, and the
encryption certificate our CA issued to a sender who signs with another one (dual keys).

The CA and store modules are imported only when the data directory holds a CA, so message
commands stay light for everyone else.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smimekit.errors import CAError
from smimekit.validation.recipients import can_receive_mail
from smimekit.validation.verdict import cert_emails

log = logging.getLogger(__name__)

ENCRYPTING_PURPOSES = ("encrypt", "both")


def _has_ca(data_dir: Path) -> bool:
    if not (data_dir / "ca").is_dir():
        return False
    from smimekit.ca.home import CAHome

    return CAHome(data_dir).exists()


def local_ca_chain(data_dir: Path) -> list[x509.Certificate]:
    """The issuing CA and root certificates of the data directory's CA (none without one).

    Only candidates for path building: a damaged CA directory gives none, it never fails a
    message command.
    """
    if not _has_ca(data_dir):
        return []
    from smimekit.ca.home import CAHome

    home = CAHome(data_dir)
    try:
        return [home.certificate("issuing"), home.certificate("root")]
    except CAError as exc:
        log.warning("local CA chain not used", extra={"error": str(exc)})
        return []


def issued_encryption_cert(
    signing: x509.Certificate, data_dir: Path, database_url: str | None
) -> x509.Certificate | None:
    """The newest live certificate our CA issued for receiving mail at an address of
    ``signing`` (other than ``signing`` itself) that is fit for it now; None when the data
    directory has no CA or the CA issued none.

    Raises:
        StoreError: the CA's store cannot be read.
    """
    emails = cert_emails(signing)
    if not emails or not _has_ca(data_dir):
        return None
    from smimekit.store import Store

    found: list[tuple[dt.datetime, x509.Certificate]] = []
    own = signing.fingerprint(hashes.SHA256()).hex()
    with Store.open(database_url, data_dir) as store:
        for email in emails:
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
