"""Certificate revocation lists of our CA (RFC 5280 section 5, S/MIME BR 4.9.7 and 7.2).

:func:`build_crl` writes the TBSCertList as DER itself and has the CA's
:class:`~smimekit.keys.signer.Signer` sign it, so a key held in a PKCS#11 token signs the same
way as a software key. ``cryptography``'s ``CertificateRevocationListBuilder`` copies its entry
list on every ``add_revoked_certificate`` (quadratic: 100,000 entries took 15 s); even fed the
whole list at once it needs about twice the time of the DER writer here. The result is parsed
back with ``cryptography`` and its signature checked against the issuer's key before it is
returned.

The BR rules followed: a CRL for subscriber certificates has ``nextUpdate`` at most ten days
after ``thisUpdate`` (4.9.7; twelve months for a CRL of CA certificates); a reasonCode entry
extension is never critical and never says ``unspecified`` (the reason is left out instead);
certificateHold is never used (7.2.2); entries for CA certificates carry a reason (7.2.2).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from smimekit.cms import der
from smimekit.errors import CAError
from smimekit.keys.signer import Signer, hash_for

if TYPE_CHECKING:
    from smimekit.store.db import Revocation

__all__ = [
    "CA_CRL_MAX_VALIDITY",
    "CRL_MAX_VALIDITY",
    "REASONS",
    "build_crl",
    "parse_reason",
    "reason_flag",
]

REASONS: Mapping[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
"""The revocation reasons we record, by their command-line names. certificateHold is not
offered: the BR forbid it for Strict certificates (7.2.2) and we never suspend."""

CRL_MAX_VALIDITY = dt.timedelta(days=10)
"""S/MIME BR 4.9.7: nextUpdate of a CRL for subscriber certificates."""
CA_CRL_MAX_VALIDITY = dt.timedelta(days=365)
"""S/MIME BR 4.9.7: nextUpdate of a CRL for subordinate CA certificates (twelve months)."""

_MAX_SERIAL = 1 << 159  # RFC 5280 4.1.2.2 / 5.2.3: at most 20 octets, positive


def _normalised(text: str) -> str:
    return text.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


_BY_NORMALISED = {_normalised(name): name for name in REASONS}


def parse_reason(text: str) -> str:
    """The command-line name of the reason ``text`` names.

    Case, ``-`` and ``_`` do not matter, so RFC 5280's ``keyCompromise`` is accepted too.

    Raises:
        CAError: not one of :data:`REASONS` (certificateHold among them), with the valid names.
    """
    name = _BY_NORMALISED.get(_normalised(text))
    if name is None:
        raise CAError(
            f"unknown revocation reason {text!r}; use one of: {', '.join(REASONS)}"
            + (" (certificate-hold is not offered: S/MIME BR 7.2.2)"
               if _normalised(text) == "certificatehold" else "")
        )
    return name


def reason_flag(reason: str | None) -> x509.ReasonFlags | None:
    """The :class:`~cryptography.x509.ReasonFlags` of a recorded reason; None for none or
    ``unspecified`` (which the BR want left out of CRLs and OCSP responses alike).

    Raises:
        CAError: the reason is not one of :data:`REASONS`.
    """
    if reason is None:
        return None
    flag = REASONS[parse_reason(reason)]
    return None if flag is x509.ReasonFlags.unspecified else flag


def _time(when: dt.datetime) -> bytes:
    # RFC 5280 5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050; always UTC, whole
    # seconds (strftime drops the fraction).
    if when.tzinfo is None:
        raise CAError("CRL times must be timezone-aware")
    when = when.astimezone(dt.UTC)
    if when.year < 2050:
        return der.tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return der.tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def _extension(extension: x509.ExtensionType) -> bytes:
    # Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE (left out), extnValue }
    return der.seq(der.oid(extension.oid.dotted_string), der.octets(extension.public_bytes()))


_ML_DSA_OIDS = (
    (mldsa.MLDSA44PublicKey, "2.16.840.1.101.3.4.3.17"),
    (mldsa.MLDSA65PublicKey, "2.16.840.1.101.3.4.3.18"),
    (mldsa.MLDSA87PublicKey, "2.16.840.1.101.3.4.3.19"),
)


def _signature_algorithm(public: CertificateIssuerPublicKeyTypes) -> bytes:
    """The AlgorithmIdentifier of what :meth:`Signer.sign` makes for this key type."""
    digest = hash_for(public)
    if isinstance(public, rsa.RSAPublicKey):
        # sha256WithRSAEncryption, parameters NULL (RFC 4055 5)
        return der.seq(der.oid("1.2.840.113549.1.1.11"), b"\x05\x00")
    if isinstance(public, ec.EllipticCurvePublicKey):
        # ecdsa-with-SHA256 / -SHA384, parameters absent (RFC 5758 3.2)
        dotted = "1.2.840.10045.4.3.3" if isinstance(digest, hashes.SHA384) else (
            "1.2.840.10045.4.3.2")
        return der.seq(der.oid(dotted))
    if isinstance(public, ed25519.Ed25519PublicKey):
        return der.seq(der.oid("1.3.101.112"))  # RFC 8410 3
    # id-ml-dsa-44/65/87, parameters absent (RFC 9881 2; BR 7.1.3.2 as amended by SMC013)
    for kind, dotted in _ML_DSA_OIDS:
        if isinstance(public, kind):
            return der.seq(der.oid(dotted))
    raise CAError(f"a {type(public).__name__} CA key cannot sign CRLs here")


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # RFC 5280 5.2.1: the key identifier of the issuer's key, as its SKI says when present.
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _check_issuer(issuer: x509.Certificate, signer: Signer) -> None:
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.crl_sign:
        raise CAError("the issuer's key usage does not allow cRLSign (RFC 5280 4.2.1.3)")
    try:
        same = signer.public_key() == issuer.public_key()
    except (TypeError, UnsupportedAlgorithm):
        same = False
    if not same:
        raise CAError("the signer's key is not the key of the issuer's certificate")


def _serial(text: str) -> int:
    try:
        serial = int(text, 16)
    except ValueError:
        raise CAError(f"revoked serial {text!r} is not hexadecimal") from None
    if not 0 < serial < _MAX_SERIAL:
        raise CAError(f"revoked serial {text!r} is not a positive number of at most 20 octets")
    return serial


def build_crl(
    issuer: x509.Certificate,
    signer: Signer,
    revoked: Sequence[Revocation],
    *,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    for_ca_certificates: bool = False,
) -> x509.CertificateRevocationList:
    """A complete v2 CRL of ``issuer`` listing ``revoked``, signed by ``signer``.

    The CRL carries the authorityKeyIdentifier and cRLNumber ``number`` (both non-critical,
    RFC 5280 5.2.1, 5.2.3); each entry the serial, the revocation date and, unless the
    reason is none or ``unspecified``, a non-critical reasonCode (S/MIME BR 7.2.2). Entries
    are sorted by serial. Times are kept to the second. Set ``for_ca_certificates`` for a
    CRL that speaks for CA certificates (the root's): nextUpdate may then be up to twelve
    months away, and every entry must give a reason.

    Raises:
        CAError: the signer's key is not the issuer's, the issuer may not sign CRLs, a time is
            naive, ``next_update`` is not after ``this_update`` or too far (BR 4.9.7), the
            number is out of range, a serial is malformed or repeated, a reason is unknown (or
            missing where required), or the signature does not verify with the issuer's key.
    """
    _check_issuer(issuer, signer)
    if not 0 <= number < _MAX_SERIAL:
        raise CAError("the CRL number must be a non-negative integer of at most 20 octets")
    this_update = this_update.replace(microsecond=0)
    next_update = next_update.replace(microsecond=0)
    limit = CA_CRL_MAX_VALIDITY if for_ca_certificates else CRL_MAX_VALIDITY
    this_time, next_time = _time(this_update), _time(next_update)
    if next_update <= this_update:
        raise CAError("nextUpdate must be after thisUpdate")
    if next_update - this_update > limit:
        raise CAError(f"nextUpdate may be at most {limit.days} days after thisUpdate"
                      " (S/MIME BR 4.9.7)")

    reason_extensions: dict[x509.ReasonFlags, bytes] = {
        flag: der.seq(_extension(x509.CRLReason(flag))) for flag in REASONS.values()
        if flag is not x509.ReasonFlags.unspecified
    }
    # Revocations share dates and reasons: each is checked and encoded once.
    times: dict[dt.datetime, bytes] = {}
    tails: dict[str | None, bytes] = {}
    entries: list[tuple[int, bytes]] = []
    for revocation in revoked:
        serial = _serial(revocation.serial)
        tail = tails.get(revocation.reason)
        if tail is None:
            flag = reason_flag(revocation.reason)
            if flag is None and for_ca_certificates:
                raise CAError(f"serial {revocation.serial}: an entry for a CA certificate needs"
                              " a reason other than unspecified (S/MIME BR 7.2.2)")
            tail = tails[revocation.reason] = (
                reason_extensions[flag] if flag is not None else b"")
        encoded = times.get(revocation.revoked_at)
        if encoded is None:
            encoded = times[revocation.revoked_at] = _time(revocation.revoked_at)
        entries.append((serial, der.seq(der.integer(serial), encoded, tail)))
    entries.sort(key=lambda entry: entry[0])
    for (a, _), (b, _) in itertools.pairwise(entries):
        if a == b:
            raise CAError(f"serial {a:x} is listed twice")

    public = signer.public_key()
    algorithm = _signature_algorithm(public)
    extensions = der.tlv(0xA0, der.seq(
        _extension(_authority_key_identifier(issuer)),
        _extension(x509.CRLNumber(number)),
    ))
    tbs = der.seq(
        der.integer(1),  # v2
        algorithm,
        issuer.subject.public_bytes(),
        this_time,
        next_time,
        der.seq(*(body for _, body in entries)) if entries else b"",  # omitted when empty
        extensions,
    )
    signature = signer.sign(tbs)
    crl = x509.load_der_x509_crl(der.seq(tbs, algorithm, der.tlv(0x03, b"\x00" + signature)))
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise CAError("the CRL signature does not verify with the issuer's key")
    return crl
