"""Mail archives: scan, export and re-encrypt mbox, Maildir and folders of .eml files.

* :func:`iter_messages` streams the messages of an archive, one at a time (a multi-gigabyte
  mbox is never held in memory: at most one message, capped at ``max_size``).
* :func:`scan` says, without any private key, what is encrypted, to whom, with which
  algorithms, and whether it is readable *now* (a given key, or a certificate of ours that is
  current), only through *escrow* (a key in the store's key history) or not at all.
* :func:`decrypt_archive` exports the plaintext of every message that opens into a new
  folder, with a manifest; a re-run continues where the last one stopped.
* :func:`reencrypt_archive` migrates encrypted messages to their owners' current
  certificates with AES-256-GCM. A crash at any moment loses nothing: each new message is
  written beside the old one, fsynced, verified by decrypting it, and only then renamed over
  it; an mbox is rewritten as a whole, verified, and swapped in one rename. A re-run (the
  journal next to the archive) finishes the job. docs/archive.md has the details.

Keys come as ``(private key, certificate or None)`` pairs; a :class:`KeySource` (escrow)
can add keys for the recipients of each message.
"""

from __future__ import annotations

import binascii
import csv
import datetime as dt
import enum
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from asn1crypto import algos, cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.api import decrypt as api_decrypt
from smimekit.cms import asn1
from smimekit.cms.algorithms import CONTENT_CIPHERS, Cipher
from smimekit.cms.enveloped import (
    ENCRYPTED_TYPES,
    content_type_of,
    decrypt_enveloped,
    encrypt_enveloped_stream,
)
from smimekit.cms.keyinfo import issuer_and_serial_der, subject_key_id
from smimekit.cms.recipients import RecipientOptions
from smimekit.cms.signed import embedded_content
from smimekit.errors import (
    DecryptionError,
    LegacyAlgorithmError,
    MalformedError,
    NoRecipientError,
    SmimeError,
    UnsupportedError,
)
from smimekit.fsutil import atomic_write, private_dir
from smimekit.keys.load import key_matches
from smimekit.smime.canonical import CRLF, Entity, Header, split_multipart, to_crlf
from smimekit.smime.message import (
    build_pkcs7_mime_stream,
    is_multipart_signed,
    is_pkcs7_mime,
    pkcs7_der,
    split_signed,
)
from smimekit.store.db import Store, certificate_emails
from smimekit.validation.recipients import recipient_problems

__all__ = [
    "ArchiveError",
    "ArchiveFormat",
    "Classifier",
    "DecryptReport",
    "Envelope",
    "KeyPair",
    "KeySource",
    "Kind",
    "MessageInfo",
    "Progress",
    "RawMessage",
    "Readability",
    "RecipientId",
    "RecipientStatus",
    "RecipientSummary",
    "RecipientsFor",
    "ReencryptReport",
    "ScanReport",
    "current_certificates",
    "decrypt_archive",
    "detect_format",
    "iter_messages",
    "reencrypt_archive",
    "scan",
]

MAX_MESSAGE = 256 * 1024 * 1024
"""A larger message is reported (``RawMessage.problem``), never read into memory."""
MAX_HEADER = 1024 * 1024
"""A larger header section is reported as malformed (RFC 5322 lines are under 1000 octets;
real header sections are kilobytes)."""

KeyPair = tuple[PrivateKeyTypes, x509.Certificate | None]


class ArchiveError(SmimeError):
    """The archive cannot be read or changed as asked (missing, locked, changed meanwhile)."""


class KeySource(Protocol):
    """More keys for the recipients of one message (e.g. recovered from escrow)."""

    def __call__(self, recipients: Sequence[RecipientId], /) -> Iterable[KeyPair]: ...


class RecipientsFor(Protocol):
    """The new recipients of a message, given the certificates it was encrypted to (those
    that are known; unknown recipients are left out)."""

    def __call__(self, old: Sequence[x509.Certificate], /) -> Sequence[x509.Certificate]: ...


@dataclass(frozen=True)
class Progress:
    """What a progress callback is told after each message."""

    phase: str
    """``scanning``, ``decrypting``, ``re-encrypting`` or ``verifying``."""
    messages: int
    done: int
    """Bytes of the archive handled so far."""
    total: int
    """Bytes of the archive (of the new mbox while verifying)."""


ProgressCallback = Callable[[Progress], None]


# ============================================================================================
# Reading archives
# ============================================================================================


class ArchiveFormat(enum.Enum):
    MBOX = "mbox"
    MAILDIR = "maildir"
    EML = "eml"
    """A folder of ``*.eml`` files (searched recursively), or one message file."""


class RawMessage(NamedTuple):
    """One message of an archive."""

    location: str
    """Stable within the archive: ``mbox:INDEX@OFFSET``, ``maildir:[FOLDER/]UNIQUE`` (flags
    and the new/cur sub-folder left out) or ``eml:RELATIVE/PATH``."""
    data: bytes
    """The message as stored (for an mbox: without the From_ line, >From unquoted)."""
    problem: str | None = None
    """Why the message was not read (too large, not an mbox message); ``data`` is then
    empty or partial."""


@dataclass(frozen=True)
class _Item:
    location: str
    data: bytes
    problem: str | None
    path: Path
    size: int
    index: int = 0
    offset: int = 0
    from_line: bytes = b""
    raw: bytes | None = None
    """For an mbox: the whole segment as stored (None when over the size cap)."""


def detect_format(path: Path | str) -> ArchiveFormat:
    """mbox for a file that starts with ``From `` (or is empty); one message for another file;
    Maildir for a folder with ``cur`` or ``new``; otherwise a folder of .eml files.

    Raises:
        ArchiveError: the path does not exist.
    """
    p = Path(path)
    if p.is_dir():
        return ArchiveFormat.MAILDIR if (p / "cur").is_dir() or (p / "new").is_dir() \
            else ArchiveFormat.EML
    try:
        with open(p, "rb") as fh:
            head = fh.read(5)
    except OSError as exc:
        raise ArchiveError(f"cannot read {p}: {exc.strerror or exc}") from None
    return ArchiveFormat.MBOX if head in (b"From ", b"") else ArchiveFormat.EML


def iter_messages(path: Path | str, *, max_size: int = MAX_MESSAGE) -> Iterator[RawMessage]:
    """Every message of the archive at ``path``, in a stable order, one at a time.

    Raises:
        ArchiveError: the archive cannot be read.
    """
    for item in _items(Path(path), detect_format(path), max_size):
        yield RawMessage(item.location, item.data, item.problem)


def archive_size(path: Path | str) -> int:
    """Bytes of the files that make up the archive (for progress)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt is ArchiveFormat.MBOX or p.is_file():
        return p.stat().st_size
    return sum(_size(f) for f in _message_files(p, fmt))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _items(path: Path, fmt: ArchiveFormat, max_size: int) -> Iterator[_Item]:
    if fmt is ArchiveFormat.MBOX:
        yield from _mbox_items(path, 0, 0, max_size)
        return
    for file in _message_files(path, fmt):
        yield _file_item(path, file, fmt, max_size)


def _message_files(root: Path, fmt: ArchiveFormat) -> Iterator[Path]:
    if root.is_file():
        yield root
    elif fmt is ArchiveFormat.MAILDIR:
        for folder in _maildir_folders(root):
            for sub in ("new", "cur"):
                yield from _plain_files(folder / sub)
    else:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and name.lower().endswith(".eml"):
                    file = Path(dirpath) / name
                    if file.is_file() and not file.is_symlink():
                        yield file


def _maildir_folders(root: Path) -> list[Path]:
    """The Maildir and its Maildir++ sub-folders (``.Sent``, ``.Archive.2020`` ...)."""
    folders = [root]
    try:
        subs = sorted(d for d in root.iterdir() if d.name.startswith(".") and d.is_dir()
                      and ((d / "cur").is_dir() or (d / "new").is_dir()))
    except OSError as exc:
        raise ArchiveError(f"cannot list {root}: {exc.strerror or exc}") from None
    return folders + subs


def _plain_files(folder: Path) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ArchiveError(f"cannot list {folder}: {exc.strerror or exc}") from None
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def _maildir_unique(name: str) -> str:
    """The unique part of a Maildir file name: no ``:2,FLAGS`` and no ``,S=`` fields."""
    return name.split(":", 1)[0].split(",", 1)[0]


def _location(root: Path, file: Path, fmt: ArchiveFormat) -> str:
    if root.is_file():
        return f"eml:{file.name}"
    if fmt is ArchiveFormat.MAILDIR:
        folder = file.parent.parent.relative_to(root).as_posix()
        unique = _maildir_unique(file.name)
        return f"maildir:{unique}" if folder == "." else f"maildir:{folder}/{unique}"
    return f"eml:{file.relative_to(root).as_posix()}"


def _file_item(root: Path, file: Path, fmt: ArchiveFormat, max_size: int) -> _Item:
    location = _location(root, file, fmt)
    try:
        size = file.stat().st_size
        if size > max_size:
            return _Item(location, b"", f"larger than {max_size} bytes: not read", file, size)
        data = file.read_bytes()
    except OSError as exc:
        return _Item(location, b"", f"cannot read: {exc.strerror or exc}", file, 0)
    return _Item(location, data, None, file, len(data))


# -- mbox ------------------------------------------------------------------------------------

# A message starts with a From_ line at the start of the file or after an empty line
# (RFC 4155); a "From " line inside a body without an empty line before it is body text.
_SEP_KEEP = 7  # bytes kept across reads so a separator split between two reads is found
_BLOCK = 1 << 20
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_FROM_TO_QUOTE = re.compile(rb"^(>*From )", re.MULTILINE)


class _Segment(NamedTuple):
    offset: int
    length: int
    from_line: bytes
    message: bytes | None
    """None when over the size cap, or when the segment has no From_ line."""
    raw: bytes | None
    """The segment as stored, when asked for (and not over the cap)."""


def _mbox_segments(path: Path, start: int, max_size: int, keep_raw: bool
                   ) -> Iterator[_Segment]:
    """Each stored message. Parts are copied straight out of the read buffer (through
    memoryviews that die at once, so the buffer can be trimmed): copies are what reading an
    mbox costs."""
    with open(path, "rb") as fh:
        fh.seek(start)
        buf = bytearray()
        seg_start, dropped, scan_from = start, 0, 0
        while True:
            block = fh.read(_BLOCK)
            more = bool(block)
            buf += block
            del block
            while True:
                cut = _separator(buf, scan_from)
                if cut < 0:
                    break
                length = dropped + cut
                yield _cut(buf, cut, seg_start, length, length > max_size, keep_raw)
                del buf[:cut]
                seg_start += length
                dropped, scan_from = 0, 0
            if not more:
                break
            scan_from = max(0, len(buf) - _SEP_KEEP)
            if len(buf) > max_size:
                # Over the cap: forget the bytes, keep looking for the next separator.
                drop = len(buf) - _SEP_KEEP
                dropped += drop
                del buf[:drop]
                scan_from = 0
        if buf or dropped:
            length = dropped + len(buf)
            yield _cut(buf, len(buf), seg_start, length, length > max_size, keep_raw)


def _cut(buf: bytearray, cut: int, offset: int, length: int, too_large: bool,
         keep_raw: bool) -> _Segment:
    """The segment ``buf[:cut]``: its From_ line and its message (one trailing empty line
    off, ``>From`` unquoted the mboxrd way; in an mboxo file the rare body line that began
    with ``>From`` loses its ``>``)."""
    if too_large:
        return _Segment(offset, length, b"", None, None)
    raw = bytes(memoryview(buf)[:cut]) if keep_raw else None
    if not buf.startswith(b"From "):
        return _Segment(offset, length, b"", None, raw)
    eol = buf.find(b"\n", 0, cut) + 1 or cut
    end = cut
    if buf.endswith(b"\r\n\r\n", 0, cut):
        end -= 2
    elif buf.endswith(b"\n\n", 0, cut):
        end -= 1
    end = max(end, eol)
    message = bytes(memoryview(buf)[eol:end])
    # memchr for ">" first: a base64 body has none, so the regular expression rarely runs
    if buf.find(b">", eol, end) >= 0 and b">From " in message:
        message = _QUOTED_FROM.sub(rb"\1", message)
    return _Segment(offset, length, bytes(memoryview(buf)[:eol]), message, raw)


def _separator(buf: bytearray, start: int) -> int:
    """Where the next From_ line after an empty line starts in ``buf``, or -1."""
    while True:
        i = buf.find(b"\nFrom ", start)
        if i < 0:
            return -1
        if i >= 1 and (buf[i - 1] == 0x0A or (buf[i - 1] == 0x0D and i >= 2
                                               and buf[i - 2] == 0x0A)):
            return i + 1
        start = i + 1


def _mbox_items(path: Path, start: int, index: int, max_size: int, *,
                keep_raw: bool = False) -> Iterator[_Item]:
    for seg in _mbox_segments(path, start, max_size, keep_raw):
        location = f"mbox:{index}@{seg.offset}"
        if seg.message is not None:
            yield _Item(location, seg.message, None, path, seg.length, index, seg.offset,
                        seg.from_line, seg.raw)
        elif seg.length > max_size:
            yield _Item(location, b"", f"larger than {max_size} bytes: not read", path,
                        seg.length, index, seg.offset)
        else:
            yield _Item(location, b"", "not an mbox message (no From_ line)", path,
                        seg.length, index, seg.offset, b"", seg.raw)
        index += 1


def _mbox_quote(message: bytes) -> bytes:
    return _FROM_TO_QUOTE.sub(rb">\1", message) if b"From " in message else message


# ============================================================================================
# Classification
# ============================================================================================


class Kind(enum.Enum):
    PLAIN = "plain"
    SIGNED = "signed"
    ENCRYPTED = "encrypted"
    MALFORMED = "malformed"


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
_RSA_TRANSPORT = ("rsaes_pkcs1v15", "rsa", "rsaes_oaep")


@dataclass(frozen=True)
class RecipientId:
    """One recipient slot of an encrypted message, read without any private key."""

    kind: str
    """``ktri`` (key transport), ``kari`` (key agreement), ``kekri``, ``pwri`` or ``ori``."""
    algorithm: str
    """Key transport or agreement algorithm, e.g. ``rsaes_pkcs1v15``."""
    issuer_and_serial: bytes | None = None
    """DER of the IssuerAndSerialNumber."""
    ski: bytes | None = None
    issuer: str | None = None
    serial: int | None = None
    rsa_bits: int | None = None
    """For RSA key transport: the modulus size, from the length of the encrypted key."""

    @property
    def key(self) -> bytes:
        if self.issuer_and_serial is not None:
            return b"I" + self.issuer_and_serial
        if self.ski is not None:
            return b"S" + self.ski
        return b"?" + self.kind.encode()

    def names(self, cert: x509.Certificate) -> bool:
        """True when this slot is addressed to ``cert``."""
        if self.issuer_and_serial is not None:
            return self.issuer_and_serial == issuer_and_serial_der(cert)
        return self.ski is not None and self.ski == subject_key_id(cert)

    def describe(self) -> str:
        if self.issuer is not None:
            return f"issuer {self.issuer}, serial {self.serial:x}"
        if self.ski is not None:
            return f"subject key identifier {self.ski.hex()}"
        return f"{self.kind} recipient"


@dataclass(frozen=True)
class Envelope:
    """The public facts of one encryption layer."""

    content_type: str
    """``enveloped_data`` or ``authenticated_enveloped_data``."""
    cipher: str
    """E.g. ``aes256-gcm``, ``3des-cbc``, ``rc2-cbc/40``; an OID when unknown."""
    recipients: tuple[RecipientId, ...]
    nested: tuple[str, ...] = ()
    """What the layer sits in, outermost first: ``multipart/signed``, ``signed-data``."""
    partial: bool = False
    """The encrypted part sits inside a multipart next to unencrypted parts."""

    @property
    def authenticated(self) -> bool:
        return self.content_type == "authenticated_enveloped_data"


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


class _Parsed(NamedTuple):
    kind: Kind
    envelope: Envelope | None = None
    der: bytes | None = None
    flags: frozenset[str] = frozenset()


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


_INPUT_ERRORS = (SmimeError, *asn1.PARSE_ERRORS, binascii.Error, UnicodeError, RecursionError)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _split_head(data: bytes) -> tuple[bytes, int]:
    """(the header block, offset of the body) of a message with LF or CRLF line ends."""
    if data.startswith((b"\n", b"\r\n")):
        return b"", data.find(b"\n") + 1
    lf = data.find(b"\n\n")
    crlf = data.find(b"\n\r\n", 0, lf if lf >= 0 else len(data))
    if crlf >= 0:
        return data[:crlf].rstrip(b"\r"), crlf + 3
    if lf >= 0:
        return data[:lf].rstrip(b"\r"), lf + 2
    return data, len(data)


def _inspect(data: bytes) -> tuple[Entity, _Parsed]:
    head, body_at = _split_head(data)
    if len(head) > MAX_HEADER:
        raise MalformedError(f"the header section is larger than {MAX_HEADER} bytes")
    entity = Entity.parse(to_crlf(head) + CRLF + CRLF)
    if not entity.headers:
        raise MalformedError("not a mail message: it does not start with a header field")
    if is_pkcs7_mime(entity):
        cte = (entity.get("content-transfer-encoding") or "7bit").strip().lower()
        if cte in ("base64", "7bit", "8bit", "binary"):
            try:
                return entity, _root_envelope(data, body_at, cte)
            except _NotEnveloped:
                pass
    if is_pkcs7_mime(entity) or entity.content_type.startswith("multipart/"):
        return entity, _walk(Entity.parse(to_crlf(data)), 0, (), False)
    return entity, _Parsed(Kind.PLAIN)


# -- the envelope, read from the start of the DER ---------------------------------------------

_OIDS = {
    bytes.fromhex("2a864886f70d010702"): "signed_data",
    bytes.fromhex("2a864886f70d010703"): "enveloped_data",
    bytes.fromhex("2a864886f70d0109100117"): "authenticated_enveloped_data",
}
_RC2_BITS = {160: 40, 120: 64, 58: 128}


class _Short(Exception):
    """More of the DER is needed."""


class _NotEnveloped(Exception):
    """Not an (auth)enveloped-data, or not plain enough to read from its start."""


def _header(buf: bytes, off: int) -> tuple[int, int, int | None]:
    """(tag, offset of the contents, length or None when indefinite) of the TLV at ``off``."""
    if off + 2 > len(buf):
        raise _Short
    tag, first = buf[off], buf[off + 1]
    if tag & 0x1F == 0x1F:
        raise _NotEnveloped
    if first < 0x80:
        return tag, off + 2, first
    if first == 0x80:
        return tag, off + 2, None
    n = first & 0x7F
    if n > 4:
        raise MalformedError("malformed CMS envelope: an absurd length")
    if off + 2 + n > len(buf):
        raise _Short
    return tag, off + 2 + n, int.from_bytes(buf[off + 2:off + 2 + n], "big")


def _element(buf: bytes, off: int, tag: int, what: str) -> tuple[bytes, int]:
    """The whole TLV at ``off`` (which must have ``tag``) and the offset after it."""
    got, start, length = _header(buf, off)
    if got != tag:
        raise MalformedError(f"malformed CMS envelope: {what} expected")
    if length is None:
        raise _NotEnveloped
    if start + length > len(buf):
        raise _Short
    return buf[off:start + length], start + length


def _enter(buf: bytes, off: int, tag: int, what: str) -> tuple[int, int | None]:
    got, start, length = _header(buf, off)
    if got != tag:
        raise MalformedError(f"malformed CMS envelope: {what} expected")
    return start, length


def _envelope_parts(buf: bytes) -> tuple[str, bytes, bytes, int | None]:
    """(content type, RecipientInfos DER, content-encryption AlgorithmIdentifier DER, length
    of the whole ContentInfo or None) from the start of an EnvelopedData/AuthEnvelopedData."""
    off, length = _enter(buf, 0, 0x30, "ContentInfo")
    total = off + length if length is not None else None
    oid, off = _element(buf, off, 0x06, "content type")
    kind = _OIDS.get(oid[2:])
    if kind not in ENCRYPTED_TYPES:
        raise _NotEnveloped
    off, _ = _enter(buf, off, 0xA0, "[0] content")
    off, _ = _enter(buf, off, 0x30, "EnvelopedData")
    _, off = _element(buf, off, 0x02, "version")
    if _header(buf, off)[0] == 0xA0:  # originatorInfo
        _, off = _element(buf, off, 0xA0, "originatorInfo")
    infos, off = _element(buf, off, 0x31, "RecipientInfos")
    off, _ = _enter(buf, off, 0x30, "EncryptedContentInfo")
    _, off = _element(buf, off, 0x06, "content type")
    alg, _ = _element(buf, off, 0x30, "content-encryption algorithm")
    return str(kind), infos, alg, total


def _root_envelope(data: bytes, body_at: int, cte: str) -> _Parsed:
    """The envelope of a root application/pkcs7-mime, decoding only the start of the body:
    the recipients come before the ciphertext."""
    body = memoryview(data)[body_at:]
    size = 16384
    while True:
        chunk = bytes(body[:size])
        if cte == "base64":
            chunk = chunk.translate(None, b" \t\r\n")
            chunk = chunk[:len(chunk) - len(chunk) % 4]
            der = binascii.a2b_base64(chunk)
        else:
            der = chunk
        try:
            kind, infos, alg, total = _envelope_parts(der)
            break
        except _Short:
            if size >= len(body):
                raise MalformedError("truncated CMS envelope") from None
            size *= 8
    if total is not None:
        present = _decoded_length(data, body_at, cte, exact=False)
        if present < total:
            present = _decoded_length(data, body_at, cte, exact=True)
        if present < total:
            raise MalformedError(
                f"truncated encrypted message: the CMS has {total} bytes, {present} are there")
    return _Parsed(Kind.ENCRYPTED, _envelope(kind, infos, alg, (), False))


def _decoded_length(data: bytes, body_at: int, cte: str, *, exact: bool) -> int:
    """Bytes the body decodes to. Not ``exact``: a quick estimate from the line count (CRLF
    assumed when the first body line has it); a short estimate is recounted exactly."""
    if cte != "base64":
        return len(data) - body_at
    if exact:
        spaces = sum(data.count(c, body_at) for c in (b"\n", b"\r", b" ", b"\t"))
    else:
        lines = data.count(b"\n", body_at)
        first = data.find(b"\n", body_at)
        spaces = lines * 2 if first > body_at and data[first - 1] == 0x0D else lines
    chars = len(data) - body_at - spaces
    tail = data[-8:].rstrip()
    pad = len(tail) - len(tail.rstrip(b"="))
    return chars * 3 // 4 - pad


def _envelope_of(der: bytes, nested: tuple[str, ...], partial: bool) -> Envelope:
    """The envelope of a whole (auth)enveloped-data, also BER with indefinite lengths."""
    try:
        kind, infos, alg, _ = _envelope_parts(der)
    except (_Short, _NotEnveloped):
        try:
            info = asn1.load(cms.ContentInfo, der, "CMS ContentInfo")
            kind = str(info["content_type"].native)
            body = info["content"]
            eci = body["auth_encrypted_content_info" if kind == "authenticated_enveloped_data"
                       else "encrypted_content_info"]
            infos = body["recipient_infos"].dump()
            alg = eci["content_encryption_algorithm"].dump()
        except asn1.PARSE_ERRORS as exc:
            raise MalformedError(f"malformed CMS envelope: {_reason(exc)}") from None
    return _envelope(kind, infos, alg, nested, partial)


def _envelope(kind: str, infos_der: bytes, alg_der: bytes, nested: tuple[str, ...],
              partial: bool) -> Envelope:
    try:
        infos = asn1.load(cms.RecipientInfos, infos_der, "RecipientInfos")
        recipients = tuple(r for info in infos for r in _recipient_ids(info))
        alg = asn1.load(algos.EncryptionAlgorithm, alg_der, "content-encryption algorithm")
        name = str(alg["algorithm"].native)
        spec = CONTENT_CIPHERS.get(name)
        cipher = spec.name if spec is not None else name
        if name == "rc2":
            version = asn1.RC2CBCParameter.load(alg["parameters"].dump())[
                "rc2_parameter_version"].native
            bits = _RC2_BITS.get(version) if version is not None else 32
            cipher = f"rc2-cbc/{bits or version}"
    except asn1.PARSE_ERRORS as exc:
        raise MalformedError(f"malformed CMS envelope: {_reason(exc)}") from None
    return Envelope(kind, cipher, recipients, nested, partial)


def _recipient_ids(info: Any) -> list[RecipientId]:
    name = info.name
    value = info.chosen
    if name == "ktri":
        alg = str(value["key_encryption_algorithm"]["algorithm"].native)
        bits = len(value["encrypted_key"].contents) * 8 if alg in _RSA_TRANSPORT else None
        return [_rid(name, alg, value["rid"], bits)]
    if name == "kari":
        alg = str(value["key_encryption_algorithm"]["algorithm"].native)
        return [_rid(name, alg, rek["rid"], None) for rek in value["recipient_encrypted_keys"]]
    return [RecipientId(name, "-")]


def _rid(kind: str, alg: str, rid: Any, bits: int | None) -> RecipientId:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        return RecipientId(kind, alg, ias.dump(), None, _rfc4514(ias["issuer"]),
                           int(ias["serial_number"].native), bits)
    chosen = rid.chosen
    ski = chosen["subject_key_identifier"].native if kind == "kari" else chosen.native
    return RecipientId(kind, alg, None, bytes(ski), rsa_bits=bits)


_SHORT_NAMES = {
    "common_name": "CN", "organization_name": "O", "organizational_unit_name": "OU",
    "country_name": "C", "locality_name": "L", "state_or_province_name": "ST",
    "email_address": "emailAddress", "domain_component": "DC", "serial_number": "serialNumber",
}


def _rfc4514(name: Any) -> str:
    """An asn1crypto Name written like ``x509.Name.rfc4514_string()`` (last RDN first)."""
    rdns = []
    for rdn in name.chosen:
        parts = []
        for attr in rdn:
            kind = attr["type"]
            label = _SHORT_NAMES.get(str(kind.native), kind.dotted)
            value = str(attr["value"].native).replace("\\", "\\\\").replace(",", "\\,")
            parts.append(f"{label}={value}")
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


# -- the slow path: the whole MIME tree ----------------------------------------------------------

_MAX_DEPTH = 16


def _walk(ent: Entity, depth: int, nested: tuple[str, ...], inside: bool) -> _Parsed:
    if depth > _MAX_DEPTH:
        return _Parsed(Kind.PLAIN)
    if is_multipart_signed(ent):
        inner = _walk(Entity.parse(split_signed(ent).content), depth + 1,
                      (*nested, "multipart/signed"), inside)
        return inner if inner.kind is Kind.ENCRYPTED else _Parsed(Kind.SIGNED, flags=inner.flags)
    if is_pkcs7_mime(ent):
        der = pkcs7_der(ent)
        kind = content_type_of(der)
        if kind in ENCRYPTED_TYPES:
            return _Parsed(Kind.ENCRYPTED, _envelope_of(der, nested, inside), der)
        if kind == "signed_data":
            try:
                content = embedded_content(der)
            except asn1.PARSE_ERRORS as exc:
                raise MalformedError(f"malformed SignedData: {_reason(exc)}") from None
            if content is not None:
                inner = _walk(Entity.parse(to_crlf(content)), depth + 1,
                              (*nested, "signed-data"), inside)
                if inner.kind is Kind.ENCRYPTED:
                    return inner
            return _Parsed(Kind.SIGNED)
        raise MalformedError(f"application/pkcs7-mime carries an unexpected CMS type {kind}")
    if ent.content_type.startswith("multipart/"):
        parts = split_multipart(ent.raw, ent.params.get("boundary", ""), ent.body_offset)
        found = [_walk(Entity.parse(part), depth + 1, nested, True) for part in parts[:1000]]
        encrypted = next((f for f in found if f.kind is Kind.ENCRYPTED), None)
        if encrypted is not None:
            return encrypted  # its envelope says partial: it sits inside a multipart
        if any(f.kind is Kind.SIGNED for f in found):
            return _Parsed(Kind.SIGNED, flags=frozenset({"partially-signed"}))
        return _Parsed(Kind.PLAIN)
    return _Parsed(Kind.PLAIN)


# ============================================================================================
# scan
# ============================================================================================


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


# ============================================================================================
# Shared by decrypt and re-encrypt: journals, fsync
# ============================================================================================


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Journal:
    """Append-only JSON lines, each fsynced before the call returns. A line torn by a crash
    is cut off when the journal is read again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None

    def read(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ArchiveError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(len(whole))
                os.fsync(fh.fileno())
        records = []
        for line in whole.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                raise ArchiveError(f"{self.path} is damaged: remove it to start over") from None
            if isinstance(record, dict):
                records.append(record)
        return records

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            created = not self.path.exists()
            self._fh = open(self.path, "ab")
            if created:
                _fsync_dir(self.path.parent)
        self._fh.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)


def _keys_for(keys: Sequence[KeyPair], source: KeySource | None,
              recipients: Sequence[RecipientId]) -> list[KeyPair]:
    pairs = list(keys)
    if source is not None:
        pairs.extend(source(recipients))
    return pairs


# ============================================================================================
# decrypt_archive: plaintext for discovery
# ============================================================================================

MANIFEST = "manifest.jsonl"
MANIFEST_CSV = "manifest.csv"
_FINAL = ("decrypted", "not-encrypted", "malformed")


@dataclass
class DecryptReport:
    """What :func:`decrypt_archive` did. Statuses: ``decrypted``, ``not-encrypted``,
    ``malformed``, ``no-key`` (none of the keys is a recipient) and ``failed`` (a key
    matched but the message does not open, or it needs ``allow_legacy``)."""

    out_dir: Path
    manifest: Path
    counts: Counter[str] = field(default_factory=Counter)
    resumed: int = 0
    """Messages done by an earlier run (skipped)."""
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    """(location, status, reason) of every message that did not open."""


def _no_key(exc: DecryptionError, readability: Readability | None) -> bool:
    """No key is a recipient; or only keys without a certificate were tried, on slots that
    name no key we know (so a failure there says "not ours", not "damaged")."""
    return isinstance(exc, NoRecipientError) or readability is Readability.UNREADABLE


def _export_name(location: str) -> str:
    return "msg-" + hashlib.sha256(location.encode()).hexdigest()[:24] + ".eml"


def decrypt_archive(
    path: Path | str,
    out_dir: Path | str,
    keys: Sequence[KeyPair],
    *,
    key_source: KeySource | None = None,
    allow_legacy: bool = False,
    progress: ProgressCallback | None = None,
    max_size: int = MAX_MESSAGE,
) -> DecryptReport:
    """Write the plaintext of every encrypted message that ``keys`` open into ``out_dir``.

    One file per message (mode 0600, ``msg-<hash of the location>.eml``: the outer headers
    around the decrypted entity, as :func:`smimekit.decrypt` gives it). ``manifest.jsonl``
    gets one line per message (location, status, reason, output file and its SHA-256, the
    SHA-256 of the source message), fsynced after the message's file; ``manifest.csv``
    summarises it at the end. ``out_dir`` must be new, empty, or an earlier export of the
    same archive: then messages already exported, not encrypted or malformed are skipped,
    and the others tried again.

    Raises:
        ArchiveError: the archive cannot be read, or ``out_dir`` holds something else.
        OSError: an output file cannot be written.
    """
    src = Path(path).resolve()
    fmt = detect_format(src)
    out = Path(out_dir)
    journal = _Journal(out / MANIFEST)
    if out.exists() and any(out.iterdir()) and not journal.path.exists():
        raise ArchiveError(f"{out} is not empty and holds no earlier export: choose a new folder")
    private_dir(out)
    records = journal.read()
    if records and records[0].get("source") != str(src):
        raise ArchiveError(f"{out} holds an export of {records[0].get('source')}, not {src}")
    if not records:
        journal.append({"t": "export", "source": str(src), "format": fmt.value,
                        "started": dt.datetime.now(dt.UTC).isoformat()})
    done = {r["location"] for r in records if r.get("status") in _FINAL and _present(out, r)}
    report = DecryptReport(out, journal.path)
    classifier = Classifier(keys=keys)
    total = archive_size(src)
    seen = handled = 0
    try:
        for item in _items(src, fmt, max_size):
            seen += 1
            handled += item.size
            if item.location in done:
                report.resumed += 1
            else:
                entry = _export_one(item, out, classifier, keys, key_source, allow_legacy)
                journal.append(entry)
                report.counts[entry["status"]] += 1
                if entry["status"] not in ("decrypted", "not-encrypted"):
                    report.problems.append((item.location, entry["status"], entry["reason"]))
            if progress is not None:
                progress(Progress("decrypting", seen, handled, total))
    finally:
        journal.close()
        _fsync_dir(out)
    _write_csv(out / MANIFEST_CSV, journal.read())
    return report


def _present(out: Path, record: dict[str, Any]) -> bool:
    """A decrypted message's file is there, whole. (Its rename is made durable by the
    fsync of the manifest on common file systems, not by POSIX: this check covers the
    rest.)"""
    if record["status"] != "decrypted":
        return True
    try:
        return (out / str(record["output"])).stat().st_size == record.get("size")
    except OSError:
        return False


def _write_new(path: Path, data: bytes) -> None:
    """``data`` into ``path`` (mode 0600) through a fsynced temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _export_one(item: _Item, out: Path, classifier: Classifier, keys: Sequence[KeyPair],
                key_source: KeySource | None, allow_legacy: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"location": item.location, "status": "", "reason": None,
                             "output": None, "sha256": None, "cipher": None,
                             "source_sha256": hashlib.sha256(item.data).hexdigest()}
    info = classifier.classify(item.location, item.data, problem=item.problem)
    if info.kind is Kind.MALFORMED:
        return {**entry, "status": "malformed", "reason": info.problem}
    if info.envelope is None:
        return {**entry, "status": "not-encrypted"}
    pairs = _keys_for(keys, key_source, info.envelope.recipients)
    try:
        result = api_decrypt(item.data, None, keys=pairs, allow_legacy=allow_legacy)
    except LegacyAlgorithmError as exc:
        return {**entry, "status": "failed", "reason": f"{exc} (allow legacy algorithms)"}
    except MalformedError as exc:
        return {**entry, "status": "malformed", "reason": _reason(exc)}
    except DecryptionError as exc:
        if _no_key(exc, info.readability):
            return {**entry, "status": "no-key", "reason": "none of the keys opens it"}
        return {**entry, "status": "failed", "reason": str(exc)}
    except UnsupportedError as exc:
        return {**entry, "status": "failed", "reason": str(exc)}
    name = _export_name(item.location)
    _write_new(out / name, result.content)
    return {**entry, "status": "decrypted", "output": name, "cipher": result.cipher,
            "sha256": hashlib.sha256(result.content).hexdigest(),
            "size": len(result.content),
            "reason": "partial: only the encrypted part" if result.partial else None}


_CSV_FIELDS = ("location", "status", "reason", "output", "sha256", "cipher", "source_sha256")


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        if "location" in record:
            latest[record["location"]] = record
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for record in latest.values():
        writer.writerow(record)
    atomic_write(path, text.getvalue().encode())


# ============================================================================================
# reencrypt_archive: to the owners' current certificates, AES-256-GCM
# ============================================================================================

JOURNAL_SUFFIX = ".smimekit-reencrypt.jsonl"
NEW_SUFFIX = ".smimekit-new"
ORIG_SUFFIX = ".orig"
_CHECKPOINT_SECONDS = 1.0
_CHECKPOINT_BYTES = 64 * 1024 * 1024


def current_certificates(store: Store, *, now: dt.datetime | None = None) -> RecipientsFor:
    """The default :class:`RecipientsFor`: for every address of the old recipient
    certificates, the newest live, unexpired encryption certificate our CA issued to it."""
    when = now or dt.datetime.now(dt.UTC)
    cache: dict[str, x509.Certificate | None] = {}

    def current(email: str) -> x509.Certificate | None:
        if email not in cache:
            live = [r for r in store.issued_for(email)
                    if r.live and r.not_after > when and r.purpose in ("encrypt", "both")]
            stored = store.get_certificate(live[-1].fingerprint) if live else None
            cache[email] = stored.certificate if stored is not None else None
        return cache[email]

    def recipients_for(old: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        found: list[x509.Certificate] = []
        for cert in old:
            for email in certificate_emails(cert):
                new = current(email)
                if new is not None and new not in found:
                    found.append(new)
        return found

    return recipients_for


@dataclass
class ReencryptReport:
    """What :func:`reencrypt_archive` did. Statuses: ``reencrypted`` (``would-reencrypt``
    in a dry run), ``current`` (already AES-256-GCM to the new recipients), ``unchanged``
    (not encrypted, malformed, or encrypted inside a signature or next to other parts),
    ``no-key`` (no key opens it) and ``failed``."""

    path: Path
    format: str
    counts: Counter[str] = field(default_factory=Counter)
    resumed: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    """(location, status, reason) of every message left as it was, except plain ones."""


class _Work(NamedTuple):
    outer: tuple[Header, ...]
    der: bytes
    envelope: Envelope
    targets: list[x509.Certificate]
    lf: bool
    readability: Readability | None


class _Skip(NamedTuple):
    status: str
    reason: str | None


class _Reencryptor:
    """The per-message work shared by the per-file and the mbox schemes."""

    def __init__(self, keys: Sequence[KeyPair], recipients_for: RecipientsFor,
                 store: Store | None, key_source: KeySource | None, allow_legacy: bool,
                 oaep: bool) -> None:
        self.keys = list(keys)
        self.recipients_for = recipients_for
        self.key_source = key_source
        self.allow_legacy = allow_legacy
        self.options = RecipientOptions(oaep=oaep)
        self.classifier = Classifier(store=store, keys=keys)
        self._unfit: dict[x509.Certificate, list[str]] = {}
        self._openable: dict[x509.Certificate, bool] = {}

    def plan(self, item: _Item) -> _Work | _Skip:
        info = self.classifier.classify(item.location, item.data, problem=item.problem)
        if info.kind is Kind.MALFORMED:
            return _Skip("unchanged", f"malformed: {info.problem}")
        env = info.envelope
        if env is None:
            return _Skip("unchanged", None)
        if env.nested or env.partial:
            return _Skip("unchanged", "encrypted inside a signature or next to other parts:"
                                      " re-encrypting would break it")
        old = [s.certificate for s in info.recipients if s.certificate is not None]
        targets = list(dict.fromkeys(self.recipients_for(old)))
        for cert in targets:
            if cert not in self._unfit:
                self._unfit[cert] = recipient_problems(cert, trust=None)
            if self._unfit[cert]:
                return _Skip("failed", f"new recipient {cert.subject.rfc4514_string()} is"
                                       f" unfit: {'; '.join(self._unfit[cert])}")
        if (targets and env.cipher == Cipher.AES256_GCM.value and env.authenticated
                and all(any(r.names(c) for r in env.recipients) for c in targets)
                and all(any(r.names(c) for c in targets) for r in env.recipients)):
            return _Skip("current", None)
        root = Entity.parse(to_crlf(item.data))
        lf = b"\r\n" not in item.data[:item.data.find(b"\n") + 1]
        return _Work(root.outer_headers, pkcs7_der(root), env, targets, lf, info.readability)

    def seal(self, work: _Work, content: bytes) -> bytes:
        """The new message: the same outer headers around ``content``, AES-256-GCM."""
        stream = encrypt_enveloped_stream([content], work.targets, cipher=Cipher.AES256_GCM,
                                          options=self.options)
        new = build_pkcs7_mime_stream(work.outer, stream.prefix, stream.ciphertext,
                                      stream.suffix, stream.kind)
        return new.replace(CRLF, b"\n") if work.lf else new

    def can_verify(self, work: _Work) -> bool:
        """True when a key at hand belongs to one of the new recipients."""
        for cert in work.targets:
            if cert not in self._openable:
                self._openable[cert] = any(key_matches(key, cert) for key, _ in self.keys)
            if self._openable[cert]:
                return True
        if self.key_source is None:
            return False
        extra = self.key_source(_ids_of(work.targets))
        return any(key_matches(key, cert) for key, _ in extra for cert in work.targets)

    def verify(self, new: bytes, digest: str, targets: Sequence[x509.Certificate]) -> None:
        """Decrypt the new message; its plaintext must hash to ``digest``.

        Raises:
            ArchiveError: it does not.
        """
        try:
            root = Entity.parse(to_crlf(new))
            der = pkcs7_der(root)
            out = decrypt_enveloped(der, _keys_for(self.keys, self.key_source,
                                                   _ids_of(targets)))
        except SmimeError as exc:
            raise ArchiveError(f"the new message does not decrypt: {exc}") from None
        if out.cipher != Cipher.AES256_GCM.value or \
                hashlib.sha256(out.content).hexdigest() != digest:
            raise ArchiveError("the new message does not decrypt to the same content")

    def attempt(self, work: _Work, *, dry_run: bool = False) -> tuple[bytes, str] | _Skip:
        """(the new message, SHA-256 of the plaintext), or why not; a dry run stops before
        encrypting (``would-reencrypt``)."""
        try:
            old = decrypt_enveloped(work.der, _keys_for(self.keys, self.key_source,
                                                        work.envelope.recipients),
                                    allow_legacy=self.allow_legacy)
        except LegacyAlgorithmError as exc:
            return _Skip("failed", f"{exc} (allow legacy algorithms)")
        except DecryptionError as exc:
            if _no_key(exc, work.readability):
                return _Skip("no-key", "none of the keys opens it")
            return _Skip("failed", str(exc))
        except SmimeError as exc:
            return _Skip("failed", _reason(exc))
        problem = self.unfit(work)
        if problem is not None:
            return _Skip("failed", problem)
        if dry_run:
            return _Skip("would-reencrypt", None)
        try:
            new = self.seal(work, old.content)
        except SmimeError as exc:
            return _Skip("failed", _reason(exc))
        return new, hashlib.sha256(old.content).hexdigest()

    def unfit(self, work: _Work) -> str | None:
        """Why the new message could not be made or verified, if so."""
        if not work.targets:
            return "no current certificate is known for its recipients"
        if not self.can_verify(work):
            return ("none of the keys belongs to the new recipients, so the result could"
                    " not be verified (give the current key too)")
        return None


def _ids_of(certs: Sequence[x509.Certificate]) -> list[RecipientId]:
    return [RecipientId("ktri" if isinstance(c.public_key(), rsa.RSAPublicKey) else "kari",
                        "-", issuer_and_serial_der(c)) for c in certs]


def reencrypt_archive(
    path: Path | str,
    keys: Sequence[KeyPair],
    recipients_for: RecipientsFor | None = None,
    *,
    store: Store | None = None,
    key_source: KeySource | None = None,
    allow_legacy: bool = False,
    oaep: bool = False,
    dry_run: bool = False,
    keep_original: bool = False,
    progress: ProgressCallback | None = None,
    max_size: int = MAX_MESSAGE,
    _fault: Callable[[str], None] | None = None,
) -> ReencryptReport:
    """Re-encrypt every encrypted message to ``recipients_for(old certificates)`` with
    AES-256-GCM, in place, so that a crash at any moment loses nothing.

    ``keys`` (and ``key_source``) must open the old messages and the new ones: each new
    message is decrypted again and its plaintext compared before it replaces the old one.
    ``recipients_for`` defaults to :func:`current_certificates` of ``store``; the store also
    names the certificates of old recipients whose key was given without its certificate.
    The outer headers are kept; the encrypted entity is carried over byte for byte (so
    signatures inside stay valid and protected headers stay protected). Messages encrypted
    inside a signature or next to unencrypted parts are left as they are.

    Folders (Maildir, .eml): each message goes to a new file beside it (Maildir: in
    ``tmp/``), is fsynced, read back and verified, then renamed over the original; the
    journal ``<archive>.smimekit-reencrypt.jsonl`` records it. An mbox is rewritten as a
    whole beside itself (``<name>.smimekit-new``, checkpointed), verified message by message,
    then swapped in with one rename while the old file is kept as ``<name>.orig`` (removed
    once the swap is recorded, unless ``keep_original``). Re-running finishes an interrupted
    job; ``dry_run`` writes nothing.

    Raises:
        ArchiveError: the archive cannot be read or is locked, it changed during the run, or
            the new mbox did not verify (the original is then untouched).
        ValueError: neither ``recipients_for`` nor ``store`` is given.
        OSError: a file cannot be written.
    """
    if recipients_for is None:
        if store is None:
            raise ValueError("give recipients_for, or a store to find current certificates in")
        recipients_for = current_certificates(store)
    p = Path(path)
    fmt = detect_format(p)
    worker = _Reencryptor(keys, recipients_for, store, key_source, allow_legacy, oaep)
    report = ReencryptReport(p, fmt.value)
    fault = _fault or (lambda point: None)
    if fmt is ArchiveFormat.MBOX:
        _MboxJob(p, worker, report, dry_run, keep_original, progress, max_size, fault).run()
    else:
        _reencrypt_files(p, fmt, worker, report, dry_run, progress, max_size, fault)
    return report


def _journal_path(archive: Path) -> Path:
    return archive.with_name(archive.name + JOURNAL_SUFFIX)


def _record(report: ReencryptReport, location: str, skip: _Skip) -> None:
    report.counts[skip.status] += 1
    if skip.reason is not None:
        report.problems.append((location, skip.status, skip.reason))


# -- folders: one file per message ----------------------------------------------------------------


def _temp_for(file: Path, fmt: ArchiveFormat) -> Path:
    if fmt is ArchiveFormat.MAILDIR and (file.parent.parent / "tmp").is_dir():
        return file.parent.parent / "tmp" / (_maildir_unique(file.name) + NEW_SUFFIX)
    return file.with_name("." + file.name + NEW_SUFFIX)


def _remove_leftovers(root: Path, fmt: ArchiveFormat) -> None:
    """Temporary files of an interrupted run: never renamed, so never needed."""
    if root.is_file():
        _temp_for(root, fmt).unlink(missing_ok=True)
        return
    if fmt is ArchiveFormat.MAILDIR:
        places = [d / "tmp" for d in _maildir_folders(root)]
    else:
        places = [Path(d) for d, _, _ in os.walk(root)]
    for place in places:
        try:
            names = os.listdir(place)
        except OSError:
            continue
        for name in names:
            if name.endswith(NEW_SUFFIX) and (fmt is ArchiveFormat.MAILDIR
                                              or name.startswith(".")):
                (place / name).unlink(missing_ok=True)


_SIZE_FIELDS = re.compile(r",([SW])=\d+")


def _maildir_name(name: str, data: bytes) -> str:
    """The name with its ``,S=`` (size) and ``,W=`` (size with CRLF) fields made true
    (Dovecot trusts them)."""
    base, sep, info = name.partition(":")
    if ",S=" not in base and ",W=" not in base:
        return name
    sizes = {"S": len(data), "W": len(to_crlf(data))}
    return _SIZE_FIELDS.sub(lambda m: f",{m.group(1)}={sizes[m.group(1)]}", base) + sep + info


def _fix_maildir_name(file: Path, fmt: ArchiveFormat) -> None:
    if fmt is not ArchiveFormat.MAILDIR or not _SIZE_FIELDS.search(file.name):
        return
    right = _maildir_name(file.name, file.read_bytes())
    if right != file.name:
        os.rename(file, file.with_name(right))
        _fsync_dir(file.parent)


def _reencrypt_files(root: Path, fmt: ArchiveFormat, worker: _Reencryptor,
                     report: ReencryptReport, dry_run: bool,
                     progress: ProgressCallback | None, max_size: int,
                     fault: Callable[[str], None]) -> None:
    journal = _Journal(_journal_path(root))
    records = [] if dry_run else journal.read()
    done = {r["id"] for r in records if r.get("t") == "done"}
    if not dry_run:
        _remove_leftovers(root, fmt)
        journal.append({"t": "resume"} if records else {"t": "start", "format": fmt.value})
    total = archive_size(root)
    seen = handled = 0
    try:
        for item in _items(root, fmt, max_size):
            seen += 1
            handled += item.size
            if item.location in done:
                report.resumed += 1
            else:
                outcome = _reencrypt_file(item, fmt, worker, journal, dry_run, fault)
                _record(report, item.location, outcome)
            if progress is not None:
                progress(Progress("re-encrypting", seen, handled, total))
    finally:
        journal.close()
    if not dry_run:
        # A whole pass is done: the journal only ever describes an unfinished run (what
        # failed is in the report; a later run looks at every message again).
        journal.remove()


def _reencrypt_file(item: _Item, fmt: ArchiveFormat, worker: _Reencryptor,
                    journal: _Journal, dry_run: bool, fault: Callable[[str], None]) -> _Skip:
    plan = worker.plan(item)
    if isinstance(plan, _Skip):
        if plan.status == "current" and not dry_run:
            _fix_maildir_name(item.path, fmt)
        return plan
    result = worker.attempt(plan, dry_run=dry_run)
    if isinstance(result, _Skip):
        return result
    new, digest = result
    temp = _temp_for(item.path, fmt)
    try:
        with open(temp, "wb") as fh:
            os.fchmod(fh.fileno(), item.path.stat().st_mode & 0o7777)
            fh.write(new)
            fh.flush()
            os.fsync(fh.fileno())
        fault("file:written")
        worker.verify(temp.read_bytes(), digest, plan.targets)
    except (OSError, ArchiveError) as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise
        return _Skip("failed", str(exc))
    os.replace(temp, item.path)
    _fsync_dir(item.path.parent)
    fault("file:replaced")
    _fix_maildir_name(item.path, fmt)
    journal.append({"t": "done", "id": item.location, "plain": digest})
    return _Skip("reencrypted", None)


# -- mbox: a whole new file, verified, swapped ---------------------------------------------------


def _identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


class _MboxJob:
    """Rewrite an mbox beside itself, verify it, swap it in (see reencrypt_archive)."""

    def __init__(self, path: Path, worker: _Reencryptor, report: ReencryptReport,
                 dry_run: bool, keep_original: bool, progress: ProgressCallback | None,
                 max_size: int, fault: Callable[[str], None]) -> None:
        self.path = path
        self.new = path.with_name(path.name + NEW_SUFFIX)
        self.orig = path.with_name(path.name + ORIG_SUFFIX)
        self.journal = _Journal(_journal_path(path))
        self.worker = worker
        self.report = report
        self.dry_run = dry_run
        self.keep_original = keep_original
        self.progress = progress
        self.max_size = max_size
        self.fault = fault
        self.rewritten: dict[int, str] = {}

    def run(self) -> None:
        try:
            lock = open(self.path, "rb")
        except OSError as exc:
            raise ArchiveError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ArchiveError(f"{self.path} is locked by another program") from None
            self._run()
        finally:
            lock.close()
            self.journal.close()

    def _run(self) -> None:
        records = [] if self.dry_run else self.journal.read()
        last = next((r["t"] for r in reversed(records) if r["t"] != "resume"), None)
        if last in ("verified", "swapped", "done"):
            self._swap(records)
            return
        if records and (records[0].get("t") != "start"
                        or records[0].get("identity") != _identity(self.path)):
            records = []  # the mbox changed since: start over
        if not records:
            self._fresh()
        elif not self.dry_run:
            self.journal.append({"t": "resume"})
        resume: dict[str, Any] = {"next": 0, "src": 0, "new": 0}
        for record in records:
            if record["t"] in ("chk", "written"):
                self.rewritten.update({int(i): h for i, h in record["re"]})
            if record["t"] == "chk":
                resume = record
        if resume["new"] and (not self.new.exists()
                              or self.new.stat().st_size < resume["new"]):
            self._fresh()  # the half-written new mbox is gone: start over
            resume, last = {"next": 0, "src": 0, "new": 0}, None
            self.rewritten.clear()
        if last != "written":
            if not self._write(resume):
                return
        self._verify()

    def _fresh(self) -> None:
        if self.dry_run:
            return
        if self.orig.exists():
            raise ArchiveError(f"{self.orig} exists: move it away first")
        self.journal.remove()
        self.new.unlink(missing_ok=True)
        self.journal.append({"t": "start", "identity": _identity(self.path)})

    def _write(self, resume: dict[str, Any]) -> bool:
        """Phase 1: the new mbox; False when nothing needs re-encrypting (no new file)."""
        total = self.path.stat().st_size
        out: BinaryIO | None = None
        if resume["new"]:
            out = open(self.new, "r+b")
            out.truncate(resume["new"])
            out.seek(resume["new"])
            self.report.resumed = int(resume["next"])
        pending: list[tuple[int, str]] = []
        last_checkpoint = time.monotonic()
        since = 0
        seen = int(resume["next"])
        try:
            for item in _mbox_items(self.path, int(resume["src"]), int(resume["next"]),
                                    self.max_size, keep_raw=True):
                seen += 1
                new = self._one(item)
                if new is not None and out is None and not self.dry_run:
                    out = self._start_new(item.offset)
                if out is not None:
                    if new is not None:
                        body = _mbox_quote(new[1])
                        nl = b"\n" if item.from_line.endswith(b"\n") and \
                            not item.from_line.endswith(b"\r\n") else CRLF
                        out.write(item.from_line + body + (b"" if body.endswith(b"\n") else nl)
                                  + nl)
                        self.rewritten[item.index] = new[0]
                        pending.append((item.index, new[0]))
                    else:
                        self._copy(item, out)
                    since += item.size
                    if since >= _CHECKPOINT_BYTES or \
                            time.monotonic() - last_checkpoint >= _CHECKPOINT_SECONDS:
                        self._checkpoint(out, item, pending)
                        pending, since, last_checkpoint = [], 0, time.monotonic()
                if self.progress is not None:
                    self.progress(Progress("re-encrypting", seen, item.offset + item.size,
                                           total))
            if out is None:
                if not self.dry_run:
                    self.journal.remove()
                return False
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        finally:
            if out is not None:
                out.close()
        self.journal.append({"t": "written", "new": size, "re": pending})
        self.fault("mbox:written")
        return True

    def _one(self, item: _Item) -> tuple[str, bytes] | None:
        """(plaintext hash, new message) when the message is re-encrypted, else None."""
        plan = self.worker.plan(item)
        if isinstance(plan, _Skip):
            _record(self.report, item.location, plan)
            return None
        result = self.worker.attempt(plan, dry_run=self.dry_run)
        if isinstance(result, _Skip):
            _record(self.report, item.location, result)
            return None
        self.report.counts["reencrypted"] += 1
        return result[1], result[0]

    def _start_new(self, upto: int) -> BinaryIO:
        out = open(self.new, "wb")
        os.fchmod(out.fileno(), self.path.stat().st_mode & 0o7777)
        with open(self.path, "rb") as src:
            _copy_range(src, out, 0, upto)
        return out

    def _copy(self, item: _Item, out: BinaryIO) -> None:
        if item.raw is not None:
            out.write(item.raw)
        else:
            with open(self.path, "rb") as src:
                _copy_range(src, out, item.offset, item.size)

    def _checkpoint(self, out: BinaryIO, item: _Item,
                    pending: list[tuple[int, str]]) -> None:
        out.flush()
        os.fsync(out.fileno())
        self.journal.append({"t": "chk", "next": item.index + 1,
                             "src": item.offset + item.size, "new": out.tell(),
                             "re": pending})
        self.fault("mbox:checkpoint")

    def _verify(self) -> None:
        """Phase 2: the new mbox read back; every message matches the old one."""
        total = self.new.stat().st_size
        old = _mbox_items(self.path, 0, 0, self.max_size, keep_raw=True)
        new = _mbox_items(self.new, 0, 0, 2 * self.max_size, keep_raw=True)
        count = 0
        for a, b in _zip_all(old, new):
            if a is None or b is None:
                self._abandon("it does not hold the same number of messages")
            assert a is not None and b is not None
            if a.index in self.rewritten:
                if a.from_line != b.from_line:
                    self._abandon(f"message {a.index} lost its From_ line")
                try:
                    self.worker.verify(b.data, self.rewritten[a.index],
                                       self._targets_of(b.data))
                except ArchiveError as exc:
                    self._abandon(f"message {a.index}: {exc}")
            elif not _same_segment(self.path, a, self.new, b):
                self._abandon(f"message {a.index} was not copied exactly")
            count += 1
            if self.progress is not None:
                self.progress(Progress("verifying", count, b.offset + b.size, total))
        self.journal.append({"t": "verified", "ino": self.new.stat().st_ino,
                             "size": total})
        self.fault("mbox:verified")
        self._swap(self.journal.read())

    def _targets_of(self, data: bytes) -> list[x509.Certificate]:
        info = self.worker.classifier.classify("", data)
        return [s.certificate for s in info.recipients if s.certificate is not None]

    def _abandon(self, why: str) -> None:
        self.new.unlink(missing_ok=True)
        self.journal.remove()
        raise ArchiveError(f"the new mbox did not verify ({why}); {self.path} is unchanged")

    def _swap(self, records: list[dict[str, Any]]) -> None:
        """Phase 3: keep the old file as .orig (a hard link), rename the new one over the
        mbox, then drop .orig. Each step is checked against the file system first, so a
        re-run after a crash anywhere here carries on."""
        verified = next(r for r in records if r["t"] == "verified")
        start = records[0].get("identity", {})
        swapped = any(r["t"] in ("swapped", "done") for r in records)
        if not swapped:
            current = self.path.stat().st_ino if self.path.exists() else None
            if current != verified["ino"]:
                if not self.new.exists() or self.new.stat().st_ino != verified["ino"]:
                    raise ArchiveError(f"{self.new} is gone: remove {self.journal.path} and"
                                       " run again")
                if _identity(self.path) != start:
                    self.new.unlink()
                    self.journal.remove()
                    raise ArchiveError(f"{self.path} changed during the re-encryption (new"
                                       " mail?): nothing was replaced; run again")
                if not self.orig.exists():
                    try:
                        os.link(self.path, self.orig)
                    except OSError:
                        tmp = self.orig.with_name(self.orig.name + ".part")
                        shutil.copyfile(self.path, tmp)
                        with open(tmp, "rb") as fh:
                            os.fsync(fh.fileno())
                        os.replace(tmp, self.orig)
                    _fsync_dir(self.path.parent)
                self.fault("mbox:linked")
                os.replace(self.new, self.path)
                _fsync_dir(self.path.parent)
                self.fault("mbox:replaced")
            self.journal.append({"t": "swapped"})
            self.fault("mbox:swapped")
        if not self.keep_original:
            self.orig.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
        self.journal.append({"t": "done"})
        self.journal.remove()
        if not self.report.counts:
            self.report.counts["reencrypted"] = len(
                {int(i) for r in records if r["t"] in ("chk", "written") for i, _ in r["re"]})


def _copy_range(src: BinaryIO, out: BinaryIO, start: int, length: int) -> None:
    src.seek(start)
    left = length
    while left > 0:
        block = src.read(min(left, _BLOCK))
        if not block:
            raise ArchiveError("the mbox got shorter while it was being read")
        out.write(block)
        left -= len(block)


def _range_digest(path: Path, start: int, length: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            block = fh.read(min(left, _BLOCK))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return digest.digest()


def _same_segment(path_a: Path, a: _Item, path_b: Path, b: _Item) -> bool:
    if a.size != b.size:
        return False
    if a.raw is not None and b.raw is not None:
        return a.raw == b.raw
    return _range_digest(path_a, a.offset, a.size) == _range_digest(path_b, b.offset, b.size)


def _zip_all(a: Iterator[_Item], b: Iterator[_Item]) -> Iterator[tuple[_Item | None,
                                                                        _Item | None]]:
    while True:
        x, y = next(a, None), next(b, None)
        if x is None and y is None:
            return
        yield x, y
