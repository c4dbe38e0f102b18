"""Escrow share files: one officer's Shamir share, protected for that officer alone.

A share file is armored text, safe to mail or print::

    -----BEGIN SMIMEKIT ESCROW SHARE-----
    Officer: Alice Example
    Share: 2 of 5, any 3 recover
    Escrow: 3f2a9c0d5e6b7a81, generation 1
    Protection: certificate CN=Alice Example

    eyJlc2Nyb3dfaWQiOi...   (base64 of canonical JSON, 64 columns)
    -----END SMIMEKIT ESCROW SHARE-----

The lines above the blank line are for people; they must say what the JSON says, or the file
is refused as altered. The JSON holds the header (format version, escrow id, generation,
index, threshold, number of shares, officer name, vault certificate fingerprint, the digest of
the escrow state the share belongs to, and how it is protected) and the protected share:

* ``certificate``: CMS AuthEnvelopedData (AES-256-GCM, smimekit's own engine) to the officer's
  certificate, which the header carries; the encrypted content is JSON with the share and the
  SHA-256 of the header, so an edited header is caught. ``openssl cms -decrypt`` opens it too.
* ``passphrase``: scrypt (n = 2^17, r = 8, p = 1) derives an AES-256-GCM key; the header is the
  additional authenticated data.

Nothing here knows about the CA or the store: :mod:`smimekit.escrow.vault` checks unlocked
shares against the escrow state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from smimekit.cms.algorithms import Cipher
from smimekit.cms.enveloped import decrypt_enveloped, encrypt_enveloped
from smimekit.dn import display_name
from smimekit.errors import EscrowError, SmimeError
from smimekit.escrow.shamir import MAX_SHARES, Share

__all__ = [
    "FORMAT_VERSION",
    "MIN_PASSPHRASE",
    "OfficerSpec",
    "ShareHeader",
    "UnlockedShare",
    "canonical",
    "check_officer_certificate",
    "protect_share",
    "read_share_header",
    "share_filename",
    "unlock_share",
]

FORMAT_VERSION = 1
MIN_PASSPHRASE = 12
"""Share passphrases are the only secret between a share file and its reader."""

SCRYPT_N = 2**17
"""scrypt cost for new passphrase-protected shares (128 MiB, ~0.3 s); the file records it."""
SCRYPT_R = 8
SCRYPT_P = 1
# A hostile file must not make us spend gigabytes: refuse costs far above what we write.
_MAX_SCRYPT_N, _MAX_SCRYPT_R, _MAX_SCRYPT_P = 2**20, 16, 4
_MAX_FILE = 1024 * 1024

BEGIN = "-----BEGIN SMIMEKIT ESCROW SHARE-----"
END = "-----END SMIMEKIT ESCROW SHARE-----"
_NAME = re.compile(r"^[^\x00-\x1f\x7f,=]{1,64}$")


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EscrowError(f"{what} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EscrowError(f"{what} is not base64") from None


@dataclass(frozen=True)
class OfficerSpec:
    """A key recovery officer as named at ``escrow init`` / ``rotate``: a name and either the
    officer's encryption certificate or a share passphrase."""

    name: str
    certificate: x509.Certificate | None = None
    passphrase: bytes | None = field(default=None, repr=False)

    def check(self) -> None:
        """Raises EscrowError: a bad name, both or neither protection, a short passphrase, a
        certificate that cannot receive encrypted data."""
        if not _NAME.match(self.name) or self.name != self.name.strip():
            raise EscrowError(f"officer name {self.name!r}: 1-64 characters, no control"
                              " characters, commas or '=', no surrounding spaces")
        if (self.certificate is None) == (self.passphrase is None):
            raise EscrowError(f"officer {self.name}: give a certificate or a passphrase")
        if self.passphrase is not None and len(self.passphrase) < MIN_PASSPHRASE:
            raise EscrowError(f"officer {self.name}: the share passphrase must be at least"
                              f" {MIN_PASSPHRASE} characters")
        if self.certificate is not None:
            check_officer_certificate(self.certificate, self.name)


def check_officer_certificate(cert: x509.Certificate, name: str) -> None:
    """An officer's certificate must be able to receive: RSA >= 2048 with keyEncipherment or EC
    with keyAgreement (when keyUsage is present).

    Raises:
        EscrowError: it cannot.
    """
    key = cert.public_key()
    try:
        usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(
            x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise EscrowError(f"officer {name}: an RSA key under 2048 bits cannot protect a"
                              " share")
        if usage is not None and not usage.key_encipherment:
            raise EscrowError(f"officer {name}: the certificate lacks keyEncipherment (a"
                              " signing certificate?); give the officer's encryption"
                              " certificate")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if usage is not None and not usage.key_agreement:
            raise EscrowError(f"officer {name}: the certificate lacks keyAgreement (a signing"
                              " certificate?); give the officer's encryption certificate")
    else:
        raise EscrowError(f"officer {name}: only RSA and EC certificates can protect a share"
                          " (RSA ones open in every client)")


@dataclass(frozen=True)
class ShareHeader:
    """What a share file says about itself (no secret)."""

    escrow_id: str
    generation: int
    index: int
    threshold: int
    shares: int
    officer: str
    vault_fingerprint: str
    state_digest: str
    """SHA-256 of the escrow state (escrow.json's generation) the share was made for."""
    protection: str
    """``certificate`` or ``passphrase``."""
    officer_certificate: x509.Certificate | None

    def lines(self) -> list[str]:
        """The human-readable armor headers."""
        if self.officer_certificate is not None:
            shown = f"certificate {display_name(self.officer_certificate.subject)}"
        else:
            shown = "passphrase (scrypt, AES-256-GCM)"
        return [f"Officer: {self.officer}",
                f"Share: {self.index} of {self.shares}, any {self.threshold} recover",
                f"Escrow: {self.escrow_id}, generation {self.generation}",
                f"Protection: {shown}"]


@dataclass(frozen=True)
class UnlockedShare:
    """A share file opened by its officer: the header and the share (kept in memory only)."""

    header: ShareHeader
    share: Share = field(repr=False)
    source: str = "share"
    """Where it came from, for messages (the file name)."""


def share_filename(escrow_id: str, generation: int, index: int, officer: str) -> str:
    """``escrow-<id>-g<generation>-<index>-<officer>.share`` with a file-system-safe name."""
    safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", officer)
    return f"escrow-{escrow_id[:8]}-g{generation}-{index:03d}-{safe}.share"


def _header_json(h: ShareHeader, protection: dict[str, Any]) -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "escrow_id": h.escrow_id, "generation": h.generation,
            "index": h.index, "threshold": h.threshold, "shares": h.shares,
            "officer": h.officer, "vault_fingerprint": h.vault_fingerprint,
            "state_digest": h.state_digest, "protection": protection}


def protect_share(header: ShareHeader, share: Share, officer: OfficerSpec) -> bytes:
    """The armored share file for ``officer``.

    Raises:
        EscrowError: the officer specification is unusable, or it does not fit ``header``.
    """
    officer.check()
    if officer.name != header.officer or share.index != header.index \
            or share.threshold != header.threshold:
        raise EscrowError("internal: the share does not fit its header")
    if officer.certificate is not None:
        protection: dict[str, Any] = {
            "kind": "certificate",
            "certificate": _b64(officer.certificate.public_bytes(serialization.Encoding.DER))}
        body = _header_json(header, protection)
        inner = canonical({"header_sha256": hashlib.sha256(canonical(body)).hexdigest(),
                           "share": _b64(share.value)})
        try:
            payload = encrypt_enveloped(inner, [officer.certificate], cipher=Cipher.AES256_GCM)
        except SmimeError as exc:
            raise EscrowError(f"officer {officer.name}: cannot encrypt to the certificate:"
                              f" {exc}") from None
    else:
        assert officer.passphrase is not None
        salt, nonce = os.urandom(16), os.urandom(12)
        protection = {"kind": "passphrase", "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R,
                      "p": SCRYPT_P, "salt": _b64(salt), "nonce": _b64(nonce)}
        body = _header_json(header, protection)
        key = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(
            officer.passphrase)
        payload = AESGCM(key).encrypt(nonce, share.value, canonical(body))
    body["payload"] = _b64(payload)
    encoded = _b64(canonical(body))
    text = "\n".join([BEGIN, *_with_protection(header, officer).lines(), "",
                      *(encoded[i:i + 64] for i in range(0, len(encoded), 64)), END, ""])
    return text.encode()


def _with_protection(header: ShareHeader, officer: OfficerSpec) -> ShareHeader:
    kind = "certificate" if officer.certificate is not None else "passphrase"
    return ShareHeader(**{**header.__dict__, "protection": kind,
                          "officer_certificate": officer.certificate})


def _parse(data: bytes, source: str) -> tuple[ShareHeader, dict[str, Any]]:
    if len(data) > _MAX_FILE:
        raise EscrowError(f"{source} is not a share file (too large)")
    try:
        text = data.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise EscrowError(f"{source} is not a share file (not text)") from None
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise EscrowError(f"{source} is not a smimekit escrow share file")
    block = text[start + len(BEGIN):end].strip("\n")
    shown, _, encoded = block.partition("\n\n")
    try:
        body = json.loads(base64.b64decode("".join(encoded.split()), validate=True))
    except (binascii.Error, ValueError):
        raise EscrowError(f"{source}: the share file is damaged (its body does not"
                          " decode)") from None
    if not isinstance(body, dict) or body.get("version") != FORMAT_VERSION:
        raise EscrowError(f"{source}: not a share file this smimekit reads (unknown version)")
    try:
        protection = body["protection"]
        kind = protection["kind"]
        cert = None
        if kind == "certificate":
            cert = x509.load_der_x509_certificate(
                _unb64(protection["certificate"], "the officer certificate"))
        elif kind != "passphrase":
            raise EscrowError(f"{source}: unknown protection {kind!r}")
        header = ShareHeader(
            escrow_id=str(body["escrow_id"]), generation=int(body["generation"]),
            index=int(body["index"]), threshold=int(body["threshold"]),
            shares=int(body["shares"]), officer=str(body["officer"]),
            vault_fingerprint=str(body["vault_fingerprint"]),
            state_digest=str(body["state_digest"]), protection=kind,
            officer_certificate=cert)
    except (KeyError, TypeError, ValueError):
        raise EscrowError(f"{source}: the share file is damaged (fields missing)") from None
    if not (2 <= header.threshold <= header.shares <= MAX_SHARES
            and 1 <= header.index <= header.shares):
        raise EscrowError(f"{source}: the share file is damaged (impossible numbers)")
    if shown.split("\n") != header.lines():
        raise EscrowError(f"{source}: the share file was altered (its readable lines do not"
                          " match its contents)")
    return header, body


def read_share_header(data: bytes, source: str = "share file") -> ShareHeader:
    """What a share file says about itself, without opening it.

    Raises:
        EscrowError: not a share file, damaged, or its readable lines were edited.
    """
    return _parse(data, source)[0]


def unlock_share(
    data: bytes,
    *,
    key: PrivateKeyTypes | None = None,
    passphrase: bytes | None = None,
    source: str = "share file",
) -> UnlockedShare:
    """Open a share file with the officer's private key (certificate protection) or the share
    passphrase. The share is checked for integrity only; whether it belongs to this escrow is
    :func:`smimekit.escrow.vault.reconstruct`'s business.

    Raises:
        EscrowError: not a share file, damaged or altered, the wrong kind of secret, the key is
            not the officer certificate's, the passphrase is wrong.
    """
    header, body = _parse(data, source)
    payload = _unb64(body.get("payload"), f"{source}: the share")
    signed = {k: v for k, v in body.items() if k != "payload"}
    what = f"{source} (officer {header.officer}, share {header.index})"
    if header.protection == "certificate":
        cert = header.officer_certificate
        assert cert is not None
        if key is None:
            raise EscrowError(f"{what} is protected for the officer's certificate: give the"
                              " officer's private key")
        if key.public_key() != cert.public_key():
            raise EscrowError(f"{what}: that key is not the key of the officer's certificate"
                              f" ({display_name(cert.subject)})")
        try:
            inner = json.loads(decrypt_enveloped(payload, [(key, cert)]).content)
            value = _unb64(inner["share"], "the share")
            bound = inner["header_sha256"]
        except (SmimeError, ValueError, KeyError, TypeError):
            raise EscrowError(f"{what} does not open with the officer's key: the file was"
                              " altered or damaged") from None
        if bound != hashlib.sha256(canonical(signed)).hexdigest():
            raise EscrowError(f"{what}: the share file was altered (its header no longer"
                              " matches the encrypted share)")
    else:
        if passphrase is None:
            raise EscrowError(f"{what} is protected by a passphrase: give it")
        p = body["protection"]
        try:
            n, r, par = int(p["n"]), int(p["r"]), int(p["p"])
            salt, nonce = _unb64(p["salt"], "salt"), _unb64(p["nonce"], "nonce")
        except (KeyError, TypeError, ValueError):
            raise EscrowError(f"{what}: the share file is damaged") from None
        if p.get("kdf") != "scrypt" or not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0
                                            and 1 <= r <= _MAX_SCRYPT_R
                                            and 1 <= par <= _MAX_SCRYPT_P) \
                or len(nonce) != 12 or len(salt) < 16:
            raise EscrowError(f"{what}: unsupported or damaged passphrase protection")
        derived = Scrypt(salt=salt, length=32, n=n, r=r, p=par).derive(passphrase)
        try:
            value = AESGCM(derived).decrypt(nonce, payload, canonical(signed))
        except InvalidTag:
            raise EscrowError(f"{what}: wrong passphrase, or the file was altered") from None
    if not value:
        raise EscrowError(f"{what}: the share is empty")
    return UnlockedShare(header, Share(header.index, header.threshold, value), source)
