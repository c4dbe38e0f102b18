"""Certificates kept from signed mail: :func:`harvest` over mail archives, and the
``harvested`` source (:class:`HarvestedSource`) that gives them to the resolver.

Every message of the archives (mbox, Maildir, .eml files or folders, read by
:func:`smimekit.archive.iter_messages`) goes through the verification path of
``smimekit verify`` (:func:`smimekit.smime.wrap.unwrap`, then
:func:`smimekit.validation.assess.assess`) under the caller's trust anchors and revocation
options. Only when the whole verdict is valid (signature intact, chain to an anchor, usage,
revocation per policy, signing time) and the From address is one of the signer
certificate's addresses is anything kept, for that address: the signer's certificate with
the intermediates of its validated chain, and the certificate the signer named in
SMIMEEncryptionKeyPreference when the message carries it and it names the same address.
Nothing is ever kept from a message whose signature failed.

Encrypted messages are skipped (no key is used here: a harvest never decrypts), and so are
messages over the size cap and messages that cannot be parsed; each skip is counted by
reason, and none stops the run. The time a certificate was seen is the signer's signing
time (checked against the Date header by the verdict), else the Date header, else now.
"""

from __future__ import annotations

import binascii
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smimekit.cms import asn1
from smimekit.cms.keyinfo import CERTIFICATE_ERRORS
from smimekit.directory.sources import Candidate, Found
from smimekit.errors import ArchiveError, NoRecipientError, SmimeError
from smimekit.mailbox import comparable
from smimekit.validation.verdict import cert_emails

if TYPE_CHECKING:
    from smimekit.config import Config
    from smimekit.smime.wrap import Unwrapped
    from smimekit.store import Store
    from smimekit.validation.intermediates import IntermediateCache
    from smimekit.validation.revocation import RevocationOptions
    from smimekit.validation.verdict import Verdict

__all__ = ["MAX_HARVEST_MESSAGE", "HarvestReport", "HarvestedSource", "harvest", "record_signers"]


MAX_HARVEST_MESSAGE = 32 * 1024 * 1024
"""A larger message is skipped unread (``too-large``). Signed mail with attachments stays
well below; the archive reader itself would take up to 256 MiB."""

# Why a message was skipped: the keys of HarvestReport.skipped.
TOO_LARGE = "too-large"
UNREADABLE = "unreadable"
MALFORMED = "malformed"
ENCRYPTED = "encrypted"
PARTIALLY_SIGNED = "partially-signed"
INVALID = "signature-invalid"
FROM_MISMATCH = "from-mismatch"

# cryptography decodes a certificate's names and extensions when first asked, raising its own
# exceptions: smimekit.cms reads the message's certificates up front, these are for the rest.
_PARSE_ERRORS = (SmimeError, *asn1.PARSE_ERRORS, *CERTIFICATE_ERRORS, binascii.Error,
                 UnicodeError, RecursionError, ValueError, IndexError)


@dataclass
class HarvestReport:
    """What :func:`harvest` did."""

    messages: int = 0
    """Messages read (skipped ones included)."""
    signed: int = 0
    """Messages whose root is signed."""
    valid: int = 0
    """Signed messages whose verdict was valid and bound to the From address."""
    new: int = 0
    """(address, certificate) pairs kept for the first time."""
    updated: int = 0
    """Pairs known already whose first/last seen, chain or preference changed."""
    unchanged: int = 0
    """Pairs known already, nothing new (the same message read again)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Messages skipped, by reason (``too-large``, ``encrypted``, ``signature-invalid``,
    ``from-mismatch`` ...)."""
    notes: list[str] = field(default_factory=list)
    """One line per skipped signed message and per certificate left out (bounded)."""

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "signed": self.signed, "valid": self.valid,
                "certificates": {"new": self.new, "updated": self.updated,
                                 "unchanged": self.unchanged},
                "skipped": dict(sorted(self.skipped.items())), "notes": self.notes}

    def _note(self, text: str) -> None:
        if len(self.notes) < _MAX_NOTES:
            self.notes.append(text)


_MAX_NOTES = 1000


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _header(unwrapped: Unwrapped, name: str) -> str | None:
    value = unwrapped.root.get(name)
    return value.strip()[:300] if value else None


def _seen_at(signing_time: dt.datetime | None, unwrapped: Unwrapped,
             now: dt.datetime) -> dt.datetime:
    if signing_time is not None:
        return min(signing_time, now)
    date = _header(unwrapped, "date")
    if date:
        try:
            parsed = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None:
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            return min(parsed, now)
    return now


def harvest(
    paths: Iterable[str | Path],
    *,
    store: Store,
    trust: Sequence[x509.Certificate],
    extra_certs: Sequence[x509.Certificate] = (),
    revocation: RevocationOptions | None = None,
    intermediates: IntermediateCache | None = None,
    aia: bool = False,
    allow_legacy: bool = False,
    max_size: int = MAX_HARVEST_MESSAGE,
    now: dt.datetime | None = None,
    progress: Callable[[HarvestReport], None] | None = None,
) -> HarvestReport:
    """Keep the certificates of every validly signed message in the archives at ``paths``.

    ``trust``, ``extra_certs``, ``revocation``, ``intermediates``, ``aia`` and
    ``allow_legacy`` are those of :func:`smimekit.verify` (``revocation`` None: not checked).
    Each message is judged at ``now`` (default: the current time). ``progress`` is called
    after each message.

    Raises:
        ArchiveError: an archive cannot be read at all (a missing path).
        StoreError: the store cannot be written.
    """
    from smimekit.api import _issuer_source
    from smimekit.archive.mailstore import iter_messages

    when = now or dt.datetime.now(dt.UTC)
    report = HarvestReport()
    sources = _issuer_source(aia, intermediates, revocation)
    for path in paths:
        archive = Path(path)
        if not archive.exists():
            raise ArchiveError(f"{archive} does not exist")
        for raw in iter_messages(archive, max_size=max_size):
            report.messages += 1
            if raw.problem is not None:
                report.skipped[TOO_LARGE if raw.problem.startswith("larger") else UNREADABLE] += 1
            else:
                _one(raw.data, f"{archive} {raw.location}", store=store, trust=trust,
                     extra_certs=extra_certs, revocation=revocation, sources=sources,
                     allow_legacy=allow_legacy, when=when, report=report)
            if progress is not None:
                progress(report)
    return report


def _one(data: bytes, where: str, *, store: Store, trust: Sequence[x509.Certificate],
         extra_certs: Sequence[x509.Certificate], revocation: RevocationOptions | None,
         sources: Any, allow_legacy: bool, when: dt.datetime, report: HarvestReport) -> None:
    from smimekit.smime.wrap import unwrap
    from smimekit.validation.assess import assess

    try:
        unwrapped = unwrap(data, allow_legacy=allow_legacy, extra_certs=extra_certs)
    except NoRecipientError:
        report.skipped[ENCRYPTED] += 1
        return
    except _PARSE_ERRORS as exc:
        report.skipped[MALFORMED] += 1
        report._note(f"{where}: malformed: {str(exc)[:200] or type(exc).__name__}")
        return
    if unwrapped.partially_signed:
        report.skipped[PARTIALLY_SIGNED] += 1
        return
    if not unwrapped.signed:
        return  # plain mail: read, nothing to keep
    report.signed += 1
    try:
        verdict = assess(unwrapped, trust=trust, at=when, extra_certs=extra_certs,
                         allow_legacy=allow_legacy, revocation=revocation,
                         issuer_source=sources)
    except _PARSE_ERRORS as exc:
        report.skipped[MALFORMED] += 1
        report._note(f"{where}: malformed: {str(exc)[:200] or type(exc).__name__}")
        return
    _judged(unwrapped, verdict, where, store=store, trust=trust, extra_certs=extra_certs,
            when=when, report=report)


def record_signers(
    unwrapped: Unwrapped,
    verdict: Verdict,
    where: str,
    *,
    store: Store,
    trust: Sequence[x509.Certificate],
    extra_certs: Sequence[x509.Certificate] = (),
    now: dt.datetime | None = None,
) -> HarvestReport:
    """Keep the certificates of one signed message already unwrapped and judged, as
    :func:`harvest` does for each message of an archive (the gateway calls it for mail it
    verified). Nothing is kept unless ``verdict`` is valid and bound to the From address.
    ``where`` names the message in the store (its Message-ID is added).

    Raises:
        StoreError: the store cannot be written.
    """
    report = HarvestReport(messages=1)
    if unwrapped.partially_signed:
        report.skipped[PARTIALLY_SIGNED] += 1
    elif unwrapped.signed:
        report.signed += 1
        _judged(unwrapped, verdict, where, store=store, trust=trust, extra_certs=extra_certs,
                when=now or dt.datetime.now(dt.UTC), report=report)
    return report


def _judged(unwrapped: Unwrapped, verdict: Verdict, where: str, *, store: Store,
            trust: Sequence[x509.Certificate], extra_certs: Sequence[x509.Certificate],
            when: dt.datetime, report: HarvestReport) -> None:
    message_id = _header(unwrapped, "message-id")
    ref = f"{where} {message_id}" if message_id else where
    if not verdict.valid:
        from_only = all(s.intact and s.trusted and s.key_usage_ok and s.from_match is False
                        for s in verdict.signers) and bool(verdict.signers) \
            and not verdict.reasons
        report.skipped[FROM_MISMATCH if from_only else INVALID] += 1
        report._note(f"{ref}: not kept: {'; '.join(verdict.all_reasons())[:300]}")
        return
    _keep(unwrapped, verdict, ref, store=store, trust=trust, extra_certs=extra_certs,
          when=when, report=report)


def _keep(unwrapped: Unwrapped, verdict: Verdict, ref: str, *, store: Store,
          trust: Sequence[x509.Certificate], extra_certs: Sequence[x509.Certificate],
          when: dt.datetime, report: HarvestReport) -> None:
    address = comparable(verdict.from_address or "")
    signers = [(layer.signed, s) for layer in unwrapped.layers
               if layer.kind == "signed" and layer.signed is not None
               for s in layer.signed.signers]
    # assess() judged exactly these signers, in this order
    if len(signers) != len(verdict.signers) or not verdict.from_address:
        report.skipped[INVALID] += 1
        return
    kept_any = False
    for (signed, signer), judged in zip(signers, verdict.signers, strict=True):
        cert = signer.certificate
        if address not in {comparable(e) for e in cert_emails(cert)}:
            report.skipped[FROM_MISMATCH] += 1
            report._note(f"{ref}: the signer's certificate does not name {address}")
            return
        pool = {_fingerprint(c): c for c in (*signed.certificates, *extra_certs, *trust)}
        # the validated chain, signer first and anchor last: keep what lies between
        chain = [pool[c.sha256] for c in judged.chain[1:-1] if c.sha256 in pool]
        seen = _seen_at(signer.signing_time, unwrapped, when)
        preference = signer.encryption_preference
        named = preference.certificate if preference is not None else None
        _count(report, store.record_harvested(
            address, cert, chain=chain, role="signer", preferred=named == cert,
            seen_at=seen, message_ref=ref))
        kept_any = True
        if named is not None and named != cert:
            if address not in {comparable(e) for e in cert_emails(named)}:
                report._note(f"{ref}: the encryption certificate it named is for"
                             f" {', '.join(cert_emails(named)) or 'no address'}: left out")
                continue
            # The resolver validates it (chain, usage, revocation) before anyone encrypts to
            # it; here it is kept because a valid signature of the address's owner named it.
            _count(report, store.record_harvested(
                address, named, chain=chain if named.issuer == cert.issuer else (),
                role="encryption", preferred=True, seen_at=seen, message_ref=ref))
        elif preference is not None and named is None:
            report._note(f"{ref}: names an encryption certificate the message does not"
                         f" carry ({preference.identifier})")
    if kept_any:
        report.valid += 1


def _count(report: HarvestReport, outcome: Any) -> None:
    from smimekit.store.harvested import Recorded

    if outcome is Recorded.NEW:
        report.new += 1
    elif outcome is Recorded.UPDATED:
        report.updated += 1
    else:
        report.unchanged += 1


class HarvestedSource:
    """The ``harvested`` source: certificates :func:`harvest` kept, as the store holds them.

    Candidates carry ``preferred`` (named in the sender's SMIMEEncryptionKeyPreference),
    first and last seen, the intermediates that came with them, and ``where``: the message
    they were last seen in. Expired ones are returned too: the resolver judges.
    """

    name = "harvested"

    def __init__(self, store: Store) -> None:
        self._store = store

    @classmethod
    def from_config(cls, config: Config, *, store: Store | None,
                    data_dir: Path) -> HarvestedSource | None:
        """The source over ``store``; None without a store (nothing was harvested)."""
        return None if store is None else cls(store)

    def find(self, address: str) -> Found:
        """The certificates kept for ``address``.

        Raises:
            DirectoryError: the store cannot be read.
        """
        from smimekit.errors import DirectoryError, StoreError

        try:
            rows = self._store.harvested_for(comparable(address))
        except StoreError as exc:
            raise DirectoryError(f"cannot read harvested certificates: {exc}",
                                 source=self.name) from None
        candidates: list[Candidate] = []
        notes: list[str] = []
        for row in rows:
            try:
                cert, chain = row.certificate, row.chain
            except ValueError:
                notes.append(f"harvested certificate {row.fingerprint[:16]}... does not parse")
                continue
            candidates.append(Candidate(
                certificate=cert, source=self.name, chain=chain, where=row.message_ref,
                preferred=row.preferred, first_seen=row.first_seen, last_seen=row.last_seen))
        return Found(candidates, tuple(notes))
