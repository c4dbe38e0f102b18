"""The encryption layer of a message, read without any private key.

:func:`_inspect` finds the CMS envelope of a message (also inside a ``multipart/signed``, an
opaque signature, or a multipart next to other parts) and reads its RecipientInfos and
content cipher from the start of the DER: only the first kilobytes of the body are decoded.
The public names are re-exported by :mod:`smimekit.archive`.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass
from typing import Any, NamedTuple

from asn1crypto import algos, cms
from cryptography import x509

from smimekit.archive.mailstore import MAX_HEADER
from smimekit.cms import asn1, kem
from smimekit.cms.algorithms import CONTENT_CIPHERS
from smimekit.cms.enveloped import (
    ENCRYPTED_TYPES,
    content_type_of,
)
from smimekit.cms.keyinfo import issuer_and_serial_der, subject_key_id
from smimekit.cms.signed import embedded_content
from smimekit.dn import attribute_label
from smimekit.errors import (
    MalformedError,
    SmimeError,
)
from smimekit.smime.canonical import CRLF, Entity, split_multipart, to_crlf
from smimekit.smime.message import (
    is_multipart_signed,
    is_pkcs7_mime,
    pkcs7_der,
    split_signed,
)

__all__ = [
    "Envelope",
    "Kind",
    "RecipientId",
]

class Kind(enum.Enum):
    PLAIN = "plain"
    SIGNED = "signed"
    ENCRYPTED = "encrypted"
    MALFORMED = "malformed"
_RSA_TRANSPORT = ("rsaes_pkcs1v15", "rsa", "rsaes_oaep")


@dataclass(frozen=True)
class RecipientId:
    """One recipient slot of an encrypted message, read without any private key."""

    kind: str
    """``ktri`` (key transport), ``kari`` (key agreement), ``kemri`` (ML-KEM, RFC 9629),
    ``kekri``, ``pwri`` or ``ori``."""
    algorithm: str
    """Key transport or agreement algorithm, e.g. ``rsaes_pkcs1v15``."""
    issuer_and_serial: bytes | None = None
    """DER of the IssuerAndSerialNumber."""
    ski: bytes | None = None
    issuer: str | None = None
    serial: int | None = None
    rsa_bits: int | None = None
    """For RSA key transport: the modulus size, from the length of the encrypted key."""

    @property
    def key(self) -> bytes:
        if self.issuer_and_serial is not None:
            return b"I" + self.issuer_and_serial
        if self.ski is not None:
            return b"S" + self.ski
        return b"?" + self.kind.encode()

    def names(self, cert: x509.Certificate) -> bool:
        """True when this slot is addressed to ``cert``."""
        if self.issuer_and_serial is not None:
            return self.issuer_and_serial == issuer_and_serial_der(cert)
        return self.ski is not None and self.ski == subject_key_id(cert)

    def describe(self) -> str:
        if self.issuer is not None:
            return f"issuer {self.issuer}, serial {self.serial:x}"
        if self.ski is not None:
            return f"subject key identifier {self.ski.hex()}"
        return f"{self.kind} recipient"


@dataclass(frozen=True)
class Envelope:
    """The public facts of one encryption layer."""

    content_type: str
    """``enveloped_data`` or ``authenticated_enveloped_data``."""
    cipher: str
    """E.g. ``aes256-gcm``, ``3des-cbc``, ``rc2-cbc/40``; an OID when unknown."""
    recipients: tuple[RecipientId, ...]
    nested: tuple[str, ...] = ()
    """What the layer sits in, outermost first: ``multipart/signed``, ``signed-data``."""
    partial: bool = False
    """The encrypted part sits inside a multipart next to unencrypted parts."""

    @property
    def authenticated(self) -> bool:
        return self.content_type == "authenticated_enveloped_data"


class _Parsed(NamedTuple):
    kind: Kind
    envelope: Envelope | None = None
    der: bytes | None = None
    flags: frozenset[str] = frozenset()


_INPUT_ERRORS = (SmimeError, *asn1.PARSE_ERRORS, binascii.Error, UnicodeError, RecursionError)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _split_head(data: bytes) -> tuple[bytes, int]:
    """(the header block, offset of the body) of a message with LF or CRLF line ends."""
    if data.startswith((b"\n", b"\r\n")):
        return b"", data.find(b"\n") + 1
    lf = data.find(b"\n\n")
    crlf = data.find(b"\n\r\n", 0, lf if lf >= 0 else len(data))
    if crlf >= 0:
        return data[:crlf].rstrip(b"\r"), crlf + 3
    if lf >= 0:
        return data[:lf].rstrip(b"\r"), lf + 2
    return data, len(data)


def _inspect(data: bytes) -> tuple[Entity, _Parsed]:
    head, body_at = _split_head(data)
    if len(head) > MAX_HEADER:
        raise MalformedError(f"the header section is larger than {MAX_HEADER} bytes")
    entity = Entity.parse(to_crlf(head) + CRLF + CRLF)
    if not entity.headers:
        raise MalformedError("not a mail message: it does not start with a header field")
    if is_pkcs7_mime(entity):
        cte = (entity.get("content-transfer-encoding") or "7bit").strip().lower()
        if cte in ("base64", "7bit", "8bit", "binary"):
            try:
                return entity, _root_envelope(data, body_at, cte)
            except _NotEnveloped:
                pass
    if is_pkcs7_mime(entity) or entity.content_type.startswith("multipart/"):
        return entity, _walk(Entity.parse(to_crlf(data)), 0, (), False)
    return entity, _Parsed(Kind.PLAIN)


# -- the envelope, read from the start of the DER ---------------------------------------------

_OIDS = {
    bytes.fromhex("2a864886f70d010702"): "signed_data",
    bytes.fromhex("2a864886f70d010703"): "enveloped_data",
    bytes.fromhex("2a864886f70d0109100117"): "authenticated_enveloped_data",
}
_RC2_BITS = {160: 40, 120: 64, 58: 128}


class _Short(Exception):
    """More of the DER is needed."""


class _NotEnveloped(Exception):
    """Not an (auth)enveloped-data, or not plain enough to read from its start."""


def _header(buf: bytes, off: int) -> tuple[int, int, int | None]:
    """(tag, offset of the contents, length or None when indefinite) of the TLV at ``off``."""
    if off + 2 > len(buf):
        raise _Short
    tag, first = buf[off], buf[off + 1]
    if tag & 0x1F == 0x1F:
        raise _NotEnveloped
    if first < 0x80:
        return tag, off + 2, first
    if first == 0x80:
        return tag, off + 2, None
    n = first & 0x7F
    if n > 4:
        raise MalformedError("malformed CMS envelope: an absurd length")
    if off + 2 + n > len(buf):
        raise _Short
    return tag, off + 2 + n, int.from_bytes(buf[off + 2:off + 2 + n], "big")


def _element(buf: bytes, off: int, tag: int, what: str) -> tuple[bytes, int]:
    """The whole TLV at ``off`` (which must have ``tag``) and the offset after it."""
    got, start, length = _header(buf, off)
    if got != tag:
        raise MalformedError(f"malformed CMS envelope: {what} expected")
    if length is None:
        raise _NotEnveloped
    if start + length > len(buf):
        raise _Short
    return buf[off:start + length], start + length


def _enter(buf: bytes, off: int, tag: int, what: str) -> tuple[int, int | None]:
    got, start, length = _header(buf, off)
    if got != tag:
        raise MalformedError(f"malformed CMS envelope: {what} expected")
    return start, length


def _envelope_parts(buf: bytes) -> tuple[str, bytes, bytes, int | None]:
    """(content type, RecipientInfos DER, content-encryption AlgorithmIdentifier DER, length
    of the whole ContentInfo or None) from the start of an EnvelopedData/AuthEnvelopedData."""
    off, length = _enter(buf, 0, 0x30, "ContentInfo")
    total = off + length if length is not None else None
    oid, off = _element(buf, off, 0x06, "content type")
    kind = _OIDS.get(oid[2:])
    if kind not in ENCRYPTED_TYPES:
        raise _NotEnveloped
    off, _ = _enter(buf, off, 0xA0, "[0] content")
    off, _ = _enter(buf, off, 0x30, "EnvelopedData")
    _, off = _element(buf, off, 0x02, "version")
    if _header(buf, off)[0] == 0xA0:  # originatorInfo
        _, off = _element(buf, off, 0xA0, "originatorInfo")
    infos, off = _element(buf, off, 0x31, "RecipientInfos")
    off, _ = _enter(buf, off, 0x30, "EncryptedContentInfo")
    _, off = _element(buf, off, 0x06, "content type")
    alg, _ = _element(buf, off, 0x30, "content-encryption algorithm")
    return str(kind), infos, alg, total


def _root_envelope(data: bytes, body_at: int, cte: str) -> _Parsed:
    """The envelope of a root application/pkcs7-mime, decoding only the start of the body:
    the recipients come before the ciphertext."""
    body = memoryview(data)[body_at:]
    size = 16384
    while True:
        chunk = bytes(body[:size])
        if cte == "base64":
            chunk = chunk.translate(None, b" \t\r\n")
            chunk = chunk[:len(chunk) - len(chunk) % 4]
            der = binascii.a2b_base64(chunk)
        else:
            der = chunk
        try:
            kind, infos, alg, total = _envelope_parts(der)
            break
        except _Short:
            if size >= len(body):
                raise MalformedError("truncated CMS envelope") from None
            size *= 8
    if total is not None:
        present = _decoded_length(data, body_at, cte, exact=False)
        if present < total:
            present = _decoded_length(data, body_at, cte, exact=True)
        if present < total:
            raise MalformedError(
                f"truncated encrypted message: the CMS has {total} bytes, {present} are there")
    return _Parsed(Kind.ENCRYPTED, _envelope(kind, infos, alg, (), False))


def _decoded_length(data: bytes, body_at: int, cte: str, *, exact: bool) -> int:
    """Bytes the body decodes to. Not ``exact``: a quick estimate from the line count (CRLF
    assumed when the first body line has it); a short estimate is recounted exactly."""
    if cte != "base64":
        return len(data) - body_at
    if exact:
        spaces = sum(data.count(c, body_at) for c in (b"\n", b"\r", b" ", b"\t"))
    else:
        lines = data.count(b"\n", body_at)
        first = data.find(b"\n", body_at)
        spaces = lines * 2 if first > body_at and data[first - 1] == 0x0D else lines
    chars = len(data) - body_at - spaces
    tail = data[-8:].rstrip()
    pad = len(tail) - len(tail.rstrip(b"="))
    return chars * 3 // 4 - pad


def _envelope_of(der: bytes, nested: tuple[str, ...], partial: bool) -> Envelope:
    """The envelope of a whole (auth)enveloped-data, also BER with indefinite lengths."""
    try:
        kind, infos, alg, _ = _envelope_parts(der)
    except (_Short, _NotEnveloped):
        try:
            info = asn1.load(cms.ContentInfo, der, "CMS ContentInfo")
            kind = str(info["content_type"].native)
            body = info["content"]
            eci = body["auth_encrypted_content_info" if kind == "authenticated_enveloped_data"
                       else "encrypted_content_info"]
            infos = body["recipient_infos"].dump()
            alg = eci["content_encryption_algorithm"].dump()
        except asn1.PARSE_ERRORS as exc:
            raise MalformedError(f"malformed CMS envelope: {_reason(exc)}") from None
    return _envelope(kind, infos, alg, nested, partial)


def _envelope(kind: str, infos_der: bytes, alg_der: bytes, nested: tuple[str, ...],
              partial: bool) -> Envelope:
    try:
        infos = asn1.load(cms.RecipientInfos, infos_der, "RecipientInfos")
        recipients = tuple(r for info in infos for r in _recipient_ids(info))
        alg = asn1.load(algos.EncryptionAlgorithm, alg_der, "content-encryption algorithm")
        name = str(alg["algorithm"].native)
        spec = CONTENT_CIPHERS.get(name)
        cipher = spec.name if spec is not None else name
        if name == "rc2":
            version = asn1.RC2CBCParameter.load(alg["parameters"].dump())[
                "rc2_parameter_version"].native
            bits = _RC2_BITS.get(version) if version is not None else 32
            cipher = f"rc2-cbc/{bits or version}"
    except asn1.PARSE_ERRORS as exc:
        raise MalformedError(f"malformed CMS envelope: {_reason(exc)}") from None
    return Envelope(kind, cipher, recipients, nested, partial)


def _recipient_ids(info: Any) -> list[RecipientId]:
    name = info.name
    value = info.chosen
    if name == "ktri":
        alg = str(value["key_encryption_algorithm"]["algorithm"].native)
        bits = len(value["encrypted_key"].contents) * 8 if alg in _RSA_TRANSPORT else None
        return [_rid(name, alg, value["rid"], bits)]
    if name == "kari":
        alg = str(value["key_encryption_algorithm"]["algorithm"].native)
        return [_rid(name, alg, rek["rid"], None) for rek in value["recipient_encrypted_keys"]]
    if kem.is_kem_info(info):  # ML-KEM (RFC 9629): named by its rid like a ktri
        kemri = kem.parse(info)
        return [_rid("kemri", kem.kem_name(kemri).lower(), kemri["rid"], None)]
    return [RecipientId(name, "-")]


def _rid(kind: str, alg: str, rid: Any, bits: int | None) -> RecipientId:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        return RecipientId(kind, alg, ias.dump(), None, _rfc4514(ias["issuer"]),
                           int(ias["serial_number"].native), bits)
    chosen = rid.chosen
    ski = chosen["subject_key_identifier"].native if kind == "kari" else chosen.native
    return RecipientId(kind, alg, None, bytes(ski), rsa_bits=bits)


def _rfc4514(name: Any) -> str:
    """An asn1crypto Name written like :func:`smimekit.dn.display_name` (last RDN first)."""
    rdns = []
    for rdn in name.chosen:
        parts = []
        for attr in rdn:
            kind = attr["type"]
            label = attribute_label(kind.dotted)
            value = str(attr["value"].native).replace("\\", "\\\\").replace(",", "\\,")
            parts.append(f"{label}={value}")
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


# -- the slow path: the whole MIME tree ----------------------------------------------------------

_MAX_DEPTH = 16


def _walk(ent: Entity, depth: int, nested: tuple[str, ...], inside: bool) -> _Parsed:
    if depth > _MAX_DEPTH:
        return _Parsed(Kind.PLAIN)
    if is_multipart_signed(ent):
        inner = _walk(Entity.parse(split_signed(ent).content), depth + 1,
                      (*nested, "multipart/signed"), inside)
        return inner if inner.kind is Kind.ENCRYPTED else _Parsed(Kind.SIGNED, flags=inner.flags)
    if is_pkcs7_mime(ent):
        der = pkcs7_der(ent)
        kind = content_type_of(der)
        if kind in ENCRYPTED_TYPES:
            return _Parsed(Kind.ENCRYPTED, _envelope_of(der, nested, inside), der)
        if kind == "signed_data":
            try:
                content = embedded_content(der)
            except asn1.PARSE_ERRORS as exc:
                raise MalformedError(f"malformed SignedData: {_reason(exc)}") from None
            if content is not None:
                inner = _walk(Entity.parse(to_crlf(content)), depth + 1,
                              (*nested, "signed-data"), inside)
                if inner.kind is Kind.ENCRYPTED:
                    return inner
            return _Parsed(Kind.SIGNED)
        raise MalformedError(f"application/pkcs7-mime carries an unexpected CMS type {kind}")
    if ent.content_type.startswith("multipart/"):
        parts = split_multipart(ent.raw, ent.params.get("boundary", ""), ent.body_offset,
                                max_parts=1000)  # the rest is not split either
        found = [_walk(Entity.parse(part), depth + 1, nested, True) for part in parts]
        encrypted = next((f for f in found if f.kind is Kind.ENCRYPTED), None)
        if encrypted is not None:
            return encrypted  # its envelope says partial: it sits inside a multipart
        if any(f.kind is Kind.SIGNED for f in found):
            return _Parsed(Kind.SIGNED, flags=frozenset({"partially-signed"}))
        return _Parsed(Kind.PLAIN)
    return _Parsed(Kind.PLAIN)
