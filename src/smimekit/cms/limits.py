"""Parser budgets: how many of each repeated CMS element smimekit will read.

RFC 5652 puts no bound on the number of RecipientInfos, SignerInfos, digest algorithms,
attributes, certificates or CRLs, nor on the number of segments of a BER constructed string,
and parsing each one costs Python objects: a message with 200,000 RecipientInfos took 37 s
and 1.35 GB to decrypt, one with a million one-byte segments 19 s, one with a million
digestAlgorithms 33 s and 880 MB to verify. Every limit below is far above what a real message
carries (docs/messages.md, "Parser budgets", gives the reasoning); a message over one is
refused with :class:`~smimekit.errors.LimitExceededError` *before* asn1crypto parses it.

The check walks only the TLV headers of the outer structure (definite lengths are skipped
in O(1), indefinite ones walked iteratively, never before they are counted, and within
:data:`MAX_BER_ELEMENTS`) and stops at the first element over a limit, so refusing a
hostile message costs at most about ``limit`` header reads. Input it does not
understand is left alone: asn1crypto and :mod:`smimekit.cms.strict` judge it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

from smimekit.cms.der import read_header
from smimekit.errors import LimitExceededError

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_VALUES",
    "MAX_BER_ELEMENTS",
    "MAX_BER_NESTING",
    "MAX_BER_SEGMENTS",
    "MAX_CERTIFICATES",
    "MAX_CRLS",
    "MAX_DIGEST_ALGORITHMS",
    "MAX_RECIPIENT_INFOS",
    "MAX_SIGNER_INFOS",
    "check_content_info",
    "check_recipient_infos",
]

MAX_RECIPIENT_INFOS = 4096
"""Recipients of one EnvelopedData/AuthEnvelopedData, counting every RecipientEncryptedKey
of a key agreement RecipientInfo. The largest per-message recipient limits of mail services
are 1,000 (Exchange Online) and 2,000 (Google Workspace); twice the larger, plus copies."""

MAX_SIGNER_INFOS = 64
"""Signers of one SignedData. Real messages have one, two with algorithm agility."""

MAX_DIGEST_ALGORITHMS = 64
"""Digest algorithms in one SignedData's digestAlgorithms. Each signer's digest must be
listed, and there are only a handful of digests: the signer limit is plenty."""

MAX_ATTRIBUTES = 256
"""Attributes in one set: a SignerInfo's signed or unsigned attributes, an
AuthEnvelopedData's authenticated or unauthenticated ones, an EnvelopedData's unprotected
ones. smimekit signs with five or six; other clients add a few (countersignatures and
timestamps go in the unsigned set)."""

MAX_ATTRIBUTE_VALUES = 256
"""Values of one attribute. Most attributes must have exactly one (RFC 5652 11); a
countersignature attribute has one per countersigner."""

MAX_CERTIFICATES = 1024
"""Certificates in one CertificateSet (SignedData.certificates, OriginatorInfo.certs).
A message carries its signers' chains (a handful); certs-only bundles a few hundred."""

MAX_CRLS = 256
"""Revocation lists in one RevocationInfoChoices (SignedData.crls, OriginatorInfo.crls)."""

MAX_BER_SEGMENTS = 1 << 18
"""Segments of one BER constructed OCTET STRING (eContent, encryptedContent), nested
segments included: 262,144. OpenSSL streams 4 KiB segments and CER prescribes 1,000 octets;
the archive tools read mail up to 256 MiB (about 200 MB of DER once base64 is removed), which
in 1,000-octet segments is 201,000. Counting up to the limit costs about 0.08 s."""

MAX_BER_ELEMENTS = 1 << 20
"""Elements read inside indefinite-length elements while checking one message: the check
walks each at most twice (counting, then passing it), so a message within the other limits
needs at most about 550,000. It bounds the check itself against BER crafted to make it walk.
"""

MAX_BER_NESTING = 32
"""Depth of constructed strings within constructed strings (CER allows one level). Deeper
indefinite-length nesting elsewhere is not counted here but left to the parser, which
refuses nesting bombs as malformed."""

# ContentInfo content types, as raw OID contents.
_SIGNED = bytes.fromhex("2a864886f70d010702")
_ENVELOPED = bytes.fromhex("2a864886f70d010703")
_AUTH_ENVELOPED = bytes.fromhex("2a864886f70d0109100117")

_KARI = 0xA1  # RecipientInfo CHOICE: kari [1] (RFC 5652 section 6.2)


class _Stop(Exception):
    """Not plain enough to count: leave the judgement to the real parser."""


class _Reader:
    """TLV headers of one buffer; nothing else is decoded."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data
        self.end = len(data)
        self.walked = 0

    def header(self, off: int, end: int) -> tuple[int, int, int | None]:
        """(tag byte, content start, content length or None for indefinite) at ``off``."""
        found = read_header(self.data, off, end)
        if found is None:
            raise _Stop
        return found

    def skip(self, off: int, end: int) -> int:
        """Offset after the element at ``off``; indefinite lengths walked without recursion."""
        _tag, start, length = self.header(off, end)
        if length is not None:
            return start + length
        data = self.data
        depth, pos = 1, start
        while depth:
            self.walked += 1
            if self.walked > MAX_BER_ELEMENTS:
                raise LimitExceededError("MAX_BER_ELEMENTS", MAX_BER_ELEMENTS, self.walked,
                                         "elements inside indefinite-length elements")
            if pos + 2 > end:
                raise _Stop
            tag, first = data[pos], data[pos + 1]
            if tag == 0 and first == 0:
                depth -= 1
                pos += 2
                continue
            if first < 0x80 and not tag & 0x20 and tag & 0x1F != 0x1F:
                pos += 2 + first  # a short primitive (a BER segment): the common case
                continue
            _tag, cstart, clen = self.header(pos, end)
            if clen is None:
                depth += 1
                if depth > MAX_BER_NESTING:
                    raise _Stop  # a nesting bomb: asn1crypto refuses it as an ASN1Error
                pos = cstart
            else:
                pos = cstart + clen
        return pos

    def lazy(self, off: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(tag, offset, bound) of each child of the constructed element at ``off``, finding
        where a child ends only when the next one is asked for (a caller that stops at a
        child never walks it)."""
        tag, pos, length = self.header(off, end)
        if not tag & 0x20:
            raise _Stop
        stop = end if length is None else pos + length
        while True:
            if length is None:
                if pos + 2 > stop:
                    raise _Stop
                if self.data[pos] == 0 and self.data[pos + 1] == 0:
                    return
            elif pos >= stop:
                return
            yield self.data[pos], pos, stop
            pos = self.skip(pos, stop)

    def children(self, off: int, end: int) -> list[tuple[int, int, int]]:
        """(tag, offset, end) of each child of the constructed element at ``off``."""
        return self.each(off, end, None, "", "")

    def each(self, off: int, end: int, limit: int | None, what: str, name: str,
             base: int = 0) -> list[tuple[int, int, int]]:
        """Like :meth:`children`; raises as soon as ``base`` + the count passes ``limit``."""
        tag, pos, length = self.header(off, end)
        if not tag & 0x20:
            raise _Stop
        stop = end if length is None else pos + length
        out: list[tuple[int, int, int]] = []
        while True:
            if length is None:
                if pos + 2 > stop:
                    raise _Stop
                if self.data[pos] == 0 and self.data[pos + 1] == 0:
                    return out
            elif pos >= stop:
                return out
            after = self.skip(pos, stop)
            out.append((self.data[pos], pos, after))
            if limit is not None and base + len(out) > limit:
                raise LimitExceededError(name, limit, base + len(out), what)
            pos = after

    def segments(self, off: int, end: int) -> None:
        """Count the segments of a (possibly constructed) string at ``off``."""
        tag, _start, _length = self.header(off, end)
        if not tag & 0x20:
            return  # primitive: one piece, whatever its size
        data = self.data
        count = 0
        stack = [(off, end, 1)]
        while stack:
            node, node_end, depth = stack.pop()
            _tag, pos, length = self.header(node, node_end)
            stop = node_end if length is None else pos + length
            while True:
                if pos + 2 > stop:
                    if length is None or pos != stop:
                        raise _Stop
                    break
                kid_tag, first = data[pos], data[pos + 1]
                if kid_tag == 0 and first == 0 and length is None:
                    break
                count += 1
                if count > MAX_BER_SEGMENTS:
                    raise LimitExceededError("MAX_BER_SEGMENTS", MAX_BER_SEGMENTS, count,
                                             "segments in a BER constructed string")
                if kid_tag == 0x04 and first < 0x80:  # the common case, kept cheap
                    pos += 2 + first
                    continue
                if kid_tag & 0x20:
                    if depth + 1 > MAX_BER_NESTING:
                        raise LimitExceededError("MAX_BER_NESTING", MAX_BER_NESTING,
                                                 depth + 1, "levels of nested constructed strings")
                    after = self.skip(pos, stop)
                    stack.append((pos, after, depth + 1))
                    pos = after
                else:
                    _t, cstart, clen = self.header(pos, stop)
                    pos = cstart + (clen or 0)
            if pos > stop:
                raise _Stop


def check_content_info(der: bytes | memoryview) -> None:
    """Refuse a SignedData, EnvelopedData or AuthEnvelopedData over a budget.

    Raises:
        LimitExceededError: an element count is over its limit (the message names it).
    """
    reader = _Reader(der)
    try:
        # ContentInfo -> contentType, [0] EXPLICIT -> the content, entered without walking.
        fields = reader.lazy(0, reader.end)
        oid = next(fields, None)
        if oid is None or oid[0] != 0x06:
            return
        _, ostart, olen = reader.header(oid[1], oid[2])
        kind = bytes(der[ostart : ostart + (olen or 0)])
        explicit = next(fields, None)
        if explicit is None or explicit[0] != 0xA0:
            return
        body = next(reader.lazy(explicit[1], explicit[2]), None)
        if body is None or body[0] != 0x30:
            return
        if kind == _SIGNED:
            _signed_data(reader, body[1], body[2])
        elif kind in (_ENVELOPED, _AUTH_ENVELOPED):
            _enveloped_data(reader, body[1], body[2], kind == _AUTH_ENVELOPED)
    except _Stop:
        return


def check_recipient_infos(der: bytes | memoryview) -> None:
    """Refuse a RecipientInfos SET (as DER/BER on its own) over :data:`MAX_RECIPIENT_INFOS`.

    Raises:
        LimitExceededError: more recipients than the limit.
    """
    reader = _Reader(der)
    try:
        _recipients(reader, 0, reader.end)
    except _Stop:
        return


def _signed_data(reader: _Reader, off: int, end: int) -> None:
    # RFC 5652 5.1: version, digestAlgorithms, encapContentInfo, [0] certificates,
    # [1] crls, signerInfos.
    for index, (tag, start, stop) in enumerate(reader.lazy(off, end)):
        if index == 0:
            continue
        if index == 1:
            if tag == 0x31:
                reader.each(start, stop, MAX_DIGEST_ALGORITHMS,
                            "digest algorithms in a SignedData", "MAX_DIGEST_ALGORITHMS")
            continue
        if tag == 0x30:
            encap = reader.lazy(start, stop)
            next(encap, None)  # eContentType
            explicit = next(encap, None)
            if explicit is not None and explicit[0] == 0xA0:
                content = next(reader.lazy(explicit[1], explicit[2]), None)
                if content is not None:
                    reader.segments(content[1], content[2])
        elif tag == 0xA0:
            _certificates(reader, start, stop)
        elif tag == 0xA1:
            _crls(reader, start, stop)
        elif tag == 0x31:
            infos = reader.each(start, stop, MAX_SIGNER_INFOS, "SignerInfos", "MAX_SIGNER_INFOS")
            for _tag, istart, istop in infos:
                _signer_info(reader, istart, istop)
            return


def _signer_info(reader: _Reader, off: int, end: int) -> None:
    # RFC 5652 5.3: version, sid, digestAlgorithm, [0] signedAttrs OPTIONAL,
    # signatureAlgorithm, signature, [1] unsignedAttrs OPTIONAL. Told apart by position too:
    # a subjectKeyIdentifier sid is [0] as well (constructed, in BER).
    for index, (tag, start, stop) in enumerate(reader.lazy(off, end)):
        if index == 3 and tag == 0xA0:
            _attributes(reader, start, stop, "signed attributes in a SignerInfo")
        elif index >= 5 and tag == 0xA1:
            _attributes(reader, start, stop, "unsigned attributes in a SignerInfo")


def _attributes(reader: _Reader, off: int, end: int, what: str) -> None:
    """Count the attributes of one set, and the values of each (Attribute ::= SEQUENCE {
    attrType, attrValues SET OF AttributeValue })."""
    for tag, start, stop in reader.each(off, end, MAX_ATTRIBUTES, what, "MAX_ATTRIBUTES"):
        if tag != 0x30:
            continue
        fields = reader.lazy(start, stop)
        next(fields, None)  # attrType
        values = next(fields, None)
        if values is not None and values[0] == 0x31:
            reader.each(values[1], values[2], MAX_ATTRIBUTE_VALUES, "values in one attribute",
                        "MAX_ATTRIBUTE_VALUES")


def _enveloped_data(reader: _Reader, off: int, end: int, authenticated: bool) -> None:
    # RFC 5652 6.1 / RFC 5083 2.1: version, [0] originatorInfo, recipientInfos,
    # (auth)encryptedContentInfo, then [1] unprotectedAttrs (EnvelopedData) or [1] authAttrs,
    # mac, [2] unauthAttrs (AuthEnvelopedData).
    after_content = False
    for index, (tag, start, stop) in enumerate(reader.lazy(off, end)):
        if index == 0:
            continue
        if after_content:
            what = _ENVELOPED_ATTRIBUTES.get((authenticated, tag))
            if what is not None:
                _attributes(reader, start, stop, what)
        elif tag == 0xA0:
            for inner, istart, istop in reader.lazy(start, stop):
                if inner == 0xA0:
                    _certificates(reader, istart, istop)
                elif inner == 0xA1:
                    _crls(reader, istart, istop)
        elif tag == 0x31:
            _recipients(reader, start, stop)
        elif tag == 0x30:
            after_content = True
            # contentType, contentEncryptionAlgorithm, [0] encryptedContent
            for position, (field, fstart, fstop) in enumerate(reader.lazy(start, stop)):
                if position == 2 and field in (0x80, 0xA0):
                    reader.segments(fstart, fstop)
                    break


_ENVELOPED_ATTRIBUTES = {
    (False, 0xA1): "unprotected attributes in an EnvelopedData",
    (True, 0xA1): "authenticated attributes in an AuthEnvelopedData",
    (True, 0xA2): "unauthenticated attributes in an AuthEnvelopedData",
}


def _certificates(reader: _Reader, off: int, end: int) -> None:
    reader.each(off, end, MAX_CERTIFICATES, "certificates in a CertificateSet",
                "MAX_CERTIFICATES")


def _crls(reader: _Reader, off: int, end: int) -> None:
    reader.each(off, end, MAX_CRLS, "CRLs in a RevocationInfoChoices", "MAX_CRLS")


def _recipients(reader: _Reader, off: int, end: int) -> None:
    what, name = "recipients (RecipientInfos and RecipientEncryptedKeys)", "MAX_RECIPIENT_INFOS"
    infos = reader.each(off, end, MAX_RECIPIENT_INFOS, what, name)
    total = len(infos)
    for tag, start, stop in infos:
        if tag != _KARI:
            continue
        # KeyAgreeRecipientInfo: version, [0] originator, [1] ukm OPTIONAL,
        # keyEncryptionAlgorithm, recipientEncryptedKeys (the last field). Each key is a
        # recipient; the RecipientInfo itself was counted as one.
        fields = reader.children(start, stop)
        if fields and fields[-1][0] == 0x30:
            keys = reader.each(fields[-1][1], fields[-1][2], MAX_RECIPIENT_INFOS, what, name,
                               base=total - 1)
            total += len(keys) - 1
