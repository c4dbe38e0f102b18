"""Sealing private keys for the store: CMS AuthEnvelopedData (AES-256-GCM) to a vault key.

A user's encryption keys must outlive their certificates (old mail stays readable), so the CA
keeps them, sealed to the vault certificate with smimekit's own CMS engine. Only the vault's
private key opens them; :mod:`smimekit.ca.home` keeps that key encrypted at rest (and the
escrow issue splits it among recovery officers). Signing keys are never sealed here.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from smimekit.cms.algorithms import Cipher
from smimekit.cms.enveloped import decrypt_enveloped, encrypt_enveloped
from smimekit.errors import CAError, SmimeError

__all__ = ["KeyVault"]


class KeyVault:
    """Seals and opens private keys; ``key`` None means seal-only."""

    def __init__(self, cert: x509.Certificate, key: PrivateKeyTypes | None = None) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, organization: str, *, now: dt.datetime | None = None) -> KeyVault:
        """A fresh P-384 vault key and its self-signed certificate (internal use only)."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                          x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"{organization} smimekit key vault")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365 * 50))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA384())
        )
        return cls(cert, key)

    def seal(self, key: PrivateKeyTypes) -> bytes:
        """``key`` as PKCS#8 inside an AuthEnvelopedData to the vault (DER)."""
        pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        return encrypt_enveloped(pkcs8, [self.cert], cipher=Cipher.AES256_GCM)

    def open(self, sealed: bytes, cert: x509.Certificate | None = None) -> PrivateKeyTypes:
        """The private key in ``sealed``; with ``cert``, it must be that certificate's key.

        Raises:
            CAError: the vault is locked (no private key), or the record does not open or
                does not belong to ``cert`` (damaged or tampered).
        """
        if self.key is None:
            raise CAError("the key vault is locked: its private key is not here (under escrow,"
                          " it comes back only with the officers' shares)")
        try:
            plain = decrypt_enveloped(sealed, [(self.key, self.cert)]).content
            key = serialization.load_der_private_key(plain, None)
        except (SmimeError, ValueError, TypeError):
            raise CAError("a sealed key record does not open: damaged or tampered") from None
        if cert is not None and key.public_key() != cert.public_key():
            raise CAError("a sealed key record does not belong to its certificate: tampered")
        return key
