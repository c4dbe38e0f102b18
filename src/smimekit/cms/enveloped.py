"""EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083), low level.

AES-GCM (RFC 5084) and ChaCha20-Poly1305 (RFC 8103) go into AuthEnvelopedData, AES-CBC into
EnvelopedData. Authenticated modes check the tag before any plaintext is released.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from smimekit.cms import asn1, recipients, strict
from smimekit.cms import der as dertools
from smimekit.cms.algorithms import (
    Cipher,
    ContentCipher,
    aead_decrypt,
    aead_encrypt,
    cbc_decrypt,
    cipher_for,
    content_cipher,
    new_key,
)
from smimekit.cms.recipients import RecipientOptions
from smimekit.errors import (
    DecryptionError,
    EncryptionError,
    MalformedError,
    NoRecipientError,
    UnsupportedError,
)

_MIME_START = re.compile(rb"[!-9;-~]+:")  # a header field name and its colon

ENCRYPTED_TYPES = ("enveloped_data", "authenticated_enveloped_data")


@dataclass(frozen=True)
class DecryptedContent:
    """The result of :func:`decrypt_enveloped`."""

    content: bytes
    """The plaintext content (for S/MIME: a MIME entity)."""
    cipher: str
    """Content-encryption algorithm, e.g. ``aes256-gcm``."""
    authenticated: bool
    """True for AuthEnvelopedData (the tag was checked)."""
    recipient: str
    """How the key was delivered, e.g. ``ktri-rsaes_oaep`` or ``kari-...sha256kdf``."""


def encrypt_enveloped(
    content: bytes,
    recipient_certs: Sequence[x509.Certificate],
    *,
    cipher: Cipher = Cipher.AES256_GCM,
    options: RecipientOptions | None = None,
) -> bytes:
    """Encrypt ``content`` to every certificate; a DER ContentInfo.

    Raises:
        EncryptionError: no recipients, or a certificate whose key cannot receive mail.
    """
    stream = encrypt_enveloped_stream([content], recipient_certs, cipher=cipher, options=options)
    return b"".join([*stream.prefix, *stream.ciphertext, stream.suffix()])


class _Length:
    """Stands in for the ciphertext while the structure around it is laid out."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


@dataclass
class EncryptedStream:
    """A DER ContentInfo in three parts, so a large message is never held twice.

    ``prefix`` (the DER up to the ciphertext), ``ciphertext`` (produced piece by piece as
    it is consumed) and ``suffix()`` (the rest, with the authentication tag, which is known
    only once the whole ciphertext has been produced).
    """

    prefix: list[dertools.Chunk]
    ciphertext: Iterator[bytes]
    suffix: Callable[[], bytes]
    kind: str


_PIECE = 1 << 20  # encrypt a megabyte at a time


def encrypt_enveloped_stream(
    chunks: Sequence[dertools.Chunk],
    recipient_certs: Sequence[x509.Certificate],
    *,
    cipher: Cipher = Cipher.AES256_GCM,
    options: RecipientOptions | None = None,
) -> EncryptedStream:
    """Encrypt the concatenation of ``chunks``; see :class:`EncryptedStream`.

    Raises:
        EncryptionError: no recipients, or a certificate whose key cannot receive mail.
    """
    if not recipient_certs:
        raise EncryptionError("at least one recipient certificate is required")
    options = options or RecipientOptions()
    spec = cipher_for(cipher)
    cek = new_key(spec)
    infos = [recipients.build(cert, cek, options) for cert in recipient_certs]
    total = sum(len(c) for c in chunks)
    tag: list[bytes] = []
    if spec.mode == "chacha":
        # No streaming ChaCha20-Poly1305 in the library: one shot (a copy of the content).
        nonce = os.urandom(12)
        sealed = aead_encrypt(spec, cek, nonce, b"".join(chunks), None)
        tag.append(sealed[-16:])
        pieces: Iterator[bytes] = iter([sealed[:-16]])
        params: core.Asn1Value = core.OctetString(nonce)
        size = total
    elif spec.mode == "gcm":
        nonce = os.urandom(12)
        encryptor: Any = _Cipher(algorithms.AES(cek), modes.GCM(nonce)).encryptor()
        params = asn1.GCMParameters({"aes_nonce": nonce, "aes_icvlen": 16})
        pieces = _pieces(encryptor, chunks, b"", tag)
        size = total
    else:
        iv = os.urandom(16)
        encryptor = _Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
        params = core.OctetString(iv)
        pad = 16 - total % 16  # PKCS#7 (RFC 5652 6.3), applied to the last block only
        pieces = _pieces(encryptor, chunks, bytes([pad]) * pad, None)
        size = total + pad
    if cipher.authenticated:
        body: core.Asn1Value = cms.AuthEnvelopedData(
            {
                "version": "v0",
                "recipient_infos": infos,
                "auth_encrypted_content_info": _eci(spec, params),
                "mac": bytes(16),  # placeholder: the tag is the last 16 bytes of the DER
            }
        )
        kind = "authenticated_enveloped_data"
    else:
        # RFC 5652 6.1: an ori (KEMRecipientInfo) makes version 3.
        version = (
            "v3"
            if any(i.name == "ori" for i in infos)
            else "v0"
            if all(i.name == "ktri" and i.chosen["version"].native == "v0" for i in infos)
            else "v2"
        )
        body = cms.EnvelopedData(
            {
                "version": version,
                "recipient_infos": infos,
                "encrypted_content_info": _eci(spec, params),
            }
        )
        kind = "enveloped_data"
    # Built around an empty encryptedContent, then laid out for the real length.
    shell = cms.ContentInfo({"content_type": kind, "content": body}).dump()
    target = dertools.encrypted_content_offset(shell)
    if target is None:  # pragma: no cover - our own encoding always has the field
        raise EncryptionError("internal error: encrypted content field not found")
    marker = _Length(size)
    laid_out, _total = dertools.splice(shell, target, marker)  # type: ignore[arg-type]
    at = next(i for i, chunk in enumerate(laid_out) if chunk is marker)  # type: ignore[comparison-overlap]
    before, after = laid_out[:at], laid_out[at + 1 :]

    def suffix() -> bytes:
        rest = b"".join(after)
        if cipher.authenticated:
            if not tag:
                raise EncryptionError("internal error: the ciphertext was not consumed")
            rest = rest[:-16] + tag[0]
        return rest

    return EncryptedStream(before, pieces, suffix, kind)


def _pieces(
    encryptor: Any, chunks: Sequence[dertools.Chunk], tail: bytes, tag: list[bytes] | None
) -> Iterator[bytes]:
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), _PIECE):
            yield encryptor.update(view[start : start + _PIECE])
    last = encryptor.update(tail) + encryptor.finalize()
    if tag is not None:
        tag.append(encryptor.tag)
    if last:
        yield last


def _eci(spec: ContentCipher, params: core.Asn1Value) -> cms.EncryptedContentInfo:
    return cms.EncryptedContentInfo(
        {
            "content_type": "data",
            "content_encryption_algorithm": {
                "algorithm": spec.oid_name,
                "parameters": core.Any.load(params.dump()),
            },
            "encrypted_content": b"",
        }
    )


def content_type_of(der: bytes) -> str:
    """The asn1crypto name of a ContentInfo's content type (cheap: outer layers only)."""
    return _content_type(der)


_CONTENT_TYPES = {
    bytes.fromhex("2a864886f70d010702"): "signed_data",
    bytes.fromhex("2a864886f70d010703"): "enveloped_data",
    bytes.fromhex("2a864886f70d0109100117"): "authenticated_enveloped_data",
}


@asn1.guard("ContentInfo")
def _content_type(der: bytes) -> str:
    # The common types straight from the header: parsing the ContentInfo with asn1crypto
    # would copy a 50 MB content twice just to read its first OID.
    known = _CONTENT_TYPES.get(dertools.content_type_oid(der) or b"")
    if known is not None:
        return known
    info = asn1.load(cms.ContentInfo, der, "CMS ContentInfo")
    return str(info["content_type"].native)


@asn1.guard("EnvelopedData")
def decrypt_enveloped(
    der: bytes,
    keys: Sequence[tuple[PrivateKeyTypes, x509.Certificate | None]],
    *,
    allow_legacy: bool = False,
) -> DecryptedContent:
    """Decrypt an EnvelopedData or AuthEnvelopedData with any of ``keys``.

    Each entry pairs a private key with its certificate (or None: the key is then tried on
    every slot of its type). Historic keys may simply be listed too.

    Raises:
        ASN1Error: the structure cannot be decoded.
        NoRecipientError: none of the keys matches a recipient.
        DecryptionError: the key does not open it, or the content was altered (one generic
            error for every failing step, so no padding oracle).
        LegacyAlgorithmError: 3DES or RC2 without ``allow_legacy``.
    """
    encrypted: bytes | memoryview | None
    hollowed = dertools.hollow(der)
    if hollowed is not None:
        # Plain DER: parse the structure without its ciphertext, which stays a view.
        shell, encrypted = hollowed
        info = asn1.load(cms.ContentInfo, shell, "CMS ContentInfo")
    else:
        info = asn1.load(cms.ContentInfo, der, "CMS ContentInfo")
        encrypted = None
    kind = info["content_type"].native
    if kind not in ENCRYPTED_TYPES:
        raise MalformedError(f"not an encrypted message: the CMS content type is {kind}")
    body = info["content"]
    authenticated = kind == "authenticated_enveloped_data"
    strict.enveloped(body, authenticated)
    eci = body["auth_encrypted_content_info" if authenticated else "encrypted_content_info"]
    alg = eci["content_encryption_algorithm"]
    spec = content_cipher(alg["algorithm"].native, allow_legacy=allow_legacy)
    if authenticated != (spec.mode in ("gcm", "chacha")):
        raise UnsupportedError(f"{spec.name} does not belong in {kind.replace('_', ' ')}")
    if encrypted is None:
        field = eci["encrypted_content"]
        joined = asn1.string_octets(field)  # BER segments, merged without an object each
        encrypted = field.native if joined is None else joined
    if encrypted is None:
        raise UnsupportedError("the encrypted content is absent (detached EnvelopedData)")
    params = alg["parameters"]
    aad = None
    if authenticated and body["auth_attrs"].native is not None:
        aad = asn1.der_set(body["auth_attrs"])

    found = recipients.candidates(list(body["recipient_infos"]), list(keys))
    if not found:
        raise NoRecipientError()
    # Without a certificate several slots may fit the key. CBC has no integrity, so a wrong
    # slot's key still "decrypts" to garbage with valid padding once in 256 tries: in that
    # case a guessed slot must also give something that starts like a MIME entity.
    ambiguous = spec.mode == "cbc" and sum(not c.exact for c in found) > 1
    for candidate in found:
        cek = recipients.unwrap(candidate, spec.key_size)
        if cek is None:
            continue
        try:
            if spec.mode == "cbc":
                iv = _iv(spec, params)
                plain = cbc_decrypt(spec, cek, iv, encrypted)
            elif spec.mode == "gcm":
                gcm = asn1.GCMParameters.load(params.dump())
                tag = body["mac"].native
                if len(tag) != gcm["aes_icvlen"].native:
                    raise DecryptionError()
                plain = aead_decrypt(spec, cek, gcm["aes_nonce"].native, encrypted, tag, aad)
            else:
                nonce = core.OctetString.load(params.dump()).native
                plain = aead_decrypt(spec, cek, nonce, encrypted, body["mac"].native, aad)
        except DecryptionError:
            continue
        if ambiguous and not candidate.exact and not _MIME_START.match(plain):
            continue
        return DecryptedContent(plain, spec.name, authenticated, candidate.description)
    raise DecryptionError()


def _iv(spec: ContentCipher, params: core.Asn1Value) -> bytes:
    if spec.oid_name == "rc2":
        rc2 = asn1.RC2CBCParameter.load(params.dump())
        version = rc2["rc2_parameter_version"].native
        # RFC 3370 section 5.2: version 58 means an effective key of 128 bits, the only
        # RC2 variant the underlying library implements.
        if version not in (None, 58):
            raise UnsupportedError(f"RC2 with parameter version {version} is not supported")
        return bytes(rc2["iv"].native)
    return bytes(core.OctetString.load(params.dump()).native)
