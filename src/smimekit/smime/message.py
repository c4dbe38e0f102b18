"""Build and recognise S/MIME messages (RFC 8551 section 3).

multipart/signed with protocol="application/pkcs7-signature" and a micalg; opaque
application/pkcs7-mime with smime-type signed-data, enveloped-data or authEnveloped-data.
The legacy ``x-pkcs7-*`` types and ``.p7m``/``.p7s`` file names are read too.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from smimekit.errors import MIMEError
from smimekit.smime.canonical import (
    CRLF,
    Entity,
    Header,
    b64_chunks,
    b64_lines,
    join_entity,
    make_7bit,
    split_multipart,
    to_crlf,
)

PKCS7_MIME = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
PKCS7_SIGNATURE = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})
OCTET_STREAM = "application/octet-stream"
PREAMBLE = b"This is an S/MIME signed message" + CRLF

SMIME_TYPES = {
    "signed_data": ("signed-data", "smime.p7m"),
    "enveloped_data": ("enveloped-data", "smime.p7m"),
    "authenticated_enveloped_data": ("authEnveloped-data", "smime.p7m"),
}


def new_boundary() -> str:
    return "----=_smimekit_" + secrets.token_hex(12)


def prepare(message: bytes) -> tuple[tuple[Header, ...], bytes]:
    """Split a message into its outer headers and the 7-bit-safe CRLF entity to protect."""
    parsed = Entity.parse(to_crlf(message))
    content_headers = parsed.content_headers
    if not any(h.lname == "content-type" for h in content_headers):
        charset = b"us-ascii" if parsed.body.isascii() else b"utf-8"
        content_headers = (
            Header("Content-Type", b"Content-Type: text/plain; charset=" + charset),
            *content_headers,
        )
    return parsed.outer_headers, make_7bit(join_entity(content_headers, parsed.body))


def _outer(outer: Sequence[Header]) -> bytes:
    return b"".join(h.raw + CRLF for h in outer) + b"MIME-Version: 1.0" + CRLF


def build_multipart_signed(
    outer: Sequence[Header], entity: bytes, signature_der: bytes, micalg: str
) -> bytes:
    """A complete multipart/signed message (RFC 8551 section 3.5.3)."""
    boundary = new_boundary()
    b = boundary.encode()
    return b"".join(
        [
            _outer(outer),
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=',
            micalg.encode(),
            b'; boundary="',
            b,
            b'"',
            CRLF,
            CRLF,
            PREAMBLE,
            CRLF,
            b"--",
            b,
            CRLF,
            entity,
            CRLF,
            b"--",
            b,
            CRLF,
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"',
            CRLF,
            b"Content-Transfer-Encoding: base64",
            CRLF,
            b'Content-Disposition: attachment; filename="smime.p7s"',
            CRLF,
            b"Content-Description: S/MIME Cryptographic Signature",
            CRLF,
            CRLF,
            b64_lines(signature_der),
            b"--",
            b,
            b"--",
            CRLF,
        ]
    )


def build_pkcs7_mime(
    outer: Sequence[Header], der: bytes | Sequence[bytes | memoryview], cms_type: str
) -> bytes:
    """A complete application/pkcs7-mime message (RFC 8551 sections 3.2, 3.3, 3.5.2).

    ``der`` may be given as chunks (see :func:`smimekit.cms.enveloped.encrypt_enveloped_chunks`)
    so a large ciphertext is base64-encoded without first being joined.
    """
    smime_type, filename = SMIME_TYPES[cms_type]
    chunks = [der] if isinstance(der, bytes) else der
    head = b"".join(
        [
            _outer(outer),
            b"Content-Type: application/pkcs7-mime; smime-type=",
            smime_type.encode(),
            b'; name="',
            filename.encode(),
            b'"',
            CRLF,
            b"Content-Transfer-Encoding: base64",
            CRLF,
            b'Content-Disposition: attachment; filename="',
            filename.encode(),
            b'"',
            CRLF,
            CRLF,
        ]
    )
    return b"".join([head, *b64_chunks(chunks)])


def is_pkcs7_mime(entity: Entity) -> bool:
    if entity.content_type in PKCS7_MIME:
        return True
    return entity.content_type == OCTET_STREAM and entity.filename.endswith((".p7m", ".p7c"))


def is_multipart_signed(entity: Entity) -> bool:
    if entity.content_type != "multipart/signed":
        return False
    protocol = entity.params.get("protocol", "").lower()
    return protocol in PKCS7_SIGNATURE or protocol == ""


@dataclass(frozen=True)
class DetachedSignature:
    """The two halves of a multipart/signed."""

    content: bytes
    """The first part exactly as transmitted (CRLF): the signed bytes."""
    signature: bytes
    """The DER (or BER) of the SignedData in the second part."""
    micalg: str | None


def split_signed(entity: Entity) -> DetachedSignature:
    """Cut a multipart/signed into its signed content and its signature.

    Raises:
        MIMEError: not two parts, or the second part is not a PKCS#7 signature.
    """
    parts = split_multipart(entity.raw, entity.params.get("boundary", ""), entity.body_offset)
    if len(parts) != 2:
        raise MIMEError(f"multipart/signed must have exactly 2 parts, this one has {len(parts)}")
    sig = Entity.parse(parts[1])
    if sig.content_type not in PKCS7_SIGNATURE and not (
        sig.content_type == OCTET_STREAM and sig.filename.endswith(".p7s")
    ):
        raise MIMEError(
            f"the second part of multipart/signed is {sig.content_type}, not a PKCS#7 signature"
        )
    der = sig.decoded_body()
    if not der:
        raise MIMEError("the signature part is empty")
    return DetachedSignature(parts[0], der, entity.params.get("micalg"))


def pkcs7_der(entity: Entity) -> bytes:
    """The CMS bytes carried by an application/pkcs7-mime entity."""
    der = entity.decoded_body()
    if not der:
        raise MIMEError("the application/pkcs7-mime body is empty")
    return der
