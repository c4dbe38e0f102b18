"""Header protection (RFC 9788), the sending side, and the names both sides share.

The header fields of a message travel outside its signature and encryption: a relay can
change the Subject, and anyone on the path reads it. RFC 9788 copies them into the header
section of the *cryptographic payload* (the part that is signed and/or encrypted) and marks
that part with a Content-Type parameter: ``hp="clear"`` for signed-only mail (integrity,
nothing hidden), ``hp="cipher"`` for encrypted mail. For encrypted mail a Header
Confidentiality Policy (HCP) decides what the unprotected outer header section still says
(RFC 9788 3.2), and every outer field is recorded inside as ``HP-Outer: Name: value``
(RFC 9788 2.2), so the reader can tell a field the sender hid from one a relay added.

:func:`protect` does this on raw bytes, before signing or encryption; the body is not copied
(it stays the view :func:`smimekit.smime.message.prepare_chunks` made) unless a legacy display
element is asked for.

What is copied into the payload: every outer field except the structural ones (``Content-*``,
``MIME-Version``, which belong to the part), ``Bcc`` (a copy inside would show the blind
recipients to every recipient who can decrypt; RFC 9788 11.4 discusses Bcc), trace and transport
fields (``Received``, ``Return-Path``, DKIM/ARC signatures, ``Authentication-Results``:
added on the way, not by the author) and any ``HP-Outer`` met outside (a claim only the
payload can make). Fields not copied stay outside unchanged.
"""

from __future__ import annotations

import binascii
import email.message
import email.utils
import enum
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smimekit.errors import MIMEError, UnsupportedError
from smimekit.smime.canonical import (
    CRLF,
    Entity,
    Header,
    has_long_line,
    parse_headers,
    split_head_body,
    to_crlf,
)

HP_PARAM = "hp"
"""The Content-Type parameter on the cryptographic payload (RFC 9788 2.1)."""
HP_CLEAR = "clear"
"""``hp="clear"``: the payload's header fields are signed, not encrypted."""
HP_CIPHER = "cipher"
"""``hp="cipher"``: the message is encrypted; HP-Outer fields say what was left outside."""
HP_OUTER = "HP-Outer"
"""The header field, inside an ``hp="cipher"`` payload, recording one outer field
(RFC 9788 2.2): ``HP-Outer: Subject: [...]``. A protected field without one was removed
from the outside."""
LEGACY_DISPLAY_PARAM = "hp-legacy-display"
"""Content-Type parameter (value ``1``) of a main body part that starts with a legacy display
element (RFC 9788 2.1.2): the hidden fields as text, for clients that know nothing of HP."""
LEGACY_DISPLAY_CLASS = "header-protection-legacy-display"
"""The class of the HTML ``div`` that is the legacy display element of a text/html part."""
OBSCURED_SUBJECT = "[...]"
"""What ``hcp_baseline`` and ``hcp_shy`` write as the outer Subject of encrypted mail."""

USER_FACING = ("subject", "from", "to", "cc", "date", "reply-to", "followup-to")
"""The user-facing header fields (RFC 9787 1.1.2): only these go into a legacy display."""

NOT_PROTECTED = frozenset(
    {
        "bcc",
        "resent-bcc",
        "received",
        "return-path",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
        "hp-outer",
    }
)
"""Outer fields never copied into the payload (see the module docstring)."""

CRYPTOGRAPHIC_LAYERS = frozenset(
    {
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
        "multipart/signed",
        "multipart/encrypted",
    }
)
"""Content types of a cryptographic layer: never a cryptographic payload themselves."""

HCPFunction = Callable[[str, str], "str | None"]
"""An HCP: (field name, outer value) -> the value to send outside, or None to remove it."""


def hcp_no_confidentiality(name: str, value: str) -> str | None:
    """RFC 9788 3.2.3: every field goes outside as it is (integrity only, nothing hidden)."""
    return value


def hcp_baseline(name: str, value: str) -> str | None:
    """RFC 9788 3.2.1, the default: the Subject becomes ``[...]``, Keywords and Comments are
    removed, everything else (addresses, Date, Message-ID, threading) stays deliverable."""
    lname = name.lower()
    if lname == "subject":
        return OBSCURED_SUBJECT
    if lname in ("keywords", "comments"):
        return None
    return value


def hcp_shy(name: str, value: str) -> str | None:
    """RFC 9788 3.2.2: :func:`hcp_baseline`, and also no display names: a From of one
    mailbox and the To and Cc mailbox lists become bare addr-specs (``alice@example.org``,
    as the RFC's test vector C.3.7 writes them; the addresses are kept, the mail must still
    be delivered), and the Date in UTC (the sender's time zone hidden). A value that does
    not parse is left as it is."""
    lname = name.lower()
    if lname in ("from", "to", "cc"):
        return _without_display_names(value, single=lname == "from")
    if lname == "date":
        return _utc_date(value)
    return hcp_baseline(name, value)


def _without_display_names(value: str, *, single: bool) -> str:
    pairs = email.utils.getaddresses([value])
    if not pairs or any(not addr or "@" not in addr for _, addr in pairs):
        return value  # a group, or something getaddresses cannot read: not guessed at
    if single and len(pairs) != 1:
        return value  # RFC 9788 3.2.2 rewrites a From of exactly one mailbox
    return ", ".join(addr for _, addr in pairs)


def _utc_date(value: str) -> str:
    import datetime as dt

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return value
    if when.tzinfo is None:  # "-0000": the zone is unknown, the time is UTC (RFC 5322 3.3)
        when = when.replace(tzinfo=dt.UTC)
    return email.utils.format_datetime(when.astimezone(dt.UTC))


class HeaderConfidentiality(enum.StrEnum):
    """The header confidentiality policies (HCPs) offered by name (``--hcp``)."""

    BASELINE = "baseline"
    SHY = "shy"
    NONE = "none"

    @property
    def function(self) -> HCPFunction:
        return _HCPS[self]


_HCPS: dict[HeaderConfidentiality, HCPFunction] = {
    HeaderConfidentiality.BASELINE: hcp_baseline,
    HeaderConfidentiality.SHY: hcp_shy,
    HeaderConfidentiality.NONE: hcp_no_confidentiality,
}


def hcp_named(policy: HeaderConfidentiality | str) -> HeaderConfidentiality:
    """The :class:`HeaderConfidentiality` called ``policy``.

    Raises:
        UnsupportedError: no policy has that name.
    """
    try:
        return HeaderConfidentiality(policy)
    except ValueError:
        names = ", ".join(p.value for p in HeaderConfidentiality)
        raise UnsupportedError(
            f"unknown header confidentiality policy {policy!r} (known: {names})"
        ) from None


@dataclass(frozen=True)
class Protected:
    """What :func:`protect` made."""

    outer: tuple[Header, ...]
    """The new outer header section (the HCP applied for ``hp="cipher"``)."""
    entity: list[bytes | memoryview]
    """The cryptographic payload as chunks: its header section, then the body."""
    mode: str
    """``clear`` or ``cipher``."""
    protected: tuple[str, ...]
    """The names of the fields copied into the payload, in order."""
    hidden: tuple[str, ...]
    """The names of the fields the HCP removed or changed outside (``cipher`` only)."""
    legacy_display: bool = False
    """A legacy display element was added to the main body part(s)."""


def is_cryptographic_layer(entity: Sequence[bytes | memoryview]) -> bool:
    """True when ``entity`` (chunks, as for :func:`protect`) is itself a signed or encrypted
    layer (e.g. signing a message that is already encrypted). Its payload, and so the place
    for header protection, is inside it (RFC 9788 1.1: the cryptographic payload is the part
    the cryptographic envelope protects): ``hp`` does not go on a layer."""
    if not entity:
        return False
    head, _ = split_head_body(bytes(entity[0]))
    return Entity.parse(head + CRLF + CRLF).content_type in CRYPTOGRAPHIC_LAYERS


def protect(
    outer: Sequence[Header],
    entity: Sequence[bytes | memoryview],
    *,
    mode: str,
    hcp: HCPFunction = hcp_baseline,
    legacy_display: bool = False,
) -> Protected:
    """Build the cryptographic payload and the outer header section (RFC 9788 5.2).

    ``outer`` are the message's non-content header fields, ``entity`` the part to protect as
    chunks whose first one holds the whole MIME header section (what
    :func:`~smimekit.smime.message.prepare_chunks` returns). ``mode`` is ``clear`` for mail
    that is only signed, ``cipher`` for mail that will be encrypted (signed or not): then
    ``hcp`` decides the outer values and HP-Outer fields record them, and with
    ``legacy_display`` the fields it hid are also written at the top of the main body
    part(s) for clients that do not read protected headers.

    Raises:
        MIMEError: the entity has no readable header section, or the HCP returned a value
            that is not one header line.
    """
    if mode not in (HP_CLEAR, HP_CIPHER):
        raise ValueError(f"mode must be {HP_CLEAR!r} or {HP_CIPHER!r}, not {mode!r}")
    if not entity:
        raise MIMEError("nothing to protect: the entity is empty")
    copied = [h for h in outer if h.lname not in NOT_PROTECTED]
    new_outer: list[Header] = []
    records: list[Header] = []
    hidden: list[str] = []
    shown: list[tuple[str, str]] = []  # (name, original value) of hidden user-facing fields
    for h in outer:
        if h.lname == "hp-outer":
            continue  # an outside claim about the outside: dropped, never copied in
        if h.lname in NOT_PROTECTED or mode == HP_CLEAR:
            new_outer.append(h)
            continue
        value = h.value()
        sent = hcp(h.name, value)
        if sent is not None and ("\r" in sent or "\n" in sent):
            raise MIMEError(f"the header confidentiality policy gave {h.name} a line break")
        if sent != value:
            hidden.append(h.name)
            if h.lname in USER_FACING:
                shown.append((h.name, value))
        if sent is None:
            continue
        new_outer.append(h if sent == value else _field(h.name, sent))
        records.append(_field(HP_OUTER, f"{h.name}: {sent}"))

    chunks = list(entity)
    added_display = False
    if legacy_display and mode == HP_CIPHER and shown:
        whole = b"".join(chunks)
        decorated = add_legacy_display(whole, shown)
        added_display = decorated is not whole
        chunks = [decorated]
    first = bytes(chunks[0])
    head, offset = split_head_body(first)
    content = [h for h in parse_headers(head) if h.is_content and h.lname != "mime-version"]
    if not any(h.lname == "content-type" for h in content):
        content.insert(0, Header("Content-Type", b"Content-Type: text/plain; charset=us-ascii"))
    content = [_with_hp(h, mode) if h.lname == "content-type" else h for h in content]
    section = b"".join(h.raw + CRLF for h in [*copied, *records, *content]) + CRLF
    # A view: the body of a large (re-encoded, so single-chunk) entity is not copied.
    rest: list[bytes | memoryview] = [memoryview(first)[offset:]] if offset < len(first) else []
    return Protected(
        tuple(new_outer),
        [section, *rest, *chunks[1:]],
        mode,
        tuple(h.name for h in copied),
        tuple(hidden),
        added_display,
    )


def _field(name: str, value: str) -> Header:
    """``Name: value`` folded at spaces to lines of at most 78 characters where it can be
    (RFC 5322 2.2.3): unfolding gives the value back exactly."""
    lines: list[str] = []
    line = f"{name}:"
    for i, word in enumerate(value.split(" ")):
        if i > 0 and len(line) + 1 + len(word) > 78 and line.strip() not in ("", f"{name}:"):
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return Header(name, "\r\n".join(lines).encode("utf-8"))


def _with_hp(header: Header, mode: str) -> Header:
    """The Content-Type field with ``hp`` set to ``mode`` (any earlier ``hp`` replaced)."""
    from email.message import Message

    value = header.value()
    msg = Message()
    msg["Content-Type"] = value
    if msg.get_param(HP_PARAM) is None:
        raw = header.raw.rstrip()
        if raw.endswith(b";"):
            raw = raw[:-1]
        return Header(header.name, raw + b';\r\n hp="' + mode.encode() + b'"')
    # A payload that already claims protection gets only our claim (rare: rebuilt).
    msg.del_param(HP_PARAM)
    msg.set_param(HP_PARAM, mode)
    return _field("Content-Type", str(msg["Content-Type"]).replace("\r\n", "").replace("\n", ""))


# --- legacy display (RFC 9788 2.1.2, 5.2.2, 5.2.3) ---------------------------------------


def add_legacy_display(entity: bytes, fields: Sequence[tuple[str, str]]) -> bytes:
    """``entity`` with a legacy display element of ``fields`` (name, value) at the top of
    each main body part that is text/plain or text/html (not an attachment), marked with
    ``hp-legacy-display="1"``. Returns ``entity`` itself (the same object) when there is no
    such part, or none whose charset can be read: the element is a courtesy, the body must
    not be damaged for it.
    """
    import email.policy

    msg = email.message_from_bytes(entity, policy=email.policy.compat32)
    lines = "".join(f"{name}: {_readable(value)}\r\n" for name, value in fields)
    changed = False
    for part in _main_body_parts(msg):
        changed |= _decorate(part, lines)
    if not changed:
        return entity
    policy = email.policy.compat32.clone(linesep="\r\n", mangle_from_=False)
    return to_crlf(msg.as_bytes(policy=policy))


def _readable(value: str) -> str:
    """A header value as a person reads it: encoded words (RFC 2047) decoded."""
    from email.header import decode_header, make_header

    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        text = value
    return text.replace("\r", " ").replace("\n", " ")


def _main_body_parts(part: email.message.Message) -> list[email.message.Message]:
    """RFC 9787 7.1: the first child of a multipart, every child of multipart/alternative."""
    if part.is_multipart():
        payload = part.get_payload()
        children = [c for c in payload if isinstance(c, email.message.Message)]
        if part.get_content_subtype() == "alternative":
            return [leaf for child in children for leaf in _main_body_parts(child)]
        return _main_body_parts(children[0]) if children else []
    if part.get_content_type() in ("text/plain", "text/html") and (
        part.get_content_disposition() != "attachment"
    ):
        return [part]
    return []


_BODY_TAG = re.compile(r"<body(?:\s[^>]*)?>", re.IGNORECASE)


def _decorate(part: email.message.Message, lines: str) -> bool:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return False
    charset = part.get_content_charset() or "us-ascii"
    try:
        text = payload.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return False  # cannot be read, so cannot be rewritten safely
    if part.get_content_subtype() == "html":
        element = (
            f'<div class="{LEGACY_DISPLAY_CLASS}">\r\n'
            f"<pre>{html.escape(lines.rstrip(), quote=False)}</pre>\r\n</div>\r\n"
        )
        body = _BODY_TAG.search(text)
        at = body.end() if body else 0
        text = text[:at] + ("\r\n" if body else "") + element + text[at:]
    else:
        text = lines + "\r\n" + text
    try:
        data = text.encode(charset)
    except (UnicodeEncodeError, LookupError):
        charset = "utf-8"
        data = text.encode("utf-8")
    data = to_crlf(data)
    del part["Content-Transfer-Encoding"]
    if data.isascii() and not has_long_line(data):
        part.set_payload(data.decode("ascii"))
        part["Content-Transfer-Encoding"] = "7bit"
    else:
        part.set_payload(binascii.b2a_qp(data, quotetabs=False, istext=True).decode("ascii"))
        part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_param("charset", charset)
    part.set_param(LEGACY_DISPLAY_PARAM, "1")
    return True
