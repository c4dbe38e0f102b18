"""Lookup: the usable encryption certificates of an address, from every configured source.

For an address the :class:`Resolver`

1. normalises it (:func:`normalise_address`: the domain as A-labels, IDNA 2008);
2. asks its sources in the configured order (``[directory] order``; ``--source`` restricts),
   from the cache when the answer is fresh (:mod:`smimekit.directory.cache`; the local
   sources ``store`` and ``harvested`` are always asked, they are as cheap as the cache and
   always current). A source that raises :class:`~smimekit.errors.DirectoryError` is
   recorded with its error and the others are still asked;
3. validates every candidate the way ``encrypt`` checks a recipient
   (:func:`smimekit.validation.recipients.check_recipient`: the chain to a trust anchor,
   dates, key usage and EKU for receiving, key size, revocation per the given
   :class:`~smimekit.validation.revocation.RevocationOptions`), and that the certificate
   names the address and holds a key that can receive mail;
4. ranks the usable ones: the one the owner announced (SMIMEEncryptionKeyPreference,
   :attr:`Candidate.preferred`) first, then those of our own CA, then the newest (notBefore);
   a certificate several sources hold counts once.

The :class:`LookupResult` keeps what each source said and why each refused candidate was
refused; :meth:`LookupResult.explain` makes the one line a failure prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smimekit.directory.cache import LookupCache
from smimekit.directory.sources import Candidate, Found, Source
from smimekit.errors import ConfigError, DirectoryError
from smimekit.mailbox import AddressError, certificate_form, comparable, domain_to_ascii
from smimekit.validation.recipients import check_recipient
from smimekit.validation.revocation import RevocationOptions
from smimekit.validation.verdict import CertSummary, cert_emails

if TYPE_CHECKING:
    from smimekit.config import Config
    from smimekit.store import Store

__all__ = [
    "LOCAL_SOURCES",
    "SOURCES",
    "LookupResult",
    "Refused",
    "Resolver",
    "SourceAnswer",
    "Usable",
    "lookup",
    "normalise_address",
]

SOURCES = {
    "store": "smimekit.directory.store_source:StoreSource",
    "harvested": "smimekit.directory.harvest:HarvestedSource",
    "ldap": "smimekit.directory.ldap:LdapSource",
    "smimea": "smimekit.directory.dns:SmimeaSource",
}
"""Every source by name: ``module:class``; each class has ``from_config`` (issue 10)."""

SOFT_REVOCATION = RevocationOptions()
"""Revoked fails, no answer passes with a warning (as encrypt's default)."""

LOCAL_SOURCES = frozenset({"store", "harvested"})
"""Sources read from our own store: never cached."""


def normalise_address(address: str) -> str:
    """``address`` as sources are asked for it: the local part as given (Unicode NFC), the
    domain in lower-case A-labels.

    Raises:
        DirectoryError: not a mailbox address (the message says why).
    """
    try:
        certificate_form(address)  # every check a certified address passes
        local, _, domain = address.strip().rpartition("@")
        return f"{unicodedata.normalize('NFC', local)}@{domain_to_ascii(domain)}"
    except AddressError as exc:
        raise DirectoryError(str(exc)) from None


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class SourceAnswer:
    """What one source said for an address."""

    source: str
    status: str
    """``found`` (candidates), ``none``, ``error`` or ``unavailable`` (not installed, or
    named by ``--source`` but not set up)."""
    candidates: int = 0
    error: str = ""
    """The source's error (``error``), or why it is unavailable."""
    notes: tuple[str, ...] = ()
    """Entries the source skipped, and why."""
    cached: bool = False
    """The answer came from the lookup cache."""

    def describe(self) -> str:
        if self.status == "found":
            return f"{self.candidates} candidate{'s' if self.candidates != 1 else ''}"
        if self.status in ("error", "unavailable"):
            return f"{self.status}: {self.error}"
        return "none"


@dataclass(frozen=True)
class Usable:
    """A certificate that mail to the address may be encrypted to."""

    candidate: Candidate
    """As the first source that held it gave it (``preferred`` if any source said so)."""
    chain: tuple[x509.Certificate, ...]
    """The validated path, the certificate first, the trust anchor last."""
    sources: tuple[str, ...]
    """Every source that held it, in the order asked."""
    ours: bool
    """Issued by our own CA."""
    warnings: tuple[str, ...] = ()
    """What did not refuse it but should be known (e.g. revocation unknown under soft)."""

    @property
    def certificate(self) -> x509.Certificate:
        return self.candidate.certificate


@dataclass(frozen=True)
class Refused:
    """A candidate that must not be used, and why."""

    candidate: Candidate
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class LookupResult:
    """The answer for one address (see the module docstring)."""

    address: str
    """As asked."""
    normalised: str
    usable: tuple[Usable, ...]
    """Ranked: the one to encrypt to first."""
    refused: tuple[Refused, ...]
    answers: tuple[SourceAnswer, ...]
    """One per source asked, in the order asked (unavailable ones too)."""

    @property
    def ok(self) -> bool:
        return bool(self.usable)

    @property
    def best(self) -> Usable:
        """The certificate to encrypt to.

        Raises:
            DirectoryError: there is none (the message is :meth:`explain`).
        """
        self.raise_for_failure()
        return self.usable[0]

    def raise_for_failure(self) -> None:
        """Raises DirectoryError (with :meth:`explain`) when no certificate is usable."""
        if not self.usable:
            raise DirectoryError(self.explain())

    def explain(self) -> str:
        """One line: each source asked and its answer, and why its candidates were refused."""
        if not self.answers:
            return (f"no usable certificate for {self.address}: no certificate source is set"
                    " up (a store in the data directory, or [directory] in the configuration)")
        parts = []
        for answer in self.answers:
            text = f"{answer.source}: {answer.describe()}"
            refused = [r for r in self.refused if r.candidate.source == answer.source]
            if refused:
                text += " (" + "; ".join(
                    f"serial {r.candidate.certificate.serial_number:x} refused: "
                    + ", ".join(r.reasons) for r in refused) + ")"
            parts.append(text)
        head = "usable certificates" if self.usable else "no usable certificate"
        return f"{head} for {self.address}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (docs/directory.md, "Lookup")."""
        out: dict[str, Any] = {
            "address": self.address,
            "normalised": self.normalised,
            "ok": self.ok,
            "certificates": [_usable_dict(rank, u) for rank, u in enumerate(self.usable, 1)],
            "refused": [dict(_cert_dict(r.candidate), reasons=list(r.reasons))
                        for r in self.refused],
            "sources": [{
                "source": a.source, "status": a.status, "candidates": a.candidates,
                "error": a.error or None, "notes": list(a.notes), "cached": a.cached,
            } for a in self.answers],
        }
        if not self.ok:
            out["explanation"] = self.explain()
        return out


def _cert_dict(candidate: Candidate) -> dict[str, Any]:
    cert = candidate.certificate
    summary = CertSummary.of(cert)
    return {
        "subject": summary.subject,
        "emails": list(cert_emails(cert)),
        "serial": format(cert.serial_number, "x"),
        "issuer": summary.issuer,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": _fingerprint(cert),
        "source": candidate.source,
        "where": candidate.where,
    }


def _usable_dict(rank: int, usable: Usable) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    return {
        "rank": rank,
        **_cert_dict(usable.candidate),
        "sources": list(usable.sources),
        "preferred": usable.candidate.preferred,
        "ours": usable.ours,
        "warnings": list(usable.warnings),
        "pem": usable.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }


@dataclass
class Resolver:
    """Asks ``sources`` in order, validates, ranks, caches (see the module docstring).

    ``trust``: the anchors a candidate's chain must reach (the trust store, our CA's root);
    with none every candidate is refused, since a directory or DNS alone vouches for
    nothing. ``intermediates``: CA certificates to complete chains with (our CA's, --certs),
    besides each candidate's own chain. ``revocation``: the policy and what is known (CRLs,
    OCSP answers, the cache); None skips revocation. ``issuer_source``: fetches or remembers
    missing intermediates (:func:`smimekit.validation.intermediates.issuer_source`).
    ``our_ca``: our CA's certificates (ranked first). ``cache``: None for no cache.
    ``clock``: the time now (tests move it).
    """

    sources: Sequence[Source]
    trust: Sequence[x509.Certificate] = ()
    intermediates: Sequence[x509.Certificate] = ()
    revocation: RevocationOptions | None = None
    issuer_source: Callable[[x509.Certificate], Iterable[x509.Certificate]] | None = None
    our_ca: Sequence[x509.Certificate] = ()
    cache: LookupCache | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)
    """Sources of the configured order that could not be loaded, with why."""
    order: Sequence[str] = ()
    """The order answers are reported in (the configured one); others come after."""
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        store: Store | None,
        data_dir: Path,
        only: Sequence[str] | None = None,
        use_cache: bool = True,
        **options: Any,
    ) -> Resolver:
        """The sources of ``config``'s ``[directory] order`` (restricted to ``only``), built by
        name from :data:`SOURCES`; a source whose module cannot be imported is left out and
        named in :attr:`unavailable`; one whose ``from_config`` gives None is not set up
        and left out (named in :attr:`unavailable` only when ``only`` asks for it).
        ``options`` are the other fields (trust, revocation, ...).

        Raises:
            ConfigError: an unknown source name, or a source set up wrongly.
        """
        from smimekit.config import DirectoryConfig

        directory = config.directory or DirectoryConfig()
        for name in directory.order:
            if name not in SOURCES:
                raise ConfigError(f"directory.order: unknown source {name!r}"
                                  f" (known: {', '.join(SOURCES)})")
        names = list(directory.order)
        if only is not None:
            for name in only:
                if name not in SOURCES:
                    raise ConfigError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")
            names = [n for n in names if n in only] + [n for n in only if n not in names]
        sources: list[Source] = []
        unavailable: dict[str, str] = {}
        for name in names:
            module_name, _, class_name = SOURCES[name].partition(":")
            try:
                factory = getattr(importlib.import_module(module_name), class_name)
            except ImportError as exc:
                unavailable[name] = f"not installed: {exc}"
                continue
            source = factory.from_config(config, store=store, data_dir=data_dir)
            if source is not None:
                sources.append(source)
            elif only is not None:  # asked for by name: say why it was not asked
                unavailable[name] = "not set up in the configuration"
        cache = (LookupCache.in_data_dir(data_dir, directory.cache_seconds)
                 if use_cache and directory.cache_seconds > 0 else None)
        return cls(sources, cache=cache, unavailable=unavailable, order=names, **options)

    def lookup(self, address: str, *, refresh: bool = False) -> LookupResult:
        """The usable certificates of ``address``, ranked, with every source's answer.

        ``refresh`` asks every source again (the cache is still written).

        Raises:
            DirectoryError: ``address`` is not a mailbox address. (A source that cannot
                answer is recorded in the result, not raised.)
        """
        normalised = normalise_address(address)
        now = self.clock()
        answers: list[SourceAnswer] = []
        candidates: list[Candidate] = []
        for name, why in self.unavailable.items():
            answers.append(SourceAnswer(name, "unavailable", error=why))
        for source in self.sources:
            answer, found = self._ask(source, normalised, now, refresh)
            answers.append(answer)
            candidates += found
        usable, refused = self._judge(normalised, candidates, now)
        rank = {name: i for i, name in enumerate(self.order)}
        answers.sort(key=lambda a: rank.get(a.source, len(rank)))
        return LookupResult(address.strip(), normalised, tuple(usable), tuple(refused),
                            tuple(answers))

    def _ask(self, source: Source, address: str, now: dt.datetime, refresh: bool
             ) -> tuple[SourceAnswer, Sequence[Candidate]]:
        use_cache = self.cache is not None and source.name not in LOCAL_SOURCES
        if use_cache and not refresh:
            assert self.cache is not None
            cached = self.cache.get(address, source.name, now)
            if cached is not None:
                return _answer(source.name, cached.found, cached=True), cached.found.candidates
        try:
            found = source.find(address)
        except DirectoryError as exc:
            return SourceAnswer(source.name, "error", error=str(exc) or type(exc).__name__), ()
        # A source names itself on each candidate; the resolver trusts its own record.
        found = Found(tuple(c if c.source == source.name
                            else dataclasses.replace(c, source=source.name)
                            for c in found.candidates), tuple(found.notes))
        if use_cache:
            assert self.cache is not None
            self.cache.put(address, source.name, found, now)
        return _answer(source.name, found), found.candidates

    def _judge(self, address: str, candidates: Sequence[Candidate], now: dt.datetime
               ) -> tuple[list[Usable], list[Refused]]:
        ours = {_fingerprint(c) for c in self.our_ca}
        seen: dict[str, Usable] = {}
        refused: list[Refused] = []
        refused_seen: set[str] = set()
        for candidate in candidates:
            fp = _fingerprint(candidate.certificate)
            if fp in seen:  # held by several sources: one certificate, known to each
                known = seen[fp]
                preferred = known.candidate.preferred or candidate.preferred
                seen[fp] = dataclasses.replace(
                    known, candidate=dataclasses.replace(known.candidate, preferred=preferred),
                    sources=(*known.sources, candidate.source))
                continue
            if fp in refused_seen:
                continue
            reasons, chain, warnings = self._check(address, candidate, now)
            if reasons:
                refused.append(Refused(candidate, tuple(reasons)))
                refused_seen.add(fp)
                continue
            is_ours = any(_fingerprint(c) in ours for c in chain[1:])
            seen[fp] = Usable(candidate, chain, (candidate.source,), is_ours, warnings)
        ranked = sorted(seen.values(), key=lambda u: (
            not u.candidate.preferred, not u.ours, -u.certificate.not_valid_before_utc.timestamp()))
        return ranked, refused

    def _check(self, address: str, candidate: Candidate, now: dt.datetime
               ) -> tuple[list[str], tuple[x509.Certificate, ...], tuple[str, ...]]:
        cert = candidate.certificate
        reasons: list[str] = []
        if comparable(address) not in {comparable(e) for e in cert_emails(cert)}:
            reasons.append(f"does not name {address}")
        if not self.trust:
            reasons.append("no trust anchor to validate it against (smimekit trust add,"
                           " or a CA in the data directory)")
            return reasons, (), ()
        intermediates = list(self.intermediates) + [
            c for c in candidate.chain if c not in self.intermediates]
        check = check_recipient(cert, trust=self.trust, intermediates=intermediates, at=now,
                                revocation=self.revocation, issuer_source=self.issuer_source)
        reasons += check.problems
        if not check.problems and not _receives(cert):
            reasons.append("its key cannot receive mail")
        return reasons, check.chain, check.warnings


def _receives(cert: x509.Certificate) -> bool:
    # The key type alone: check_recipient has judged dates and usage (can_receive_mail
    # would run its self-check a second time).
    from cryptography.hazmat.primitives.asymmetric import ec, rsa, x448, x25519

    from smimekit.keys.kinds import certificate_public_key

    key = certificate_public_key(cert)
    return isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                      | x25519.X25519PublicKey | x448.X448PublicKey)


def _answer(name: str, found: Found, *, cached: bool = False) -> SourceAnswer:
    count = len(found.candidates)
    return SourceAnswer(name, "found" if count else "none", count,
                        notes=tuple(found.notes), cached=cached)



def lookup(
    address: str,
    *,
    config: Config | None = None,
    data_dir: Path | str | None = None,
    store: Store | None = None,
    trust: Sequence[x509.Certificate] = (),
    intermediates: Sequence[x509.Certificate] = (),
    revocation: RevocationOptions | None = SOFT_REVOCATION,
    sources: Sequence[str] | None = None,
    use_cache: bool = True,
    refresh: bool = False,
) -> LookupResult:
    """The usable encryption certificates of ``address``, ranked (the first is the one to
    encrypt to), with what every source said: see :mod:`smimekit.directory.resolver`.

    ``config`` names and sets up the sources (``[directory]``; default: every source in the
    default order, those not set up left out); ``data_dir`` holds the lookup cache and our
    CA, whose certificates are trusted, ranked first and completed chains with, and whose
    CRLs are added to ``revocation``; ``store`` is the store our CA and harvested
    certificates are read from (None: no ``store`` or ``harvested`` source). ``trust`` are
    further anchors (e.g. :class:`~smimekit.validation.trust.TrustStore` anchors).
    ``sources`` restricts the sources asked. The result is returned whatever it holds: call
    :meth:`LookupResult.raise_for_failure` (or use :attr:`LookupResult.best`) when a
    certificate is required.

    Raises:
        DirectoryError: ``address`` is not a mailbox address.
        ConfigError: an unknown source name, or a source set up wrongly.
    """
    from smimekit.config import EMPTY
    from smimekit.directory.store_source import our_ca_chain, our_ca_revocation

    folder = Path(data_dir) if data_dir is not None else None
    ours = our_ca_chain(folder) if folder is not None else ()
    anchors = list(trust) + [c for c in ours if c.issuer == c.subject and c not in trust]
    if revocation is not None and folder is not None:
        extra = our_ca_revocation(store, folder)
        revocation = dataclasses.replace(revocation, crls=tuple(revocation.crls) + tuple(extra))
    options: dict[str, Any] = {
        "trust": anchors, "intermediates": list(intermediates) + list(ours),
        "revocation": revocation, "our_ca": ours,
    }
    if folder is None:
        use_cache = False
    resolver = Resolver.from_config(config or EMPTY, store=store, data_dir=folder or Path("."),
                                    only=sources, use_cache=use_cache, **options)
    return resolver.lookup(address, refresh=refresh)
