"""Private keys at rest: a PKCS#12 with AES-256-CBC, PBKDF2-HMAC-SHA256 and an HMAC-SHA256 MAC.

Nothing smimekit keeps on disk or in the store holds a private key in the clear. PKCS#12 rather
than encrypted PKCS#8 because ``cryptography`` writes PKCS#8 with only 2,048 PBKDF2 iterations
and lets the iteration count be chosen for PKCS#12 alone; ``openssl pkcs12`` reads the result.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from smimekit.errors import KeyLoadError, PassphraseError

__all__ = ["KDF_ROUNDS", "protect_key", "unprotect_key"]

KDF_ROUNDS = 200_000
"""PBKDF2 iterations for keys at rest: ~0.1 s to open a key here, costly to guess at."""


def protect_key(key: PrivateKeyTypes, passphrase: bytes, *, rounds: int = KDF_ROUNDS) -> bytes:
    """``key`` as a passphrase-protected PKCS#12 (DER) holding the key alone.

    Raises:
        PassphraseError: the passphrase is empty.
    """
    if not passphrase:
        raise PassphraseError("refusing to store a private key under an empty passphrase")
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(rounds)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(passphrase))
    return pkcs12.serialize_key_and_certificates(
        None, key, None, None, encryption)  # type: ignore[arg-type]


def unprotect_key(data: bytes, passphrase: bytes, what: str = "the key") -> PrivateKeyTypes:
    """The private key in ``data`` (from :func:`protect_key`); ``what`` names it in errors.

    Raises:
        PassphraseError: the passphrase is wrong.
        KeyLoadError: ``data`` is not an encrypted private key.
    """
    try:
        key, _, _ = pkcs12.load_key_and_certificates(data, passphrase)
    except ValueError as exc:
        if data[:1] == b"\x30" and len(data) > 64:
            raise PassphraseError(f"wrong passphrase for {what}, or it is damaged") from exc
        raise KeyLoadError(f"{what} is not a readable protected key") from exc
    if key is None:
        raise KeyLoadError(f"{what} holds no private key")
    return key
