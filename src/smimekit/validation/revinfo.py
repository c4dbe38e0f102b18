"""What CRLs and OCSP responses say, judged alike: the shared part of revocation reading.

:mod:`smimekit.validation.crl` and :mod:`smimekit.validation.ocsp` read one CRL or one OCSP
response (no I/O) into an :class:`Answer`, judged by a :class:`Context` (validation time,
current time, clock skew...), or raise :class:`~smimekit.errors.RevocationError` saying why
it cannot be used for that certificate. Fetching, caching and the policy live in
:mod:`smimekit.validation.revocation`. This module holds what both readers share: the
times, the loaders, the URLs a certificate names, signature checks.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from smimekit.cms.keyinfo import CERTIFICATE_ERRORS
from smimekit.dn import display_name
from smimekit.errors import MalformedError, RevocationError
from smimekit.keys.kinds import is_dsa_public_key, is_ml_dsa_public_key

_WEAK = (hashes.SHA1, hashes.MD5)
# CRLReason values that say the key was not compromised (RFC 5280 5.3.1).
ADMINISTRATIVE_REASONS = frozenset(
    {
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
    }
)


@dataclass(frozen=True)
class Context:
    """The times and tolerances an answer is judged by."""

    at: dt.datetime
    """Validation time: now, or the signing time for archives."""
    now: dt.datetime
    """The current time, which no answer may be issued after (give or take ``skew``)."""
    skew: dt.timedelta = dt.timedelta(minutes=5)
    max_age: dt.timedelta = dt.timedelta(days=1)
    """How long an answer without nextUpdate stays usable after its thisUpdate."""
    allow_legacy: bool = False
    """Accept SHA-1 signatures on CRLs and OCSP responses (archives)."""
    asserted: bool = False
    """``at`` is the signer's own claim (a signing-time attribute), not a trusted time."""

    @property
    def reference(self) -> dt.datetime:
        """The time an answer must still be current at: ``at`` for archives, else now."""
        return min(self.at, self.now)


@dataclass(frozen=True)
class Answer:
    """What one CRL or OCSP response says about one certificate."""

    status: str
    """``good``, ``revoked`` or ``unknown``, already judged at :attr:`Context.at`."""
    protocol: str
    """``crl`` or ``ocsp``."""
    this_update: dt.datetime
    next_update: dt.datetime | None
    fresh: bool
    """Still current at the reference time (nextUpdate, or thisUpdate + max_age)."""
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    """CRLReason, e.g. ``keyCompromise``; None when revoked without a reason or not revoked."""
    invalidity_date: dt.datetime | None = None
    detail: str = ""
    reasons: frozenset[str] | None = None
    """For a ``good`` from a CRL partitioned by reason: the reasons it speaks for (another
    CRL must cover the rest); None: every reason."""

    @property
    def permanent(self) -> bool:
        """A revocation that no later answer can undo (anything but certificateHold)."""
        return self.status == "revoked" and self.reason != "certificateHold"


# -- in-process memos ----------------------------------------------------------------------
# A CRL or OCSP response read back from the disk cache (or supplied again by the caller) is the
# same bytes every time: parse it once, and check a signature over it once per key. Parsing
# is keyed on the exact bytes; what is worked out from a parsed object (signature results,
# serial sets) is keyed on that object's identity, the object itself kept in the entry so its
# id cannot be reused. Times (thisUpdate, nextUpdate against the validation time) are never
# memoised: every use judges them again.

MEMO_ENTRIES = 128
"""Most entries per memo; a full memo is emptied (cheap, and safe from any thread)."""
MEMO_BYTES = 64 * 1024 * 1024
"""Most bytes of CRLs and OCSP responses kept parsed."""
_parsed: dict[bytes, x509.CertificateRevocationList | ocsp.OCSPResponse] = {}
_parsed_size = [0]


def _remember_parsed(
    data: bytes, parsed: x509.CertificateRevocationList | ocsp.OCSPResponse
) -> None:
    if len(data) > MEMO_BYTES // 4:
        return
    if len(_parsed) >= MEMO_ENTRIES or _parsed_size[0] + len(data) > MEMO_BYTES:
        _parsed.clear()
        _parsed_size[0] = 0
    _parsed[data] = parsed
    _parsed_size[0] += len(data)


class IdentityMemo:
    """Values worked out from an immutable object (a parsed CRL or OCSP response) and a
    hashable extra key, kept while the memo holds the object itself."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, object], tuple[object, object]] = {}

    def get(self, obj: object, key: object) -> object | None:
        entry = self._entries.get((id(obj), key))
        if entry is None or entry[0] is not obj:
            return None
        return entry[1]

    def put(self, obj: object, key: object, value: object) -> None:
        if len(self._entries) >= MEMO_ENTRIES:
            self._entries.clear()
        self._entries[(id(obj), key)] = (obj, value)


def load_crl(
    data: bytes | bytearray | x509.CertificateRevocationList,
) -> x509.CertificateRevocationList:
    """A CRL from DER or PEM bytes (or an already parsed one).

    Raises:
        MalformedError: the bytes are not a CRL.
    """
    if isinstance(data, x509.CertificateRevocationList):
        return data
    raw = bytes(data)
    known = _parsed.get(raw)
    if isinstance(known, x509.CertificateRevocationList):
        return known
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(raw)
        else:
            crl = x509.load_der_x509_crl(raw)
        _ = crl.extensions  # parsed lazily: surface a broken one here, not mid-check
    except ValueError as exc:
        raise MalformedError(f"not a CRL: {exc}") from exc
    _remember_parsed(raw, crl)
    return crl


def load_ocsp_response(data: bytes) -> ocsp.OCSPResponse:
    """An OCSP response from DER (or base64 PEM-style armour, as some tools save them).

    Raises:
        MalformedError: the bytes are not an OCSP response.
    """
    raw = bytes(data)
    known = _parsed.get(raw)
    if isinstance(known, ocsp.OCSPResponse):
        return known
    der = raw
    if raw.lstrip().startswith(b"-----BEGIN"):
        body = b"".join(line for line in raw.splitlines() if line and not line.startswith(b"-"))
        try:
            der = base64.b64decode(body, validate=False)
        except ValueError as exc:
            raise MalformedError(f"not an OCSP response: {exc}") from exc
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise MalformedError(f"not an OCSP response: {exc}") from exc
    _remember_parsed(raw, response)
    return response


def is_delta(crl: x509.CertificateRevocationList) -> bool:
    return ext(crl.extensions, x509.DeltaCRLIndicator) is not None


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """OCSP responder URLs from the Authority Information Access extension."""
    aia = cert_ext(cert, x509.AuthorityInformationAccess)
    if not isinstance(aia, x509.AuthorityInformationAccess):
        return []
    return [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def crl_urls(cert: x509.Certificate) -> list[str]:
    """CRL URLs from cRLDistributionPoints (every full name that is a URI, any scheme)."""
    return _dp_urls(cert_ext(cert, x509.CRLDistributionPoints))


_base_delta_urls = IdentityMemo()  # CRL -> its freshestCRL URLs


def delta_urls(
    cert: x509.Certificate, base: x509.CertificateRevocationList | None = None
) -> list[str]:
    """Delta CRL URLs: the base CRL's freshestCRL, then the certificate's."""
    urls = []
    if base is not None:
        known = _base_delta_urls.get(base, None)
        if known is None:
            known = tuple(_dp_urls(ext(base.extensions, x509.FreshestCRL)))
            _base_delta_urls.put(base, None, known)
        urls += list(known)  # type: ignore[call-overload]
    urls += _dp_urls(cert_ext(cert, x509.FreshestCRL))
    return list(dict.fromkeys(urls))


def _dp_urls(points: x509.ExtensionType | None) -> list[str]:
    if not isinstance(points, x509.CRLDistributionPoints | x509.FreshestCRL):
        return []
    return [
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    ]


def ext(extensions: x509.Extensions, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


@functools.lru_cache(maxsize=4096)
def cert_ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    # Certificates are immutable and hash by their DER: the lookup is remembered.
    try:
        return ext(cert.extensions, cls)
    except CERTIFICATE_ERRORS:  # duplicate or undecodable extensions: path validation
        return None  # reports those


def has_oid(extensions: x509.Extensions, oid: x509.ObjectIdentifier) -> bool:
    return any(e.oid == oid for e in extensions)


def unknown_critical(extensions: x509.Extensions) -> list[str]:
    return [
        e.oid.dotted_string
        for e in extensions
        if e.critical and isinstance(e.value, x509.UnrecognizedExtension)
    ]


def subject_name(cert: x509.Certificate) -> str:
    return display_name(cert.subject) or "(empty subject)"


def freshness(
    this_update: dt.datetime, next_update: dt.datetime | None, ctx: Context, what: str
) -> tuple[bool, str]:
    """(fresh, why not). Raises for an answer from the future: that one is never usable."""
    if this_update > ctx.now + ctx.skew:
        raise RevocationError(f"{what} is dated in the future ({this_update.isoformat()})")
    if next_update is not None:
        if next_update + ctx.skew < ctx.reference:
            return False, f"{what} is stale: its nextUpdate {next_update.isoformat()} has passed"
        return True, ""
    if this_update + ctx.max_age < ctx.reference:
        return False, (
            f"{what} has no nextUpdate and its thisUpdate {this_update.isoformat()} is older"
            f" than {ctx.max_age}"
        )
    return True, ""


def judge_revocation(
    protocol: str,
    revoked_at: dt.datetime,
    reason: str | None,
    invalidity: dt.datetime | None,
    ctx: Context,
    this_update: dt.datetime,
    next_update: dt.datetime | None,
    fresh: bool,
    detail: str,
) -> Answer:
    # Revoked at the validation time if revoked by then, or if the key was already known to
    # be compromised by then (invalidityDate, RFC 5280 5.3.2). A later revocation leaves a
    # signature made earlier standing; the answer still reports when and why. But when the
    # validation time is only the signer's claim, whoever stole the key can backdate it:
    # then only a revocation for a reason that says the key was not compromised may come
    # after it.
    counts = (
        revoked_at <= ctx.at
        or (invalidity is not None and invalidity <= ctx.at)
        or (ctx.asserted and reason not in ADMINISTRATIVE_REASONS)
    )
    return Answer(
        status="revoked" if counts else "good",
        protocol=protocol,
        this_update=this_update,
        next_update=next_update,
        fresh=fresh,
        revoked_at=revoked_at,
        reason=reason,
        invalidity_date=invalidity,
        detail=detail if counts else f"revoked after the validation time {ctx.at.isoformat()}",
    )


# -- signatures ----------------------------------------------------------------------------


def check_hash(alg: hashes.HashAlgorithm | None, ctx: Context, what: str) -> None:
    if isinstance(alg, _WEAK) and not (ctx.allow_legacy and isinstance(alg, hashes.SHA1)):
        raise RevocationError(f"{what} is signed with {alg.name.upper()}, refused by default")


def signature_ok(
    key: PublicKeyTypes,
    signature: bytes,
    data: bytes,
    alg: hashes.HashAlgorithm | None,
    pss: padding.PSS | None,
) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey) and alg is not None:
            key.verify(signature, data, pss or padding.PKCS1v15(), alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and alg is not None:
            key.verify(signature, data, ec.ECDSA(alg))
        elif is_dsa_public_key(key) and alg is not None:
            key.verify(signature, data, alg)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        elif is_ml_dsa_public_key(key) and alg is None and pss is None:
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


class NotApplicableError(RevocationError):
    """The CRL or OCSP response is about other certificates: not a fault, just not ours."""
