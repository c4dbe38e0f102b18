"""What path validation needs to know about one certificate, worked out once.

The same CA certificates arrive with every message (freshly parsed each time), so the facts
are cached by certificate value: names prepared for comparison, the extensions path
validation acts on, encoding defects, key strength, and signature checks per
(certificate, issuer) pair. :class:`CertInfo` compares by identity, which makes it a cheap
cache key for whole-chain results.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtensionOID

from smimekit.cms.asn1 import reason
from smimekit.cms.keyinfo import CERTIFICATE_ERRORS
from smimekit.dn import display_name
from smimekit.keys.kinds import (
    ML_DSA_OIDS,
    ML_KEM_OIDS,
    certificate_public_key,
    is_dsa_public_key,
    is_ml_dsa_public_key,
    unsupported_pq_algorithm,
)
from smimekit.validation.names import NameKey, name_key
from smimekit.validation.policies import policy_mappings

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
_WEAK_HASHES = (hashes.SHA1, hashes.MD5)
_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")  # OID 1.2.840.10045.2.1
_ED25519 = "1.3.101.112"

# Extensions whose content path validation (or revocation checking) acts on: a critical one
# is fine. Any other critical extension rejects the certificate (RFC 5280 6.1.3 / 6.1.4 (o)),
# including those RFC 5280 requires to be non-critical (AKI, SKI, AIA, SIA, freshestCRL).
PROCESSED = frozenset(
    oid.dotted_string
    for oid in (
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_MAPPINGS,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.INHIBIT_ANY_POLICY,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
    )
)

_E = TypeVar("_E", bound=x509.ExtensionType)


@dataclass(frozen=True, eq=False)
class CertInfo:
    """Facts about one certificate; identity-compared (one object per cached certificate)."""

    cert: x509.Certificate
    subject: NameKey
    issuer: NameKey
    self_issued: bool
    """Subject and issuer name match (RFC 5280 6.1: exempt from some counters)."""
    spki: bytes | None
    """SubjectPublicKeyInfo DER; None when the key cannot be loaded."""
    not_before: dt.datetime
    not_after: dt.datetime
    v3: bool
    defect: str | None
    """Why the certificate cannot be processed at all (malformed extensions...), if so."""
    key_error: str | None
    """The public key cannot be used at all."""
    weak_key: str | None
    """The key is below the S/MIME floor (refused unless legacy)."""
    weak_hash: str | None
    """The certificate is signed with SHA-1 or MD5 (refused unless legacy)."""
    critical_unknown: tuple[str, ...]
    """Critical extensions nothing here processes."""
    extensions: Mapping[str, x509.Extension[x509.ExtensionType]]
    mappings: tuple[tuple[str, str], ...] | None
    """policyMappings (issuer, subject) pairs, which pyca/cryptography does not parse."""
    ski: bytes | None
    aki: bytes | None

    def get(self, cls: type[_E]) -> _E | None:
        ext = self.extensions.get(cls.oid.dotted_string)
        return ext.value if ext is not None and isinstance(ext.value, cls) else None

    @functools.cached_property
    def basic_constraints(self) -> x509.BasicConstraints | None:
        return self.get(x509.BasicConstraints)

    @functools.cached_property
    def key_usage(self) -> x509.KeyUsage | None:
        return self.get(x509.KeyUsage)

    @functools.cached_property
    def ext_key_usage(self) -> x509.ExtendedKeyUsage | None:
        return self.get(x509.ExtendedKeyUsage)

    @functools.cached_property
    def is_rsa(self) -> bool:
        try:
            return isinstance(certificate_public_key(self.cert), rsa.RSAPublicKey)
        except (ValueError, UnsupportedAlgorithm):
            return False

    @functools.cached_property
    def is_ml_dsa(self) -> bool:
        """An ML-DSA key (RFC 9881): signs, never receives mail."""
        return self.cert.public_key_algorithm_oid.dotted_string in ML_DSA_OIDS

    @functools.cached_property
    def is_ml_kem(self) -> bool:
        """An ML-KEM key (RFC 9935, any parameter set): receives mail, never signs."""
        return self.cert.public_key_algorithm_oid.dotted_string in ML_KEM_OIDS

    def name(self) -> str:
        return readable_name(self.cert, "subject") or "(empty subject)"


def readable_name(cert: x509.Certificate, which: str) -> str:
    """The certificate's ``subject`` or ``issuer`` for people (:func:`display_name`), or
    ``(undecodable subject)`` when it cannot be decoded."""
    try:
        return display_name(getattr(cert, which))
    except CERTIFICATE_ERRORS:
        return f"(undecodable {which})"


@functools.lru_cache(maxsize=4096)
def cert_info(cert: x509.Certificate) -> CertInfo:
    """The (cached) facts about ``cert``; never raises for a hostile certificate."""
    subject, subject_defect = _name_key(cert, "subject")
    issuer, issuer_defect = _name_key(cert, "issuer")
    key_error = weak_key = None
    spki: bytes | None = None
    try:
        key = certificate_public_key(cert)
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        weak_key = _weak_key(key)
    except (ValueError, UnsupportedAlgorithm) as exc:
        missing = unsupported_pq_algorithm(cert.public_key_algorithm_oid.dotted_string)
        key_error = (
            f"{missing} public keys are not supported"
            if missing
            else f"unusable public key ({exc})"
        )
    try:
        alg = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        alg = None
    weak_hash = alg.name.upper() if isinstance(alg, _WEAK_HASHES) else None
    extensions: dict[str, x509.Extension[x509.ExtensionType]] = {}
    defect = subject_defect or issuer_defect
    try:
        extensions = {ext.oid.dotted_string: ext for ext in cert.extensions}
    except CERTIFICATE_ERRORS as exc:
        defect = defect or f"malformed extensions ({exc})"
    defect = defect or _der_defect(cert)
    mappings = None
    pm = extensions.get(ExtensionOID.POLICY_MAPPINGS.dotted_string)
    if pm is not None and isinstance(pm.value, x509.UnrecognizedExtension):
        try:
            mappings = tuple(policy_mappings(pm.value.value))
        except ValueError as exc:
            defect = defect or str(exc)
    ski_ext = extensions.get(ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string)
    aki_ext = extensions.get(ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string)
    return CertInfo(
        cert=cert,
        subject=subject,
        issuer=issuer,
        self_issued=subject == issuer,
        spki=spki,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        v3=cert.version is x509.Version.v3,
        defect=defect,
        key_error=key_error,
        weak_key=weak_key,
        weak_hash=weak_hash,
        critical_unknown=tuple(
            ext.oid._name if ext.oid._name != "Unknown OID" else oid
            for oid, ext in extensions.items()
            if ext.critical and oid not in PROCESSED
        ),
        extensions=extensions,
        mappings=mappings,
        ski=ski_ext.value.digest
        if ski_ext is not None and isinstance(ski_ext.value, x509.SubjectKeyIdentifier)
        else None,
        aki=aki_ext.value.key_identifier
        if aki_ext is not None and isinstance(aki_ext.value, x509.AuthorityKeyIdentifier)
        else None,
    )


def _name_key(cert: x509.Certificate, which: str) -> tuple[NameKey, str | None]:
    """The comparable form of the certificate's subject or issuer, and None; or, when it
    cannot be decoded, a key no other name has (such a certificate is nobody's issuer and
    names no issuer: it cannot take a place in a path) and the defect."""
    try:
        return name_key(getattr(cert, which)), None
    except CERTIFICATE_ERRORS as exc:
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        return (frozenset({(f"undecodable {which}", fingerprint)}),), \
            f"malformed {which} ({reason(exc)})"


def _weak_key(key: object) -> str | None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"{key.key_size}-bit key is too weak (at least {MIN_RSA_BITS})"
    if is_dsa_public_key(key):
        return f"{key.key_size}-bit DSA key is a legacy algorithm, refused by default"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.key_size < MIN_EC_BITS:
        return f"{key.curve.name} key is too weak (at least {MIN_EC_BITS} bits)"
    return None


def _tlv(data: bytes, offset: int) -> tuple[int, int]:
    """(start of contents, end) of the DER element at ``offset``."""
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return start, start + length


def _der_defect(cert: x509.Certificate) -> str | None:
    """Encoding rules pyca/cryptography does not enforce when loading."""
    try:
        der = cert.public_bytes(serialization.Encoding.DER)
        body, _ = _tlv(der, 0)
        tbs_body, tbs_end = _tlv(der, body)
        outer = der[tbs_end : _tlv(der, tbs_end)[1]]
        offset = tbs_body
        if der[offset] == 0xA0:  # version
            offset = _tlv(der, offset)[1]
        offset = _tlv(der, offset)[1]  # serialNumber
        inner_end = _tlv(der, offset)[1]
        if der[offset:inner_end] != outer:  # RFC 5280 4.1.1.2
            return "signatureAlgorithm differs from the signature field of the certificate"
        offset = inner_end
        for _ in range(3):  # issuer, validity, subject
            offset = _tlv(der, offset)[1]
        spki_body, _ = _tlv(der, offset)
        alg_body, alg_end = _tlv(der, spki_body)
        oid_end = _tlv(der, alg_body)[1]
        if der[alg_body:oid_end] == _EC_PUBLIC_KEY and oid_end < alg_end and der[oid_end] != 0x06:
            # RFC 5480 2.1.1: namedCurve only; explicit parameters are how CVE-2020-0601
            # passed off an attacker's key as a CA's.
            return "EC public key with explicit curve parameters (RFC 5480 2.1.1)"
    except IndexError:
        return "the certificate encoding cannot be walked"
    return None


@functools.lru_cache(maxsize=4096)
def signed_by(child: CertInfo, issuer: CertInfo) -> bool:
    """Whether ``issuer``'s key verifies ``child``'s signature (any hash: the hash policy is
    checked separately, so that a SHA-1 path is reported as such rather than as no path)."""
    cert = child.cert
    try:
        key = certificate_public_key(issuer.cert)
        params = cert.signature_algorithm_parameters
        alg = cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        return False
    signature, data = cert.signature, cert.tbs_certificate_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if alg is None or not isinstance(params, padding.PKCS1v15 | padding.PSS):
                return False
            key.verify(signature, data, params, alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(signature, data, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            is_ed25519 = cert.signature_algorithm_oid.dotted_string == _ED25519
            if alg is not None or is_ed25519 != isinstance(key, ed25519.Ed25519PublicKey):
                return False
            key.verify(signature, data)
        elif is_dsa_public_key(key):
            if alg is None or params is not None:
                return False
            key.verify(signature, data, alg)
        elif is_ml_dsa_public_key(key):
            if not ml_dsa_matches(key, cert.signature_algorithm_oid.dotted_string):
                return False
            key.verify(signature, data)  # pure ML-DSA, empty context (RFC 9881 3)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def ml_dsa_matches(key: object, signature_oid: str) -> bool:
    """Whether ``signature_oid`` names the ML-DSA parameter set of ``key`` (a signature made
    with one set is never checked with another's OID)."""
    from smimekit.keys.kinds import key_algorithm_name

    return ML_DSA_OIDS.get(signature_oid) == key_algorithm_name(key)
