"""Zero-copy handling of the one large field of an encrypted message.

asn1crypto copies the bytes of every enclosing structure as it encodes or lazily parses, so
a 50 MB ciphertext would be copied five times. Here the large encryptedContent is kept out
of asn1crypto's way: on writing, the structure is built around an empty field and the
ciphertext spliced in as chunks; on reading, the structure is parsed with that field emptied
("hollowed") and the ciphertext taken as a memoryview of the input. Only definite-length DER
takes this path; BER with indefinite lengths goes through asn1crypto as before.
"""

from __future__ import annotations

from collections.abc import Iterator

Chunk = bytes | memoryview


class _Unsupported(Exception):
    """Not plain definite-length DER: the caller falls back to asn1crypto."""


def read_header(data: Chunk, off: int, end: int) -> tuple[int, int, int | None] | None:
    """(first tag byte, content start, content length; None for an indefinite length) of the
    BER element at ``off`` that must end by ``end``; None when the header is malformed, runs
    past ``end``, or gives a primitive element an indefinite length.

    The one TLV header reader of the raw-byte paths: the DER splice below, the segment join
    and the parser budgets (:mod:`smimekit.cms.limits`). High tag numbers are stepped over.
    """
    if off + 2 > end:
        return None
    tag = data[off]
    pos = off + 1
    if tag & 0x1F == 0x1F:  # high tag number: its continuation octets
        while pos < end and data[pos] & 0x80:
            pos += 1
        pos += 1
        if pos >= end:
            return None
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        return (tag, pos, None) if tag & 0x20 else None  # indefinite: constructed only
    else:
        count = first & 0x7F
        if count > 8 or pos + count > end:
            return None
        length = int.from_bytes(bytes(data[pos : pos + count]), "big")
        pos += count
    if pos + length > end:
        return None
    return tag, pos, length


def _header(data: Chunk, off: int) -> tuple[int, int, int]:
    """(tag byte, content start, content length) of the definite-length DER TLV at ``off``."""
    found = read_header(data, off, len(data))
    if found is None:
        raise _Unsupported
    tag, pos, length = found
    if tag & 0x1F == 0x1F or length is None:
        raise _Unsupported  # a high tag number (never on our path), or BER
    return tag, pos, length


def _children(data: Chunk, start: int, length: int) -> Iterator[tuple[int, int, int, int]]:
    """(offset, tag, content start, content length) of each child TLV.

    The children must fill their parent exactly; anything else is not DER (and a splice
    must never quietly repair a wrong length).
    """
    pos, end = start, start + length
    while pos < end:
        tag, cstart, clen = _header(data, pos)
        if cstart + clen > end:
            raise _Unsupported
        yield pos, tag, cstart, clen
        pos = cstart + clen


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encrypted_content_offset(der: Chunk) -> int | None:
    """Offset of the encryptedContent TLV in an (Auth)EnvelopedData ContentInfo.

    ContentInfo -> [0] -> (Auth)EnvelopedData -> EncryptedContentInfo -> [0] IMPLICIT.
    None when the input is not plain DER in that shape.
    """
    try:
        tag, start, length = _header(der, 0)
        if tag != 0x30 or start + length != len(der):
            return None
        kids = list(_children(der, start, length))
        if len(kids) < 2 or kids[1][1] != 0xA0:
            return None
        _, _, wstart, wlen = kids[1]
        inner = list(_children(der, wstart, wlen))
        if len(inner) != 1 or inner[0][1] != 0x30:
            return None
        _, _, bstart, blen = inner[0]
        for _off, tag, cstart, clen in _children(der, bstart, blen):
            if tag != 0x30:
                continue
            fields = list(_children(der, cstart, clen))
            if (
                len(fields) == 3
                and fields[0][1] == 0x06
                and fields[1][1] == 0x30
                and fields[2][1] == 0x80
            ):
                return fields[2][0]
    except _Unsupported:
        return None
    return None


def splice(der: Chunk, target: int, payload: Chunk) -> tuple[list[Chunk], int]:
    """Chunks of ``der`` with the content of the primitive TLV at ``target`` replaced.

    Every enclosing length is re-encoded; siblings are passed through as slices.
    Returns the chunks and their total length.
    """
    return _rebuild(der, memoryview(der), target, payload, 0)


def _rebuild(
    der: Chunk, view: memoryview, target: int, payload: Chunk, off: int
) -> tuple[list[Chunk], int]:
    # A module-level function, not a closure: a self-referencing closure is a reference
    # cycle that would keep a 50 MB payload alive until the cyclic collector runs.
    _tag, cstart, clen = _header(der, off)
    tag_bytes = view[off : off + 1]
    if off == target:
        length = encode_length(len(payload))
        return [tag_bytes, length, payload], 1 + len(length) + len(payload)
    chunks: list[Chunk] = []
    total = 0
    for child, _t, child_start, child_len in _children(der, cstart, clen):
        child_end = child_start + child_len
        if child <= target < child_end:
            sub, size = _rebuild(der, view, target, payload, child)
            chunks.extend(sub)
            total += size
        else:
            chunks.append(view[child:child_end])
            total += child_end - child
    length = encode_length(total)
    return [tag_bytes, length, *chunks], 1 + len(length) + total


def content_type_oid(der: Chunk) -> bytes | None:
    """The raw OID contents of a ContentInfo's contentType, without parsing the content."""
    try:
        tag, start, _length = _header(der, 0)
        if tag != 0x30:
            return None
        oid_tag, ostart, olen = _header(der, start)
    except _Unsupported:
        return None  # BER or broken: asn1crypto decides
    return bytes(der[ostart : ostart + olen]) if oid_tag == 0x06 else None


def hollow(der: Chunk) -> tuple[bytes, memoryview] | None:
    """(the DER with an empty encryptedContent, a view of the real one), or None."""
    target = encrypted_content_offset(der)
    if target is None:
        return None
    try:
        _tag, cstart, clen = _header(der, target)
        content = memoryview(der)[cstart : cstart + clen]
        chunks, _size = splice(der, target, b"")
    except _Unsupported:
        return None  # a sibling is not plain DER: asn1crypto will judge the whole thing
    return b"".join(chunks), content


# -- a minimal DER writer, for structures built often (signing) --------------------------


def tlv(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return bytes([tag]) + encode_length(len(body)) + body


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, *parts)


def set_of(*parts: bytes) -> bytes:
    """A DER SET OF: elements sorted by their encodings (X.690 section 11.6)."""
    return tlv(0x31, *sorted(parts))


def integer(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))


def elements(contents: Chunk) -> list[tuple[int, bytes]] | None:
    """(tag, exact bytes) of each TLV in ``contents``; None if it is not plain DER.

    For reading elements as they were received: asn1crypto's dump() of a parsed value may
    re-encode it (e.g. it normalises the unused bits of a BIT STRING), which would break the
    signature of a certificate taken from a SignedData.
    """
    try:
        return [
            (tag, bytes(contents[off : start + length]))
            for off, tag, start, length in _children(contents, 0, len(contents))
        ]
    except _Unsupported:
        return None


def children(value: Chunk) -> list[tuple[int, bytes]] | None:
    """(tag, exact bytes) of each element inside the one constructed TLV ``value``; None if it
    is not plain DER."""
    try:
        tag, start, length = _header(value, 0)
    except _Unsupported:
        return None
    if start + length != len(value) or not tag & 0x20:
        return None
    return elements(value[start : start + length])


def join_segments(contents: Chunk, max_depth: int = 32) -> bytes | None:
    """The octets of a BER constructed OCTET STRING, given its contents (the segment TLVs,
    constructed ones nested inside included); None when they are not well-formed segments.

    asn1crypto builds an object per segment to merge them (about 10 µs each); this reads the
    headers only. The caller falls back to asn1crypto on None, which then names the fault.
    """
    data = memoryview(contents)
    out = bytearray()  # not a list of views: that would hold an object per segment
    # (the container's end, or for an indefinite one the end it must close before;
    #  whether it is indefinite, closed by end-of-contents)
    frames: list[tuple[int, bool]] = [(len(data), False)]
    pos = 0
    while True:
        limit, indefinite = frames[-1]
        if indefinite:
            if pos + 2 > limit:
                return None
            if data[pos] == 0 and data[pos + 1] == 0:
                pos += 2
                frames.pop()
                continue
        elif pos == limit:
            if len(frames) == 1:
                return bytes(out)
            frames.pop()
            continue
        found = read_header(data, pos, limit)
        if found is None or found[0] not in (0x04, 0x24):
            return None
        tag, start, length = found
        if tag == 0x04:
            if length is None:  # not given by read_header: a primitive is never indefinite
                return None
            out += data[start : start + length]
            pos = start + length
            continue
        if len(frames) > max_depth:
            return None
        frames.append((start + length, False) if length is not None else (limit, True))
        pos = start
