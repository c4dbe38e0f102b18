"""Small bridges between ``cryptography`` certificates/keys and asn1crypto identifiers.

Certificates are immutable and hash by their DER, so what is derived from one alone is
remembered (verification derives the same identifiers for the same signers again and again).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from smimekit.cms import der as dertools
from smimekit.keys.kinds import certificate_public_key

DER = serialization.Encoding.DER


@functools.lru_cache(maxsize=1024)
def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(DER)


def asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert_der(cert))


def issuer_and_serial(cert: x509.Certificate) -> cms.IssuerAndSerialNumber:
    return cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_x509.Name.load(cert.issuer.public_bytes()),
            "serial_number": cert.serial_number,
        }
    )


@functools.lru_cache(maxsize=1024)
def subject_key_id(cert: x509.Certificate) -> bytes:
    """The certificate's SKI, or the RFC 5280 method-1 value when the extension is absent."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ext.value.digest
    except x509.ExtensionNotFound:
        public = certificate_public_key(cert)
        return x509.SubjectKeyIdentifier.from_public_key(public).digest  # type: ignore[arg-type,unused-ignore]


def public_key_fingerprint(key: PublicKeyTypes) -> bytes:
    raw = key.public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(raw).digest()


def key_matches_cert(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    return (public_key_fingerprint(key.public_key())
            == public_key_fingerprint(certificate_public_key(cert)))


def matches_issuer_serial(ias: Any, cert: x509.Certificate) -> bool:
    """True when an asn1crypto IssuerAndSerialNumber names ``cert``.

    The issuer is compared by its exact DER, as every implementation copies it from the
    certificate: the identifier is not covered by any signature, so a looser comparison
    would let a changed byte pass unnoticed.
    """
    # The identifier's own bytes, as received: asn1crypto re-frames a mis-tagged Name.
    return bool(ias.dump() == issuer_and_serial_der(cert))


@functools.lru_cache(maxsize=1024)
def issuer_and_serial_der(cert: x509.Certificate) -> bytes:
    """DER of the IssuerAndSerialNumber naming ``cert`` (written directly: this is hot)."""
    return dertools.seq(cert.issuer.public_bytes(), dertools.integer(cert.serial_number))


def matches_ski(ski: bytes, cert: x509.Certificate) -> bool:
    return ski == subject_key_id(cert)
