"""Certificate paths for S/MIME: build every candidate path to a trust anchor and check it.

RFC 5280 section 6 core checks (signatures, validity, basic constraints, path length, key
usage of CAs) plus what S/MIME needs of the end entity (RFC 8550 section 4.4): the
emailProtection EKU (or no EKU, or anyExtendedKeyUsage), key usage fitting the operation,
RSA keys of at least 2048 bits, no SHA-1 or MD5 signatures, unless legacy is allowed.

Revocation, name constraints and policies come with the full validation layer.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.x509.oid import ExtendedKeyUsageOID

MAX_DEPTH = 10
MIN_RSA_BITS = 2048
_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


class Purpose(enum.Enum):
    SIGN = "sign"
    ENCRYPT = "encrypt"


@dataclass(frozen=True)
class PathResult:
    """The best path found for a certificate and what is wrong with it, if anything."""

    chain: tuple[x509.Certificate, ...]
    """End entity first, trust anchor last; empty when no anchor was reached."""
    reasons: tuple[str, ...]
    """Failures of the chain (dates, CA constraints, signatures...)."""
    usage_reasons: tuple[str, ...]
    """Failures of the end entity's key usage / EKU for the purpose."""

    @property
    def trusted(self) -> bool:
        return bool(self.chain) and not self.reasons

    @property
    def key_usage_ok(self) -> bool:
        return not self.usage_reasons

    @property
    def ok(self) -> bool:
        return self.trusted and self.key_usage_ok


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def usage_problems(cert: x509.Certificate, purpose: Purpose) -> list[str]:
    """Why ``cert`` may not be used to sign (or to receive) mail; empty when it may."""
    out = []
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage):
        usages = set(eku)
        if not usages & {
            ExtendedKeyUsageOID.EMAIL_PROTECTION,
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        }:
            out.append(f"{_name(cert)}: extended key usage lacks emailProtection")
    ku = _ext(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage):
        if purpose is Purpose.SIGN:
            if not (ku.digital_signature or ku.content_commitment):
                out.append(
                    f"{_name(cert)}: key usage does not allow digitalSignature or nonRepudiation"
                )
        else:
            key = cert.public_key()
            needed = ku.key_encipherment if isinstance(key, rsa.RSAPublicKey) else ku.key_agreement
            if not needed:
                what = "keyEncipherment" if isinstance(key, rsa.RSAPublicKey) else "keyAgreement"
                out.append(f"{_name(cert)}: key usage does not allow {what}")
    return out


def _cert_problems(
    cert: x509.Certificate, at: dt.datetime, allow_legacy: bool, *, is_ca: bool, anchor: bool
) -> list[str]:
    out = []
    name = _name(cert)
    if at < cert.not_valid_before_utc:
        out.append(f"{name}: not valid before {cert.not_valid_before_utc.isoformat()}")
    if at > cert.not_valid_after_utc:
        out.append(f"{name}: expired on {cert.not_valid_after_utc.isoformat()}")
    key = cert.public_key()
    if (
        isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey)
        and key.key_size < MIN_RSA_BITS
        and not allow_legacy
    ):
        out.append(f"{name}: {key.key_size}-bit key is too weak (at least {MIN_RSA_BITS})")
    if not anchor and not allow_legacy:
        try:
            alg = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            alg = None
        if isinstance(alg, _WEAK_HASHES):
            out.append(f"{name}: signed with {alg.name.upper()}, refused by default")
    if is_ca:
        bc = _ext(cert, x509.BasicConstraints)
        if isinstance(bc, x509.BasicConstraints):
            if not bc.ca:
                out.append(f"{name}: used as a CA but basicConstraints says it is not one")
        elif not anchor:
            out.append(f"{name}: used as a CA but has no basicConstraints")
        ku = _ext(cert, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
            out.append(f"{name}: used as a CA but key usage lacks keyCertSign")
        eku = _ext(cert, x509.ExtendedKeyUsage)
        if isinstance(eku, x509.ExtendedKeyUsage) and not set(eku) & {
            ExtendedKeyUsageOID.EMAIL_PROTECTION,
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        }:
            out.append(f"{name}: CA extended key usage excludes emailProtection")
    return out


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, allow_legacy: bool) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (UnsupportedAlgorithm, ValueError):
        # cryptography refuses SHA-1/MD5 certificate signatures outright ("Unsupported
        # signature algorithm"); archives may still need them.
        return allow_legacy and _legacy_issued_by(cert, issuer)
    except (TypeError, InvalidSignature):
        return False
    return True


def _legacy_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """SHA-1/MD5-signed certificates, which the high-level check no longer accepts (archives)."""
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    try:
        alg = cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and alg is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, PKCS1v15(), alg)
        elif isinstance(key, dsa.DSAPublicKey) and alg is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and alg is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(alg))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _same(a: x509.Certificate, b: x509.Certificate) -> bool:
    if a == b:
        return True
    if a.subject != b.subject:
        return False
    try:
        return a.public_key() == b.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return False


def validate(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate] = (),
    anchors: Sequence[x509.Certificate],
    at: dt.datetime | None = None,
    purpose: Purpose = Purpose.SIGN,
    allow_legacy: bool = False,
) -> PathResult:
    """Find the best path from ``leaf`` to one of ``anchors`` and check it at ``at``.

    Several candidate paths (cross-certificates, re-issued intermediates) are all tried; the
    first one without problems wins, otherwise the one with the fewest.
    """
    when = at or dt.datetime.now(dt.UTC)
    usage = tuple(usage_problems(leaf, purpose))
    if not anchors:
        return PathResult((), ("no trust anchors were given",), usage)
    pool = [c for c in intermediates if not _same(c, leaf)]
    best: tuple[tuple[x509.Certificate, ...], list[str]] | None = None

    def chain_problems(path: list[x509.Certificate]) -> list[str]:
        problems: list[str] = []
        last = len(path) - 1
        for depth, cert in enumerate(path):
            problems += _cert_problems(
                cert, when, allow_legacy, is_ca=depth > 0, anchor=depth == last
            )
        # pathLenConstraint: the number of non-self-issued CAs below each CA.
        for depth, cert in enumerate(path[1:], start=1):
            bc = _ext(cert, x509.BasicConstraints)
            if (
                isinstance(bc, x509.BasicConstraints)
                and bc.path_length is not None
                and depth - 1 > bc.path_length
            ):
                problems.append(f"{_name(cert)}: path length constraint exceeded")
        return problems

    def search(path: list[x509.Certificate]) -> bool:
        nonlocal best
        current = path[-1]
        anchor = next((a for a in anchors if _same(a, current)), None)
        if anchor is not None:
            full = [*path[:-1], anchor]
            problems = chain_problems(full)
            if best is None or len(problems) < len(best[1]):
                best = (tuple(full), problems)
            return not problems
        if len(path) > MAX_DEPTH:
            return False
        for candidate in [*anchors, *pool]:
            if candidate.subject != current.issuer or any(_same(candidate, p) for p in path):
                continue
            if _issued_by(current, candidate, allow_legacy) and search([*path, candidate]):
                return True
        return False

    search([leaf])
    if best is None:
        return PathResult(
            (),
            (
                f"no chain to a trust anchor: issuer {leaf.issuer.rfc4514_string()!r} of"
                f" {_name(leaf)} is not trusted or not found",
            ),
            usage,
        )
    return PathResult(best[0], tuple(best[1]), usage)
