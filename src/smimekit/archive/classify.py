"""Who can read a message, and :func:`scan` over a whole archive.

:class:`Classifier` resolves each recipient slot against the keys at hand and the store
(our CA's certificates and the key history): readable *now*, only through *escrow*, or not
at all; it also sets the flags (legacy ciphers, small RSA keys, encrypted-then-signed ...).
The public names are re-exported by :mod:`smimekit.archive`.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smimekit.archive.envelope import _INPUT_ERRORS, Envelope, Kind, RecipientId, _inspect, _reason
from smimekit.archive.mailstore import (
    MAX_MESSAGE,
    ArchiveFormat,
    KeyPair,
    Progress,
    ProgressCallback,
    _file_item,
    _Item,
    _items,
    _Journal,
    _location,
    _message_files,
    archive_size,
    detect_format,
)
from smimekit.cms.keyinfo import issuer_and_serial_der, subject_key_id
from smimekit.dn import display_name
from smimekit.errors import ArchiveError
from smimekit.keys.kinds import certificate_public_key
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
        return self.email or display_name(self.certificate.subject)


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

    def _fingerprint(self) -> str:
        """A digest of what decides readability: the keys (their certificates, or public
        keys), the store and what it says of each certificate (loaded now)."""
        keys = {c.fingerprint(hashes.SHA256()).hex() for certs in self._key_certs.values()
                for c in certs}
        keys.update("spki:" + hashlib.sha256(k).hexdigest() for k in self._certless_spki)
        stored: set[str] = set()
        if self._store is not None:
            if self._directory is None:
                self._directory = _Directory(self._store, self._now)
            stored = {known.cert.fingerprint(hashes.SHA256()).hex() + ":"
                      + (known.status.value if known.status is not None else "-")
                      for entries in self._directory.by_id.values() for known in entries}
        text = json.dumps([sorted(keys), self._store.description if self._store else None,
                           sorted(stored)])
        return hashlib.sha256(text.encode()).hexdigest()

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
            if (self._certless_spki
                    and _spki(certificate_public_key(known.cert)) in self._certless_spki):
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
                public = certificate_public_key(status.certificate)
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
    resumed: int = 0
    """Messages taken from the ``state`` file of an earlier run (not in :meth:`to_json`:
    the report is the same either way)."""

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


SCAN_BATCH = 200
"""With ``state``: lines are fsynced after this many messages, or ..."""
SCAN_SYNC_SECONDS = 1.0
"""... this many seconds, whichever comes first."""
_STATE_VERSION = 1


def scan(path: Path | str, *, store: Store | None = None, keys: Sequence[KeyPair] = (),
         progress: ProgressCallback | None = None, max_size: int = MAX_MESSAGE,
         now: dt.datetime | None = None, state: Path | None = None) -> ScanReport:
    """Classify every message of an archive (see :class:`Classifier`); no key is used to
    decrypt anything.

    With ``state`` (a file, mode 0600, kept afterwards) the scan is resumable: each
    message's result is appended to it as a JSON line (fsynced every :data:`SCAN_BATCH`
    messages or :data:`SCAN_SYNC_SECONDS`), and a later call with the same file takes the
    messages recorded there from it (unchanged messages, by location, size and mtime; an
    mbox's by location and size in the same file) and classifies only the others. The report
    is the same as that of one uninterrupted scan. The file records the archive and a digest
    of the keys and the store (and what the store says of each certificate), and must match.

    Raises:
        ArchiveError: the archive cannot be read; ``state`` cannot be read or written, is
            damaged, or belongs to another archive, other keys or another store.
        StoreError: the store cannot be read.
    """
    p = Path(path)
    fmt = detect_format(p)
    total = archive_size(p)
    classifier = Classifier(store=store, keys=keys, now=now)
    report = ScanReport(str(p), fmt.value)
    tally = _Tally(report)
    started = time.perf_counter()
    journal = None
    done: dict[str, bytes] = {}
    if state is not None:
        journal, done = _open_state(Path(state), p, fmt, classifier, tally)
    try:
        for stamp, item, recorded in _walk(p, fmt, max_size, done):
            if recorded is not None:
                record = recorded
                report.resumed += 1
            elif item is not None:
                info = classifier.classify(item.location, item.data, problem=item.problem)
                record = tally.record(info, item.size, stamp, journal)
            tally.add(record)
            if progress is not None:
                progress(Progress("scanning", report.messages, report.bytes, total))
    finally:
        if journal is not None:
            journal.close()
    tally.finish()
    report.seconds = time.perf_counter() - started
    return report


def _walk(root: Path, fmt: ArchiveFormat, max_size: int, done: dict[str, bytes]
          ) -> Iterator[tuple[str, _Item | None, dict[str, Any] | None]]:
    """Each message's stamp (its size, and its mtime or the mbox's inode), and either the
    message or, when ``done`` holds a record of it with that stamp, the record (a file is
    then not read)."""
    if fmt is ArchiveFormat.MBOX:
        inode = root.stat().st_ino
        for item in _items(root, fmt, max_size):
            stamp = f"{item.size}:{inode}"
            record = _take(done, item.location, stamp)
            yield stamp, None if record is not None else item, record
        return
    for file in _message_files(root, fmt):
        location = _location(root, file, fmt)
        try:
            st = file.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = ""
        record = _take(done, location, stamp)
        if record is not None:
            yield stamp, None, record
        else:
            yield stamp, _file_item(root, file, fmt, max_size), None


def _take(done: dict[str, bytes], location: str, stamp: str) -> dict[str, Any] | None:
    """The record of the message at ``location`` if it is of this very message."""
    line = done.pop(location, None)
    if line is None or not stamp:
        return None
    record: dict[str, Any] = json.loads(line)
    return record if record.get("stamp") == stamp else None


def _open_state(path: Path, archive: Path, fmt: ArchiveFormat, classifier: Classifier,
                tally: _Tally) -> tuple[_Journal, dict[str, bytes]]:
    """The state journal, checked against this scan, and the recorded message lines by
    location (the recipients they name are loaded into ``tally``)."""
    journal = _Journal(path, batch=SCAN_BATCH, seconds=SCAN_SYNC_SECONDS, mode=0o600)
    header = {"t": "scan", "v": _STATE_VERSION, "path": str(archive.resolve()),
              "format": fmt.value, "keys": classifier._fingerprint()}
    done: dict[str, bytes] = {}
    first: dict[str, Any] | None = None
    for line, record in journal.entries(forgive_last=True):
        if first is None:
            first = record
            _check_state(path, record, header)
        elif record.get("t") == "r":
            tally.learn(record)
        elif record.get("t") == "m" and all(r in tally.known for r in record.get("r", ())):
            done[str(record.get("loc"))] = line
    if first is None:
        header["started"] = dt.datetime.now(dt.UTC).isoformat()
        journal.append(header)
        journal.sync()
    return journal, done


def _check_state(path: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    again = f"delete {path} to start a new scan"
    if found.get("t") != "scan" or found.get("v") != wanted["v"]:
        raise ArchiveError(f"{path} is not the state of a scan: {again}")
    if (found.get("path"), found.get("format")) != (wanted["path"], wanted["format"]):
        raise ArchiveError(f"{path} is the state of a scan of {found.get('path')}, not of"
                           f" {wanted['path']}: use another state file, or {again}")
    if found.get("keys") != wanted["keys"]:
        raise ArchiveError(f"{path} was made with other keys or another store (or the store"
                           f" has changed since, or a certificate expired): {again}")


class _Tally:
    """Builds a :class:`ScanReport` from per-message records (JSON-able dicts), so a report
    made from the lines of a state file is the same as one made as the scan goes."""

    def __init__(self, report: ScanReport) -> None:
        self.report = report
        self.known: dict[int, dict[str, Any]] = {}
        """Recipients by number (``t: r`` records)."""
        self._ids: dict[str, int] = {}
        self._next = 0
        self._counts: dict[int, int] = {}

    def learn(self, record: dict[str, Any]) -> bool:
        try:
            number, key = int(record["id"]), str(record["key"])
            Readability(record["readability"])
        except (KeyError, TypeError, ValueError):
            return False
        self.known[number] = record
        self._ids[key] = number
        self._next = max(self._next, number + 1)
        return True

    def record(self, info: MessageInfo, size: int, stamp: str, journal: _Journal | None
               ) -> dict[str, Any]:
        """The record of one message (written to ``journal`` after any new recipient)."""
        record: dict[str, Any] = {"t": "m", "loc": info.location, "stamp": stamp,
                                  "size": size, "kind": info.kind.value}
        if info.flags:
            record["flags"] = sorted(info.flags)
        if info.kind is Kind.MALFORMED:
            record["problem"] = info.problem or "malformed"
        if info.envelope is not None and info.readability is not None:
            record["read"] = info.readability.value
            record["cipher"] = info.envelope.cipher
            record["kt"] = sorted({f"{r.kind}-{r.algorithm}" for r in info.envelope.recipients})
            record["r"] = [self._recipient(s, journal) for s in info.recipients]
            if info.readability is Readability.UNREADABLE:
                record["mid"] = info.message_id
        if journal is not None:
            journal.append(record)
        return record

    def _recipient(self, status: RecipientStatus, journal: _Journal | None) -> int:
        key = status.recipient.key.hex()
        number = self._ids.get(key)
        if number is not None:
            return number
        cert, rid = status.certificate, status.recipient
        serial = cert.serial_number if cert is not None else rid.serial
        number = self._next
        entry: dict[str, Any] = {"t": "r", "id": number, "key": key, "label": status.label,
                 "identifier": rid.describe(), "readability": status.readability.value,
                 "subject": display_name(cert.subject) if cert is not None else None,
                 "email": status.email,
                 "serial": format(serial, "x") if serial is not None else None,
                 "issuer": display_name(cert.issuer) if cert is not None else rid.issuer}
        self.learn(entry)
        if journal is not None:
            journal.append(entry)
        return number

    def add(self, record: dict[str, Any]) -> None:
        report = self.report
        report.messages += 1
        report.bytes += record["size"]
        report.by_kind[record["kind"]] += 1
        report.by_flag.update(record.get("flags", ()))
        if "problem" in record:
            report.malformed.append((record["loc"], record["problem"]))
        readability = record.get("read")
        if readability is None:
            return
        report.by_readability[readability] += 1
        report.by_cipher[record["cipher"]] += 1
        report.by_key_transport.update(record["kt"])
        for number in record["r"]:
            self._counts[number] = self._counts.get(number, 0) + 1
        recipients = [self.known[n] for n in record["r"]]
        if readability == Readability.UNREADABLE.value:
            report.unreadable.append((record["loc"], record.get("mid"),
                                      tuple(r["label"] for r in recipients)))
        elif readability == Readability.ESCROW.value:
            report.escrow_users.update({r["label"] for r in recipients
                                        if r["readability"] == Readability.ESCROW.value})

    def finish(self) -> None:
        entries = [(self.known[n], count) for n, count in self._counts.items()]
        for r, count in sorted(entries, key=lambda e: (-e[1], e[0]["label"])):
            self.report.recipients.append(RecipientSummary(
                r["label"], r["identifier"], Readability(r["readability"]), count,
                r["subject"], r["email"],
                int(r["serial"], 16) if r["serial"] is not None else None, r["issuer"]))


def _keys_for(keys: Sequence[KeyPair], source: KeySource | None,
              recipients: Sequence[RecipientId]) -> list[KeyPair]:
    pairs = list(keys)
    if source is not None:
        pairs.extend(source(recipients))
    return pairs
