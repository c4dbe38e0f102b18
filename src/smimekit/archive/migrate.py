"""``reencrypt_archive``: encrypted mail to its owners' current certificates, AES-256-GCM.

Crash-safe: each new message is written beside the old one, fsynced, verified by decrypting
it, and only then renamed over it (Maildir, .eml); an mbox is rewritten as a whole,
checkpointed in the journal next to it, verified, and swapped in one rename
(:mod:`smimekit.archive.migrate_mbox`). A re-run finishes the job. docs/archive.md has the
steps. The public names are re-exported by :mod:`smimekit.archive`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from smimekit.archive.classify import Classifier, KeySource, Readability, _keys_for
from smimekit.archive.discovery import _no_key
from smimekit.archive.envelope import Envelope, Kind, RecipientId, _reason
from smimekit.archive.mailstore import (
    MAX_MESSAGE,
    ArchiveFormat,
    KeyPair,
    ProgressCallback,
    _Item,
    _Journal,
    _maildir_folders,
    _maildir_unique,
    _pending,
    detect_format,
)
from smimekit.cms.algorithms import Cipher
from smimekit.cms.enveloped import (
    decrypt_enveloped,
    encrypt_enveloped_stream,
)
from smimekit.cms.keyinfo import issuer_and_serial_der
from smimekit.cms.recipients import RecipientOptions
from smimekit.dn import display_name
from smimekit.errors import (
    ArchiveError,
    DecryptionError,
    LegacyAlgorithmError,
    SmimeError,
)
from smimekit.fsutil import fsync_dir
from smimekit.keys.kinds import certificate_public_key
from smimekit.keys.load import key_matches
from smimekit.smime.canonical import CRLF, Entity, Header, to_crlf
from smimekit.smime.message import (
    build_pkcs7_mime_stream,
    pkcs7_der,
)
from smimekit.store.db import Store, certificate_emails
from smimekit.validation.recipients import recipient_problems

__all__ = [
    "JOURNAL_SUFFIX",
    "NEW_SUFFIX",
    "ORIG_SUFFIX",
    "RecipientsFor",
    "ReencryptReport",
    "current_certificates",
    "reencrypt_archive",
]

class RecipientsFor(Protocol):
    """The new recipients of a message, given the certificates it was encrypted to (those
    that are known; unknown recipients are left out)."""

    def __call__(self, old: Sequence[x509.Certificate], /) -> Sequence[x509.Certificate]: ...


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
                return _Skip("failed", f"new recipient {display_name(cert.subject)} is"
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
    return [RecipientId("ktri" if isinstance(certificate_public_key(c), rsa.RSAPublicKey)
                        else "kari", "-", issuer_and_serial_der(c)) for c in certs]


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
        from smimekit.archive.migrate_mbox import _MboxJob  # it imports this module

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
        fsync_dir(file.parent)


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
    try:
        for item in _pending(root, fmt, max_size, done, report, "re-encrypting", progress):
            outcome = _reencrypt_file(item, fmt, worker, journal, dry_run, fault)
            _record(report, item.location, outcome)
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
    fsync_dir(item.path.parent)
    fault("file:replaced")
    _fix_maildir_name(item.path, fmt)
    journal.append({"t": "done", "id": item.location, "plain": digest})
    return _Skip("reencrypted", None)
