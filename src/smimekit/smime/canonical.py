"""MIME on raw bytes: line endings, header/body splitting, multipart splitting, encodings.

Signed bytes must be compared exactly as they were signed, so nothing here re-serialises a
part that is to be verified: parts are cut out of the raw message. Only content that is about
to be signed is rewritten (to CRLF, and 8-bit to quoted-printable/base64, RFC 8551 3.1).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
from dataclasses import dataclass, field
from email import encoders
from email.message import Message

from smimekit.errors import MIMEError

CRLF = b"\r\n"
MAX_LINE = 998  # RFC 5322 2.1.1, excluding the CRLF
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF (bare LF becomes CRLF; existing CRLF stays)."""
    if b"\n" not in data:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_head_body(raw: bytes) -> tuple[bytes, bytes]:
    """(header block without the blank line, body) of a CRLF message or entity."""
    if raw.startswith(CRLF):
        return b"", raw[2:]
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        # Headers only, no body.
        return raw.rstrip(b"\r\n"), b""
    return raw[:end], raw[end + 4 :]


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
    for line in head.split(CRLF):
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            fields.append(_field(current))
        current = [line]
    if current:
        fields.append(_field(current))
    return fields


def _field(lines: list[bytes]) -> Header:
    raw = CRLF.join(lines)
    match = _HEADER_NAME.match(raw)
    if match is None:
        snippet = raw[:40].decode("ascii", "replace")
        raise MIMEError(f"malformed header line: {snippet!r}")
    return Header(match.group(1).decode("ascii"), raw)


@dataclass(frozen=True)
class Entity:
    """A MIME entity (or a whole message) as raw CRLF bytes plus its parsed headers."""

    headers: tuple[Header, ...]
    body: bytes
    content_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> Entity:
        head, body = split_head_body(raw)
        if head and _HEADER_NAME.match(head) is None:
            # Content without any header (e.g. ``openssl cms -encrypt`` of a plain file):
            # read it as a text/plain body rather than refuse it.
            return cls((), raw)
        headers = tuple(parse_headers(head))
        ctype, params = _content_type(headers)
        return cls(headers, body, ctype, params)

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
                return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", self.body), validate=True)
            except binascii.Error:
                raise MIMEError("bad base64 in the S/MIME body") from None
        if cte == "quoted-printable":
            return binascii.a2b_qp(self.body)
        if cte in ("7bit", "8bit", "binary"):
            return self.body
        raise MIMEError(f"unknown Content-Transfer-Encoding {cte!r}")


def _content_type(headers: tuple[Header, ...]) -> tuple[str, dict[str, str]]:
    value = None
    for h in headers:
        if h.lname == "content-type":
            value = h.value()
            break
    if value is None:
        return "text/plain", {}
    msg = Message()
    msg["Content-Type"] = value
    ctype = msg.get_content_type()
    params = {}
    for key, val in msg.get_params(failobj=[])[1:]:
        params[key.lower()] = email.utils.collapse_rfc2231_value(val)
    return ctype, params


def join_entity(headers: tuple[Header, ...] | list[Header], body: bytes) -> bytes:
    return b"".join(h.raw + CRLF for h in headers) + CRLF + body


def split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The raw parts of a multipart body (RFC 2046 5.1.1), exactly as transmitted.

    The CRLF before each delimiter belongs to the delimiter, not to the part.

    Raises:
        MIMEError: no delimiter, or the closing delimiter is missing.
    """
    if not boundary or len(boundary) > 200:
        raise MIMEError("multipart without a valid boundary parameter")
    delim = re.compile(
        rb"(?:\A|\r\n)--"
        + re.escape(boundary.encode("utf-8", "replace"))
        + rb"(--)?[ \t]*(?:\r\n|\Z)"
    )
    parts: list[bytes] = []
    start: int | None = None
    closed = False
    for match in delim.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):
            closed = True
            break
        start = match.end()
    if not parts and start is None:
        raise MIMEError(f"multipart body has no delimiter for boundary {boundary!r}")
    if not closed:
        raise MIMEError("multipart body is truncated: the closing delimiter is missing")
    return parts


def longest_line(data: bytes, chunk: int = 1 << 20) -> int:
    """Length of the longest CRLF-terminated line, scanning in bounded chunks.

    Splitting a megabyte at a time keeps the scan in C and the extra memory small (a regular
    expression over 50 MB takes most of a second; a whole-body split doubles the memory).
    """
    best = 0
    start, size = 0, len(data)
    while start < size:
        end = data.find(CRLF, min(start + chunk, size))
        end = size if end < 0 else end
        best = max(best, max(map(len, data[start:end].split(CRLF))))
        start = end + 2
    return best


def needs_encoding(data: bytes) -> bool:
    """True when CRLF bytes would not survive a 7-bit relay (8-bit octets, over-long lines)."""
    return not data.isascii() or longest_line(data) > MAX_LINE


def make_7bit(entity: bytes) -> bytes:
    """Re-encode 8-bit or long-line leaves of a CRLF entity as QP (text) or base64.

    RFC 8551 section 3.1.3: signed content must be in a form that survives any relay, since a
    relay that converts 8-bit to 7-bit would break the signature.
    """
    if not needs_encoding(entity):
        return entity
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


def b64_lines(data: bytes, width: int = 76) -> bytes:
    """Base64 in CRLF-terminated lines of ``width`` characters (RFC 2045 6.8)."""
    encoded = base64.b64encode(data)
    return CRLF.join(encoded[i : i + width] for i in range(0, len(encoded), width)) + CRLF
