"""Algorithm tables: CMS object identifiers to ``cryptography`` primitives and back.

One place decides what is modern (written and read), what is legacy (read only with
``allow_legacy``) and what is refused. RFC 8551 section 2 lists the S/MIME 4.0 choices.
"""

from __future__ import annotations

import enum
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2, TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, algorithms, modes
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from smimekit.errors import DecryptionError, LegacyAlgorithmError, UnsupportedError


class Digest(enum.Enum):
    """Message digests for signatures (RFC 5754)."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    @property
    def micalg(self) -> str:
        """The ``micalg`` parameter of multipart/signed (RFC 8551 section 3.5.3.2)."""
        return MICALG[self.value]


class Cipher(enum.Enum):
    """Content-encryption algorithms we write. GCM and ChaCha20 use AuthEnvelopedData."""

    AES128_GCM = "aes128-gcm"
    AES256_GCM = "aes256-gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"
    AES128_CBC = "aes128-cbc"
    AES256_CBC = "aes256-cbc"

    @property
    def authenticated(self) -> bool:
        return self.value.endswith("gcm") or self.value == "chacha20-poly1305"


MICALG = {
    "sha1": "sha-1",
    "sha224": "sha-224",
    "sha256": "sha-256",
    "sha384": "sha-384",
    "sha512": "sha-512",
}

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "md5": hashes.MD5,
}
LEGACY_DIGESTS = frozenset({"sha1", "md5"})


def hash_algorithm(name: str, *, allow_legacy: bool = False) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash for an asn1crypto digest name; legacy ones need permission."""
    cls = _HASHES.get(name)
    if cls is None:
        raise UnsupportedError(f"unsupported digest algorithm {name}")
    if name in LEGACY_DIGESTS and not allow_legacy:
        raise LegacyAlgorithmError(
            f"{name.upper()} is a legacy digest, refused by default (allow legacy to read it)"
        )
    return cls()


# -- content encryption --------------------------------------------------------------------


@dataclass(frozen=True)
class ContentCipher:
    """One content-encryption algorithm as CMS names it."""

    name: str  # our display name, e.g. "aes256-gcm"
    oid_name: str  # asn1crypto EncryptionAlgorithmId name
    key_size: int  # bytes
    mode: str  # "gcm" | "cbc" | "chacha"
    legacy: bool = False


CONTENT_CIPHERS: dict[str, ContentCipher] = {
    c.oid_name: c
    for c in (
        ContentCipher("aes128-gcm", "aes128_gcm", 16, "gcm"),
        ContentCipher("aes192-gcm", "aes192_gcm", 24, "gcm"),
        ContentCipher("aes256-gcm", "aes256_gcm", 32, "gcm"),
        ContentCipher("chacha20-poly1305", "chacha20_poly1305", 32, "chacha"),
        ContentCipher("aes128-cbc", "aes128_cbc", 16, "cbc"),
        ContentCipher("aes192-cbc", "aes192_cbc", 24, "cbc"),
        ContentCipher("aes256-cbc", "aes256_cbc", 32, "cbc"),
        ContentCipher("3des-cbc", "tripledes_3key", 24, "cbc", legacy=True),
        ContentCipher("rc2-cbc", "rc2", 16, "cbc", legacy=True),
    )
}
BY_NAME = {c.name: c for c in CONTENT_CIPHERS.values()}


def content_cipher(oid_name: str, *, allow_legacy: bool) -> ContentCipher:
    """Look up a content cipher by its asn1crypto name, enforcing the legacy policy."""
    spec = CONTENT_CIPHERS.get(oid_name)
    if spec is None:
        raise UnsupportedError(f"unsupported content-encryption algorithm {oid_name}")
    if spec.legacy and not allow_legacy:
        raise LegacyAlgorithmError(
            f"{spec.name} is a legacy cipher, refused by default (allow legacy to read archives)"
        )
    return spec


def cipher_for(cipher: Cipher) -> ContentCipher:
    return BY_NAME[cipher.value]


def new_key(spec: ContentCipher) -> bytes:
    return os.urandom(spec.key_size)


def _block_cipher(spec: ContentCipher, key: bytes) -> BlockCipherAlgorithm:
    if spec.oid_name == "tripledes_3key":
        return TripleDES(key)
    if spec.oid_name == "rc2":
        return RC2(key)
    return algorithms.AES(key)


Buffer = bytes | memoryview


def cbc_decrypt(spec: ContentCipher, key: bytes, iv: bytes, data: Buffer) -> bytes:
    try:
        block = _block_cipher(spec, key)
        size = block.block_size // 8
        if len(iv) != size or len(data) % size or not data:
            raise ValueError("bad sizes")
        dec = _Cipher(block, modes.CBC(iv)).decryptor()
        padded = dec.update(data)
        dec.finalize()
    except ValueError:
        raise DecryptionError() from None
    pad = padded[-1]
    ok = 1 <= pad <= size and hmac.compare_digest(padded[-pad:], bytes([pad]) * pad)
    if not ok:
        raise DecryptionError()
    return padded[:-pad]


def aead_encrypt(
    spec: ContentCipher, key: bytes, nonce: bytes, data: Buffer, aad: bytes | None
) -> bytes:
    """Return ciphertext || 16-byte tag (one buffer, so the caller can slice without copying)."""
    if spec.mode == "chacha":
        return ChaCha20Poly1305(key).encrypt(nonce, data, aad)
    return AESGCM(key).encrypt(nonce, data, aad)


def aead_decrypt(
    spec: ContentCipher, key: bytes, nonce: bytes, data: Buffer, tag: bytes, aad: bytes | None
) -> bytes:
    """Check the tag first; nothing is returned unless it matches (RFC 5083 section 2.1)."""
    try:
        if spec.mode == "chacha":
            if len(tag) != 16:
                raise ValueError("tag")
            return ChaCha20Poly1305(key).decrypt(nonce, bytes(data) + tag, aad)
        # ICVs of 12..16 bytes (RFC 5084 section 3.2). The streaming API avoids joining the
        # tag to a large ciphertext; the plaintext is held back until finalize() has checked
        # the tag.
        if not 12 <= len(tag) <= 16 or not nonce:
            raise ValueError("tag")
        dec = _Cipher(
            algorithms.AES(key), modes.GCM(nonce, tag, min_tag_length=len(tag))
        ).decryptor()
        if aad:
            dec.authenticate_additional_data(aad)
        out = dec.update(data)
        dec.finalize()
        return out
    except (InvalidTag, ValueError):
        raise DecryptionError() from None
