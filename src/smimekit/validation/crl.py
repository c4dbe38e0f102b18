"""What a CRL says about a certificate (RFC 5280 sections 5 and 6.3), with delta CRLs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from smimekit.errors import RevocationError
from smimekit.validation.revinfo import (
    Answer,
    Context,
    cert_ext,
    check_hash,
    crl_urls,
    ext,
    freshness,
    has_oid,
    is_delta,
    judge_revocation,
    signature_ok,
    unknown_critical,
)

# X.509 (2019) ExpiredCertsOnCRL: the CRL keeps entries past the certificates' expiry.
_EXPIRED_CERTS_ON_CRL = x509.ObjectIdentifier("2.5.29.60")


def _crl_problem(
    crl: x509.CertificateRevocationList,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    ctx: Context,
    what: str,
) -> str | None:
    """Why ``crl`` cannot answer for ``cert``; None when it can."""
    if crl.issuer != cert.issuer:
        return f"{what} is issued by {crl.issuer.rfc4514_string()}, not the certificate's issuer"
    try:
        alg = crl.signature_hash_algorithm
    except UnsupportedAlgorithm:
        alg = None
    check_hash(alg, ctx, what)
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (UnsupportedAlgorithm, ValueError, TypeError):
        valid = False
    if not valid and isinstance(alg, hashes.SHA1):
        # cryptography no longer verifies SHA-1 CRL signatures; check_hash let this one
        # through because legacy is allowed.
        valid = signature_ok(issuer.public_key(), crl.signature, crl.tbs_certlist_bytes, alg, None)
    if not valid:
        return f"{what}: signature does not verify with the issuer's key"
    ku = cert_ext(issuer, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.crl_sign:
        return f"{what}: the issuer's key usage lacks cRLSign"
    unknown = unknown_critical(crl.extensions)
    if unknown:
        return f"{what}: unrecognised critical extension {', '.join(unknown)}"
    idp = ext(crl.extensions, x509.IssuingDistributionPoint)
    if isinstance(idp, x509.IssuingDistributionPoint):
        is_ca = _is_ca(cert)
        if idp.indirect_crl:
            return f"{what} is an indirect CRL, which smimekit does not read"
        if idp.only_some_reasons is not None:
            return f"{what} covers only some revocation reasons"
        if idp.only_contains_attribute_certs:
            return f"{what} covers only attribute certificates"
        if idp.only_contains_user_certs and is_ca:
            return f"{what} covers only end-entity certificates"
        if idp.only_contains_ca_certs and not is_ca:
            return f"{what} covers only CA certificates"
        # RFC 5280 6.3.3 (b)(2)(i): a CRL scoped to a distribution point must be one the
        # certificate names.
        if idp.full_name:
            wanted = {
                n.value for n in idp.full_name if isinstance(n, x509.UniformResourceIdentifier)
            }
            named = set(crl_urls(cert))
            if wanted and named and not wanted & named:
                return f"{what} is scoped to another distribution point"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    bc = cert_ext(cert, x509.BasicConstraints)
    return isinstance(bc, x509.BasicConstraints) and bc.ca


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    number = ext(crl.extensions, x509.CRLNumber)
    return number.crl_number if isinstance(number, x509.CRLNumber) else None


def _pick_delta(
    base: x509.CertificateRevocationList,
    deltas: Iterable[x509.CertificateRevocationList],
    cert: x509.Certificate,
    issuer: x509.Certificate,
    ctx: Context,
    problems: list[str],
) -> x509.CertificateRevocationList | None:
    """The newest delta CRL that applies to ``base`` (RFC 5280 5.2.4, 6.3.3 (c))."""
    base_number = _crl_number(base)
    best: x509.CertificateRevocationList | None = None
    for delta in deltas:
        indicator = ext(delta.extensions, x509.DeltaCRLIndicator)
        if not isinstance(indicator, x509.DeltaCRLIndicator) or delta.issuer != cert.issuer:
            continue
        number = _crl_number(delta)
        if base_number is None or number is None:
            problems.append("a delta CRL or its base carries no CRL number")
            continue
        # The delta must build on this base or an older one, and be newer than it.
        if indicator.crl_number > base_number or number <= base_number:
            continue
        base_idp = ext(base.extensions, x509.IssuingDistributionPoint)
        if ext(delta.extensions, x509.IssuingDistributionPoint) != base_idp:
            problems.append("a delta CRL has another scope than its base")
            continue
        problem = _crl_problem(delta, cert, issuer, ctx, "delta CRL")
        if problem:
            problems.append(problem)
            continue
        if best is None or number > (_crl_number(best) or 0):
            best = delta
    return best


def evaluate_crl(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    base: x509.CertificateRevocationList,
    ctx: Context,
    deltas: Sequence[x509.CertificateRevocationList] = (),
) -> Answer:
    """What the complete CRL ``base`` (with the newest applicable delta) says about ``cert``.

    Raises:
        RevocationError: the CRL is not from the issuer, does not verify, has another scope,
            is itself a delta, or is dated in the future.
    """
    if is_delta(base):
        raise RevocationError("a delta CRL is not a complete CRL")
    problem = _crl_problem(base, cert, issuer, ctx, "CRL")
    if problem:
        raise RevocationError(problem)
    notes: list[str] = []
    delta = _pick_delta(base, deltas, cert, issuer, ctx, notes)
    entry = None
    removed = False
    if delta is not None:
        entry = delta.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None and _entry_reason(entry) == "removeFromCRL":
            entry, removed = None, True
    if entry is None and not removed:
        entry = base.get_revoked_certificate_by_serial_number(cert.serial_number)
    governing = delta if delta is not None else base  # (an empty CRL is falsy)
    what = "delta CRL" if delta is not None else "CRL"
    this_update = governing.last_update_utc
    next_update = governing.next_update_utc
    fresh, stale = freshness(this_update, next_update, ctx, what)
    detail = "; ".join([stale, *notes]).strip("; ")
    if delta is not None:
        detail = (detail + "; " if detail else "") + f"delta CRL {_crl_number(delta)} applied"
    if entry is not None:
        unknown = unknown_critical(entry.extensions)
        if unknown:
            raise RevocationError(
                f"{what}: unrecognised critical entry extension {', '.join(unknown)}"
            )
        invalidity = ext(entry.extensions, x509.InvalidityDate)
        return judge_revocation(
            "crl",
            entry.revocation_date_utc,
            _entry_reason(entry),
            invalidity.invalidity_date_utc if isinstance(invalidity, x509.InvalidityDate) else None,
            ctx,
            this_update,
            next_update,
            fresh,
            detail,
        )
    # CRLs may drop certificates once they expire (RFC 5280 3.3) unless they say otherwise
    # (ExpiredCertsOnCRL, X.509 2019): absence from a later CRL then proves nothing.
    if cert.not_valid_after_utc < this_update and not has_oid(
        governing.extensions, _EXPIRED_CERTS_ON_CRL
    ):
        return Answer(
            "unknown",
            "crl",
            this_update,
            next_update,
            fresh,
            detail=f"the certificate expired before the {what} was issued; a CRL may drop"
            " expired certificates, so its absence proves nothing",
        )
    return Answer("good", "crl", this_update, next_update, fresh, detail=detail)


def _entry_reason(entry: x509.RevokedCertificate) -> str | None:
    reason = ext(entry.extensions, x509.CRLReason)
    return reason.reason.value if isinstance(reason, x509.CRLReason) else None
