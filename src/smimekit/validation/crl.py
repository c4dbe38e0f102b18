"""What a CRL says about a certificate (RFC 5280 sections 5 and 6.3), with delta CRLs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from smimekit.dn import display_name
from smimekit.errors import RevocationError
from smimekit.keys.kinds import certificate_public_key
from smimekit.validation.names import NameKey, name_key
from smimekit.validation.revinfo import (
    MEMO_ENTRIES,
    Answer,
    Context,
    IdentityMemo,
    cert_ext,
    check_hash,
    ext,
    freshness,
    has_oid,
    is_delta,
    judge_revocation,
    signature_ok,
    subject_name,
    unknown_critical,
)

#: Every revocation reason a CRL can be partitioned by (ReasonFlags, RFC 5280 4.2.1.13).
ALL_REASONS = frozenset(
    {
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
        "aACompromise",
    }
)

# X.509 (2019) ExpiredCertsOnCRL: the CRL keeps entries past the certificates' expiry.
_EXPIRED_CERTS_ON_CRL = x509.ObjectIdentifier("2.5.29.60")


CRLSigners = Callable[[x509.CertificateRevocationList], Sequence[x509.Certificate]]
"""Given a CRL that the certificate issuer's key did not sign, the *validated* certificates
of other keys of the same CA whose key signed it (RFC 5280 6.3.3 (f)); see
:func:`evaluate_crl`."""


_signatures = IdentityMemo()  # (CRL, signer certificate) -> bool
_serials = IdentityMemo()  # CRL -> frozenset of the serials it lists
_static_problems = IdentityMemo()  # (CRL, (certificate, what)) -> "" or the problem
_direct_signers = IdentityMemo()  # (CRL, (issuer, what)) -> see _direct_signer
_scopes = IdentityMemo()  # (CRL, certificate) -> _scope(...) for a complete CRL
_points: dict[x509.Certificate, tuple[_Point, ...]] = {}


def crl_signed_by(crl: x509.CertificateRevocationList, signer: x509.Certificate) -> bool:
    """Whether the key of ``signer`` made the signature of ``crl`` (the hash is not judged)."""
    known = _signatures.get(crl, signer)
    if isinstance(known, bool):
        return known
    valid = _crl_signed_by(crl, signer)
    _signatures.put(crl, signer, valid)
    return valid


def _crl_signed_by(crl: x509.CertificateRevocationList, signer: x509.Certificate) -> bool:
    try:
        alg = crl.signature_hash_algorithm
    except UnsupportedAlgorithm:
        alg = None
    try:
        valid = crl.is_signature_valid(certificate_public_key(signer))  # type: ignore[arg-type]
    except (UnsupportedAlgorithm, ValueError, TypeError):
        valid = False
    if not valid and isinstance(alg, hashes.SHA1):
        # cryptography no longer verifies SHA-1 CRL signatures; the caller's check_hash let
        # this one through because legacy is allowed.
        valid = signature_ok(certificate_public_key(signer), crl.signature,
                             crl.tbs_certlist_bytes, alg, None)
    return valid


def _signer_problem(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    ctx: Context,
    what: str,
    signers: CRLSigners | None,
) -> tuple[str | None, x509.Certificate | None]:
    """(why no key may have signed ``crl``, the certificate whose key did if not the
    issuer's)."""
    try:
        alg = crl.signature_hash_algorithm
    except UnsupportedAlgorithm:
        alg = None
    check_hash(alg, ctx, what)
    # Whether the issuer's own key signed it depends on the CRL and the issuer alone.
    direct_verdict = _direct_signers.get(crl, (issuer, what))
    if direct_verdict is None:
        direct_verdict = _direct_signer(crl, issuer, what)
        _direct_signers.put(crl, (issuer, what), direct_verdict)
    if direct_verdict != "not signed by the issuer":
        return (str(direct_verdict) or None), None
    direct = name_key(crl.issuer) == name_key(issuer.subject)
    # Another key of the same CA (a separate CRL signing certificate, or the CA's other key
    # across a self-issued rollover), or the CRL issuer of an indirect CRL: the caller
    # validated those certificates' paths to the same trust anchor; their name, key usage
    # and signature are checked here again.
    for other in signers(crl) if signers is not None else ():
        if name_key(other.subject) != name_key(crl.issuer) or not crl_signed_by(crl, other):
            continue
        ku = cert_ext(other, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.crl_sign:
            continue
        return None, other
    whose = "the issuer's key" if direct else "the key of the CRL issuer"
    extra = " or of a validated CRL signer certificate" if signers is not None else ""
    return f"{what}: signature does not verify with {whose}{extra}", None


def _direct_signer(crl: x509.CertificateRevocationList, issuer: x509.Certificate, what: str) -> str:
    """'' when ``issuer``'s own key signed ``crl`` and may, a problem if it may not,
    'not signed by the issuer' when another key must be looked for."""
    if name_key(crl.issuer) != name_key(issuer.subject) or not crl_signed_by(crl, issuer):
        return "not signed by the issuer"
    ku = cert_ext(issuer, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.crl_sign:
        return f"{what}: the issuer's key usage lacks cRLSign"
    return ""


def _crl_problem(
    crl: x509.CertificateRevocationList,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    ctx: Context,
    what: str,
    signers: CRLSigners | None = None,
) -> tuple[str | None, x509.Certificate | None]:
    """(why ``crl`` cannot answer for ``cert``, or None; the certificate whose key signed
    it, if not ``issuer``'s). RFC 5280 6.3.3 (b), (f), (g)."""
    # What the CRL and the certificate alone decide (number, critical extensions, scope)
    # is remembered per (parsed CRL, certificate); the signer, which depends on the
    # context, is judged every time.
    static = _static_problems.get(crl, (cert, what))
    if static is None:
        static = _static_problem(crl, cert, what) or ""
        _static_problems.put(crl, (cert, what), static)
    if static:
        return str(static), None
    return _signer_problem(crl, issuer, ctx, what, signers)


def _static_problem(
    crl: x509.CertificateRevocationList, cert: x509.Certificate, what: str
) -> str | None:
    # RFC 5280 5.2.3: conforming CRL issuers MUST include the CRL number, non-critical.
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    except x509.ExtensionNotFound:
        return f"{what} carries no CRL number (RFC 5280 5.2.3)"
    if number.critical:
        return f"{what} marks its CRL number critical (RFC 5280 5.2.3)"
    unknown = unknown_critical(crl.extensions)
    if unknown:
        return f"{what}: unrecognised critical extension {', '.join(unknown)}"
    idp = ext(crl.extensions, x509.IssuingDistributionPoint)
    scope = idp if isinstance(idp, x509.IssuingDistributionPoint) else None
    covered = _scope(crl, scope, cert, what)
    if isinstance(covered, str):
        return covered
    if not covered:  # 6.3.3 (e)
        return f"{what} covers none of the reasons the certificate's points serve"
    return None


def _static_scope(
    crl: x509.CertificateRevocationList, cert: x509.Certificate
) -> str | frozenset[str]:
    """:func:`_scope` of a complete CRL for ``cert``, remembered per (parsed CRL, cert)."""
    known = _scopes.get(crl, cert)
    if known is None:
        idp = ext(crl.extensions, x509.IssuingDistributionPoint)
        known = _scope(
            crl, idp if isinstance(idp, x509.IssuingDistributionPoint) else None, cert, "CRL"
        )
        _scopes.put(crl, cert, known)
    return known  # type: ignore[return-value]


def _scope(
    crl: x509.CertificateRevocationList,
    idp: x509.IssuingDistributionPoint | None,
    cert: x509.Certificate,
    what: str,
) -> str | frozenset[str]:
    """Why ``crl`` does not cover ``cert`` (6.3.3 (b)), or else the revocation reasons it
    covers for it (6.3.3 (d): onlySomeReasons and the reasons of the points it serves)."""
    indirect = idp is not None and idp.indirect_crl
    issuer = name_key(crl.issuer)
    # (b)(1): the CRL issuer is the certificate's, or the cRLIssuer of one of its points (and
    # then the CRL must say it is indirect).
    every = _certificate_points(cert)
    points = [
        p
        for p in every
        if (indirect and issuer in p.crl_issuers) or (not p.crl_issuers and issuer == p.issuer)
    ]
    if not points:
        if any(issuer in p.crl_issuers for p in every):
            return f"{what} is from the CRL issuer the certificate names, but not indirect"
        return f"{what} is issued by {display_name(crl.issuer)}, not the certificate's issuer"
    if idp is None:
        return _covered(None, points)
    if idp.only_contains_attribute_certs:
        return f"{what} covers only attribute certificates"
    is_ca = _is_ca(cert)
    if idp.only_contains_user_certs and is_ca:
        return f"{what} covers only end-entity certificates"
    if idp.only_contains_ca_certs and not is_ca:
        return f"{what} covers only CA certificates"
    # (b)(2)(i): a CRL scoped to a distribution point must be one the certificate names.
    if idp.full_name:
        scope = {_general_key(n) for n in idp.full_name}
    elif idp.relative_name is not None:
        scope = {_general_key(_relative(crl.issuer, idp.relative_name))}
    else:
        return _covered(idp, points)
    points = [p for p in points if scope & p.names]
    if not points:
        return f"{what} is scoped to a distribution point the certificate does not name"
    return _covered(idp, points)


def _covered(idp: x509.IssuingDistributionPoint | None, points: list[_Point]) -> frozenset[str]:
    """The interim reasons mask (6.3.3 (d)), united over the points the CRL serves."""
    only = ALL_REASONS
    if idp is not None and idp.only_some_reasons is not None:
        only = frozenset(r.value for r in idp.only_some_reasons)
    out: frozenset[str] = frozenset()
    for point in points:
        out |= only & point.reasons
    return out


# -- distribution point names (RFC 5280 4.2.1.13, 5.2.5, 6.3.3 (b)) ------------------------


def _general_key(general: x509.GeneralName) -> object:
    """GeneralNames compared as RFC 5280 7.1 compares names (directoryName prepared)."""
    if isinstance(general, x509.DirectoryName):
        return ("dn", name_key(general.value))
    return general


def _relative(base: x509.Name, rdn: x509.RelativeDistinguishedName) -> x509.GeneralName:
    """nameRelativeToCRLIssuer: the RDN appended to the CRL issuer's name."""
    return x509.DirectoryName(x509.Name([*base.rdns, rdn]))


@dataclass(frozen=True)
class _Point:
    """One distribution point of a certificate, prepared for comparison."""

    names: frozenset[object]
    """Its distributionPoint names (or, without one, the names of its cRLIssuer)."""
    crl_issuers: frozenset[NameKey]
    """Its cRLIssuer directory names; empty: the certificate's issuer issues the CRLs."""
    issuer: NameKey
    """The certificate's issuer."""
    reasons: frozenset[str] = ALL_REASONS
    """The revocation reasons its CRLs speak for."""


def _certificate_points(cert: x509.Certificate) -> list[_Point]:
    """The distribution points of ``cert``: those of cRLDistributionPoints, then the implicit
    one RFC 5280 6.3.3 ends with (named by the certificate's issuer and issuerAltName) for
    CRLs that no point names."""
    known = _points.get(cert)  # certificates compare and hash by their DER
    if known is None:
        known = tuple(_read_points(cert))
        if len(_points) >= MEMO_ENTRIES:
            _points.clear()
        _points[cert] = known
    return list(known)


def _read_points(cert: x509.Certificate) -> list[_Point]:
    issuer = name_key(cert.issuer)
    out: list[_Point] = []
    points = cert_ext(cert, x509.CRLDistributionPoints)
    for point in points if isinstance(points, x509.CRLDistributionPoints) else ():
        crl_issuers = [n.value for n in point.crl_issuer or () if isinstance(n, x509.DirectoryName)]
        if point.full_name:
            names: list[x509.GeneralName] = list(point.full_name)
        elif point.relative_name is not None:
            base = crl_issuers[0] if crl_issuers else cert.issuer
            names = [_relative(base, point.relative_name)]
        else:  # no name: the IDP must name the cRLIssuer (6.3.3 (b)(2)(i))
            names = list(point.crl_issuer or ())
        out.append(
            _Point(
                frozenset(_general_key(n) for n in names),
                frozenset(name_key(n) for n in crl_issuers),
                issuer,
                frozenset(r.value for r in point.reasons) if point.reasons else ALL_REASONS,
            )
        )
    implicit: list[x509.GeneralName] = [x509.DirectoryName(cert.issuer)]
    alt = cert_ext(cert, x509.IssuerAlternativeName)
    if isinstance(alt, x509.IssuerAlternativeName):
        implicit += list(alt)
    out.append(_Point(frozenset(_general_key(n) for n in implicit), frozenset(), issuer))
    return out


def crl_issuers(cert: x509.Certificate) -> set[NameKey]:
    """The names of every CRL issuer that may speak for ``cert`` (its issuer, cRLIssuers)."""
    out = {name_key(cert.issuer)}
    for point in _certificate_points(cert):
        out |= point.crl_issuers
    return out


def _find_entry(
    crl: x509.CertificateRevocationList, cert: x509.Certificate
) -> x509.RevokedCertificate | None:
    """The entry of ``crl`` for ``cert``. In an indirect CRL an entry belongs to the issuer
    its certificateIssuer extension names, or else to that of the entry before it, the
    first one to the CRL issuer (RFC 5280 5.3.3)."""
    idp = ext(crl.extensions, x509.IssuingDistributionPoint)
    if not (isinstance(idp, x509.IssuingDistributionPoint) and idp.indirect_crl):
        serials = _serials.get(crl, None)
        if not isinstance(serials, frozenset):
            serials = frozenset(entry.serial_number for entry in crl)
            _serials.put(crl, None, serials)
        if cert.serial_number not in serials:  # the usual case, without a linear scan
            return None
        return crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    wanted = name_key(cert.issuer)
    current = {name_key(crl.issuer)}
    for entry in crl:
        named = ext(entry.extensions, x509.CertificateIssuer)
        if isinstance(named, x509.CertificateIssuer):
            current = {name_key(n) for n in named.get_values_for_type(x509.DirectoryName)}
        if entry.serial_number == cert.serial_number and wanted in current:
            return entry
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
    signers: CRLSigners | None,
) -> x509.CertificateRevocationList | None:
    """The newest delta CRL that applies to ``base`` (RFC 5280 5.2.4, 6.3.3 (c))."""
    base_number = _crl_number(base)
    best: x509.CertificateRevocationList | None = None
    for delta in deltas:
        indicator = ext(delta.extensions, x509.DeltaCRLIndicator)
        if not isinstance(indicator, x509.DeltaCRLIndicator) or name_key(delta.issuer) != name_key(
            base.issuer
        ):
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
        problem, _ = _crl_problem(delta, cert, issuer, ctx, "delta CRL", signers)
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
    signers: CRLSigners | None = None,
) -> Answer:
    """What the complete CRL ``base`` (with the newest applicable delta) says about ``cert``.

    The CRLs must be signed by ``issuer``'s key, or by the key of a certificate that
    ``signers`` returns for them: it is asked only about a CRL the issuer's key did not
    sign, and must return only certificates whose path to the trust anchor of ``cert``'s
    path it has validated, revocation included (RFC 5280 6.3.3 (f)). Here they are checked
    for the CRL issuer's name, cRLSign and the signature.

    A CRL partitioned by reason (onlySomeReasons, or the reasons of the distribution points
    it serves) that does not list ``cert`` answers ``good`` with :attr:`Answer.reasons` set:
    the caller must find the other reasons covered by other CRLs (RFC 5280 6.3.3 (i)).

    Raises:
        RevocationError: the CRL is not from the issuer, does not verify, has another scope,
            is itself a delta, or is dated in the future.
    """
    if is_delta(base):
        raise RevocationError("a delta CRL is not a complete CRL")
    problem, signer = _crl_problem(base, cert, issuer, ctx, "CRL", signers)
    if problem:
        raise RevocationError(problem)
    notes: list[str] = []
    if signer is not None:
        notes.append(f"CRL signed by the key certified as {subject_name(signer)}")
    delta = _pick_delta(base, deltas, cert, issuer, ctx, notes, signers)
    entry = None
    removed = False
    if delta is not None:
        entry = _find_entry(delta, cert)
        if entry is not None and _entry_reason(entry) == "removeFromCRL":
            entry, removed = None, True
    if entry is None and not removed:
        entry = _find_entry(base, cert)
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
    covered = _static_scope(base, cert)
    if isinstance(covered, frozenset) and covered != ALL_REASONS:
        # Partitioned by reason: not listed here proves nothing about the other reasons.
        detail = (
            (detail + "; " if detail else "")
            + "covers only the reasons "
            + ", ".join(sorted(covered))
        )
        return Answer(
            "good", "crl", this_update, next_update, fresh, detail=detail, reasons=covered
        )
    return Answer("good", "crl", this_update, next_update, fresh, detail=detail)


def _entry_reason(entry: x509.RevokedCertificate) -> str | None:
    reason = ext(entry.extensions, x509.CRLReason)
    return reason.reason.value if isinstance(reason, x509.CRLReason) else None
