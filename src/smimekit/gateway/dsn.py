"""Delivery status notifications (RFC 3464) for recipients the gateway refuses.

When the policy refuses some recipients of a message and others get it, the SMTP client
(Postfix) has had one answer for the whole message: 250. The sender learns of the refused
recipients from a ``multipart/report; report-type=delivery-status`` message, built here and
sent through the next hop with the null reverse-path (a DSN never causes another one).
Also: :func:`reply_text`, the one-line, ASCII form of a reason in an SMTP reply or a DSN field.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import quopri
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from smimekit.gateway.model import Delivery

_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def reply_text(text: str, limit: int = 400) -> str:
    """``text`` on one line of printable ASCII, at most ``limit`` characters: safe in an
    SMTP reply and in a DSN field (no CR/LF injection, no 8-bit)."""
    flat = " ".join(text.split())
    flat = _NOT_PRINTABLE.sub("?", flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class Failed:
    """One recipient the DSN reports."""

    recipient: str
    reason: str
    status: str = "5.7.1"
    """The RFC 3463 status code; 5.7.1 (delivery not authorized) for a policy refusal."""
    remote_reply: str | None = None
    """The next hop's reply, when it was the one that refused."""


def _address(address: str) -> str:
    # RFC 6533's utf-8 address type escapes what is not printable ASCII as \x{HEX}.
    if address.isascii() and address.isprintable():
        return f"rfc822; {address}"
    escaped = "".join(c if " " < c < "\x7f" and c != "\\" else f"\\x{{{ord(c):X}}}"
                      for c in address)
    return f"utf-8; {escaped}"


def _original_headers(data: bytes) -> bytes:
    found = _HEADER_END.search(data)
    head = data[: found.start()] if found else data
    return b"\r\n".join(head.splitlines()) + b"\r\n"


def build_dsn(sender: str, failed: Sequence[Failed], original: bytes, *, reporting_mta: str,
              arrival: dt.datetime, now: dt.datetime | None = None) -> Delivery:
    """The DSN telling ``sender`` that the recipients in ``failed`` do not get ``original``.

    Returns the :class:`Delivery` to hand to the next hop: null reverse-path, the sender as
    its recipient. ``reporting_mta`` is this host's name; the DSN's parts are a text for the
    person, the ``message/delivery-status`` fields (one block per recipient) and the original
    message's header (``text/rfc822-headers``), never its body.

    Raises:
        ValueError: ``sender`` is empty (a bounce must not cause another one) or ``failed``
            is.
    """
    if not sender:
        raise ValueError("no DSN for a message with the null reverse-path")
    if not failed:
        raise ValueError("a DSN needs at least one failed recipient")
    when = now or dt.datetime.now(dt.UTC)
    host = reply_text(reporting_mta, 200) or "localhost"
    boundary = f"=_smimekit_dsn_{secrets.token_hex(12)}"
    lines = [
        "This is the S/MIME gateway at " + host + ".",
        "",
        "Your message was NOT delivered to the following recipient"
        + ("s" if len(failed) > 1 else "") + ", by the organisation's mail policy:",
        "",
    ]
    for item in failed:
        lines.append(f"  {item.recipient}: {item.reason}")
    lines += ["", "The other recipients of the message were not affected.", ""]
    human = quopri.encodestring("\n".join(lines).encode("utf-8"), quotetabs=False)
    human = b"\r\n".join(human.splitlines()) + b"\r\n"

    status = [f"Reporting-MTA: dns; {host}",
              f"Arrival-Date: {email.utils.format_datetime(arrival)}", ""]
    for item in failed:
        diagnostic = item.remote_reply or f"550 {item.status} {item.reason}"
        status += [f"Final-Recipient: {_address(item.recipient)}",
                   "Action: failed",
                   f"Status: {item.status}",
                   f"Diagnostic-Code: smtp; {reply_text(diagnostic, 900)}", ""]

    subject = "Undelivered Mail: refused by the S/MIME gateway"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: {sender}" if sender.isascii() else "To: undisclosed-recipients:;",
        f"Subject: {subject}",
        f"Date: {email.utils.format_datetime(when)}",
        f"Message-ID: <{secrets.token_hex(16)}@{host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "Content-Description: Notification",
        "",
    ]
    body = "\r\n".join(head).encode("ascii") + b"\r\n" + human
    body += "\r\n".join([
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *status,
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message header",
        "",
        "",
    ]).encode("ascii")
    body += _original_headers(original)
    body += f"\r\n--{boundary}--\r\n".encode("ascii")
    return Delivery("", (sender,), body)
