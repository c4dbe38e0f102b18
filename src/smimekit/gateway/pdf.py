"""A message as a password-protected PDF, for recipients without a certificate.

PDF 2.0 (ISO 32000-2) with the standard security handler revision 6: AES-256 (AESV3) for
every string and stream, metadata included. fpdf2 lays out the page: the message's From, To,
Cc, Date and Subject and its text (text/plain parts; HTML parts as text when there is no plain
one), and the names of the attachments. pypdf then embeds the original message, as received,
as the file ``original-message.eml`` (message/rfc822, Flate-compressed; so its attachments and
every character are there) and encrypts the whole document (fpdf2's own encryption leaves
the names of embedded files in the clear, which strict readers misread).

The page uses DejaVu Sans when the system has it (Debian fonts-dejavu-core), else the PDF core
font Helvetica (Latin-1 only). Characters the font has no glyph for, and right-to-left text
(which fpdf2 lays out left to right without a shaping engine), cannot be shown faithfully on
the page: a visible line then says so and points to the attached original.

The password is made here (:func:`new_password`) and never logged.
"""

from __future__ import annotations

import email
import email.policy
import html
import io
import secrets
import unicodedata
import zlib
from collections.abc import Callable, Container
from email.message import EmailMessage
from pathlib import Path

from smimekit.errors import GatewayError

__all__ = ["ATTACHMENT_NAME", "FONT_PATHS", "MAX_TEXT", "NOTICE", "message_pdf",
           "new_password"]

FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)
"""A Unicode TrueType font, when the system has one (fonts-dejavu-core); else the PDF core font
Helvetica, which shows Latin-1 only (other characters become "?"; the notice line on the page
says so, and the attached original message keeps them)."""

ATTACHMENT_NAME = "original-message.eml"
"""The name of the original message embedded in the PDF."""

NOTICE = ("Some characters of this message cannot be shown on this page. The original message"
          f" is attached to this PDF as {ATTACHMENT_NAME}: open it from the PDF viewer's"
          " attachments.")
"""The visible line on the page when text cannot be shown faithfully."""

MAX_TEXT = 100_000
"""Characters of text put on pages (about 30 pages, 1 to 3 seconds of fpdf2 here); the rest is
cut, with a line saying so: a PDF is for a letter, not for a 50 MB message."""

_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read over the phone


def new_password(groups: int = 5) -> str:
    """A random password of ``groups`` groups of four characters (about 99 bits at 5)."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4))
                    for _ in range(groups))


def _text_of(message: EmailMessage) -> str:
    plain: list[str] = []
    htmls: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        try:
            text = part.get_content()
        except (LookupError, ValueError, AssertionError):
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        if not isinstance(text, str):
            continue
        # bounded work: a part is cut before any pattern runs over it (HTML keeps more,
        # since its markup goes away)
        limit = MAX_TEXT + 1 if kind == "text/plain" else 4 * MAX_TEXT
        (plain if kind == "text/plain" else htmls).append(text[:limit])
    if plain:
        return "\n\n".join(plain)
    return "\n\n".join(_html_text(t) for t in htmls)


_BLOCKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table"})


def _html_text(markup: str) -> str:
    """The text of an HTML part: tags dropped, scripts and styles left out, entities decoded.

    One forward pass (every search starts where the last ended), so hostile markup such as
    thousands of unterminated tags costs linear time; html.parser and backtracking patterns
    do not.
    """
    low = markup.lower()
    out: list[str] = []
    i, n = 0, len(markup)
    while i < n:
        j = markup.find("<", i)
        if j < 0:
            out.append(markup[i:])
            break
        out.append(markup[i:j])
        k = markup.find(">", j)
        if k < 0:
            break  # an unterminated tag: the rest is markup
        words = low[j + 1:k].split(None, 1)
        name = words[0].strip("/") if words else ""
        if name in ("script", "style") and not low.startswith("</", j):
            end = low.find("</" + name, k)
            k = low.find(">", end) if end >= 0 else -1
            if k < 0:
                break
        elif name in _BLOCKS:
            out.append("\n")
        i = k + 1
    return html.unescape("".join(out))


def _attachments(message: EmailMessage) -> list[str]:
    names = []
    for part in message.walk():
        if part.get_content_disposition() == "attachment":
            names.append(str(part.get_filename() or part.get_content_type()))
    return names


def _unshowable(text: str, glyphs: Container[int] | None) -> bool:
    """Whether ``text`` has a character the page cannot show faithfully: one without a glyph
    in the font (``glyphs``: code points; None for the core font, Latin-1), or right-to-left
    text, which is laid out left to right here."""
    for ch in set(text):
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        if glyphs is None and ord(ch) > 0xFF:
            return True
        if glyphs is not None and ord(ch) not in glyphs:
            return True
        if unicodedata.bidirectional(ch) in ("R", "AL"):
            return True
    return False


def message_pdf(message: bytes, password: str) -> bytes:
    """``message`` as an AES-256 encrypted PDF 2.0 that opens with ``password``, the message
    itself attached to it as :data:`ATTACHMENT_NAME`.

    Raises:
        GatewayError: (permanent) the PDF cannot be made from this message.
    """
    from fpdf import FPDF
    from fpdf.errors import FPDFException
    from pypdf import PdfReader, PdfWriter
    from pypdf.errors import PyPdfError
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    font = next((p for p in FONT_PATHS if p.is_file()), None)
    clean: Callable[[str], str]
    glyphs: Container[int] | None
    if font is not None:
        pdf.add_font("body", "", str(font))
        loaded = pdf.fonts["body"]
        family, glyphs = "body", getattr(loaded, "cmap", None)  # TrueType: code -> glyph

        def clean(text: str) -> str:
            return text
    else:
        family, glyphs = "helvetica", None

        def clean(text: str) -> str:
            return text.encode("latin-1", "replace").decode("latin-1")
    try:
        headers = [f"{name}: {parsed.get(name)}" for name in ("From", "To", "Cc", "Date",
                                                               "Subject")
                   if parsed.get(name) is not None]
        attached = _attachments(parsed)
        if attached:
            headers.append("Attachments (in the attached original message): "
                           + ", ".join(attached))
        text = _text_of(parsed)
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + "\n[... too long: the rest is not included]"
        text = text.replace("\r\n", "\n").replace("\t", "    ")
        pdf.add_page()
        pdf.set_font(family, size=10)
        for line in headers:
            pdf.multi_cell(0, 5, clean(line), new_x="LMARGIN", new_y="NEXT")
        if _unshowable("\n".join(headers) + text, glyphs):
            pdf.ln(2)
            pdf.multi_cell(0, 5, NOTICE, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        pdf.multi_cell(0, 5, clean(text), new_x="LMARGIN", new_y="NEXT")
        page = bytes(pdf.output())  # in memory only, never written: encrypted below
    except (FPDFException, ValueError, UnicodeError) as exc:
        raise GatewayError(f"the message cannot be made into a PDF: {exc}",
                           permanent=True) from None
    try:
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(page)))
        embedded = writer.add_attachment(ATTACHMENT_NAME, message)
        embedded.subtype = NameObject("/message/rfc822")
        embedded.size = NumberObject(len(message))
        # compressed (pypdf stores it as it is): a message is mostly text and base64, and the
        # PDF travels base64-encoded again, to a re-injection smtpd with a size limit
        files = embedded.pdf_object["/EF"].get_object()
        assert isinstance(files, DictionaryObject)
        stream = files["/F"].get_object()
        assert isinstance(stream, DecodedStreamObject)
        stream.set_data(zlib.compress(message))
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        writer.encrypt(user_password=password, owner_password=secrets.token_urlsafe(32),
                       algorithm="AES-256")
        writer.pdf_header = b"%PDF-2.0"  # AES-256 (revision 6) is PDF 2.0's handler
        out = io.BytesIO()
        writer.write(out)
    except (PyPdfError, ValueError) as exc:
        raise GatewayError(f"the PDF cannot be encrypted: {exc}") from None
    return out.getvalue()
