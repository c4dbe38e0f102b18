"""Who can read a message, and :func:`scan` over a whole archive.

:class:`Classifier` resolves each recipient slot against the keys at hand and the store
(our CA's certificates and the key history): readable *now*, only through *escrow*, or not
at all; it also sets the flags (legacy ciphers, small RSA keys, encrypted-then-signed ...).
The public names are re-exported by :mod:`smimekit.escrow.archive`.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smimekit.cms.keyinfo import issuer_and_serial_der, subject_key_id
from smimekit.escrow.envelope import _INPUT_ERRORS, Envelope, Kind, RecipientId, _inspect, _reason
from smimekit.escrow.mailstore import (
    MAX_MESSAGE,
    KeyPair,
    Progress,
    ProgressCallback,
    _items,
    archive_size,
    detect_format,
)
from smimekit.store.db import Store, certificate_emails

__all__ = [
    "Classifier",
    "KeySource",
    "MessageInfo",
    "Readability",
    "RecipientStatus",
    "RecipientSummary",
    "ScanReport",
    "scan",
]

class KeySource(Protocol):
    """More keys for the recipients of one message (e.g. recovered from escrow)."""

    def __call__(self, recipients: Sequence[RecipientId], /) -> Iterable[KeyPair]: ...


class Readability(enum.Enum):
    """Who can open an encrypted message. Ordered: ``now`` beats ``escrow``."""

    NOW = "now"
    """A given key, or a certificate of our CA that is live and unexpired (its holder has
    the key)."""
    ESCROW = "escrow"
    """Only a key kept in the store's key history (recovery under escrow)."""
    UNREADABLE = "unreadable"
    """No known key."""


_RANK = {Readability.NOW: 2, Readability.ESCROW: 1, Readability.UNREADABLE: 0}


@dataclass(frozen=True)
class RecipientStatus:
    """A recipient slot as the classifier understood it."""

    recipient: RecipientId
    readability: Readability
    certificate: x509.Certificate | None
    """The recipient's certificate when known (a given key's, or from the store)."""

    @property
    def email(self) -> str | None:
        if self.certificate is None:
            return None
        emails = certificate_emails(self.certificate)
        return emails[0] if emails else None

    @property
    def label(self) -> str:
        """The address or subject when the certificate is known, else the identifier."""
        if self.certificate is None:
            return self.recipient.describe()
        return self.email or self.certificate.subject.rfc4514_string()


@dataclass(frozen=True)
class MessageInfo:
    """What :class:`Classifier` found in one message."""

    location: str
    size: int
    kind: Kind
    message_id: str | None = None
    envelope: Envelope | None = None
    readability: Readability | None = None
    """For encrypted messages."""
    recipients: tuple[RecipientStatus, ...] = ()
    flags: frozenset[str] = frozenset()
    """``3des``, ``rc2``, ``cbc-no-integrity``, ``rsa-under-2048``, ``unknown-cipher``,
    ``encrypted-then-signed``, ``partially-encrypted``, ``partially-signed``."""
    problem: str | None = None
    """Why a message is malformed."""


@dataclass(frozen=True)
class _Known:
    cert: x509.Certificate
    status: Readability | None


class _Directory:
    """The store's certificates by recipient identifier, with what the store knows of their
    keys; loaded once per run (a few queries per person)."""

    def __init__(self, store: Store, now: dt.datetime) -> None:
        self.by_id: dict[bytes, list[_Known]] = {}
        emails: set[str] = set()
        after = 0
        while True:
            batch = store.issued_records(live_only=False, after_id=after, limit=1000)
            if not batch:
                break
            emails.update(r.email for r in batch)
            after = batch[-1].id
        for email in sorted(emails):
            issued = {r.fingerprint: r for r in store.issued_for(email)}
            history = {k.certificate_fingerprint for k in store.private_keys_for(email)}
            for stored in store.certificates_for(email):
                record = issued.get(stored.fingerprint)
                status = None
                if record is not None and record.live and record.not_after > now:
                    status = Readability.NOW
                elif stored.fingerprint in history:
                    status = Readability.ESCROW
                known = _Known(stored.certificate, status)
                for key in _cert_keys(known.cert):
                    entries = self.by_id.setdefault(key, [])
                    if all(k.cert != known.cert for k in entries):
                        entries.append(known)


def _cert_keys(cert: x509.Certificate) -> tuple[bytes, bytes]:
    return b"I" + issuer_and_serial_der(cert), b"S" + subject_key_id(cert)


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


class Classifier:
    """Classifies messages without any private key.

    ``keys`` are the keys at hand (a match makes a message readable *now*); ``store`` adds
    the certificates our CA issued and the key history (*now* for a live, unexpired
    certificate, *escrow* for one whose key only the key history holds).
    """

    def __init__(self, *, store: Store | None = None, keys: Sequence[KeyPair] = (),
                 now: dt.datetime | None = None) -> None:
        self._store = store
        self._now = now or dt.datetime.now(dt.UTC)
        self._directory: _Directory | None = None
        self._key_certs: dict[bytes, list[x509.Certificate]] = {}
        self._certless_ski: set[bytes] = set()
        self._certless_spki: set[bytes] = set()
        for key, cert in keys:
            if cert is not None:
                for k in _cert_keys(cert):
                    self._key_certs.setdefault(k, []).append(cert)
                continue
            public = key.public_key()
            self._certless_spki.add(_spki(public))
            try:
                self._certless_ski.add(
                    x509.SubjectKeyIdentifier.from_public_key(public).digest)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                pass

    def _store_entries(self, rid: RecipientId) -> list[_Known]:
        if self._store is None:
            return []
        if self._directory is None:
            self._directory = _Directory(self._store, self._now)
        return self._directory.by_id.get(rid.key, [])

    def resolve(self, rid: RecipientId) -> RecipientStatus:
        """The recipient's certificate (when known) and who can read what is sent to it."""
        certs = list(self._key_certs.get(rid.key, []))
        best = Readability.NOW if certs else Readability.UNREADABLE
        if rid.ski is not None and rid.ski in self._certless_ski:
            best = Readability.NOW
        for known in self._store_entries(rid):
            if known.cert not in certs:
                certs.append(known.cert)
            status = known.status
            if self._certless_spki and _spki(known.cert.public_key()) in self._certless_spki:
                status = Readability.NOW
            if status is not None and _RANK[status] > _RANK[best]:
                best = status
        return RecipientStatus(rid, best, certs[0] if certs else None)

    def classify(self, location: str, data: bytes, *, problem: str | None = None
                 ) -> MessageInfo:
        """What ``data`` is; malformed input is reported, never raised."""
        if problem is not None:
            return MessageInfo(location, len(data), Kind.MALFORMED, problem=problem)
        try:
            head, parsed = _inspect(data)
        except _INPUT_ERRORS as exc:
            return MessageInfo(location, len(data), Kind.MALFORMED, problem=_reason(exc))
        message_id = head.get("message-id")
        if parsed.envelope is None:
            return MessageInfo(location, len(data), parsed.kind, message_id,
                               flags=parsed.flags)
        env = parsed.envelope
        statuses = tuple(self.resolve(rid) for rid in env.recipients)
        best = max((s.readability for s in statuses), key=_RANK.__getitem__,
                   default=Readability.UNREADABLE)
        flags = set(parsed.flags) | _cipher_flags(env)
        for status in statuses:
            bits = status.recipient.rsa_bits
            if status.certificate is not None:
                public = status.certificate.public_key()
                bits = public.key_size if isinstance(public, rsa.RSAPublicKey) else None
            if bits is not None and bits < 2048:
                flags.add("rsa-under-2048")
        return MessageInfo(location, len(data), Kind.ENCRYPTED, message_id, env, best,
                           statuses, frozenset(flags))


def _cipher_flags(env: Envelope) -> set[str]:
    flags = set()
    if env.cipher.startswith("3des"):
        flags.add("3des")
    elif env.cipher.startswith("rc2"):
        flags.add("rc2")
    elif env.cipher[:1].isdigit():
        flags.add("unknown-cipher")
    if not env.authenticated:
        flags.add("cbc-no-integrity")
    if env.nested:
        flags.add("encrypted-then-signed")
    if env.partial:
        flags.add("partially-encrypted")
    return flags



@dataclass(frozen=True)
class RecipientSummary:
    """One recipient certificate (or identifier) and how many messages are sent to it."""

    label: str
    """The address or subject when the certificate is known, else the identifier."""
    identifier: str
    """How the messages name it: issuer and serial, or subject key identifier."""
    readability: Readability
    messages: int
    subject: str | None = None
    email: str | None = None
    serial: int | None = None
    issuer: str | None = None


@dataclass
class ScanReport:
    """What :func:`scan` found (counts, the recipients, and the messages that need care)."""

    path: str
    format: str
    messages: int = 0
    bytes: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_readability: Counter[str] = field(default_factory=Counter)
    """Encrypted messages only."""
    by_cipher: Counter[str] = field(default_factory=Counter)
    by_key_transport: Counter[str] = field(default_factory=Counter)
    """Per message: each algorithm counted once per message that uses it."""
    by_flag: Counter[str] = field(default_factory=Counter)
    recipients: list[RecipientSummary] = field(default_factory=list)
    unreadable: list[tuple[str, str | None, tuple[str, ...]]] = field(default_factory=list)
    """(location, Message-ID, recipient labels) of every unreadable message."""
    malformed: list[tuple[str, str]] = field(default_factory=list)
    """(location, reason)."""
    escrow_users: Counter[str] = field(default_factory=Counter)
    """Messages readable only through escrow, per user whose key history opens them (the
    address for ``--user``; a message to two such users counts for both)."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "by_kind": dict(self.by_kind),
            "by_readability": dict(self.by_readability),
            "by_cipher": dict(self.by_cipher),
            "by_key_transport": dict(self.by_key_transport),
            "flags": dict(self.by_flag),
            "recipients": [
                {"recipient": r.label, "identifier": r.identifier, "email": r.email,
                 "subject": r.subject, "issuer": r.issuer,
                 "serial": format(r.serial, "x") if r.serial is not None else None,
                 "readability": r.readability.value, "messages": r.messages}
                for r in self.recipients
            ],
            "unreadable": [{"location": loc, "message_id": mid, "recipients": list(rcpt)}
                           for loc, mid, rcpt in self.unreadable],
            "malformed": [{"location": loc, "reason": why} for loc, why in self.malformed],
            "escrow_users": dict(self.escrow_users),
        }


def scan(path: Path | str, *, store: Store | None = None, keys: Sequence[KeyPair] = (),
         progress: ProgressCallback | None = None, max_size: int = MAX_MESSAGE,
         now: dt.datetime | None = None) -> ScanReport:
    """Classify every message of an archive (see :class:`Classifier`); no key is used to
    decrypt anything.

    Raises:
        ArchiveError: the archive cannot be read.
        StoreError: the store cannot be read.
    """
    p = Path(path)
    fmt = detect_format(p)
    total = archive_size(p)
    classifier = Classifier(store=store, keys=keys, now=now)
    report = ScanReport(str(p), fmt.value)
    recipients: dict[bytes, list[Any]] = {}
    started = time.perf_counter()
    for item in _items(p, fmt, max_size):
        info = classifier.classify(item.location, item.data, problem=item.problem)
        report.messages += 1
        report.bytes += item.size
        report.by_kind[info.kind.value] += 1
        report.by_flag.update(info.flags)
        if info.kind is Kind.MALFORMED:
            report.malformed.append((info.location, info.problem or "malformed"))
        if info.envelope is not None and info.readability is not None:
            report.by_readability[info.readability.value] += 1
            report.by_cipher[info.envelope.cipher] += 1
            report.by_key_transport.update({f"{r.kind}-{r.algorithm}"
                                            for r in info.envelope.recipients})
            for status in info.recipients:
                entry = recipients.setdefault(status.recipient.key, [status, 0])
                entry[1] += 1
            if info.readability is Readability.UNREADABLE:
                report.unreadable.append((info.location, info.message_id,
                                          tuple(s.label for s in info.recipients)))
            elif info.readability is Readability.ESCROW:
                report.escrow_users.update({s.label for s in info.recipients
                                            if s.readability is Readability.ESCROW})
        if progress is not None:
            progress(Progress("scanning", report.messages, report.bytes, total))
    for status, count in sorted(recipients.values(), key=lambda e: (-e[1], e[0].label)):
        cert, rid = status.certificate, status.recipient
        report.recipients.append(RecipientSummary(
            status.label, rid.describe(), status.readability, count,
            cert.subject.rfc4514_string() if cert is not None else None, status.email,
            cert.serial_number if cert is not None else rid.serial,
            cert.issuer.rfc4514_string() if cert is not None else rid.issuer))
    report.seconds = time.perf_counter() - started
    return report


def _keys_for(keys: Sequence[KeyPair], source: KeySource | None,
              recipients: Sequence[RecipientId]) -> list[KeyPair]:
    pairs = list(keys)
    if source is not None:
        pairs.extend(source(recipients))
    return pairs
