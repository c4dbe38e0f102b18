"""A person's files: certificates (PEM), PKCS#12 per generated key, Apple .mobileconfig.

:func:`bundle_files` builds them as bytes from plain inputs, so it runs in a worker process
as well as in the CA's own (:mod:`smimekit.ca.enrol_pool`). :func:`write_bundle` writes them
at once, each file atomically (temporary file, fsync, rename); bulk enrolment instead
:func:`stage`\\ s them in a worker (temporary names, fsynced) and the writer
:func:`publish`\\ es them (renames) inside the transaction that records the person, so a file
under its final name belongs to a recorded person or to a void results row (see
:mod:`smimekit.ca.lifecycle`). What a killed run leaves under temporary names,
:func:`remove_leftovers` clears.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.ca.export import (
    RANDOM_PASSPHRASE_ITERATIONS,
    mobileconfig_bytes,
    pkcs12_bytes,
)
from smimekit.ca.profiles import Purpose
from smimekit.fsutil import atomic_write, fsync_dir, private_dir

if TYPE_CHECKING:
    from smimekit.ca.issuance import CertificateAuthority, Issuance

__all__ = [
    "BundleFile",
    "BundleOptions",
    "BundlePart",
    "bundle_files",
    "discard",
    "new_passphrase",
    "profile_id",
    "publish",
    "remove_leftovers",
    "safe_name",
    "stage",
    "write_bundle",
]

_PASSPHRASE_ALPHABET = "abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY346789"  # noqa: S105

#: the suffix of a staged file: ``.<final name>.<random>.part``
_STAGED_SUFFIX = ".part"

#: a temporary file of :func:`stage` or of :func:`~smimekit.fsutil.atomic_write` holding one
#: of our files: ``.<base>.<purpose>[.<serial>].<pem|p12|mobileconfig>.<8 random>[.part]``
_LEFTOVER = re.compile(r"\.(?:.+)\.(?:sign|encrypt|both)(?:\.[0-9a-f]{1,16})?"
                       r"\.(?:pem|p12|mobileconfig)\.[a-z0-9_]{8}(?:\.part)?")


def new_passphrase() -> str:
    """A random PKCS#12 passphrase: 20 characters from an unambiguous alphabet (~113 bits)."""
    return "".join(secrets.choice(_PASSPHRASE_ALPHABET) for _ in range(20))


def safe_name(email: str) -> str:
    """``email`` as the start of a file name (anything but ``A-Za-z0-9@._+-`` becomes _)."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", email)


def profile_id(email: str, tag: str) -> str:
    """A reverse-DNS PayloadIdentifier, e.g. ``com.example.smime.alice.sign``."""
    local, _, domain = email.rpartition("@")
    parts = [re.sub(r"[^A-Za-z0-9-]", "-", p) for p in reversed(domain.split("."))]
    return ".".join([*parts, "smime", re.sub(r"[^A-Za-z0-9-]", "-", local) or "user", tag])


@dataclass(frozen=True)
class BundleOptions:
    """Where and in which forms a person's files are written."""

    out: Path
    legacy: bool = False
    """PKCS#12 with 3DES/SHA-1 (gpgsm, old clients), one key per file."""
    mobileconfig: bool = False
    """Also an Apple .mobileconfig per PKCS#12."""
    history: bool = True
    """The older encryption keys go into the new encryption PKCS#12 (not with ``legacy``)."""
    iterations: int = RANDOM_PASSPHRASE_ITERATIONS
    """PBKDF2 iterations of the PKCS#12 (the default suits a :func:`new_passphrase`)."""


@dataclass(frozen=True)
class BundlePart:
    """One certificate of the person, with its generated key and older keys to add."""

    purpose: Purpose
    cert: x509.Certificate
    key: PrivateKeyTypes | None = None
    extra: tuple[tuple[PrivateKeyTypes, x509.Certificate], ...] = ()


@dataclass(frozen=True)
class BundleFile:
    """One file to write: its name in the output folder, its bytes and its mode."""

    name: str
    data: bytes = field(repr=False)
    mode: int = 0o600


def bundle_files(
    email: str, parts: Sequence[BundlePart], chain: Sequence[x509.Certificate], *,
    passphrase: str, legacy: bool, mobileconfig: bool, organization: str,
    iterations: int = RANDOM_PASSPHRASE_ITERATIONS,
) -> list[BundleFile]:
    """The files of one person, in the order they are listed in the results: per part its
    certificate (PEM, 0644), for a generated key its PKCS#12 (0600; with ``legacy`` the
    older keys each in a file of their own), and with ``mobileconfig`` an Apple profile.

    Raises:
        CAError: a PKCS#12 cannot be built (see :func:`~smimekit.ca.export.pkcs12_bytes`).
    """
    base = safe_name(email)
    files: list[BundleFile] = []
    for part in parts:
        tag = part.purpose.value
        files.append(BundleFile(f"{base}.{tag}.pem",
                                part.cert.public_bytes(serialization.Encoding.PEM), 0o644))
        if part.key is None:
            continue
        p12 = pkcs12_bytes(part.key, part.cert, chain, passphrase.encode(),
                           friendly_name=f"{email} ({tag})", legacy=legacy,
                           extra=[] if legacy else list(part.extra), iterations=iterations)
        files.append(BundleFile(f"{base}.{tag}.p12", p12))
        # gpgsm takes no key from a legacy file holding several: one file per older key
        for old_key, old_cert in part.extra if legacy else ():
            files.append(BundleFile(
                f"{base}.{tag}.{format(old_cert.serial_number, 'x')[:16]}.p12",
                pkcs12_bytes(old_key, old_cert, chain, passphrase.encode(), legacy=True,
                             friendly_name=f"{email} ({tag}, until"
                                           f" {old_cert.not_valid_after_utc:%Y-%m-%d})")))
        if mobileconfig:
            files.append(BundleFile(f"{base}.{tag}.mobileconfig", mobileconfig_bytes(
                p12, passphrase=None, identifier=profile_id(email, tag),
                display_name=f"S/MIME {tag} identity for {email}",
                organization=organization, ca_certs=chain)))
    return files


def parts_of(cax: CertificateAuthority, issuance: Issuance, *, history: bool
             ) -> list[BundlePart]:
    """The :class:`BundlePart` of each item of ``issuance``; with ``history`` the older
    encryption keys of the person go with the encryption key (when the vault is at hand:
    under escrow they come back through ``smimekit escrow recover``).

    Raises:
        CAError: a sealed key record does not open (damaged or tampered).
    """
    parts = []
    for item in issuance.items:
        extra: tuple[tuple[PrivateKeyTypes, x509.Certificate], ...] = ()
        if history and item.key is not None and item.purpose is Purpose.ENCRYPT \
                and cax.ca.vault.key is not None:
            extra = tuple(cax.key_history(issuance.email, skip={item.record.fingerprint}))
        parts.append(BundlePart(item.purpose, item.cert, item.key, extra))
    return parts


def write_bundle(cax: CertificateAuthority, issuance: Issuance, options: BundleOptions, *,
                 passphrase: str) -> list[Path]:
    """Write the files of ``issuance`` into ``options.out``, each atomically; the paths
    written.

    Raises:
        CAError: a PKCS#12 cannot be built or a key record does not open.
        OSError: a file cannot be written.
    """
    private_dir(options.out)
    files = bundle_files(
        issuance.email, parts_of(cax, issuance, history=options.history and not options.legacy),
        [cax.ca.authority.cert, cax.ca.authority.root], passphrase=passphrase,
        legacy=options.legacy, mobileconfig=options.mobileconfig,
        organization=cax.ca.config.organization, iterations=options.iterations)
    written = []
    for file in files:
        path = options.out / file.name
        atomic_write(path, file.data, mode=file.mode)
        written.append(path)
    return written


def stage(out: Path, files: Iterable[BundleFile]) -> list[tuple[Path, Path]]:
    """Write ``files`` into ``out`` under temporary names, each fsynced; (staged, final)
    pairs. Nothing is under a final name until :func:`publish`. On failure what was staged
    is removed.

    Raises:
        OSError: a file cannot be written.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for file in files:
            fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=_STAGED_SUFFIX,
                                       dir=out)
            staged.append((Path(tmp), out / file.name))
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), file.mode)
                fh.write(file.data)
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        discard(s for s, _ in staged)
        raise
    return staged


def publish(staged: Sequence[tuple[Path, Path]]) -> list[Path]:
    """Rename staged files to their final names (replacing older files), then make the
    renames durable; the final paths.

    Raises:
        OSError: a rename fails (those done stay done: the caller discards them).
    """
    done = []
    for tmp, final in staged:
        os.replace(tmp, final)
        done.append(final)
    for directory in {final.parent for _, final in staged}:
        fsync_dir(directory)
    return done


def discard(paths: Iterable[Path]) -> None:
    """Remove ``paths``, quietly (best effort: a file we cannot remove is not claimed by
    any results row)."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def remove_leftovers(out: Path) -> int:
    """Remove the temporary files a killed run left in ``out`` (only names :func:`stage`
    and :func:`~smimekit.fsutil.atomic_write` give our files, only regular files); how
    many. Two runs must not write into one folder at once: this would take the other's.
    """
    removed = 0
    try:
        entries = list(os.scandir(out))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if _LEFTOVER.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed
