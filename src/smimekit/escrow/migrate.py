"""``reencrypt_archive``: encrypted mail to its owners' current certificates, AES-256-GCM.

Crash-safe: each new message is written beside the old one, fsynced, verified by decrypting
it, and only then renamed over it (Maildir, .eml); an mbox is rewritten as a whole,
checkpointed in the journal next to it, verified, and swapped in one rename. A re-run
finishes the job. docs/archive.md has the steps. The public names are re-exported by
:mod:`smimekit.escrow.archive`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from smimekit.cms.algorithms import Cipher
from smimekit.cms.enveloped import (
    decrypt_enveloped,
    encrypt_enveloped_stream,
)
from smimekit.cms.keyinfo import issuer_and_serial_der
from smimekit.cms.recipients import RecipientOptions
from smimekit.errors import (
    ArchiveError,
    DecryptionError,
    LegacyAlgorithmError,
    SmimeError,
)
from smimekit.escrow.classify import Classifier, KeySource, Readability, _keys_for
from smimekit.escrow.discovery import _no_key
from smimekit.escrow.envelope import Envelope, Kind, RecipientId, _reason
from smimekit.escrow.mailstore import (
    _BLOCK,
    MAX_MESSAGE,
    ArchiveFormat,
    KeyPair,
    Progress,
    ProgressCallback,
    _fsync_dir,
    _Item,
    _items,
    _Journal,
    _maildir_folders,
    _maildir_unique,
    _mbox_items,
    _mbox_quote,
    archive_size,
    detect_format,
)
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
