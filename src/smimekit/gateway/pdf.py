"""A message as a password-protected PDF, for recipients without a certificate.

PDF 2.0 (ISO 32000-2) with the standard security handler revision 6: AES-256 (AESV3) for
every string and stream, metadata included, written by fpdf2. The page shows the message's
From, To, Cc, Date and Subject and its text (text/plain parts; HTML parts as text when there
is no plain one), and names the attachments. Attachments themselves are not carried: fpdf2
writes the names of embedded files unencrypted (a PDF that strict readers misread), so the
message is not embedded until that is fixed; docs/gateway.md says so.

The password is made here (:func:`new_password`) and never logged.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import secrets
from email.message import EmailMessage
from pathlib import Path

from smimekit.errors import GatewayError

__all__ = ["FONT_PATHS", "MAX_TEXT", "message_pdf", "new_password"]

FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)
"""A Unicode TrueType font, when the system has one; else the PDF core font Helvetica, which
shows Latin-1 only (other characters become "?"; the embedded message keeps them)."""

MAX_TEXT = 2_000_000
"""Characters of text put on pages; the rest is in the embedded message only."""

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
        (plain if kind == "text/plain" else htmls).append(text)
    if plain:
        return "\n\n".join(plain)
    return "\n\n".join(html.unescape(re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", t))
                       for t in htmls)


def _attachments(message: EmailMessage) -> list[str]:
    names = []
    for part in message.walk():
        if part.get_content_disposition() == "attachment":
            names.append(str(part.get_filename() or part.get_content_type()))
    return names


def message_pdf(message: bytes, password: str) -> bytes:
    """``message`` as an AES-256 encrypted PDF 2.0 that opens with ``password``.

    Raises:
        GatewayError: (permanent) the PDF cannot be made from this message.
    """
    from fpdf import FPDF
    from fpdf.enums import EncryptionMethod
    from fpdf.errors import FPDFException

    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    font = next((p for p in FONT_PATHS if p.is_file()), None)
    if font is not None:
        pdf.add_font("body", "", str(font))
        family = "body"

        def clean(text: str) -> str:
            return text
    else:
        family = "helvetica"

        def clean(text: str) -> str:
            return text.encode("latin-1", "replace").decode("latin-1")
    try:
        pdf.add_page()
        pdf.set_font(family, size=10)
        for name in ("From", "To", "Cc", "Date", "Subject"):
            value = parsed.get(name)
            if value is not None:
                pdf.multi_cell(0, 5, clean(f"{name}: {value}"), new_x="LMARGIN",
                               new_y="NEXT")
        attached = _attachments(parsed)
        if attached:
            pdf.multi_cell(0, 5, clean("Attachments (not included; ask the sender): "
                                       + ", ".join(attached)), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        text = _text_of(parsed)
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + "\n[... too long: the rest is not included]"
        pdf.multi_cell(0, 5, clean(text.replace("\r\n", "\n").replace("\t", "    ")),
                       new_x="LMARGIN", new_y="NEXT")
        pdf.set_encryption(owner_password=secrets.token_urlsafe(32), user_password=password,
                           encryption_method=EncryptionMethod.AES_256, encrypt_metadata=True)
        data = bytes(pdf.output())
    except (FPDFException, ValueError, UnicodeError) as exc:
        raise GatewayError(f"the message cannot be made into a PDF: {exc}",
                           permanent=True) from None
    if not data.startswith(b"%PDF-2.0"):  # fpdf2 writes 2.0 for AES-256; say so if not
        raise GatewayError("the PDF writer did not produce PDF 2.0")
    return data
