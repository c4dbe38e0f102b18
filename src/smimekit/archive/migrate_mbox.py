"""The mbox scheme of :func:`~smimekit.archive.migrate.reencrypt_archive`: a whole new file
beside the old one, checkpointed in the journal, verified, and swapped in with one rename.

Only :mod:`smimekit.archive.migrate` uses it (it imports it when it meets an mbox, as this
module builds on it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509

from smimekit.archive import migrate
from smimekit.archive.mailstore import (
    _BLOCK,
    Progress,
    ProgressCallback,
    _Item,
    _Journal,
    _mbox_items,
    _mbox_quote,
)
from smimekit.archive.migrate import (
    NEW_SUFFIX,
    ORIG_SUFFIX,
    ReencryptReport,
    _journal_path,
    _record,
    _Reencryptor,
    _Skip,
)
from smimekit.errors import ArchiveError
from smimekit.fsutil import fsync_dir
from smimekit.smime.canonical import CRLF


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
                    # the limits are read from migrate at run time (tests lower them there)
                    if since >= migrate._CHECKPOINT_BYTES or \
                            time.monotonic() - last_checkpoint >= migrate._CHECKPOINT_SECONDS:
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
                    fsync_dir(self.path.parent)
                self.fault("mbox:linked")
                os.replace(self.new, self.path)
                fsync_dir(self.path.parent)
                self.fault("mbox:replaced")
            self.journal.append({"t": "swapped"})
            self.fault("mbox:swapped")
        if not self.keep_original:
            self.orig.unlink(missing_ok=True)
            fsync_dir(self.path.parent)
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
