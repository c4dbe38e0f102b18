"""``decrypt_archive``: the plaintext of an archive for discovery, with a manifest.

One file per message and ``manifest.jsonl`` (fsynced line by line; a re-run resumes from
it), ``manifest.csv`` rewritten at the end. The public names are re-exported by
:mod:`smimekit.archive`.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smimekit.api import decrypt as api_decrypt
from smimekit.archive.classify import Classifier, KeySource, Readability, _keys_for
from smimekit.archive.envelope import Kind, _reason
from smimekit.archive.mailstore import (
    MAX_MESSAGE,
    KeyPair,
    ProgressCallback,
    _Item,
    _Journal,
    _pending,
    detect_format,
)
from smimekit.errors import (
    ArchiveError,
    DecryptionError,
    LegacyAlgorithmError,
    MalformedError,
    NoRecipientError,
    UnsupportedError,
)
from smimekit.fsutil import atomic_write, fsync_dir, private_dir

__all__ = [
    "MANIFEST",
    "MANIFEST_CSV",
    "DecryptReport",
    "decrypt_archive",
]

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
    try:
        for item in _pending(src, fmt, max_size, done, report, "decrypting", progress):
            entry = _export_one(item, out, classifier, keys, key_source, allow_legacy)
            journal.append(entry)
            report.counts[entry["status"]] += 1
            if entry["status"] not in ("decrypted", "not-encrypted"):
                report.problems.append((item.location, entry["status"], entry["reason"]))
    finally:
        journal.close()
        fsync_dir(out)
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
    """``data`` into ``path`` (mode 0600) through a fsynced temporary file and a rename; the
    directory is not fsynced per file: a re-run checks each exported file (:func:`_present`)."""
    atomic_write(path, data, sync_dir=False)


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
