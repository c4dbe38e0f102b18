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
from smimekit.cms.asn1 import reason
from smimekit.errors import ASN1Error
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


# What cryptography raises from the first use of a malformed certificate's subject, issuer or
# extensions: it loads a certificate without decoding them, so these surface wherever the
# certificate is first asked (a duplicated extension, an x400Address in a subjectAltName, a
# bad UTF8String, a BIT STRING in a name attribute that is not x500UniqueIdentifier).
CERTIFICATE_ERRORS = (ValueError, TypeError, x509.DuplicateExtension,
                      x509.UnsupportedGeneralNameType)


@functools.lru_cache(maxsize=1024)
def certificate_defect(cert: x509.Certificate) -> str | None:
    """What makes ``cert`` unreadable (its subject, issuer or extensions cannot be decoded),
    or None. Decodes all three, so that nothing raises from them later."""
    for what in ("subject", "issuer", "extensions"):
        try:
            getattr(cert, what)
        except CERTIFICATE_ERRORS as exc:
            return f"its {what} cannot be decoded ({reason(exc)})"
    return None


@functools.lru_cache(maxsize=1024)
def subject_key_id(cert: x509.Certificate) -> bytes:
    """The certificate's SKI, or the RFC 5280 method-1 value when the extension is absent.

    Raises:
        ASN1Error: the certificate's extensions cannot be decoded.
    """
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ext.value.digest
    except x509.ExtensionNotFound:
        pass
    except CERTIFICATE_ERRORS:
        raise ASN1Error(f"malformed certificate: {certificate_defect(cert)}") from None
    # RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value (unused
    # bits octet excluded), as cryptography's SubjectKeyIdentifier.from_public_key computes it,
    # but read from the bytes: a key of a type that cannot be loaded has an identifier too.
    tbs = dertools.children(cert.tbs_certificate_bytes)
    if tbs is not None:
        spki = dertools.children(tbs[6 if tbs[0][0] == 0xA0 else 5][1])
        if spki is not None and len(spki) == 2 and spki[1][0] == 0x03:
            bits = spki[1][1]
            found = dertools.read_header(bits, 0, len(bits))
            if found is not None and found[2]:
                return hashlib.sha1(bits[found[1] + 1 :]).digest()  # noqa: S324 - RFC 5280
    raise ASN1Error("malformed certificate: its subjectPublicKeyInfo cannot be read")


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
    try:
        return bool(ias.dump() == issuer_and_serial_der(cert))
    except CERTIFICATE_ERRORS:
        return False  # a certificate whose issuer cannot be decoded is named by nothing


@functools.lru_cache(maxsize=1024)
def issuer_and_serial_der(cert: x509.Certificate) -> bytes:
    """DER of the IssuerAndSerialNumber naming ``cert`` (written directly: this is hot)."""
    return dertools.seq(cert.issuer.public_bytes(), dertools.integer(cert.serial_number))


def matches_ski(ski: bytes, cert: x509.Certificate) -> bool:
    try:
        return ski == subject_key_id(cert)
    except ASN1Error:
        return False  # a certificate whose extensions cannot be decoded names no key
