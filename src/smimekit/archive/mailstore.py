"""Reading mail archives: mbox, Maildir (with Maildir++ folders) and folders of .eml files.

:func:`iter_messages` streams the messages of an archive one at a time, each with a location
that stays the same from run to run (an mbox is read in blocks and never held whole). Also
the types every archive operation shares (:data:`KeyPair`, :class:`Progress`) and the
fsynced JSON-lines journal that ``decrypt_archive``, ``reencrypt_archive`` and ``scan``
resume from.
The public names are re-exported by :mod:`smimekit.archive`.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.errors import (
    ArchiveError,
)
from smimekit.fsutil import fsync_dir

__all__ = [
    "MAX_HEADER",
    "MAX_MESSAGE",
    "ArchiveFormat",
    "KeyPair",
    "Progress",
    "ProgressCallback",
    "RawMessage",
    "archive_size",
    "detect_format",
    "iter_messages",
]

MAX_MESSAGE = 256 * 1024 * 1024
"""A larger message is reported (``RawMessage.problem``), never read into memory."""
MAX_HEADER = 1024 * 1024
"""A larger header section is reported as malformed (RFC 5322 lines are under 1000 octets;
real header sections are kilobytes)."""

KeyPair = tuple[PrivateKeyTypes, x509.Certificate | None]


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


class _Resumable(Protocol):
    resumed: int


def _pending(root: Path, fmt: ArchiveFormat, max_size: int, done: Container[str],
             report: _Resumable, stage: str, progress: ProgressCallback | None,
             ) -> Iterator[_Item]:
    """The messages of a resumed run still to do: those whose location is in ``done`` are
    counted in ``report.resumed`` and not yielded; progress is reported after each message
    (for a yielded one, once the caller has handled it)."""
    total = archive_size(root)
    seen = handled = 0
    for item in _items(root, fmt, max_size):
        seen += 1
        handled += item.size
        if item.location in done:
            report.resumed += 1
        else:
            yield item
        if progress is not None:
            progress(Progress(stage, seen, handled, total))


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

# -- journals and fsync, for decrypt_archive, reencrypt_archive and scan -----------------------


class _Journal:
    """Append-only JSON lines. By default each line is fsynced before :meth:`append` returns;
    with ``batch`` > 1 each line is still written at once (a killed process loses none), but
    fsynced only after every ``batch`` lines or ``seconds`` seconds, and by :meth:`sync` and
    :meth:`close` (a power cut loses at most the lines since the last fsync). A line torn by
    a crash is cut off when the journal is read again. A new journal is created with
    ``mode`` (less the umask)."""

    def __init__(self, path: Path, *, batch: int = 1, seconds: float = 0.0,
                 mode: int = 0o666) -> None:
        self.path = path
        self._fh: BinaryIO | None = None
        self._batch = batch
        self._seconds = seconds
        self._mode = mode
        self._unsynced = 0
        self._synced_at = 0.0

    def read(self) -> list[dict[str, Any]]:
        return [record for _, record in self.entries()]

    def entries(self, *, forgive_last: bool = False) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Each line and its record, streamed. A torn last line is cut off at once; with
        ``forgive_last`` so is a last line that is not JSON (once the lines are all read).

        Raises:
            ArchiveError: the journal cannot be read, or a line before the last is damaged.
        """
        try:
            self._cut_torn_tail()
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return iter(())
        except OSError as exc:
            raise ArchiveError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return self._parse(fh, forgive_last)

    def _cut_torn_tail(self) -> None:
        with open(self.path, "r+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:
                step = min(pos, 1 << 16)
                fh.seek(pos - step)
                nl = fh.read(step).rfind(b"\n")
                if nl >= 0:
                    pos = pos - step + nl + 1
                    break
                pos -= step
            if pos != end:
                fh.truncate(pos)
                os.fsync(fh.fileno())

    def _parse(self, fh: BinaryIO, forgive_last: bool
               ) -> Iterator[tuple[bytes, dict[str, Any]]]:
        damaged = -1
        offset = 0
        with fh:
            for line in fh:
                if damaged >= 0 and line.strip():
                    raise ArchiveError(f"{self.path} is damaged: remove it to start over")
                try:
                    record = json.loads(line)
                except ValueError:
                    if not forgive_last:
                        raise ArchiveError(
                            f"{self.path} is damaged: remove it to start over") from None
                    damaged = offset
                else:
                    if isinstance(record, dict):
                        yield line, record
                offset += len(line)
        if damaged >= 0:
            with open(self.path, "r+b") as out:
                out.truncate(damaged)
                os.fsync(out.fileno())

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self._mode)
            self._fh = os.fdopen(fd, "ab")
            self._synced_at = time.monotonic()
            if created:
                fsync_dir(self.path.parent)
        self._fh.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._fh.flush()
        self._unsynced += 1
        if self._unsynced >= self._batch or time.monotonic() - self._synced_at >= self._seconds:
            self.sync()

    def sync(self) -> None:
        """Make every line appended so far durable."""
        if self._fh is not None and self._unsynced:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._unsynced = 0
            self._synced_at = time.monotonic()

    def close(self) -> None:
        if self._fh is not None:
            try:
                self.sync()
            finally:
                self._fh.close()
                self._fh = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)
