"""Revocation checking of a certificate chain: CRLs and OCSP, a disk cache, three policies.

For every certificate of the chain but the trust anchor, against its issuer, the sources are
tried in this order and the first fresh, verified answer wins:

1. OCSP responses supplied by the caller (``--ocsp-response``),
2. CRLs supplied by the caller (``--crl``), with any delta CRLs among them,
3. the disk cache (OCSP responses, then CRLs by URL), while still fresh,
4. unless the policy is ``OFFLINE``: OCSP from the Authority Information Access URLs, then
   the CRLs of cRLDistributionPoints (with the delta CRLs of freshestCRL).

OCSP comes before CRLs on the network because one small signed answer is cheaper than a
CRL and fresher; the CRL is the fall-back when the responder is down, says ``unknown`` or
answers something that does not verify. A stale answer is not used, except one that says
*revoked* (other than certificateHold): a revocation is never undone, so even an old list
proves it.

Which CRLs speak for a certificate is RFC 5280 6.3.3 (:mod:`.crl`): names compared as 7.1
asks; the CRL number required (5.2.3); an issuingDistributionPoint must name one of the
certificate's distribution points (full names, or names relative to the CRL issuer); CRLs
partitioned by reason (onlySomeReasons, or reasons on the certificate's points) count only
once together they cover every reason; an indirect CRL (indirectCRL, its entries read with
certificateIssuer) counts for a certificate whose distribution point names its issuer as
cRLIssuer.

A CRL need not be signed by the key that signed the certificate: a separate CRL signing
certificate, the CA's other key across a self-issued key rollover, or an indirect CRL's
issuer. Such a CRL is used when a certificate of its key, with the CRL issuer's name and
cRLSign (if key usage is present), is in the chain, in ``extra_certs`` (of :func:`check_chain`,
e.g. the certificates the message carries) or in :attr:`RevocationOptions.extra_certs`, and
its own path validates to the chain's trust anchor (RFC 5280 6.3.3 (f)) with every
certificate on it proven unrevoked, the same way, whatever the policy. A key does not vouch
for its own certificate, except an indirect CRL issuer whose certificate names itself as its
cRLIssuer (PKITS 4.14.30). :func:`check_certificate`, which knows no trust anchor, uses only
the issuer's key. OCSP responses are unaffected (RFC 6960 has its own delegation).

The policies decide what a missing answer means (:class:`RevocationPolicy`). A certificate
revoked at or before the validation time ``at`` always fails; one revoked after ``at`` (an
archived message signed before the revocation) passes with a warning that names the date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import itertools
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from smimekit.dn import display_name
from smimekit.errors import FetchError, MalformedError, RevocationError
from smimekit.keys.kinds import certificate_public_key
from smimekit.validation.crl import ALL_REASONS, crl_issuers, crl_signed_by, evaluate_crl
from smimekit.validation.fetchers import DEFAULT_TIMEOUT, Fetcher, UrllibFetcher
from smimekit.validation.names import name_key
from smimekit.validation.ocsp import (
    CERT_ID_HASH,
    FALLBACK_CERT_ID_HASH,
    evaluate_ocsp,
    ocsp_question,
)
from smimekit.validation.path import validate
from smimekit.validation.revinfo import (
    Answer,
    Context,
    NotApplicableError,
    cert_ext,
    crl_urls,
    delta_urls,
    is_delta,
    load_crl,
    load_ocsp_response,
    ocsp_urls,
)
from smimekit.validation.verdict import RevocationStatus

__all__ = [
    "RevocationOptions",
    "RevocationPolicy",
    "RevocationReport",
    "check_certificate",
    "check_chain",
]

log = logging.getLogger(__name__)

MAX_CACHED_BYTES = 10 * 1024 * 1024
MAX_NESTING = 4
"""Most certificates whose status is being established at once: a CRL signer's status may
need another CRL signer's (RFC 5280 6.3.3 (f)); deeper than this is refused."""


class RevocationPolicy(enum.Enum):
    """What happens when no fresh answer about a certificate can be had."""

    HARD = "hard"
    """No fresh answer fails validation. For the strict desk that would rather not read."""
    SOFT = "soft"
    """The default: revoked fails; no answer passes with a warning in the verdict."""
    OFFLINE = "offline"
    """Never touch the network: only the caller's CRLs/OCSP responses and the disk cache.
    Missing answers are warnings, as with ``SOFT`` (crisis mode: the CA is unreachable and
    mail must still be read); a cached or supplied *revoked* still fails."""


@dataclass(frozen=True)
class RevocationOptions:
    """How to check revocation. Every field has a safe default."""

    policy: RevocationPolicy = RevocationPolicy.SOFT
    crls: Sequence[x509.CertificateRevocationList | bytes] = ()
    """Locally supplied CRLs (complete or delta; DER or PEM bytes, or parsed)."""
    ocsp_responses: Sequence[bytes] = ()
    """Locally supplied DER OCSP responses (e.g. saved with ``openssl ocsp -respout``)."""
    cache_dir: Path | None = None
    """Where fetched CRLs and OCSP responses are kept until their nextUpdate; None: no cache."""
    fetcher: Fetcher | None = None
    """The network; None: :class:`~smimekit.validation.fetchers.UrllibFetcher` with
    ``timeout``. Never called under ``OFFLINE``."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds per HTTP exchange for the default fetcher."""
    max_age: dt.timedelta = dt.timedelta(days=1)
    """How long an answer without nextUpdate is usable after its thisUpdate."""
    clock_skew: dt.timedelta = dt.timedelta(minutes=5)
    """Tolerance for the responder's clock against ours."""
    allow_legacy: bool = False
    """Accept CRLs and OCSP responses signed with SHA-1 (archives)."""
    ocsp_nonce: bool = True
    """Send a nonce with OCSP requests (RFC 8954); an echoed nonce must match."""
    extra_certs: Sequence[x509.Certificate] = ()
    """Certificates of CRL signing keys (and the intermediates to validate them), used by
    :func:`check_chain` when a CRL is signed by another key of the certificate's issuer."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "crls", tuple(self.crls))
        object.__setattr__(self, "ocsp_responses", tuple(self.ocsp_responses))
        object.__setattr__(self, "extra_certs", tuple(self.extra_certs))


@dataclass(frozen=True)
class RevocationReport:
    """The revocation state of a chain and what the policy makes of it."""

    statuses: tuple[RevocationStatus, ...]
    """One per certificate, end entity first, trust anchor excluded."""
    reasons: tuple[str, ...] = ()
    """Failures: a revocation, or (under ``HARD``) a certificate without a fresh answer."""
    warnings: tuple[str, ...] = ()
    """Unknown statuses under ``SOFT``/``OFFLINE``, revocations after the validation time."""
    policy: RevocationPolicy = RevocationPolicy.SOFT

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def revoked(self) -> bool:
        return any(s.status == "revoked" for s in self.statuses)


def check_chain(
    chain: Sequence[x509.Certificate],
    *,
    at: dt.datetime | None = None,
    options: RevocationOptions | None = None,
    asserted_time: bool = False,
    extra_certs: Sequence[x509.Certificate] = (),
) -> RevocationReport:
    """Check every certificate of ``chain`` (end entity first, trust anchor last) at ``at``.

    ``extra_certs`` (with :attr:`RevocationOptions.extra_certs`): candidate certificates of
    CRL signing keys and their intermediates, e.g. the certificates a message carries; a CRL
    signed by one of them counts once its path validates to ``chain``'s trust anchor.

    ``at`` is the validation time (default: now); for an archived message, the signing
    time: a revocation after it does not count. Set ``asserted_time`` when ``at`` is only the
    signer's claim (the signing-time attribute): a revocation after it then still counts
    unless its reason says the key was not compromised (superseded, affiliationChanged,
    cessationOfOperation, privilegeWithdrawn, certificateHold), since whoever holds a stolen
    key can also backdate the claim. Network failures never raise: they leave the status
    ``unknown`` with the reason in ``detail``, and the policy decides.

    Raises:
        MalformedError: a locally supplied CRL or OCSP response cannot be parsed.
    """
    opts = options or RevocationOptions()
    anchor = chain[-1] if chain else None
    session = _Session(opts, at, asserted_time, anchor, [*chain, *extra_certs])
    statuses = [session.status(cert, issuer) for cert, issuer in itertools.pairwise(chain)]
    reasons: list[str] = []
    warnings: list[str] = []
    for status in statuses:
        _apply_policy(status, opts.policy, session.ctx.at, reasons, warnings)
    return RevocationReport(tuple(statuses), tuple(reasons), tuple(warnings), opts.policy)


def _apply_policy(
    status: RevocationStatus,
    policy: RevocationPolicy,
    at: dt.datetime,
    reasons: list[str],
    warnings: list[str],
) -> None:
    who = status.subject
    if status.status == "revoked":
        assert status.revoked_at is not None
        why = f" ({status.reason})" if status.reason else ""
        reasons.append(
            f"{who}: revoked on {status.revoked_at.isoformat()}{why}, according to"
            f" {_described(status)}"
        )
    elif status.status == "good" and status.revoked_at is not None:
        why = f" ({status.reason})" if status.reason else ""
        warnings.append(
            f"{who}: revoked on {status.revoked_at.isoformat()}{why}, after the validation"
            f" time {at.isoformat()}"
        )
    elif status.status != "good":
        text = f"{who}: revocation status unknown ({status.detail or 'no answer'})"
        if policy is RevocationPolicy.HARD:
            reasons.append(text + "; the hard revocation policy requires a fresh answer")
        else:
            warnings.append(text)


def _described(status: RevocationStatus) -> str:
    what = {"crl": "the CRL", "ocsp": "the OCSP response"}.get(status.protocol or "", "a source")
    if status.source == "cache":
        what = "a cached " + what.removeprefix("the ")
    return f"{what} from {status.url}" if status.url else what


def check_certificate(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: dt.datetime | None = None,
    options: RevocationOptions | None = None,
    asserted_time: bool = False,
) -> RevocationStatus:
    """The revocation status of ``cert`` (issued by ``issuer``) at ``at``, policy not applied.

    ``at`` and ``asserted_time`` as for :func:`check_chain`.

    Raises:
        MalformedError: a locally supplied CRL or OCSP response cannot be parsed.
    """
    session = _Session(options or RevocationOptions(), at, asserted_time)
    return _Checker(session, cert, issuer).run()


# -- the session: local material, cache and network shared by the certificates of a chain --


class _Session:
    def __init__(
        self,
        options: RevocationOptions,
        at: dt.datetime | None,
        asserted: bool,
        anchor: x509.Certificate | None = None,
        pool: Sequence[x509.Certificate] = (),
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        when = at or now
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        self.options = options
        self.ctx = Context(
            at=when,
            now=now,
            skew=options.clock_skew,
            max_age=options.max_age,
            allow_legacy=options.allow_legacy,
            asserted=asserted,
        )
        crls = [load_crl(c) for c in options.crls]
        self.local_bases = [c for c in crls if not is_delta(c)]
        self.local_deltas = [c for c in crls if is_delta(c)]
        self.local_ocsp = [load_ocsp_response(r) for r in options.ocsp_responses]
        self.cache = _DiskCache(options.cache_dir) if options.cache_dir is not None else None
        self.online = options.policy is not RevocationPolicy.OFFLINE
        self._fetcher = options.fetcher
        self._crls: dict[str, x509.CertificateRevocationList | str] = {}
        # CRL signers (RFC 5280 6.3.3 (f)): candidates, their verdicts, statuses known.
        self.anchor = anchor
        self.pool = tuple(dict.fromkeys([*pool, *options.extra_certs]))
        self._signer_problems: dict[x509.Certificate, str | None] = {}
        self._statuses: dict[tuple[x509.Certificate, x509.Certificate], RevocationStatus] = {}
        self._busy: list[tuple[x509.Certificate, x509.Certificate]] = []

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        """The status of ``cert`` (issued by ``issuer``), established once per session."""
        pair = (cert, issuer)
        known = self._statuses.get(pair)
        if known is not None:
            return known
        if pair in self._busy or len(self._busy) >= MAX_NESTING:
            # Only reachable through a CRL signer: refusing it is the safe way out.
            return RevocationStatus(
                subject=display_name(cert.subject) or "(empty subject)",
                status="unknown",
                detail="its status would rest on a CRL signed by a key it certifies",
            )
        self._busy.append(pair)
        try:
            status = _Checker(self, cert, issuer).run()
        finally:
            self._busy.pop()
        self._statuses[pair] = status
        return status

    def crl_signers(
        self,
        crl: x509.CertificateRevocationList,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        problems: list[str],
    ) -> list[x509.Certificate]:
        """Validated certificates, not ``issuer`` itself, whose key signed ``crl`` (about
        ``cert``): the issuer's other keys, or the CRL issuer of an indirect CRL."""
        out = []
        wanted = name_key(crl.issuer)
        for other in self.pool:
            if (name_key(other.subject) != wanted
                    or certificate_public_key(other) == certificate_public_key(issuer)):
                continue
            if not crl_signed_by(crl, other):
                continue
            ku = cert_ext(other, x509.KeyUsage)
            if isinstance(ku, x509.KeyUsage) and not ku.crl_sign:
                who = display_name(other.subject)
                problems.append(f"CRL signer {who}: key usage lacks cRLSign")
                continue
            if other not in self._signer_problems:
                # Provisional, for a path that comes back to this signer: refused.
                self._signer_problems[other] = _PENDING
                self._signer_problems[other] = self._signer_problem(other)
            problem = self._signer_problems[other]
            if problem is _PENDING and other == cert and _names_itself(other):
                # An indirect CRL issuer whose certificate (its path already validated)
                # names itself as the CRL issuer for its own status: its issuer chose so.
                problem = None
            if problem is None:
                out.append(other)
            else:
                problems.append(f"CRL signer {display_name(other.subject)}: {problem}")
        return out

    def _signer_problem(self, signer: x509.Certificate) -> str | None:
        """Why ``signer`` may not sign CRLs for the chain (6.3.3 (f)); None when it may."""
        if self.anchor is None:
            return "no trust anchor to validate its path to"
        path = validate(
            signer,
            intermediates=self.pool,
            anchors=[self.anchor],
            at=self.ctx.at,
            allow_legacy=self.options.allow_legacy,
        )
        if not path.trusted:
            why = "; ".join(path.reasons[:2]) or "no path"
            return f"its path to the trust anchor does not validate ({why})"
        for cert, issuer in itertools.pairwise(path.chain):
            status = self.status(cert, issuer)
            who = display_name(cert.subject) or "(empty subject)"
            if status.status == "revoked":
                return f"{who} on its path is revoked"
            if status.status != "good":
                # Whatever the policy: an unproven signer would make its CRL's 'good' silent.
                return f"the revocation status of {who} on its path is unknown ({status.detail})"
        return None

    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = UrllibFetcher(timeout=self.options.timeout)
        return self._fetcher

    def crl(self, url: str) -> x509.CertificateRevocationList:
        """The CRL at ``url``: from this session, else the network (then cached)."""
        known = self._crls.get(url)
        if isinstance(known, str):
            raise RevocationError(known)
        if known is not None:
            return known
        try:
            data = self.fetcher.fetch_crl(url)
            crl = load_crl(data)
        except (FetchError, MalformedError) as exc:
            self._crls[url] = str(exc)
            raise RevocationError(str(exc)) from exc
        self._crls[url] = crl
        return crl

    def cached_crl(self, url: str) -> x509.CertificateRevocationList | None:
        if self.cache is None:
            return None
        data = self.cache.get("crl " + url)
        try:
            return load_crl(data) if data is not None else None
        except MalformedError:
            return None


_PENDING = "its status rests on a CRL it signed itself"

_read_memo: dict[Path, tuple[tuple[int, int, int], bytes]] = {}


@functools.lru_cache(maxsize=1024)
def _cache_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest() + ".der"


def _names_itself(cert: x509.Certificate) -> bool:
    """Whether ``cert`` (not self-issued) names its subject as a cRLIssuer."""
    subject = name_key(cert.subject)
    return subject != name_key(cert.issuer) and subject in crl_issuers(cert)


class _Checker:
    """One certificate against its issuer; collects why each source could not answer."""

    def __init__(self, session: _Session, cert: x509.Certificate, issuer: x509.Certificate):
        self.s = session
        self.cert = cert
        self.issuer = issuer
        self.problems: list[str] = []
        self.stale_revoked: RevocationStatus | None = None
        self.unknown: RevocationStatus | None = None
        self.partial: list[RevocationStatus] = []
        self.covered: frozenset[str] = frozenset()

    def run(self) -> RevocationStatus:
        found = (
            self._local_ocsp()
            or self._local_crls()
            or self._cached_ocsp()
            or self._cached_crls()
            or (self._network_ocsp() if self.s.online else None)
            or (self._network_crls() if self.s.online else None)
        )
        if found is not None:
            return found
        if self.stale_revoked is not None:
            return self.stale_revoked
        if self.unknown is not None:
            return dataclasses.replace(self.unknown, detail=self._problems())
        if self.partial:
            missing = ", ".join(sorted(ALL_REASONS - self.covered))
            self.problems.append(f"no CRL covers the revocation reasons {missing}")
        if not ocsp_urls(self.cert) and not crl_urls(self.cert):
            self.problems.append("the certificate names no OCSP responder and no CRL")
        elif not self.s.online:
            self.problems.append("offline: the network was not asked")
        return RevocationStatus(
            subject=self._subject(),
            status="unknown",
            detail=self._problems() or "no answer",
        )

    def _problems(self) -> str:
        return "; ".join(dict.fromkeys(p for p in self.problems if p))

    def _subject(self) -> str:
        return display_name(self.cert.subject) or "(empty subject)"

    def _take(self, answer: Answer, source: str, url: str | None) -> RevocationStatus | None:
        """The status to return if ``answer`` settles it, else None (and remember why)."""
        status = RevocationStatus(
            subject=self._subject(),
            status=answer.status,
            source=source,
            age_seconds=round((self.s.ctx.now - answer.this_update).total_seconds(), 3),
            revoked_at=answer.revoked_at,
            reason=answer.reason,
            protocol=answer.protocol,
            url=url,
            this_update=answer.this_update,
            next_update=answer.next_update,
            detail=answer.detail or ("supplied locally" if url is None else ""),
        )
        where = f" from {url}" if url else ""
        if not answer.fresh:
            if answer.permanent and self.stale_revoked is None:
                self.stale_revoked = status
            self.problems.append(answer.detail + where)
            return None
        if answer.status == "unknown":
            self.unknown = self.unknown or status
            self.problems.append(answer.detail + where)
            return None
        if answer.reasons is not None:
            return self._partial(status, answer.reasons)
        return status

    def _partial(
        self, status: RevocationStatus, reasons: frozenset[str]
    ) -> RevocationStatus | None:
        """A fresh 'not listed' from a CRL partitioned by reason: settled once the CRLs seen
        cover every reason together (RFC 5280 6.3.3 (i))."""
        self.partial.append(status)
        self.covered |= reasons
        if self.covered < ALL_REASONS:
            return None
        parts = self.partial
        first = next((p for p in parts if p.revoked_at is not None), parts[0])
        next_updates = [p.next_update for p in parts if p.next_update is not None]
        return dataclasses.replace(
            first,
            this_update=min(p.this_update for p in parts if p.this_update is not None),
            next_update=min(next_updates) if next_updates else None,
            detail=f"{len(parts)} CRLs partitioned by reason cover every reason together",
        )

    def _local_ocsp(self) -> RevocationStatus | None:
        for response in self.s.local_ocsp:
            answer = self._ocsp(response, None, "supplied OCSP response", mine=False)
            if answer is not None and (found := self._take(answer, "ocsp", None)):
                return found
        return None

    def _local_crls(self) -> RevocationStatus | None:
        issuers = crl_issuers(self.cert)
        for base in self.s.local_bases:
            if name_key(base.issuer) not in issuers:
                continue
            answer = self._crl(base, self.s.local_deltas, "supplied CRL")
            if answer is not None and (found := self._take(answer, "crl", None)):
                return found
        return None

    def _cached_ocsp(self) -> RevocationStatus | None:
        if self.s.cache is None or not ocsp_urls(self.cert):
            return None
        key = ocsp_question(self.cert, self.issuer, nonce=False).cache_key
        data = self.s.cache.get(key)
        if data is None:
            return None
        answer = self._ocsp(data, None, "cached OCSP response", mine=True)
        return self._take(answer, "cache", ocsp_urls(self.cert)[0]) if answer else None

    def _cached_crls(self) -> RevocationStatus | None:
        if self.s.cache is None:
            return None
        for url in crl_urls(self.cert):
            base = self.s.cached_crl(url)
            if base is None:
                continue
            cached = [self.s.cached_crl(u) for u in delta_urls(self.cert, base)]
            deltas = [d for d in cached if d is not None]
            answer = self._crl(base, [*self.s.local_deltas, *deltas], "cached CRL")
            if answer is not None and (found := self._take(answer, "cache", url)):
                return found
        return None

    def _network_ocsp(self) -> RevocationStatus | None:
        for url in ocsp_urls(self.cert):
            if not url.lower().startswith(("http://", "https://")):
                self.problems.append(f"OCSP URL {url} is not http(s)")
                continue
            unknown: Answer | None = None
            for algorithm in (CERT_ID_HASH, FALLBACK_CERT_ID_HASH):
                question = ocsp_question(
                    self.cert, self.issuer, nonce=self.s.options.ocsp_nonce, algorithm=algorithm
                )
                try:
                    data = self.s.fetcher.post_ocsp(url, question.der)
                except FetchError as exc:
                    self.problems.append(f"OCSP: {exc}")
                    break  # the responder is down: no point asking again
                answer = self._ocsp(data, question.nonce, f"OCSP response from {url}", mine=True)
                if answer is None or answer.status == "unknown":
                    unknown = unknown or answer
                    continue  # perhaps a responder that only knows SHA-1 CertIDs
                # Worth keeping only with a nextUpdate: without one, the responder says newer
                # information is always available (RFC 6960 4.2.2.1).
                if answer.next_update is not None and answer.fresh and self.s.cache is not None:
                    self.s.cache.put(question.cache_key, data)
                if found := self._take(answer, "ocsp", url):
                    return found
                break
            else:
                if unknown is not None:
                    self._take(unknown, "ocsp", url)  # remember the 'unknown'
        return None

    def _network_crls(self) -> RevocationStatus | None:
        for url in crl_urls(self.cert):
            if not url.lower().startswith(("http://", "https://")):
                self.problems.append(f"CRL URL {url} is not http(s) (LDAP is not fetched)")
                continue
            try:
                base = self.s.crl(url)
            except RevocationError as exc:
                self.problems.append(f"CRL: {exc}")
                continue
            deltas = []
            for delta_url in delta_urls(self.cert, base):
                try:
                    deltas.append(self.s.crl(delta_url))
                except RevocationError as exc:
                    self.problems.append(f"delta CRL: {exc}")
            answer = self._crl(base, [*self.s.local_deltas, *deltas], f"CRL from {url}")
            if answer is None:
                continue
            if self.s.cache is not None:
                self._cache_crl(url, base, answer)
                for delta_url, delta in zip(delta_urls(self.cert, base), deltas, strict=False):
                    self._cache_crl(delta_url, delta, None)
            if found := self._take(answer, "crl", url):
                return found
        return None

    def _cache_crl(
        self, url: str, crl: x509.CertificateRevocationList, answer: Answer | None
    ) -> None:
        # Only CRLs that verified against this issuer (answer is not None) reach here; a delta
        # is re-verified whenever it is read back.
        assert self.s.cache is not None
        if answer is None or answer.fresh or answer.status == "revoked":
            self.s.cache.put("crl " + url, crl.public_bytes(serialization.Encoding.DER))

    def _ocsp(
        self, data: bytes | ocsp.OCSPResponse, nonce: bytes | None, what: str, *, mine: bool
    ) -> Answer | None:
        try:
            return evaluate_ocsp(data, self.cert, self.issuer, self.s.ctx, nonce=nonce)
        except NotApplicableError as exc:
            # Supplied responses may be about any certificate; ones we asked for must fit.
            if mine:
                self.problems.append(f"{what}: {exc}")
        except (RevocationError, MalformedError) as exc:
            self.problems.append(f"{what}: {exc}")
        except ValueError as exc:  # cryptography parses extensions lazily
            self.problems.append(f"{what}: malformed: {exc}")
        return None

    def _crl(
        self,
        base: x509.CertificateRevocationList,
        deltas: Sequence[x509.CertificateRevocationList],
        what: str,
    ) -> Answer | None:
        signers: list[str] = []
        try:
            return evaluate_crl(
                self.cert,
                self.issuer,
                base,
                self.s.ctx,
                deltas,
                lambda crl: self.s.crl_signers(crl, self.cert, self.issuer, signers),
            )
        except RevocationError as exc:
            self.problems.extend(signers)
            self.problems.append(f"{what}: {exc}")
        except ValueError as exc:  # cryptography parses entry extensions lazily
            self.problems.append(f"{what}: malformed: {exc}")
        return None


# -- disk cache ----------------------------------------------------------------------------


@dataclass
class _DiskCache:
    """DER blobs under ``root`` (mode 0700), named by the SHA-256 of their key.

    Nothing read back is trusted: every entry is parsed and verified again, and used only
    while fresh, exactly as if it had just been fetched (but without a nonce).
    """

    root: Path
    _ready: bool = field(default=False, repr=False)

    def _path(self, key: str) -> Path:
        return self.root / _cache_name(key)

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            stat = path.stat()
            if stat.st_size > MAX_CACHED_BYTES:
                return None
            # The same file, unchanged since it was last read in this process, gives back
            # the same bytes object (whose parse and checks are then remembered too); any
            # change of size or mtime reads it again.
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            known = _read_memo.get(path)
            if known is not None and known[0] == stamp:
                return known[1]
            data = path.read_bytes()
        except OSError:
            return None
        if len(_read_memo) >= 256:
            _read_memo.clear()
        _read_memo[path] = (stamp, data)
        return data

    def put(self, key: str, data: bytes) -> None:
        try:
            if not self._ready:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._ready = True
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, self._path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            # A cache that cannot be written costs a fetch next time, nothing more.
            log.warning("revocation cache not written", extra={"error": str(exc)})
