"""The one door to the external S/MIME test corpus (``../shared/corpus`` from the repo root).

Every corpus test reads files through :func:`corpus_path`, which skips the test with a clear
reason when the corpus is not checked out next to the repository. Nothing here reads a file
at import or collection time, so a missing corpus costs skips, never collection errors.

Key material for the verify/decrypt tables is loaded with ``cryptography`` directly (not with
smimekit's own loaders), so that a bug in ``smimekit.keys`` shows up in the key tables only.
See ``tests/vectors/README.md`` for the folders, their licences and what each table expects.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import functools
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

REPO_ROOT = Path(__file__).resolve().parents[2]


def _corpus_root() -> Path:
    """``SMIMEKIT_CORPUS``, else the sibling ``shared/corpus``, else this workplace's copy."""
    if "SMIMEKIT_CORPUS" in os.environ:
        return Path(os.environ["SMIMEKIT_CORPUS"])
    for candidate in (REPO_ROOT.parent / "shared" / "corpus", Path("/work/shared/corpus")):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "corpus"


CORPUS_ROOT = _corpus_root()

#: The plaintext of every RFC 4134 and examples-cms (Ireland) example.
SAMPLE_CONTENT = b"This is some sample content."
#: Thunderbird's ``gTextAliceBob`` / ``gTextFran``.
TB_TEXT_ALICE_BOB = b"This is a test message from Alice to Bob."
TB_TEXT_FRAN = b"This is a test message to Fran."

# Fixed verification times inside each PKI's validity (certificates expire; tests must not).
#: NSS test PKI (Thunderbird): EE certs valid 2026-01-26 14:38 .. 2031-01-26.
TB_AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
#: RFC 4134 PKI: 1999 .. 2039; the example messages were made in 2000-2002.
RFC4134_AT = dt.datetime(2005, 7, 1, tzinfo=dt.UTC)


def corpus_path(*parts: str) -> Path:
    """Path of a corpus file or folder; skips the calling test if the corpus is absent."""
    if not CORPUS_ROOT.is_dir():
        pytest.skip(f"external S/MIME corpus not found at {CORPUS_ROOT} (set SMIMEKIT_CORPUS)")
    if parts and not (CORPUS_ROOT / parts[0]).is_dir():
        pytest.skip(f"corpus folder {parts[0]!r} not found under {CORPUS_ROOT}")
    path = CORPUS_ROOT.joinpath(*parts)
    if not path.exists():
        # The folder is there but the file is not: that is a broken corpus, not a skip.
        raise FileNotFoundError(path)
    return path


def read_bytes(*parts: str) -> bytes:
    """The bytes of one corpus file (skipping if the corpus is absent)."""
    return corpus_path(*parts).read_bytes()


def list_files(folder: str) -> list[str]:
    """Every file under a corpus folder, as ``/``-separated paths relative to that folder."""
    root = corpus_path(folder)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


_ARMOUR = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----(.*?)-----END \1-----", re.S)
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def dearmor(data: bytes) -> bytes:
    """DER/BER from PEM armour (any label), or from a bare base64 body; DER passes through.

    The first armoured block wins, so text before it (gpgsm's "The text in this message has
    been tampered.") is ignored. RFC 1421 header lines (``Name: value``) are dropped.
    """
    match = _ARMOUR.search(data)
    if match is not None:
        lines = [ln.strip() for ln in match.group(2).splitlines()]
        body = b"".join(ln for ln in lines if ln and b":" not in ln)
        return base64.b64decode(body, validate=True)
    if not _BASE64_TEXT.fullmatch(data):
        return data  # binary DER/BER
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error:
        return data


def spki(obj: Any) -> bytes:
    """SubjectPublicKeyInfo DER of a certificate, private key or public key (for matching)."""
    if isinstance(obj, x509.Certificate):
        obj = obj.public_key()
    elif hasattr(obj, "public_key"):
        obj = obj.public_key()
    return bytes(
        obj.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def emails(cert: x509.Certificate) -> set[str]:
    """Lower-cased e-mail addresses of a certificate (subject emailAddress and rfc822Name)."""
    found = {
        str(attr.value).lower()
        for attr in cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return found
    return found | {name.lower() for name in san.get_values_for_type(x509.RFC822Name)}


# --- independent loaders for fixture material (cached: the corpus is read-only) ----------


@functools.cache
def crypto_cert(*parts: str) -> x509.Certificate:
    """The first certificate in a PEM or DER file, parsed by ``cryptography``."""
    data = read_bytes(*parts)
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificates(data)[0]
    return x509.load_der_x509_certificate(data)


@functools.cache
def crypto_key(*parts: str, password: bytes | None = None) -> Any:
    """A private key from a PEM or DER file, parsed by ``cryptography``."""
    data = read_bytes(*parts)
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, password)
    return serialization.load_der_private_key(data, password)


@dataclasses.dataclass(frozen=True)
class P12:
    key: Any
    cert: x509.Certificate
    extra: tuple[x509.Certificate, ...]


@functools.cache
def crypto_p12(*parts: str, password: bytes) -> P12:
    """Key, certificate and CA certificates of a PKCS#12 file, parsed by ``cryptography``."""
    key, cert, extra = pkcs12.load_key_and_certificates(read_bytes(*parts), password)
    assert key is not None and cert is not None
    return P12(key, cert, tuple(extra))


def params(rows: list[Any]) -> list[Any]:
    """``pytest.param`` per table row, id = the row's file, skipped when ``row.skip`` says why."""
    out = []
    for row in rows:
        marks = [pytest.mark.skip(reason=row.skip)] if getattr(row, "skip", None) else []
        out.append(pytest.param(row, id=row.file, marks=marks))
    return out
