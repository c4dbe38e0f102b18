"""Hypothesis strategies for whole messages, and a test-side MIME reader to check them.

The reader is deliberately independent of ``smimekit.smime``: it splits on the boundary the
strategy chose and undoes base64/quoted-printable with the standard library, so a bug in
smimekit's own MIME code cannot hide itself.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from hypothesis import strategies as st

from properties.pki import DOMAIN

CRLF = b"\r\n"
BOUNDARY = b"=_smimekit_property_4c1e9a"

_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF (test-side twin of the library's normalisation)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# One line of body, without its line ending: arbitrary octets (8-bit, NULs, control
# characters), plain text, or a line longer than RFC 5322's 998 octets.
_binary_line = st.binary(max_size=90).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_text_line = st.text(_PRINTABLE, max_size=90).map(str.encode)
_long_line = st.builds(
    lambda n, unit: (unit * n)[:n],
    st.integers(999, 2500),
    st.sampled_from([b"a", b"word ", b"\xc3\xa9", b"\x00\xff", b"-=_"]),
)
_line = st.one_of(_text_line, _binary_line, _binary_line, _long_line)

_LEAF_TYPES = [
    None,
    b"text/plain; charset=utf-8",
    b"text/plain; charset=us-ascii",
    b"text/html; charset=iso-8859-1",
    b"application/octet-stream",
]


@dataclass(frozen=True)
class Sample:
    """A generated message and what must come back out of it."""

    raw: bytes
    """The message handed to smimekit (LF-only or CRLF line endings)."""
    outer: tuple[bytes, ...]
    """The non-content header fields, in order, without line endings."""
    leaves: tuple[bytes, ...]
    """The body of every leaf part, CRLF-normalised: what decoding must give back."""
    multipart: bool


@st.composite
def bodies(draw: st.DrawFn, eol: bytes) -> bytes:
    lines = draw(st.lists(_line, max_size=8))
    body = eol.join(lines)
    if lines and draw(st.booleans()):
        body += eol
    return body


@st.composite
def _leaf(draw: st.DrawFn, eol: bytes) -> tuple[bytes, bytes]:
    """(the part as written, its body)"""
    ctype = draw(st.sampled_from(_LEAF_TYPES))
    head = b""
    if ctype is not None:
        head += b"Content-Type: " + ctype + eol
    if draw(st.booleans()):
        head += b"Content-Transfer-Encoding: 8bit" + eol
    body = draw(bodies(eol))
    return head + eol + body, body


@st.composite
def messages(draw: st.DrawFn, sender: str | None) -> Sample:
    """A message from ``sender`` (a From header is present only sometimes)."""
    eol = draw(st.sampled_from([CRLF, b"\n"]))
    outer: list[bytes] = []
    if sender is not None and draw(st.booleans()):
        outer.append(f"From: {sender}".encode())
    if draw(st.booleans()):
        outer.append(f"To: someone@{DOMAIN}".encode())
    if draw(st.booleans()):
        outer.append(b"Subject: " + draw(st.text(_PRINTABLE, max_size=60)).encode())
    head = b"".join(h + eol for h in outer)
    if draw(st.booleans()):
        head += b"MIME-Version: 1.0" + eol
    if draw(st.booleans()):
        parts = draw(st.lists(_leaf(eol), min_size=1, max_size=3))
        head += b'Content-Type: multipart/mixed; boundary="' + BOUNDARY + b'"' + eol
        body = b"".join(b"--" + BOUNDARY + eol + part + eol for part, _ in parts)
        body += b"--" + BOUNDARY + b"--" + eol
        leaves = tuple(to_crlf(b) for _, b in parts)
        return Sample(head + eol + body, tuple(outer), leaves, True)
    part, body = draw(_leaf(eol))
    return Sample(head + part, tuple(outer), (to_crlf(body),), False)


# -- reading back -------------------------------------------------------------------------


def split_head_body(raw: bytes) -> tuple[bytes, bytes]:
    if raw.startswith(CRLF):
        return b"", raw[2:]
    head, sep, body = raw.partition(CRLF + CRLF)
    assert sep, "no blank line between header and body"
    return head, body


def header_fields(head: bytes) -> list[bytes]:
    """Unfolded header fields."""
    return [f for f in re.sub(rb"\r\n[ \t]", b" ", head).split(CRLF) if f]


def header(head: bytes, name: bytes) -> bytes | None:
    for field in header_fields(head):
        key, _, value = field.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def decode_body(cte: bytes | None, body: bytes) -> bytes:
    cte = (cte or b"7bit").lower()
    if cte == b"base64":
        return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body), validate=True)
    if cte == b"quoted-printable":
        return binascii.a2b_qp(body)
    assert cte in (b"7bit", b"8bit", b"binary"), cte
    return body


def leaves(entity: bytes) -> list[bytes]:
    """The decoded bodies of the leaves of a CRLF entity (or whole message)."""
    head, body = split_head_body(entity)
    ctype = header(head, b"content-type") or b"text/plain"
    if ctype.lower().startswith(b"multipart/"):
        assert BOUNDARY in ctype, ctype
        chunks = (CRLF + body).split(CRLF + b"--" + BOUNDARY)
        out: list[bytes] = []
        for chunk in chunks[1:]:
            if chunk.startswith(b"--"):
                return out
            assert chunk.startswith(CRLF), chunk[:40]
            out.extend(leaves(chunk[2:]))
        raise AssertionError("no closing delimiter")
    return [decode_body(header(head, b"content-transfer-encoding"), body)]


def assert_same_message(content: bytes, sample: Sample) -> None:
    """``content`` (what verify/decrypt gave back) carries the sample's headers and leaves.

    The header fields other than MIME's own and RFC 9788's HP-Outer records must be the
    sample's, in order, each once: with header protection they are the protected copies the
    payload carried (an outer copy of the same field is not repeated), without it the outer
    fields themselves."""
    head, _ = split_head_body(content)
    fields = header_fields(head)
    kept = [
        f for f in fields
        if not f.lower().startswith((b"mime-version:", b"content-", b"hp-outer:"))
    ]
    assert kept == list(sample.outer)
    got = [to_crlf(leaf) for leaf in leaves(content)]
    assert got == list(sample.leaves)
