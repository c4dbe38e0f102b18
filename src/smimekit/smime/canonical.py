"""MIME on raw bytes: line endings, header/body splitting, multipart splitting, encodings.

Signed bytes must be compared exactly as they were signed, so nothing here re-serialises a
part that is to be verified: parts are cut out of the raw message. Only content that is about
to be signed is rewritten (to CRLF, and 8-bit to quoted-printable/base64, RFC 8551 3.1).
"""

from __future__ import annotations

import binascii
import email
import email.utils
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message

from smimekit.errors import MIMEError

CRLF = b"\r\n"
MAX_LINE = 998  # RFC 5322 2.1.1, excluding the CRLF
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF (bare LF becomes CRLF; existing CRLF stays).

    Input that is already CRLF is returned as is: two counting scans, no copy.
    """
    lf = data.count(b"\n")
    if lf == 0 or lf == data.count(CRLF):
        return data
    return data.replace(CRLF, b"\n").replace(b"\n", CRLF)


def split_head_body(raw: bytes) -> tuple[bytes, int]:
    """(header block without the blank line, offset of the body) of a CRLF entity."""
    if raw.startswith(CRLF):
        return b"", 2
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        # Headers only, no body.
        return raw.rstrip(b"\r\n"), len(raw)
    return raw[:end], end + 4


@dataclass(frozen=True)
class Header:
    name: str
    """The field name as written."""
    raw: bytes
    """The whole field, folded lines included, without the final CRLF."""

    @property
    def lname(self) -> str:
        return self.name.lower()

    @property
    def is_content(self) -> bool:
        """MIME content headers travel with the entity; the rest stay on the outside."""
        return self.lname.startswith("content-") or self.lname == "mime-version"

    def value(self) -> str:
        text = self.raw.split(b":", 1)[1]
        return re.sub(r"\r\n[ \t]", " ", text.decode("utf-8", "replace")).strip()


def parse_headers(head: bytes) -> list[Header]:
    """Split a CRLF header block into fields, keeping each field's exact bytes."""
    fields: list[Header] = []
    if not head:
        return fields
    current: list[bytes] = []
    start = 1  # the line number of the field in ``current``
    for number, line in enumerate(head.split(CRLF), 1):
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            fields.append(_field(current, start))
        current, start = [line], number
    if current:
        fields.append(_field(current, start))
    return fields


def _field(lines: list[bytes], number: int) -> Header:
    if any(b"\r" in line or b"\n" in line for line in lines):
        # RFC 5322 2.2: CR and LF only together, as CRLF. A lone one is a line break to
        # Python's email package and to other readers, not to this parser: a field of ours
        # would carry whole fields (From, Subject), an empty line and a body of somebody
        # else's into what a verified message shows (review of stop 18, finding 1).
        raise MIMEError(f"malformed header line {number}: a carriage return or line feed"
                        " alone inside a field (CR and LF must come together as CRLF)")
    raw = CRLF.join(lines)
    match = _HEADER_NAME.match(raw)
    if match is None:
        # The line's position, never its text: the gateway replies and logs this, and
        # message content must appear in neither (docs/gateway.md, review 12 item 9).
        raise MIMEError(f"malformed header line {number}: neither a 'Name: value' field"
                        " nor the continuation of one")
    return Header(match.group(1).decode("ascii"), raw)


def has_header_block(data: bytes) -> bool:
    """True when ``data`` starts with a header field, or with the empty line that ends an
    empty header block: what :meth:`Entity.parse` reads as headers."""
    return data.startswith((CRLF, b"\n")) or _HEADER_NAME.match(data[:1000]) is not None


@dataclass(frozen=True)
class Entity:
    """A MIME entity (or a whole message): its raw CRLF bytes and its parsed headers.

    The body is not copied out of ``raw`` until asked for (``body``); ``body_view`` and
    ``decoded_body`` work on a view, which matters for 50 MB messages.
    """

    raw: bytes
    headers: tuple[Header, ...]
    body_offset: int
    content_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> Entity:
        head, offset = split_head_body(raw)
        if head and _HEADER_NAME.match(head) is None:
            # Content without any header (e.g. ``openssl cms -encrypt`` of a plain file):
            # read it as a text/plain body rather than refuse it.
            return cls(raw, (), 0)
        headers = tuple(parse_headers(head))
        ctype, params = _content_type(headers)
        return cls(raw, headers, offset, ctype, params)

    @functools.cached_property
    def body(self) -> bytes:
        return self.raw[self.body_offset :]

    @property
    def body_view(self) -> memoryview:
        return memoryview(self.raw)[self.body_offset :]

    def entity(self) -> bytes:
        """The entity as bytes that parse back to it (a headerless one gets its blank line)."""
        return self.raw if self.headers else CRLF + self.raw[self.body_offset :]

    def get(self, name: str) -> str | None:
        for h in self.headers:
            if h.lname == name.lower():
                return h.value()
        return None

    @property
    def outer_headers(self) -> tuple[Header, ...]:
        return tuple(h for h in self.headers if not h.is_content)

    @property
    def content_headers(self) -> tuple[Header, ...]:
        return tuple(h for h in self.headers if h.is_content and h.lname != "mime-version")

    def entity_bytes(self) -> bytes:
        """Content headers and body: the part that is signed or encrypted."""
        return join_entity(self.content_headers, self.body)

    @property
    def filename(self) -> str:
        name = self.params.get("name", "")
        disp = self.get("content-disposition")
        if disp:
            msg = Message()
            msg["Content-Disposition"] = disp
            found = msg.get_param("filename", name, header="content-disposition")
            name = email.utils.collapse_rfc2231_value(found) if found else name
        return str(name).lower()

    def decoded_body(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone."""
        cte = (self.get("content-transfer-encoding") or "7bit").strip().lower()
        if cte == "base64":
            try:
                # Non-strict: line breaks and stray characters are skipped, as MIME asks
                # (RFC 2045 6.8); bad padding is still an error.
                return binascii.a2b_base64(self.body_view)
            except binascii.Error:
                raise MIMEError("bad base64 in the S/MIME body") from None
        if cte == "quoted-printable":
            return binascii.a2b_qp(self.body)
        if cte in ("7bit", "8bit", "binary"):
            return self.body
        # not the value itself: it is the message's text (review 12 item 9)
        raise MIMEError("unknown Content-Transfer-Encoding (not 7bit, 8bit, binary,"
                        " quoted-printable or base64)")


def _content_type(headers: tuple[Header, ...]) -> tuple[str, dict[str, str]]:
    values = [h.value() for h in headers if h.lname == "content-type"]
    if len(values) > 1:
        # RFC 2045 allows one; readers differ on which one wins (first, last).
        raise MIMEError(f"the entity has {len(values)} Content-Type header fields")
    if not values:
        return "text/plain", {}
    ctype, params = _parse_content_type(values[0])
    return ctype, dict(params)


@functools.lru_cache(maxsize=512)
def _parse_content_type(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    msg = Message()
    msg["Content-Type"] = value
    params = tuple(
        (key.lower(), str(email.utils.collapse_rfc2231_value(val)))
        for key, val in msg.get_params(failobj=[])[1:]
    )
    return msg.get_content_type(), params


def join_entity(headers: tuple[Header, ...] | list[Header], body: bytes) -> bytes:
    return b"".join(h.raw + CRLF for h in headers) + CRLF + body


_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\Z)")


def split_multipart(data: bytes, boundary: str, start: int = 0,
                    max_parts: int | None = None) -> list[bytes]:
    """The raw parts of the multipart body at ``data[start:]`` (RFC 2046 5.1.1), as sent.

    The CRLF before each delimiter belongs to the delimiter, not to the part. Delimiters are
    found with ``bytes.find`` (a regular expression scan takes most of a second on 50 MB).
    With ``max_parts``, splitting stops once that many parts are found: the rest of the body
    (and its closing delimiter) is not looked at, so a caller with a budget pays for no more
    than it reads (a million empty parts are 7 MB).

    Raises:
        MIMEError: no delimiter, or the closing delimiter is missing (before ``max_parts``).
    """
    if not boundary or len(boundary) > 200:
        raise MIMEError("multipart without a valid boundary parameter")
    dash = b"--" + boundary.encode("utf-8", "replace")
    parts: list[bytes] = []
    part_start: int | None = None
    closed = False
    pos = start
    while True:
        i = data.find(dash, pos)
        if i < 0:
            break
        pos = i + 1
        if i != start and data[i - 2 : i] != CRLF:
            continue  # the boundary text inside a line is not a delimiter
        tail = _DELIMITER_TAIL.match(data, i + len(dash))
        if tail is None:
            continue
        if part_start is not None:
            parts.append(data[part_start : i if i == start else i - 2])
            if max_parts is not None and len(parts) >= max_parts:
                return parts
        if tail.group(1):
            closed = True
            break
        part_start = pos = tail.end()
    if not parts and part_start is None:
        raise MIMEError("multipart body has no delimiter for its boundary")
    if not closed:
        raise MIMEError("multipart body is truncated: the closing delimiter is missing")
    return parts


def has_long_line(data: bytes, limit: int = MAX_LINE) -> bool:
    """True when a line (between CRLFs) is longer than ``limit`` octets.

    Jumps a window of ``limit`` octets at a time and looks back for the last CRLF in it, so a
    50 MB body costs a few thousand ``rfind`` calls rather than a scan per line.
    """
    pos, size = 0, len(data)
    while size - pos > limit:
        nl = data.rfind(CRLF, pos, pos + limit + 2)
        if nl < 0:
            return True
        pos = nl + 2
    return False


def needs_encoding(data: bytes) -> bool:
    """True when CRLF bytes would not survive a 7-bit relay (8-bit octets, over-long lines)."""
    return not data.isascii() or has_long_line(data)


def make_7bit(entity: bytes) -> bytes:
    """Re-encode 8-bit or long-line leaves of a CRLF entity as QP (text) or base64.

    RFC 8551 section 3.1.3: signed content must be in a form that survives any relay, since a
    relay that converts 8-bit to 7-bit would break the signature.
    """
    if not needs_encoding(entity):
        return entity
    # email.policy (header registry and parser) only when something must be re-encoded.
    import email.policy
    from email import encoders

    msg = email.message_from_bytes(entity, policy=email.policy.compat32)
    changed = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        cte = (part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
        if cte in ("base64", "quoted-printable"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not needs_encoding(payload):
            continue
        del part["Content-Transfer-Encoding"]
        part.set_payload(payload)
        if part.get_content_maintype() == "text":
            if part.get_param("charset") is None:
                part.set_param("charset", "utf-8")
            # Spaces stay readable; only trailing whitespace and 8-bit octets get quoted.
            part.set_payload(binascii.b2a_qp(payload, quotetabs=False, istext=True).decode())
            part["Content-Transfer-Encoding"] = "quoted-printable"
        else:
            encoders.encode_base64(part)
        changed = True
    if not changed:
        return entity
    policy = email.policy.compat32.clone(linesep="\r\n", mangle_from_=False)
    return to_crlf(msg.as_bytes(policy=policy))


B64_LINE = 76  # RFC 2045 6.8
_B64_BLOCK = 57 * 1024  # whole lines per block: 57 input octets make one 76-character line


def _b64_block(data: bytes | memoryview) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    return CRLF.join(encoded[i : i + B64_LINE] for i in range(0, len(encoded), B64_LINE)) + CRLF


def b64_lines(data: bytes | memoryview) -> bytes:
    """Base64 in CRLF-terminated lines of 76 characters (RFC 2045 6.8)."""
    return b"".join(b64_chunks([data]))


class Base64Lines:
    """Incremental base64 in CRLF lines: write() any chunks, close() at the end.

    Whole 57-octet groups are encoded block by block straight from views; only the seams
    between chunks are copied. Each encoded block goes to ``sink``.
    """

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        self._carry = b""

    def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        if self._carry:
            need = _B64_BLOCK - len(self._carry)
            self._carry += bytes(view[:need])
            view = view[need:]
            if len(self._carry) < _B64_BLOCK:
                return
            self._sink(_b64_block(self._carry))
            self._carry = b""
        whole = len(view) - len(view) % _B64_BLOCK
        for start in range(0, whole, _B64_BLOCK):
            self._sink(_b64_block(view[start : start + _B64_BLOCK]))
        self._carry = bytes(view[whole:])

    def close(self) -> None:
        if self._carry:
            self._sink(_b64_block(self._carry))
            self._carry = b""


def b64_chunks(chunks: Iterable[bytes | memoryview]) -> list[bytes]:
    """Base64 lines of the concatenation of ``chunks``, never joining them."""
    out: list[bytes] = []
    lines = Base64Lines(out.append)
    for chunk in chunks:
        lines.write(chunk)
    lines.close()
    return out
