"""Header protection, receiving side: the protected header fields of a Cryptographic Payload.

Three forms are read, newest first:

- RFC 9788: the payload's Content-Type carries ``hp="clear"`` (signed only) or ``hp="cipher"``
  (encrypted); in cipher mode ``HP-Outer`` fields record what the sender put on the outside
  (the header confidentiality policy's output), and the main body part may start with a
  legacy display element (``hp-legacy-display="1"``) for clients that know nothing of this.
- ``protected-headers="v1"`` (draft-autocrypt-lamps-protected-headers, Thunderbird's and
  Enigmail's OpenPGP): the header fields on the payload; an encrypted payload may be a
  two-part multipart/mixed whose first part is a legacy display part.
- RFC 8551 section 3.1: the whole message wrapped in message/rfc822 inside the protection.

:func:`restore` builds the message a reader is shown: the protected header fields as its
header block, the transport's trace fields kept from the outside, every other unprotected
outer field dropped (RFC 9788 section 4: they are not the sender's), legacy display removed.
:class:`HeaderProtection` says what was protected, what the sender obscured on the outside,
and which outer fields say something the sender did not send.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser

from smimekit.errors import MIMEError
from smimekit.smime.canonical import (
    CRLF,
    Entity,
    Header,
    b64_lines,
    join_entity,
    split_multipart,
    to_crlf,
)

HP_PARAM = "hp"
"""RFC 9788 section 2.1: the Content-Type parameter on the Cryptographic Payload's root."""
HP_CLEAR = "clear"
HP_CIPHER = "cipher"
HP_OUTER = "HP-Outer"
"""RFC 9788 section 2.2: one field per outer header field, ``HP-Outer: Name: value``."""
HP_LEGACY_DISPLAY = "hp-legacy-display"
"""RFC 9788 section 2.1.2: marks a main body part that starts with a legacy display element."""
LEGACY_DISPLAY_CLASS = "header-protection-legacy-display"
"""The class of the HTML element that holds the legacy display (RFC 9788 section 2.1.2)."""
V1_PARAM = "protected-headers"

SCHEME_RFC9788 = "rfc9788"
SCHEME_V1 = "protected-headers-v1"
SCHEME_RFC8551 = "rfc8551"

MAX_PROTECTED_FIELDS = 1000
"""A protected header section with more fields than this is refused (a real one has tens)."""
MAX_PROTECTED_BYTES = 256 * 1024
MAX_LEGACY_DEPTH = 8
MAX_LEGACY_PARTS = 1000
"""Parts split while looking for legacy display elements; a body with more is left as sent."""

TRACE_FIELDS = frozenset(
    {
        "received",
        "return-path",
        "delivered-to",
        "x-original-to",
        "authentication-results",
        "arc-authentication-results",
        "received-spf",
    }
)
"""Outer fields kept on the output although unprotected: the transport added them on the way
to us (RFC 5321 4.4 trace fields, RFC 8601 results of our own receiving servers), so the
sender could never have protected them, and filing and spam rules rely on them."""

USER_FACING = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "followup-to",
        "mail-followup-to",
    }
)
"""Outer fields compared even when the protected section lacks them: one added on the way
(a second From, a Reply-To) is how a reader gets misled."""

SINGLE_FIELDS = ("from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date",
                 "message-id", "in-reply-to", "references")
"""RFC 5322 section 3.6: at most one of each in a message's header section."""

V1_OBSCURED_SUBJECT = "..."
"""What the protected-headers draft puts in the outer Subject of encrypted mail."""


@dataclass(frozen=True)
class HeaderProtection:
    """What the header protection of a received message says."""

    scheme: str
    """``rfc9788``, ``protected-headers-v1`` or ``rfc8551`` (message/rfc822 wrapping)."""
    mode: str
    """How it was read: ``cipher`` (inside encryption, outer fields may be obscured) or
    ``clear`` (the outer fields should be copies of the protected ones)."""
    protected: tuple[str, ...]
    """Names of the protected header fields, as written, in order (each name once)."""
    obscured: tuple[str, ...] = ()
    """Protected fields the sender obscured or left out on the outside (e.g. Subject
    ``[...]``), shown here with their protected value."""
    disagreed: tuple[str, ...] = ()
    """Outer fields whose value is not what the sender sent, and that HP-Outer does not
    explain: changed, added or removed on the way (a mailing list, or an attacker)."""
    legacy_display_removed: bool = False
    """A legacy display element (or part) was removed from the body: not shown twice."""
    notes: tuple[str, ...] = ()
    """Things a careful reader may want to know (HP-Outer outside the payload ignored...)."""
    problems: tuple[str, ...] = ()
    """Why the protected header section is not one message's header section (two From
    fields...): verification fails on these."""

    def summary(self) -> str:
        """One short clause for the verdict line."""
        text = f"protected headers ({self.scheme}, {self.mode}): " + (
            ", ".join(self.protected) or "none"
        )
        if self.obscured:
            text += "; obscured outside: " + ", ".join(self.obscured)
        if self.disagreed:
            text += "; outer fields that disagree: " + ", ".join(self.disagreed)
        return text


@dataclass(frozen=True)
class Restored:
    """The message to show: its header block and its content entity."""

    headers: tuple[Header, ...]
    entity: bytes
    """Content headers and body (CRLF), legacy display removed."""
    protection: HeaderProtection

    def message(self) -> bytes:
        head = b"".join(h.raw + CRLF for h in self.headers)
        return b"".join([head, b"MIME-Version: 1.0", CRLF, self.entity])


def scheme_of(payload: Entity, *, wrapped: bool) -> tuple[str, str] | None:
    """(scheme, declared hp value) of a payload, or None when it declares no protection."""
    hp = payload.params.get(HP_PARAM)
    if hp is not None:
        value = hp.strip().lower()
        return (SCHEME_RFC9788, value) if value in (HP_CLEAR, HP_CIPHER) else None
    if payload.params.get(V1_PARAM, "").strip().lower() == "v1":
        return SCHEME_V1, ""
    if wrapped:
        return SCHEME_RFC8551, ""
    return None


def restore(
    root: Entity,
    payload: Entity,
    *,
    encrypted: bool,
    signed: bool,
    wrapped: bool = False,
    keep_entity: bytes | None = None,
) -> Restored | None:
    """The protected view of a message whose Cryptographic Payload is ``payload``.

    ``encrypted`` / ``signed``: the payload sat inside an encryption layer / is covered by a
    verified signature. Neither: the declaration is ignored (anyone can write ``hp=`` on a
    part; only cryptographic protection makes its header fields mean anything), and None is
    returned, as for a payload that declares no protection. ``wrapped``: the payload is the
    message of a message/rfc822 wrapping (RFC 8551). ``keep_entity``: the content to show
    instead of the payload's (decrypting a signed-and-encrypted message: the header fields
    come from inside the signature, which stays whole for verify).

    Raises:
        MIMEError: the protected header section is over :data:`MAX_PROTECTED_FIELDS` fields
            or :data:`MAX_PROTECTED_BYTES` octets.
    """
    if not (encrypted or signed):
        return None
    found = scheme_of(payload, wrapped=wrapped)
    if found is None:
        return None
    scheme, declared = found
    _check_size(payload.headers)
    notes: list[str] = []
    mode = HP_CIPHER if encrypted else HP_CLEAR
    if scheme == SCHEME_RFC9788:
        if declared == HP_CIPHER and not encrypted:
            # Signed only, or decrypted earlier: the fields are still covered by the signature,
            # but nothing was confidential, so HP-Outer explains nothing.
            notes.append('hp="cipher" on a message that is not encrypted: read as hp="clear"')
        mode = HP_CIPHER if declared == HP_CIPHER and encrypted else HP_CLEAR
    protected = [h for h in payload.headers if not h.is_content and h.lname != "hp-outer"]
    hp_outer = [h for h in payload.headers if h.lname == "hp-outer"]
    if hp_outer and not (scheme == SCHEME_RFC9788 and mode == HP_CIPHER):
        notes.append("HP-Outer fields ignored: they only count in an encrypted hp=\"cipher\""
                     " payload")
    outer = [h for h in root.headers if not h.is_content and h.lname not in TRACE_FIELDS]
    if any(h.lname == "hp-outer" for h in outer):
        notes.append("HP-Outer fields outside the Cryptographic Payload ignored (unprotected)")
        outer = [h for h in outer if h.lname != "hp-outer"]

    protected_values = _group((h.lname, h.value()) for h in protected)
    outer_values = _group((h.lname, h.value()) for h in outer)
    if scheme == SCHEME_RFC9788 and mode == HP_CIPHER:
        expected = _group(_hp_outer_pairs(hp_outer, notes))
    elif scheme == SCHEME_RFC8551 and encrypted:
        # RFC 9788 section 4.10.2: an encrypted RFC 8551 wrapping has no HP-Outer, so the
        # actual outer fields stand in for it ("refouter"): a protected field whose outer
        # value differs was obscured by the sender, not changed on the way. Outer fields the
        # protected section lacks are still reported (nothing says the sender wrote them).
        expected = {n: v for n, v in outer_values.items() if n in protected_values}
    else:
        expected = dict(protected_values)
        if scheme == SCHEME_V1 and encrypted and "subject" in expected:
            outer_subject = [_norm(h.value()) for h in outer if h.lname == "subject"]
            if outer_subject == [V1_OBSCURED_SUBJECT]:
                expected["subject"] = [V1_OBSCURED_SUBJECT]
    names = _display_names([*protected, *outer])
    compared = dict.fromkeys(
        [*protected_values, *expected, *(n for n in outer_values if n in USER_FACING)]
    )
    disagreed = [
        names.get(n, n)
        for n in compared
        if sorted(outer_values.get(n, [])) != sorted(expected.get(n, []))
    ]
    obscured = [
        names[n]
        for n in protected_values
        if sorted(protected_values[n]) != sorted(expected.get(n, []))
    ]
    problems = [
        f"the protected header section has {count} {names[n]} fields"
        for n in SINGLE_FIELDS
        if (count := sum(1 for h in protected if h.lname == n)) > 1
    ]
    if "from" not in protected_values and "from" in outer_values:
        # The protected fields are the message's (the outer ones are not shown): without a
        # From among them nobody is named as the sender, whatever the outside says. (No From
        # anywhere is the sender binding's own failure, RFC 8550 section 3.)
        problems.append("the protected header section has no From field; the outer From"
                        " is not protected")

    removed = False
    if keep_entity is not None:
        entity = keep_entity
    else:
        content = payload.content_headers
        body: bytes = payload.body
        if scheme == SCHEME_V1 and encrypted:
            main = _v1_original_body(payload)
            if main is not None:
                content, body, removed = main.content_headers, main.body, True
        entity = join_entity(content, body)
        if scheme == SCHEME_RFC9788:
            stripped = _strip_legacy(Entity.parse(entity), 0, [MAX_LEGACY_PARTS])
            if stripped is not None:
                entity, removed = stripped, True
    kept = tuple(h for h in root.headers if h.lname in TRACE_FIELDS)
    protection = HeaderProtection(
        scheme=scheme,
        mode=mode,
        protected=tuple(dict.fromkeys(names[h.lname] for h in protected)),
        obscured=tuple(obscured),
        disagreed=tuple(disagreed),
        legacy_display_removed=removed,
        notes=tuple(notes),
        problems=tuple(problems),
    )
    return Restored((*kept, *protected), entity, protection)


def _check_size(headers: Sequence[Header]) -> None:
    if len(headers) > MAX_PROTECTED_FIELDS:
        raise MIMEError(
            f"the protected header section has {len(headers)} fields (at most"
            f" {MAX_PROTECTED_FIELDS} are read)"
        )
    size = sum(len(h.raw) + 2 for h in headers)
    if size > MAX_PROTECTED_BYTES:
        raise MIMEError(
            f"the protected header section is {size} octets (at most {MAX_PROTECTED_BYTES}"
            " are read)"
        )


def _norm(value: str) -> str:
    return " ".join(value.split())


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(_norm(value))
    return out


def _display_names(headers: Iterable[Header]) -> dict[str, str]:
    names: dict[str, str] = {}
    for h in headers:
        names.setdefault(h.lname, h.name)
    return names


_HP_OUTER_VALUE = re.compile(r"^([!-9;-~]+)[ \t]*:(.*)$", re.DOTALL)


def _hp_outer_pairs(fields: Sequence[Header], notes: list[str]) -> list[tuple[str, str]]:
    """(lower-case name, value) of each ``HP-Outer: Name: value`` (RFC 9788 section 2.2)."""
    pairs = []
    for h in fields:
        match = _HP_OUTER_VALUE.match(h.value())
        if match is None:
            notes.append(f"an HP-Outer field without a field name was ignored: {h.value()[:40]!r}")
            continue
        pairs.append((match.group(1).lower(), match.group(2)))
    return pairs


def _v1_original_body(payload: Entity) -> Entity | None:
    """The original body of a protected-headers="v1" payload with a legacy display part
    (the draft's detection: multipart/mixed, two parts, the first text/plain or
    text/rfc822-headers with protected-headers="v1"), else None."""
    if payload.content_type != "multipart/mixed":
        return None
    try:
        parts = split_multipart(payload.raw, payload.params.get("boundary", ""),
                                payload.body_offset, max_parts=3)  # a third one is enough
    except MIMEError:
        return None
    if len(parts) != 2:
        return None
    first = Entity.parse(parts[0])
    if first.content_type not in ("text/plain", "text/rfc822-headers"):
        return None
    if first.params.get(V1_PARAM, "").strip().lower() != "v1":
        return None
    return Entity.parse(parts[1])


def _strip_legacy(entity: Entity, depth: int, budget: list[int]) -> bytes | None:
    """The entity without its RFC 9788 legacy display element(s), or None if it has none.

    Only main body parts are looked at: the first part of a multipart/mixed or /related,
    every part of a multipart/alternative (a text and an HTML rendering each carry one).
    ``budget`` holds how many more parts may be split (shared by the whole walk): a
    multipart with more is left as it is.
    """
    if depth > MAX_LEGACY_DEPTH:
        return None
    ctype = entity.content_type
    if ctype in ("multipart/mixed", "multipart/related", "multipart/alternative"):
        boundary = entity.params.get("boundary", "")
        try:
            parts = split_multipart(entity.raw, boundary, entity.body_offset,
                                    max_parts=budget[0] + 1)
        except MIMEError:
            return None
        if len(parts) > budget[0]:
            return None  # a million empty parts are 7 MB: not split, not parsed
        budget[0] -= len(parts)
        indexes = range(len(parts)) if ctype == "multipart/alternative" else range(1)
        changed = False
        for i in indexes:
            if i >= len(parts):
                break
            new = _strip_legacy(Entity.parse(parts[i]), depth + 1, budget)
            if new is not None:
                parts[i], changed = new, True
        if not changed:
            return None
        dash = b"--" + boundary.encode()
        body = b"".join(dash + CRLF + part + CRLF for part in parts) + dash + b"--" + CRLF
        return join_entity(list(entity.headers), body)
    if entity.params.get(HP_LEGACY_DISPLAY, "").strip() != "1":
        return None
    if ctype not in ("text/plain", "text/html"):
        return None
    try:
        decoded = to_crlf(entity.decoded_body())
    except MIMEError:
        return None
    rest = _strip_text(decoded) if ctype == "text/plain" else _strip_html(decoded)
    if rest is None:
        return None
    return _rebuild_leaf(entity, rest)


_FIELD_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")


def _strip_text(body: bytes) -> bytes | None:
    """text/plain: the element is header-like lines and one blank line, at the very top."""
    end = body.find(b"\r\n\r\n")
    if end <= 0:
        return None
    for line in body[:end].split(CRLF):
        if _FIELD_LINE.match(line) is None and line[:1] not in (b" ", b"\t"):
            return None
    return body[end + 4 :]


class _DivFinder(HTMLParser):
    """Finds where the first legacy display <div> starts and ends (its own nested divs)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.start: tuple[int, int] | None = None
        self.end: tuple[int, int] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "div" or self.end is not None:
            return
        if self.start is not None:
            self._depth += 1
            return
        classes = " ".join(v or "" for k, v in attrs if k == "class").split()
        if LEGACY_DISPLAY_CLASS in classes:
            self.start = self.getpos()

    def handle_endtag(self, tag: str) -> None:
        if tag != "div" or self.start is None or self.end is not None:
            return
        if self._depth:
            self._depth -= 1
            return
        self.end = self.getpos()


def _strip_html(body: bytes) -> bytes | None:
    """text/html: remove the element whose class is header-protection-legacy-display."""
    text = body.decode("latin-1")  # one character per octet: offsets stay octet offsets
    finder = _DivFinder()
    finder.feed(text)
    finder.close()
    if finder.start is None or finder.end is None:
        return None
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    begin = starts[finder.start[0] - 1] + finder.start[1]
    close = starts[finder.end[0] - 1] + finder.end[1]
    stop = text.find(">", close)
    if stop < 0:
        return None
    return body[:begin] + body[stop + 1 :]


def _rebuild_leaf(entity: Entity, body: bytes) -> bytes:
    cte = (entity.get("content-transfer-encoding") or "7bit").strip().lower()
    if cte == "base64":
        encoded = b64_lines(body)
    elif cte == "quoted-printable":
        encoded = to_crlf(binascii.b2a_qp(body, quotetabs=False, istext=True))
    else:
        encoded = body
    headers = [_without_param(h, HP_LEGACY_DISPLAY) if h.lname == "content-type" else h
               for h in entity.headers]
    return join_entity(headers, encoded)


def _without_param(header: Header, param: str) -> Header:
    # The output is shown, not verified: a Content-Type rewritten without the marker keeps a
    # second reader from stripping the first paragraph of the real body.
    msg = Message()
    msg["Content-Type"] = header.value()
    msg.del_param(param)
    return Header(header.name, f"{header.name}: {msg['Content-Type']}".encode())
