"""Build and recognise S/MIME messages (RFC 8551 section 3).

multipart/signed with protocol="application/pkcs7-signature" and a micalg; opaque
application/pkcs7-mime with smime-type signed-data, enveloped-data or authEnveloped-data.
The legacy ``x-pkcs7-*`` types and ``.p7m``/``.p7s`` file names are read too.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from smimekit.errors import MIMEError
from smimekit.smime.canonical import (
    CRLF,
    Base64Lines,
    Entity,
    Header,
    b64_chunks,
    b64_lines,
    has_long_line,
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


_TEXT_PLAIN_ASCII = Header("Content-Type", b"Content-Type: text/plain; charset=us-ascii")


def prepare(message: bytes) -> tuple[tuple[Header, ...], bytes]:
    """Split a message into its outer headers and the 7-bit-safe CRLF entity to protect."""
    outer, chunks = prepare_chunks(message)
    return outer, chunks[0] if len(chunks) == 1 and isinstance(chunks[0], bytes) else b"".join(
        chunks
    )


def prepare_chunks(message: bytes) -> tuple[tuple[Header, ...], list[bytes | memoryview]]:
    """:func:`prepare`, with the entity as chunks: a 7-bit body is not copied out of the
    message (a 50 MB body would otherwise be held twice)."""
    raw = to_crlf(message)
    parsed = Entity.parse(raw)
    content_headers = parsed.content_headers
    if raw.isascii() and not has_long_line(raw):
        if not any(h.lname == "content-type" for h in content_headers):
            content_headers = (_TEXT_PLAIN_ASCII, *content_headers)
        head = b"".join(h.raw + CRLF for h in content_headers) + CRLF
        return parsed.outer_headers, [head, parsed.body_view]
    return (*_prepare_slow(parsed),)


def _prepare_slow(parsed: Entity) -> tuple[tuple[Header, ...], list[bytes | memoryview]]:
    content_headers = parsed.content_headers
    if not any(h.lname == "content-type" for h in content_headers):
        charset = b"us-ascii" if parsed.body.isascii() else b"utf-8"
        content_headers = (
            Header("Content-Type", b"Content-Type: text/plain; charset=" + charset),
            *content_headers,
        )
    return parsed.outer_headers, [make_7bit(join_entity(content_headers, parsed.body))]


def _outer(outer: Sequence[Header]) -> bytes:
    return b"".join(h.raw + CRLF for h in outer) + b"MIME-Version: 1.0" + CRLF


def build_multipart_signed(
    outer: Sequence[Header],
    entity: bytes | Sequence[bytes | memoryview],
    signature_der: bytes,
    micalg: str,
) -> bytes:
    """A complete multipart/signed message (RFC 8551 section 3.5.3); ``entity`` may be given
    as chunks (see :func:`prepare_chunks`), joined here once, into the message itself."""
    parts = [entity] if isinstance(entity, bytes) else list(entity)
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
            *parts,
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


def build_pkcs7_mime_stream(
    outer: Sequence[Header],
    prefix: Sequence[bytes | memoryview],
    pieces: Iterable[bytes],
    suffix: Callable[[], bytes],
    cms_type: str,
) -> bytes:
    """:func:`build_pkcs7_mime` for a CMS produced piece by piece (see
    ``smimekit.cms.enveloped.encrypt_enveloped_stream``): each piece is base64-encoded as it
    comes, so the message is assembled once, in one buffer."""
    out = io.BytesIO()
    out.write(_pkcs7_head(outer, cms_type))
    lines = Base64Lines(out.write)
    for part in prefix:
        lines.write(part)
    for piece in pieces:
        lines.write(piece)
    lines.write(suffix())
    lines.close()
    return out.getvalue()


def build_pkcs7_mime(outer: Sequence[Header], der: bytes, cms_type: str) -> bytes:
    """A complete application/pkcs7-mime message (RFC 8551 sections 3.2, 3.3, 3.5.2)."""
    return b"".join([_pkcs7_head(outer, cms_type), *b64_chunks([der])])


def _pkcs7_head(outer: Sequence[Header], cms_type: str) -> bytes:
    smime_type, filename = SMIME_TYPES[cms_type]
    return b"".join(
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
    # A third part is enough to refuse it: the rest is not split (a million parts are 7 MB).
    parts = split_multipart(entity.raw, entity.params.get("boundary", ""), entity.body_offset,
                            max_parts=3)
    if len(parts) != 2:
        count = "more" if len(parts) > 2 else str(len(parts))
        raise MIMEError(f"multipart/signed must have exactly 2 parts, this one has {count}")
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
