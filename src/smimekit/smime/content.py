"""Input that may not be a MIME message: recognise it, or wrap it as an entity of a type.

``sign`` and ``encrypt`` protect a MIME entity. Given bytes without a header block they
used to label them ``text/plain`` whatever they were, and turn every bare LF into CRLF,
which corrupts a binary file. :func:`classify_input` tells a message from headerless text
and from binary content; :func:`wrap_as_entity` turns any bytes into an entity of the type
the user names, base64-encoded so that the bytes come back exactly.
"""

from __future__ import annotations

import email.utils
import enum
import re

from smimekit.errors import MIMEError
from smimekit.smime.canonical import CRLF, b64_lines, has_header_block, to_crlf

# C0 controls other than TAB, LF, FF, CR, and DEL: not in any text file people write.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_MIME_NAME = r"[A-Za-z0-9!#$&^_.+-]+"
_PARAMETER = rf"\s*;\s*{_MIME_NAME}=(\"[^\"\r\n\\]*\"|{_MIME_NAME})"
_CONTENT_TYPE = re.compile(rf"{_MIME_NAME}/{_MIME_NAME}({_PARAMETER})*")
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9 ._+-]{1,200}")


class InputKind(enum.Enum):
    MESSAGE = "message"
    """Starts with a header block (possibly empty): a MIME message or entity."""
    TEXT = "text"
    """No header block; UTF-8 text without control characters."""
    BINARY = "binary"
    """No header block, and not text."""


def classify_input(data: bytes) -> InputKind:
    """What ``data`` is, as input to sign or encrypt."""
    if has_header_block(data):
        return InputKind.MESSAGE
    if _CONTROL.search(data) is not None:
        return InputKind.BINARY
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return InputKind.BINARY
    return InputKind.TEXT


def check_content_type(value: str) -> str:
    """``value`` if it is a leaf MIME type with optional parameters.

    Raises:
        MIMEError: not ``type/subtype[; name=value]...``, or a multipart or message type
            (those have a structure of their own and cannot be wrapped as base64).
    """
    value = value.strip()
    if _CONTENT_TYPE.fullmatch(value) is None:
        raise MIMEError(f"{value!r} is not a MIME type (type/subtype, e.g. application/pdf)")
    if value.split("/", 1)[0].lower() in ("multipart", "message"):
        raise MIMEError(f"{value!r}: give a leaf type; multipart and message types have a"
                        " structure of their own")
    return value


def wrap_as_entity(data: bytes, content_type: str, filename: str | None = None) -> bytes:
    """``data`` as a MIME entity of ``content_type``, base64 (the bytes come back exactly).

    Text types are put in canonical form first (CRLF line endings, RFC 8551 3.1.1). With
    ``filename`` the entity is an attachment of that name (RFC 2183, RFC 2231 when the name
    is not plain ASCII).

    Raises:
        MIMEError: ``content_type`` is not a leaf MIME type (see :func:`check_content_type`).
    """
    content_type = check_content_type(content_type)
    if content_type.lower().startswith("text/"):
        data = to_crlf(data)
    headers = [f"Content-Type: {content_type}", "Content-Transfer-Encoding: base64"]
    if filename:
        if _SAFE_FILENAME.fullmatch(filename):
            headers.append(f'Content-Disposition: attachment; filename="{filename}"')
        else:
            encoded = email.utils.encode_rfc2231(filename, "utf-8")
            headers.append(f"Content-Disposition: attachment; filename*={encoded}")
    head = CRLF.join(h.encode("ascii") for h in headers) + CRLF + CRLF
    return head + b64_lines(data)
