"""Private keys at rest: a PKCS#12 with AES-256-CBC, PBKDF2-HMAC-SHA256 and an HMAC-SHA256 MAC.

Nothing smimekit keeps on disk or in the store holds a private key in the clear. PKCS#12 rather
than encrypted PKCS#8 because ``cryptography`` writes PKCS#8 with only 2,048 PBKDF2 iterations
and lets the iteration count be chosen for PKCS#12 alone; ``openssl pkcs12`` reads the result.

``cryptography``'s PKCS#12 writer and reader refuse ML-DSA and ML-KEM keys; those are written
by :func:`smimekit.keys.pkcs12.write_pkcs12` in the same form and read back by
:func:`smimekit.keys.pkcs12.load_pkcs12_identities`.

cryptography writes the MAC with 2,048 iterations whatever the key bag uses. A passphrase
guess can be checked against the MAC alone, so the MAC would set the price of a guess:
:func:`protect_key` recomputes it with the key bag's count (:data:`KDF_ROUNDS`). Files written
before that (MAC at 2,048) still open: readers take the count from the file.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from smimekit.errors import KeyLoadError, PassphraseError
from smimekit.keys.pkcs12 import pkcs12_kdf

__all__ = ["KDF_ROUNDS", "protect_key", "unprotect_key"]

_ML_KEYS = (mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey,
            mlkem.MLKEM768PrivateKey, mlkem.MLKEM1024PrivateKey)

KDF_ROUNDS = 200_000
"""PBKDF2 iterations for keys at rest, and the MAC's: ~0.1 s to open a key here, costly to
guess at."""


def protect_key(key: PrivateKeyTypes, passphrase: bytes, *, rounds: int = KDF_ROUNDS) -> bytes:
    """``key`` as a passphrase-protected PKCS#12 (DER) holding the key alone.

    The key bag: PBES2, PBKDF2-HMAC-SHA256 with ``rounds`` iterations, AES-256-CBC. The MAC:
    HMAC-SHA256 with ``rounds`` iterations of the RFC 7292 appendix B KDF, 16-byte salt.

    Raises:
        PassphraseError: the passphrase is empty or not UTF-8 (PKCS#12 passwords are text).
    """
    if not passphrase:
        raise PassphraseError("refusing to store a private key under an empty passphrase")
    try:
        text = passphrase.decode("utf-8")
    except UnicodeDecodeError:
        raise PassphraseError("the passphrase must be UTF-8 text (PKCS#12)") from None
    if isinstance(key, _ML_KEYS):
        return _protect_ml_key(key, passphrase, rounds)
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(rounds)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(passphrase))
    der = pkcs12.serialize_key_and_certificates(
        None, key, None, None, encryption)  # type: ignore[arg-type]
    return _with_mac(der, text, rounds)


def _protect_ml_key(key: PrivateKeyTypes, passphrase: bytes, rounds: int) -> bytes:
    from smimekit.keys.pkcs12 import write_pkcs12

    return write_pkcs12([(None, key, None)], [], passphrase, iterations=rounds)


def _with_mac(der: bytes, passphrase: str, iterations: int) -> bytes:
    """``der`` (a PFX) with its HMAC-SHA256 MAC recomputed at ``iterations`` (RFC 7292 5.1)."""
    pfx = asn1_pkcs12.Pfx.load(der)
    auth_safe = pfx["auth_safe"]["content"].native
    salt = os.urandom(16)
    # RFC 7292 B.1: the password as a BMPString with a two-byte terminator
    mac_key = pkcs12_kdf(hashlib.sha256, passphrase.encode("utf-16-be") + b"\x00\x00", salt,
                         iterations, 3, 32)
    return asn1_pkcs12.Pfx({
        "version": "v3",
        "auth_safe": {"content_type": "data", "content": auth_safe},
        "mac_data": {"mac": {"digest_algorithm": {"algorithm": "sha256"},
                             "digest": hmac.new(mac_key, auth_safe, "sha256").digest()},
                     "mac_salt": salt, "iterations": iterations},
    }).dump()


def unprotect_key(data: bytes, passphrase: bytes, what: str = "the key") -> PrivateKeyTypes:
    """The private key in ``data`` (from :func:`protect_key`); ``what`` names it in errors.

    Raises:
        PassphraseError: the passphrase is wrong.
        KeyLoadError: ``data`` is not an encrypted private key.
    """
    try:
        key, _, _ = pkcs12.load_key_and_certificates(data, passphrase)
    except ValueError as exc:
        # cryptography's reader refuses ML-DSA and ML-KEM key bags: ours reads them
        key = _unprotect_with_own_reader(data, passphrase, what, exc)
    if key is None:
        raise KeyLoadError(f"{what} holds no private key")
    return key


def _unprotect_with_own_reader(data: bytes, passphrase: bytes, what: str,
                               exc: ValueError) -> PrivateKeyTypes | None:
    from smimekit.keys.pkcs12 import load_pkcs12_identities

    try:
        identities = load_pkcs12_identities(data, passphrase, label=what).identities
    except PassphraseError:
        raise PassphraseError(f"wrong passphrase for {what}, or it is damaged") from exc
    except KeyLoadError:
        if data[:1] == b"\x30" and len(data) > 64:
            raise PassphraseError(f"wrong passphrase for {what}, or it is damaged") from exc
        raise KeyLoadError(f"{what} is not a readable protected key") from exc
    return identities[0][0] if identities else None
