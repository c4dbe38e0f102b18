"""The trust store: the anchors an organisation decides to trust, kept in its data directory.

One PEM file per anchor under ``<data-dir>/trust/``, named by its SHA-256 fingerprint; the
directory is 0700 and files 0600, written atomically. Nothing is trusted implicitly: the
system CA bundle is imported only when asked (``smimekit trust add --system``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from smimekit.dn import display_name
from smimekit.errors import KeyLoadError, TrustStoreError
from smimekit.fsutil import atomic_write

SYSTEM_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/cert.pem"),  # Alpine, macOS
)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return cert.issuer == cert.subject  # a v1 self-signed root
    return bc.ca


class TrustStore:
    """Anchors in ``<data_dir>/trust``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "trust"

    def _ensure(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise TrustStoreError(f"cannot create {self.path}: {exc.strerror or exc}") from None

    def anchors(self) -> list[x509.Certificate]:
        """Every anchor in the store (none when the store does not exist yet)."""
        if not self.path.is_dir():
            return []
        out = []
        for file in sorted(self.path.glob("*.pem")):
            try:
                out.append(x509.load_pem_x509_certificate(file.read_bytes()))
            except (OSError, ValueError) as exc:
                raise TrustStoreError(f"unreadable anchor {file}: {exc}") from None
        return out

    def add(
        self, certs: Iterable[x509.Certificate], *, allow_end_entity: bool = False
    ) -> list[tuple[x509.Certificate, bool]]:
        """Add anchors; returns (certificate, newly added). Atomic per file.

        Raises:
            TrustStoreError: an end-entity certificate without ``allow_end_entity``.
        """
        certs = list(certs)
        for cert in certs:
            if not allow_end_entity and not _is_ca(cert):
                raise TrustStoreError(
                    f"{display_name(cert.subject)} is not a CA certificate; trusting an end"
                    " entity directly needs --allow-end-entity"
                )
        self._ensure()
        result = []
        for cert in certs:
            target = self.path / f"{fingerprint(cert)}.pem"
            if target.exists():
                result.append((cert, False))
                continue
            try:
                atomic_write(target, cert.public_bytes(serialization.Encoding.PEM))
            except OSError as exc:
                raise TrustStoreError(f"cannot write {target}: {exc.strerror or exc}") from None
            result.append((cert, True))
        return result

    def find(self, prefix: str) -> x509.Certificate:
        """The one anchor whose fingerprint starts with ``prefix`` (hex, colons ignored)."""
        wanted = prefix.replace(":", "").lower()
        if len(wanted) < 8:
            raise TrustStoreError("give at least 8 hex digits of the fingerprint")
        matches = [c for c in self.anchors() if fingerprint(c).startswith(wanted)]
        if not matches:
            raise TrustStoreError(f"no trust anchor with fingerprint {prefix}")
        if len(matches) > 1:
            raise TrustStoreError(f"fingerprint prefix {prefix} is ambiguous; give more digits")
        return matches[0]

    def remove(self, prefix: str) -> x509.Certificate:
        cert = self.find(prefix)
        try:
            (self.path / f"{fingerprint(cert)}.pem").unlink()
        except OSError as exc:
            raise TrustStoreError(f"cannot remove the anchor: {exc.strerror or exc}") from None
        return cert


def system_bundle() -> list[x509.Certificate]:
    """The operating system's CA bundle (for the opt-in ``trust add --system``)."""
    for path in SYSTEM_BUNDLES:
        if path.is_file():
            try:
                return list(x509.load_pem_x509_certificates(path.read_bytes()))
            except ValueError as exc:
                raise KeyLoadError(f"cannot read the system bundle {path}: {exc}") from None
    raise TrustStoreError(
        "no system CA bundle found (" + ", ".join(str(p) for p in SYSTEM_BUNDLES) + ")"
    )
