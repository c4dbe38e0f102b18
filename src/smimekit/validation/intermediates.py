"""Intermediate CA certificates a path needs but a message lacks: a local cache, and AIA.

Senders often include only their own certificate. :class:`IssuerSource` is what
:func:`smimekit.validation.path.validate` asks (its ``issuer_source`` hook) when no
certificate in the message, the caller's extras or the trust anchors can have issued one in
the path. It answers from, in order:

1. an :class:`IntermediateCache`: CA certificates remembered from chains that earlier
   validated to a trust anchor (``<data-dir>/intermediates/``, one PEM file per certificate
   named by its SHA-256 fingerprint);
2. when allowed, the Authority Information Access caIssuers URLs of the certificate
   (RFC 5280 4.2.2.1): ``http`` only, a few fetches per message, a short timeout and a size
   cap. A DER certificate, PEM certificates or a PKCS#7 "certs-only" bundle (DER or PEM) are
   all read.

What may be followed and kept:

- URLs are only taken from certificates whose key has verified a signature: the signer's
  certificate (its key verified the message's signature: assess only validates signers
  whose signature checked out) and CA certificates the path builder reached because their
  key verified the certificate below. A fetched certificate is handed back only when its key
  verifies the certificate it was fetched for, so the URLs inside anything else are never
  followed. A recipient's certificate (:func:`smimekit.validation.recipients.check_recipient`)
  is the exception: the sender chose it, so its URLs are followed before anything about it
  is proven; the fetch tells its CA no more than the encrypted mail will.
- The cache learns only from chains that reached a trust anchor without problems
  (:meth:`IssuerSource.learn` takes the :class:`~smimekit.validation.path.PathResult`), so
  whatever an unvalidated message carries is never written to disk. Nothing read back from
  the cache is trusted either: its certificates are only candidates, checked like any other.

Nothing here raises for network or data problems: they are collected as reasons
(:meth:`IssuerSource.take_problems`) and shown when no path could be built.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from smimekit.cms.keyinfo import certificate_defect
from smimekit.dn import display_name
from smimekit.errors import FetchError
from smimekit.fsutil import atomic_write
from smimekit.validation.certinfo import cert_info, signed_by
from smimekit.validation.fetchers import Fetcher, UrllibFetcher
from smimekit.validation.path import PathResult, Purpose, validate

__all__ = [
    "AIA_TIMEOUT",
    "MAX_CERT_BYTES",
    "MAX_FETCHES",
    "IntermediateCache",
    "IssuerSource",
    "ca_issuers_urls",
    "issuer_source",
    "parse_certificates",
]

log = logging.getLogger(__name__)

MAX_FETCHES = 4
"""Most caIssuers fetches for one message (one :class:`IssuerSource`)."""
AIA_TIMEOUT = 5.0
"""Seconds per caIssuers fetch: a missing intermediate must not stall reading mail."""
MAX_CERT_BYTES = 256 * 1024
"""Largest caIssuers answer read: a certs-only bundle of a few CA certificates."""
MAX_BUNDLE_CERTS = 16
"""Most certificates taken from one caIssuers answer."""
MAX_CACHE_ENTRIES = 2000
"""Most cache files read (a directory grown beyond this is read in name order, truncated)."""
MAX_CACHE_FILE_BYTES = 64 * 1024
CACHE_DIR = "intermediates"
_SUFFIX = ".pem"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (the cache file's name)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _who(cert: x509.Certificate) -> str:
    return display_name(cert.subject) or "(empty subject)"


def _is_ca(cert: x509.Certificate) -> bool:
    bc = cert_info(cert).basic_constraints
    return bc is not None and bc.ca


# -- reading what a caIssuers URL serves -----------------------------------------------------


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in ``data``: DER, PEM (one or more), or PKCS#7 certs-only (DER/PEM).

    Raises:
        ValueError: none of those, or no certificate inside.
    """
    body = data.strip()
    certs: list[x509.Certificate] = []
    if body.startswith(b"-----BEGIN"):
        if b"-----BEGIN PKCS7-----" in body or b"-----BEGIN CMS-----" in body:
            from cryptography.hazmat.primitives.serialization import pkcs7  # imports email

            certs = list(pkcs7.load_pem_pkcs7_certificates(body))
        elif b"-----BEGIN CERTIFICATE-----" in body:
            certs = list(x509.load_pem_x509_certificates(body))
        else:
            raise ValueError("a PEM file without certificates")
    else:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            try:
                from cryptography.hazmat.primitives.serialization import pkcs7

                certs = list(pkcs7.load_der_pkcs7_certificates(data))
            except ValueError:
                raise ValueError(
                    "not a certificate (neither DER, PEM nor a PKCS#7 certs-only bundle)"
                ) from None
    if not certs:
        raise ValueError("the bundle holds no certificate")
    return certs


def ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    """The caIssuers URIs of ``cert``'s Authority Information Access extension, any scheme."""
    aia = cert_info(cert).get(x509.AuthorityInformationAccess)
    if aia is None:
        return []
    return list(
        dict.fromkeys(
            d.access_location.value
            for d in aia
            if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        )
    )


def _http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() == "http" and bool(parts.hostname)


# -- the cache -------------------------------------------------------------------------------


class IntermediateCache:
    """CA certificates kept in ``root`` (mode 0700): one PEM file (0600) per certificate,
    named by its SHA-256 fingerprint, written atomically.

    A file whose content does not match its name, or that is not a CA certificate, is
    ignored. A cache that cannot be written costs a fetch next time, nothing more: writing
    never raises.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._loaded: tuple[int, list[x509.Certificate]] | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> IntermediateCache:
        """The cache of a smimekit data directory: ``<data_dir>/intermediates``."""
        return cls(Path(data_dir) / CACHE_DIR)

    def __repr__(self) -> str:
        return f"IntermediateCache({str(self.root)!r})"

    def _path(self, cert: x509.Certificate) -> Path:
        return self.root / (fingerprint(cert) + _SUFFIX)

    def __contains__(self, cert: object) -> bool:
        return isinstance(cert, x509.Certificate) and self._path(cert).is_file()

    def __len__(self) -> int:
        return len(self.certificates())

    def certificates(self) -> list[x509.Certificate]:
        """Every usable certificate in the cache (re-read when the directory changes)."""
        try:
            stamp = self.root.stat().st_mtime_ns
        except OSError:
            return []
        if self._loaded is not None and self._loaded[0] == stamp:
            return self._loaded[1]
        certs = []
        try:
            files = sorted(self.root.glob("*" + _SUFFIX))[:MAX_CACHE_ENTRIES]
        except OSError:
            files = []
        for file in files:
            cert = self._read(file)
            if cert is not None:
                certs.append(cert)
        self._loaded = (stamp, certs)
        return certs

    def _read(self, file: Path) -> x509.Certificate | None:
        try:
            if file.stat().st_size > MAX_CACHE_FILE_BYTES:
                raise ValueError("too large")
            cert = x509.load_pem_x509_certificate(file.read_bytes())
            if fingerprint(cert) + _SUFFIX != file.name:
                raise ValueError("content does not match the file name")
            if not _is_ca(cert):
                raise ValueError("not a CA certificate")
        except (OSError, ValueError) as exc:
            log.debug(
                "intermediate cache entry skipped", extra={"file": str(file), "why": str(exc)}
            )
            return None
        return cert

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Cached certificates whose subject is ``cert``'s issuer name (RFC 5280 7.1)."""
        wanted = cert_info(cert).issuer
        return [c for c in self.certificates() if cert_info(c).subject == wanted]

    def add(self, certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
        """Store CA certificates (others are skipped); the ones newly written.

        No check of where they come from: :meth:`remember` is the entry for validated
        chains; this one is for an administrator importing intermediates on purpose.
        """
        added = []
        for cert in certs:
            if not _is_ca(cert) or cert in self:
                continue
            if self._write(cert):
                added.append(cert)
        return added

    def remember(self, result: PathResult) -> list[x509.Certificate]:
        """Store the CA certificates between the end entity and the anchor of a path that
        validated (``result.trusted``); anything else is not stored. The newly written."""
        if not result.trusted:
            return []
        return self.add(result.chain[1:-1])

    def _write(self, cert: x509.Certificate) -> bool:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            atomic_write(self._path(cert), cert.public_bytes(serialization.Encoding.PEM))
        except OSError as exc:
            log.warning("intermediate not cached", extra={"dir": str(self.root), "error": str(exc)})
            return False
        log.info("intermediate cached", extra={"subject": _who(cert), "dir": str(self.root)})
        return True


# -- the issuer source -----------------------------------------------------------------------


class IssuerSource:
    """Missing issuers for :func:`~smimekit.validation.path.validate`: the cache, then AIA.

    Use one per message (or per batch of messages): the fetch budget (``max_fetches``) and
    the memory of URLs already asked live in it. ``fetcher`` None means no network; then
    ``no_fetch_reason`` says why a caIssuers URL was not fetched (shown in the verdict).

    Called with a certificate whose issuer is missing, it returns candidates and never
    raises; what went wrong is kept for :meth:`take_problems`.
    """

    def __init__(
        self,
        cache: IntermediateCache | None = None,
        fetcher: Fetcher | None = None,
        *,
        max_fetches: int = MAX_FETCHES,
        max_bytes: int = MAX_CERT_BYTES,
        no_fetch_reason: str = "AIA fetching is off",
    ) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.max_fetches = max_fetches
        self.max_bytes = max_bytes
        self.no_fetch_reason = no_fetch_reason
        self.fetches = 0
        """caIssuers URLs fetched so far (successfully or not)."""
        self.fetched: list[tuple[str, x509.Certificate]] = []
        """(URL, certificate) for every issuer found over the network and handed back."""
        self._answers: dict[str, list[x509.Certificate] | str] = {}
        self._problems: list[str] = []

    def __repr__(self) -> str:
        return (
            f"IssuerSource(cache={self.cache!r}, fetcher={self.fetcher!r},"
            f" fetches={self.fetches}/{self.max_fetches})"
        )

    def take_problems(self) -> list[str]:
        """Why issuers could not be found since the last call (and forget them)."""
        out, self._problems = list(dict.fromkeys(self._problems)), []
        return out

    def learn(self, result: PathResult) -> list[x509.Certificate]:
        """Remember the intermediates of a validated path in the cache (if any)."""
        if self.cache is None:
            return []
        return self.cache.remember(result)

    def __call__(self, cert: x509.Certificate) -> list[x509.Certificate]:
        try:
            return self._find(cert)
        except Exception as exc:  # the path builder's contract: never raise
            log.warning("issuer lookup failed", extra={"error": repr(exc)})
            self._problems.append(f"{_who(cert)}: looking up its issuer failed ({exc})")
            return []

    def _find(self, cert: x509.Certificate) -> list[x509.Certificate]:
        child = cert_info(cert)
        cached: list[x509.Certificate] = []
        if self.cache is not None:
            cached = [c for c in self.cache.issuers_of(cert) if signed_by(child, cert_info(c))]
            now = dt.datetime.now(dt.UTC)
            if any(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in cached):
                return cached
        # Nothing cached, or only expired issuers (kept for archives): ask the network too,
        # perhaps for the renewed certificate; the path builder picks the better.
        for url in ca_issuers_urls(cert):
            found = self._from_url(cert, url)
            if found:
                return cached + found
        return cached

    def _note(self, cert: x509.Certificate, url: str, what: str) -> None:
        self._problems.append(f"{_who(cert)}: issuer not obtained from AIA caIssuers {url}: {what}")

    def _from_url(self, cert: x509.Certificate, url: str) -> list[x509.Certificate]:
        if not _http_url(url):
            scheme = url.partition(":")[0].lower() if ":" in url else "a schemeless"
            self._note(cert, url, f"{scheme} URL skipped, only http is fetched (RFC 5280 4.2.2.1)")
            return []
        if self.fetcher is None:
            self._note(cert, url, f"not fetched ({self.no_fetch_reason})")
            return []
        answer = self._answers.get(url)
        if answer is None:
            if self.fetches >= self.max_fetches:
                self._note(
                    cert, url, f"not fetched, the limit of {self.max_fetches} fetches was reached"
                )
                return []
            answer = self._fetch(url)
            self._answers[url] = answer
        if isinstance(answer, str):
            self._note(cert, url, answer)
            return []
        child = cert_info(cert)
        issuers = [c for c in answer if signed_by(child, cert_info(c))]
        if not issuers:
            served = ", ".join(_who(c) for c in answer[:3])
            self._note(cert, url, f"the certificate served ({served}) did not issue it")
            return []
        for issuer in issuers:
            log.info("issuer fetched", extra={"url": url, "subject": _who(issuer)})
            self.fetched.append((url, issuer))
        return issuers

    def _fetch(self, url: str) -> list[x509.Certificate] | str:
        """The certificates at ``url``, or why there are none."""
        assert self.fetcher is not None
        self.fetches += 1
        try:
            data = self.fetcher.fetch_crl(url)  # a plain GET, as for a CRL
        except FetchError as exc:
            return str(exc).removeprefix(f"{url}: ")
        if len(data) > self.max_bytes:
            return f"the answer exceeds {self.max_bytes} bytes"
        try:
            certs = parse_certificates(data)
        except ValueError as exc:
            return str(exc)
        # The sender chose the URL: a certificate whose names or extensions cannot be
        # decoded would raise from wherever they are first read.
        usable = [c for c in certs[:MAX_BUNDLE_CERTS] if certificate_defect(c) is None]
        if not usable:
            return f"the certificate served is malformed: {certificate_defect(certs[0])}"
        return usable


def issuer_source(
    *,
    cache: IntermediateCache | None = None,
    aia: bool = False,
    fetcher: Fetcher | None = None,
    timeout: float = AIA_TIMEOUT,
    max_fetches: int = MAX_FETCHES,
    no_fetch_reason: str = "AIA fetching is off",
) -> IssuerSource:
    """An :class:`IssuerSource` over ``cache`` that fetches caIssuers only when ``aia``.

    ``fetcher`` is the network to use (e.g. the revocation options' own); None: a
    :class:`~smimekit.validation.fetchers.UrllibFetcher` with ``timeout`` seconds and the
    certificate size cap.
    """
    network: Fetcher | None = None
    if aia:
        network = fetcher or UrllibFetcher(timeout=timeout, max_crl_bytes=MAX_CERT_BYTES)
    return IssuerSource(cache, network, max_fetches=max_fetches, no_fetch_reason=no_fetch_reason)


def validate_with_lookups(
    cert: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    purpose: Purpose,
    allow_legacy: bool,
    issuer_source: Callable[[x509.Certificate], Iterable[x509.Certificate]] | None,
) -> tuple[PathResult, list[str]]:
    """:func:`~smimekit.validation.path.validate`, and why an :class:`IssuerSource` could not
    find this certificate's issuers (its lookups for earlier certificates are dropped first,
    so only this one's count)."""
    tracked = issuer_source if isinstance(issuer_source, IssuerSource) else None
    if tracked is not None:
        tracked.take_problems()
    result = validate(cert, intermediates=intermediates, anchors=anchors, at=at,
                      purpose=purpose, allow_legacy=allow_legacy, issuer_source=issuer_source)
    return result, tracked.take_problems() if tracked is not None else []
