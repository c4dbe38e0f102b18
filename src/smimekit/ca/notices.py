"""Expiry notices: mail holders of expiring certificates and a summary to administrators.

:func:`notify` sends through a :class:`Mailer` (:class:`SmtpMailer` for real, any object with
``send`` in tests); :func:`holder_message` builds the notice to one holder. The certificates to
tell about come from :func:`smimekit.ca.lifecycle.expiring`.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from types import TracebackType
from typing import Protocol

from smimekit.store import IssuedRecord, Store

__all__ = [
    "RENOTIFY_AFTER",
    "Expiring",
    "Mailer",
    "NotifyReport",
    "SmtpMailer",
    "holder_message",
    "notify",
]

RENOTIFY_AFTER = dt.timedelta(days=7)
"""A holder told about an expiring certificate is not told again before this has passed."""


@dataclass(frozen=True)
class Expiring:
    """A live certificate close to its end."""

    record: IssuedRecord
    days_left: int
    """Whole days from now to notAfter."""



class Mailer(Protocol):
    """Sends one message; raises OSError (smtplib's errors are OSErrors) when it cannot."""

    def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """smtplib over one connection for a batch: STARTTLS (verified) when the server offers
    it, unless ``starttls`` is False. After a failed connection every later send fails at
    once with the same error instead of waiting for the timeout again."""

    def __init__(self, host: str = "localhost", port: int = 25, *, starttls: bool = True,
                 timeout: float = 30.0) -> None:
        self.host, self.port, self.starttls, self.timeout = host, port, starttls, timeout
        self._conn: smtplib.SMTP | None = None
        self._broken: OSError | None = None

    def _connect(self) -> smtplib.SMTP:
        if self._broken is not None:
            raise self._broken
        if self._conn is None:
            try:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                try:
                    conn.ehlo()
                    if self.starttls and conn.has_extn("starttls"):
                        conn.starttls(context=ssl.create_default_context())
                        conn.ehlo()
                except BaseException:
                    conn.close()
                    raise
            except OSError as exc:
                self._broken = OSError(f"cannot talk to {self.host}:{self.port}:"
                                       f" {_smtp_error(exc)}")
                raise self._broken from None
            self._conn = conn
        return self._conn

    def send(self, message: EmailMessage) -> None:
        """Send ``message`` to its To/Cc addresses.

        Raises:
            OSError: connection or TLS failure, or the server refused the message.
        """
        for attempt in (1, 2):
            conn = self._connect()
            try:
                conn.send_message(message)
                return
            except smtplib.SMTPServerDisconnected:
                self._conn = None
                if attempt == 2:
                    raise

    def close(self) -> None:
        """QUIT, ignoring a server that has gone already."""
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _smtp_error(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{rcpt} refused: {code} {_text(msg)}"
                         for rcpt, (code, msg) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if isinstance(exc, ConnectionError) else exc.strerror
    return str(exc) or type(exc).__name__


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


_PURPOSE_WORDS = {"sign": "signing", "encrypt": "encryption", "both": "signing and encryption"}


def holder_message(
    email: str, items: Sequence[Expiring], *, sender: str, organization: str,
    name: str | None = None, now: dt.datetime | None = None,
) -> EmailMessage:
    """The notice to one holder: what expires when, and what they must do."""
    at = now or dt.datetime.now(dt.UTC)
    first = min(i.record.not_after for i in items)
    lines = [f"Hello {name or email},", "",
             f"{organization}'s certification authority issued these S/MIME certificates"
             f" to {email}; they expire soon:", ""]
    for item in items:
        r = item.record
        lines.append(f"  - {_PURPOSE_WORDS.get(r.purpose, r.purpose)} certificate, serial"
                     f" {r.serial}: expires {r.not_after:%Y-%m-%d %H:%M} UTC"
                     f" (in {item.days_left} days)")
    lines += ["", "What you need to do:"]
    if any(i.record.key_origin == "generated" for i in items):
        lines += ["  - For the certificates whose keys we generated: nothing yet. You will",
                  "    receive a new PKCS#12 file from your administrator; install it, and",
                  "    keep the old one to read old mail."]
    if any(i.record.key_origin != "generated" for i in items):
        lines += ["  - For the certificates whose keys you made yourself: send a new",
                  "    certificate request (CSR) to your administrator before the date above."]
    lines += ["", "This message was sent automatically.", ""]
    message = _message(sender, email, f"Your S/MIME certificate expires on {first:%Y-%m-%d}",
                       "\n".join(lines), at)
    return message


def _admin_message(admin: str, items: Sequence[Expiring], outcome: dict[str, str], *,
                   sender: str, within: dt.timedelta, at: dt.datetime) -> EmailMessage:
    lines = [f"S/MIME certificates of our CA expiring within {within.days} days"
             f" ({at:%Y-%m-%d %H:%M} UTC): {len(items)}", ""]
    for item in items:
        r = item.record
        lines.append(f"  {r.email:<40} {r.purpose:<8} {r.serial:<40} {r.not_after:%Y-%m-%d}"
                     f" {item.days_left:>4}d  {outcome.get(r.email, '')}")
    lines += ["", "Renew them with: smimekit ca renew --due "
              f"{within.days}d --out DIR", ""]
    return _message(sender, admin, f"{len(items)} S/MIME certificates expire within"
                    f" {within.days} days", "\n".join(lines), at)


def _message(sender: str, to: str, subject: str, body: str, at: dt.datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(at)
    domain = sender.rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    message.set_content(body)
    return message


@dataclass
class NotifyReport:
    """What :func:`notify` did."""

    notified: list[str] = field(default_factory=list)
    """Holders told now."""
    recent: list[str] = field(default_factory=list)
    """Holders not told again: they were within the re-notification interval."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(recipient, error) for every message that could not be sent, admins included."""
    admins: list[str] = field(default_factory=list)
    """Administrators who got the summary."""


def notify(
    store: Store,
    items: Sequence[Expiring],
    *,
    mailer: Mailer,
    sender: str,
    admins: Sequence[str] = (),
    within: dt.timedelta,
    organization: str,
    now: dt.datetime | None = None,
    renotify_after: dt.timedelta = RENOTIFY_AFTER,
    actor: str = "smimekit",
) -> NotifyReport:
    """Mail each holder of ``items`` one notice (unless told within ``renotify_after``),
    record when, and send each admin one summary when anyone was due. One audit row for the
    batch. A message that cannot be sent is reported in the result, not raised.

    Raises:
        StoreError: the database fails.
    """
    at = now or dt.datetime.now(dt.UTC)
    report = NotifyReport()
    outcome: dict[str, str] = {}
    holders: dict[str, list[Expiring]] = {}
    for item in items:
        holders.setdefault(item.record.email, []).append(item)
    for email, mine in holders.items():
        told = [i.record.notified_at for i in mine]
        if all(t is not None and at - t < renotify_after for t in told):
            report.recent.append(email)
            last = max(t for t in told if t is not None)
            outcome[email] = f"told {last:%Y-%m-%d}"
            continue
        user = store.get_user(email)
        message = holder_message(email, mine, sender=sender, organization=organization,
                                 name=user.name if user else None, now=at)
        try:
            mailer.send(message)
        except OSError as exc:
            error = _smtp_error(exc)
            report.failed.append((email, error))
            outcome[email] = f"NOT NOTIFIED: {error}"
            continue
        with store.transaction():
            for item in mine:
                store.mark_notified(item.record.fingerprint, at)
        report.notified.append(email)
        outcome[email] = "notified now"
    if not report.notified and not report.failed:
        return report
    for admin in admins:
        try:
            mailer.send(_admin_message(admin, items, outcome, sender=sender, within=within,
                                       at=at))
        except OSError as exc:
            report.failed.append((admin, _smtp_error(exc)))
            continue
        report.admins.append(admin)
    store.audit(actor, "ca.notify", f"{len(report.notified)} holders", {
        "within_days": within.days, "notified": report.notified,
        "not_again_yet": report.recent, "failed": [r for r, _ in report.failed],
        "admins": report.admins})
    return report
