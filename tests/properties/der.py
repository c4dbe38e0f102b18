"""Just enough DER to say where a byte sits (for failure messages) and to re-frame S/MIME."""

from __future__ import annotations

import base64

_UNIVERSAL = {
    1: "BOOLEAN", 2: "INTEGER", 3: "BIT STRING", 4: "OCTET STRING", 5: "NULL", 6: "OID",
    12: "UTF8String", 16: "SEQUENCE", 17: "SET", 19: "PrintableString", 23: "UTCTime",
    24: "GeneralizedTime",
}


def _header(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag byte, header length, content length) of the element at ``pos`` (definite only)."""
    tag = der[pos]
    first = der[pos + 1]
    if first < 0x80:
        return tag, 2, first
    n = first & 0x7F
    return tag, 2 + n, int.from_bytes(der[pos + 2:pos + 2 + n], "big")


def _tag_name(tag: int) -> str:
    if tag & 0xC0 == 0x80:
        return f"[{tag & 0x1F}]"
    return _UNIVERSAL.get(tag & 0x1F, f"tag 0x{tag:02x}")


def path_to(der: bytes, offset: int) -> str:
    """Where ``offset`` sits, e.g. ``SEQUENCE@0 > [0]@15 > SEQUENCE@19 > INTEGER@23 (value)``."""
    steps: list[str] = []
    pos, end = 0, len(der)
    while pos < end:
        tag, hl, length = _header(der, pos)
        if not pos <= offset < pos + hl + length:
            pos += hl + length
            continue
        steps.append(f"{_tag_name(tag)}@{pos}")
        if offset < pos + hl:
            steps.append("(tag)" if offset == pos else "(length)")
            break
        if not tag & 0x20:
            steps.append("(value)")
            break
        pos, end = pos + hl, pos + hl + length
    return " > ".join(steps)


def _children(der: bytes, pos: int) -> list[tuple[int, int]]:
    """(start, end) of each child of the constructed element at ``pos``."""
    _tag, hl, length = _header(der, pos)
    out, child, end = [], pos + hl, pos + hl + length
    while child < end:
        _t, chl, clen = _header(der, child)
        out.append((child, child + chl + clen))
        child += chl + clen
    return out


def recipient_info_spans(der: bytes) -> list[range]:
    """Byte ranges of each RecipientInfo of an (Auth)EnvelopedData, in order."""
    wrapper = _children(der, 0)[1][0]  # ContentInfo > [0]
    body = _children(der, wrapper)[0][0]  # > (Auth)EnvelopedData
    recipient_set = _children(der, body)[1][0]  # version, then RecipientInfos
    return [range(start, end) for start, end in _children(der, recipient_set)]


def pkcs7_parts(message: bytes) -> tuple[bytes, bytes]:
    """(header block, DER) of a base64 application/pkcs7-mime message as smimekit writes it."""
    head, sep, body = message.partition(b"\r\n\r\n")
    assert sep
    return head, base64.b64decode(body)


def pkcs7_message(head: bytes, der: bytes) -> bytes:
    encoded = base64.b64encode(der)
    lines = [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    return head + b"\r\n\r\n" + b"".join(line + b"\r\n" for line in lines)


def flip(data: bytes, position: int, bit: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 1 << bit
    return bytes(out)
