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

The policies decide what a missing answer means (:class:`RevocationPolicy`). A certificate
revoked at or before the validation time ``at`` always fails; one revoked after ``at`` (an
archived message signed before the revocation) passes with a warning that names the date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
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

from smimekit.errors import FetchError, MalformedError, RevocationError
from smimekit.validation.crl import evaluate_crl
from smimekit.validation.fetchers import DEFAULT_TIMEOUT, Fetcher, UrllibFetcher
from smimekit.validation.ocsp import (
    CERT_ID_HASH,
    FALLBACK_CERT_ID_HASH,
    evaluate_ocsp,
    ocsp_question,
)
from smimekit.validation.revinfo import (
    Answer,
    Context,
    NotApplicableError,
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "crls", tuple(self.crls))
        object.__setattr__(self, "ocsp_responses", tuple(self.ocsp_responses))


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
) -> RevocationReport:
    """Check every certificate of ``chain`` (end entity first, trust anchor last) at ``at``.

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
    session = _Session(opts, at, asserted_time)
    statuses = [_Checker(session, cert, issuer).run() for cert, issuer in itertools.pairwise(chain)]
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
    def __init__(self, options: RevocationOptions, at: dt.datetime | None, asserted: bool) -> None:
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


class _Checker:
    """One certificate against its issuer; collects why each source could not answer."""

    def __init__(self, session: _Session, cert: x509.Certificate, issuer: x509.Certificate):
        self.s = session
        self.cert = cert
        self.issuer = issuer
        self.problems: list[str] = []
        self.stale_revoked: RevocationStatus | None = None
        self.unknown: RevocationStatus | None = None

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
        return self.cert.subject.rfc4514_string() or "(empty subject)"

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
        return status

    def _local_ocsp(self) -> RevocationStatus | None:
        for response in self.s.local_ocsp:
            answer = self._ocsp(response, None, "supplied OCSP response", mine=False)
            if answer is not None and (found := self._take(answer, "ocsp", None)):
                return found
        return None

    def _local_crls(self) -> RevocationStatus | None:
        for base in self.s.local_bases:
            if base.issuer != self.cert.issuer:
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
        try:
            return evaluate_crl(self.cert, self.issuer, base, self.s.ctx, deltas)
        except RevocationError as exc:
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
        return self.root / (hashlib.sha256(key.encode()).hexdigest() + ".der")

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            if path.stat().st_size > MAX_CACHED_BYTES:
                return None
            return path.read_bytes()
        except OSError:
            return None

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
