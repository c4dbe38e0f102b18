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

This module is the public face; the work is done in :mod:`~smimekit.archive.mailstore`
(reading archives), :mod:`~smimekit.archive.envelope` (the encryption layer, without keys),
:mod:`~smimekit.archive.classify` (who can read what; ``scan``),
:mod:`~smimekit.archive.discovery` (``decrypt_archive``) and :mod:`~smimekit.archive.migrate`
(``reencrypt_archive``).
"""

from __future__ import annotations

from smimekit.archive.classify import (
    Classifier,
    KeySource,
    MessageInfo,
    Readability,
    RecipientStatus,
    RecipientSummary,
    ScanReport,
    scan,
)
from smimekit.archive.discovery import MANIFEST as MANIFEST
from smimekit.archive.discovery import MANIFEST_CSV as MANIFEST_CSV
from smimekit.archive.discovery import DecryptReport, decrypt_archive
from smimekit.archive.envelope import Envelope, Kind, RecipientId
from smimekit.archive.mailstore import MAX_HEADER as MAX_HEADER
from smimekit.archive.mailstore import MAX_MESSAGE as MAX_MESSAGE
from smimekit.archive.mailstore import (
    ArchiveFormat,
    KeyPair,
    Progress,
    RawMessage,
    detect_format,
    iter_messages,
)
from smimekit.archive.mailstore import ProgressCallback as ProgressCallback
from smimekit.archive.mailstore import archive_size as archive_size
from smimekit.archive.migrate import JOURNAL_SUFFIX as JOURNAL_SUFFIX
from smimekit.archive.migrate import NEW_SUFFIX as NEW_SUFFIX
from smimekit.archive.migrate import ORIG_SUFFIX as ORIG_SUFFIX
from smimekit.archive.migrate import (
    RecipientsFor,
    ReencryptReport,
    current_certificates,
    reencrypt_archive,
)
from smimekit.errors import ArchiveError

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
