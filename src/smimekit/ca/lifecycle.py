"""The lifecycle of our subscribers in bulk: enrol from a CSV, renew what expires, warn holders.

:func:`enroll_rows` and :func:`renew_due` are generators yielding one :class:`RowResult` per
person. Each person is one store transaction that also covers writing their files (through the
``deliver`` callback) and appending their row to the :class:`ResultsLog`; the row is fsynced
before the commit. So whatever the database holds has its files and its PKCS#12 passphrase on
disk, whatever the process dies of. A crash in the last instant (row written, commit lost)
leaves an ``ok`` row the database does not know; the next run issues that person again, writes
over their files and says so in a new row.

Re-running is the way to resume: :func:`enroll_rows` skips people who already hold a live,
unexpired certificate of this CA for every purpose asked, and :func:`renew_due` only ever sees
live certificates (a renewed one is no longer live).

:func:`notify` mails holders of expiring certificates and a summary to administrators through a
:class:`Mailer` (:class:`SmtpMailer` for real, any object with ``send`` in tests).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import os
import smtplib
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import TracebackType
from typing import Protocol

from smimekit.ca.issuance import (
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_SIGN_KEY,
    CertificateAuthority,
    Issuance,
    SubscriberKeyType,
)
from smimekit.ca.profiles import DEFAULT_VALIDITY, Purpose
from smimekit.errors import CAError, SmimeError
from smimekit.store import IssuedRecord, Store

__all__ = [
    "RENOTIFY_AFTER",
    "RESULT_COLUMNS",
    "Delivery",
    "Expiring",
    "Mailer",
    "NotifyReport",
    "ResultsLog",
    "Row",
    "RowResult",
    "RowStatus",
    "SmtpMailer",
    "due_for_renewal",
    "enroll_rows",
    "expiring",
    "holder_message",
    "notify",
    "read_enrolment_csv",
    "renew_due",
]

RENOTIFY_AFTER = dt.timedelta(days=7)
"""A holder told about an expiring certificate is not told again before this has passed."""

RESULT_COLUMNS = ("email", "status", "serials", "files", "p12_passphrase", "message")
"""The header of a results file."""

_EMAIL_COLUMNS = ("email", "e-mail")


# -- input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One person of an enrolment file."""

    line: int
    """Line number in the file (the header is line 1)."""
    email: str
    name: str | None = None
    department: str | None = None
    error: str | None = None
    """Why this row cannot be enrolled, when that is clear from the file alone."""


def read_enrolment_csv(path: Path | str) -> list[Row]:
    """The rows of a UTF-8 CSV file with a header row naming an ``email`` column and
    optionally ``name`` and ``department`` (any order and case; other columns are ignored).

    A byte order mark and blank lines are tolerated. A row without an address, or repeating
    an address of an earlier row, comes back with its ``error`` set.

    Raises:
        CAError: the file cannot be read, is not UTF-8 or not CSV, has no header row or no
            email column.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CAError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CAError(f"{path} is not UTF-8 text (line {line})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    seen: dict[str, int] = {}
    columns: dict[str, int] | None = None
    try:
        for cells in reader:
            cells = [c.strip() for c in cells]
            if not any(cells):
                continue
            if columns is None:
                columns = _header(cells, path)
                continue
            rows.append(_row(cells, columns, reader.line_num, seen))
    except csv.Error as exc:
        raise CAError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    if columns is None:
        raise CAError(f"{path} is empty: expected a header row with an 'email' column")
    return rows


def _header(cells: list[str], path: Path | str) -> dict[str, int]:
    names = [c.lower() for c in cells]
    columns: dict[str, int] = {}
    for index, name in enumerate(names):
        key = "email" if name in _EMAIL_COLUMNS else name
        if key in ("email", "name", "department"):
            columns.setdefault(key, index)
    if "email" not in columns:
        found = ", ".join(repr(c) for c in cells)
        raise CAError(f"{path}: the header row has no 'email' column (found {found})")
    return columns


def _row(cells: list[str], columns: dict[str, int], line: int, seen: dict[str, int]) -> Row:
    def cell(key: str) -> str | None:
        index = columns.get(key)
        return (cells[index] or None) if index is not None and index < len(cells) else None

    email, name, department = cell("email"), cell("name"), cell("department")
    if email is None:
        return Row(line, "", name, department, "no email address in this row")
    folded = email.casefold()
    if folded in seen:
        return Row(line, email, name, department, f"duplicate of line {seen[folded]}")
    seen[folded] = line
    return Row(line, email, name, department)


# -- results -------------------------------------------------------------------------------


class RowStatus(enum.Enum):
    """What happened to one person."""

    OK = "ok"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True)
class Delivery:
    """What the ``deliver`` callback wrote for one person."""

    files: tuple[Path, ...] = ()
    passphrase: str | None = None
    """The PKCS#12 passphrase, when a PKCS#12 was written."""


Deliver = Callable[[Issuance], Delivery]
"""Write a person's files (the CLI passes ``write_bundle`` with a fresh passphrase)."""


@dataclass(frozen=True)
class RowResult:
    """The outcome for one person of an enrolment or a renewal run."""

    email: str
    status: RowStatus
    message: str = ""
    serials: tuple[str, ...] = ()
    """New serials (ok), or those already held (skipped)."""
    files: tuple[Path, ...] = ()
    passphrase: str | None = None
    line: int | None = None
    """The row's line in the enrolment file."""
    issuance: Issuance | None = None

    def cells(self) -> list[str]:
        """The row of the results file (:data:`RESULT_COLUMNS`)."""
        return [self.email, self.status.value, " ".join(self.serials),
                " ".join(str(f) for f in self.files), self.passphrase or "", self.message]


class ResultsLog:
    """An append-only CSV of :class:`RowResult` rows, mode 0600 (it holds passphrases).

    Each row is one ``write`` on an ``O_APPEND`` descriptor, flushed and fsynced before
    :meth:`append` returns.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def previous(self) -> dict[str, RowResult]:
        """The last row of each address (keyed case-folded) from earlier runs ({} if none)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CAError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        found: dict[str, RowResult] = {}
        for record in csv.DictReader(io.StringIO(text, newline="")):
            email, status = record.get("email"), record.get("status")
            try:
                if email and status:
                    found[email.casefold()] = RowResult(
                        email, RowStatus(status), serials=tuple(
                            (record.get("serials") or "").split()))
            except ValueError:
                continue  # a torn last line
        return found

    def append(self, result: RowResult) -> None:
        """Append one row (and the header first, in a new file).

        Raises:
            OSError: the file cannot be written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            size = os.fstat(fd).st_size
            buffer = io.StringIO()
            if size and not _ends_with_newline(self.path, size):
                buffer.write("\r\n")  # the previous run died in the middle of a row
            writer = csv.writer(buffer)
            if size == 0:
                writer.writerow(RESULT_COLUMNS)
            writer.writerow(result.cells())
            os.write(fd, buffer.getvalue().encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


# -- enrolment -----------------------------------------------------------------------------


_NEEDS: dict[str, frozenset[Purpose]] = {
    "dual": frozenset({Purpose.SIGN, Purpose.ENCRYPT}),
    "both": frozenset({Purpose.SIGN, Purpose.ENCRYPT}),
    "sign": frozenset({Purpose.SIGN}),
    "encrypt": frozenset({Purpose.ENCRYPT}),
}


def _live(record: IssuedRecord, issuer: str, at: dt.datetime) -> bool:
    return record.live and record.issuer_fingerprint == issuer and record.not_after > at


def _capabilities(store: Store, record: IssuedRecord, wanted: set[Purpose]) -> set[Purpose]:
    if record.purpose == Purpose.SIGN.value:
        return {Purpose.SIGN}
    if record.purpose == Purpose.BOTH.value:
        return {Purpose.SIGN, Purpose.ENCRYPT}
    if Purpose.SIGN in wanted:
        # a generated 'both' key is filed as an encryption key: its key usage tells
        stored = store.get_certificate(record.fingerprint)
        if stored is not None and stored.key_usage and "digital_signature" in stored.key_usage:
            return {Purpose.SIGN, Purpose.ENCRYPT}
    return {Purpose.ENCRYPT}


def _covering(store: Store, records: Iterable[IssuedRecord],
              needs: frozenset[Purpose]) -> tuple[set[Purpose], list[IssuedRecord]]:
    """Which of ``needs`` the live ``records`` cover, and the records that do."""
    held: set[Purpose] = set()
    used: list[IssuedRecord] = []
    # signing certificates first: then an encryption one needs no look at its key usage
    for record in sorted(records, key=lambda r: r.purpose != Purpose.SIGN.value):
        gives = _capabilities(store, record, set(needs - held)) & needs
        if gives - held:
            held |= gives
            used.append(record)
    return held, used


def _ask_for(purpose: str, missing: set[Purpose]) -> str:
    if purpose != "dual" or len(missing) == 2:
        return purpose
    return next(iter(missing)).value


def enroll_rows(
    cax: CertificateAuthority,
    rows: Iterable[Row],
    *,
    purpose: str = "dual",
    profile: str | None = None,
    sign_key: SubscriberKeyType = DEFAULT_SIGN_KEY,
    encrypt_key: SubscriberKeyType = DEFAULT_ENCRYPT_KEY,
    validity: dt.timedelta = DEFAULT_VALIDITY,
    lint: bool = True,
    now: dt.datetime | None = None,
    deliver: Deliver | None = None,
    results: ResultsLog | None = None,
) -> Iterator[RowResult]:
    """Issue generated keys to every row that needs them; yield one result per row.

    A row is skipped when its person already holds a live, unexpired certificate of this CA
    for each purpose ``purpose`` needs (``dual``: sign and encrypt; only the missing one is
    issued when they hold the other). Rows with an error, and rows the CA refuses (bad
    address, a profile that needs a name, the linter), yield an error result; the batch goes
    on. Each issued row is one transaction with its files and its results row (see the
    module docstring).

    Raises:
        CAError: unknown purpose or profile (before any row is processed).
        OSError: the results file cannot be written for a skipped or refused row.
    """
    if purpose not in _NEEDS:
        raise CAError(f"unknown purpose {purpose!r}: dual, sign, encrypt or both")
    cax.profile(profile)  # an unknown profile fails the batch, not each row
    needs = _NEEDS[purpose]
    at = now or dt.datetime.now(dt.UTC)
    issuer = cax.issuer_fingerprint
    holdings: dict[str, list[IssuedRecord]] = {}
    for record in cax.store.issued_records(live_only=True):
        if _live(record, issuer, at):
            holdings.setdefault(record.email, []).append(record)
    earlier = results.previous() if results is not None else {}

    for row in rows:
        recorded = False
        if row.error is not None:
            result = RowResult(row.email, RowStatus.ERROR, row.error, line=row.line)
        else:
            held, used = _covering(cax.store, holdings.get(row.email.strip().lower(), ()),
                                   needs)
            if held == needs:
                result = _held(row, used)
            else:
                result, recorded = _enrol_one(
                    cax, row, purpose, needs, sign_key=sign_key, encrypt_key=encrypt_key,
                    profile=profile, validity=validity, lint=lint, now=now, at=at,
                    deliver=deliver, results=results,
                    earlier=earlier.get(row.email.casefold()))
        if results is not None and not recorded:
            results.append(result)
        yield result


def _held(row: Row, used: Sequence[IssuedRecord]) -> RowResult:
    until = min(r.not_after for r in used)
    return RowResult(row.email, RowStatus.SKIPPED,
                     f"holds live certificates already (until {until:%Y-%m-%d})",
                     serials=tuple(r.serial for r in used), line=row.line)


def _enrol_one(
    cax: CertificateAuthority, row: Row, purpose: str, needs: frozenset[Purpose], *,
    sign_key: SubscriberKeyType, encrypt_key: SubscriberKeyType, profile: str | None,
    validity: dt.timedelta, lint: bool, now: dt.datetime | None, at: dt.datetime,
    deliver: Deliver | None, results: ResultsLog | None, earlier: RowResult | None,
) -> tuple[RowResult, bool]:
    """Issue, deliver and record one row in one transaction. Returns the result and whether
    it is in ``results`` already (an error result is not)."""
    written = False
    delivery: Delivery | None = None
    try:
        with cax.store.transaction():
            # again inside the transaction: another run may have enrolled them meanwhile
            live = [r for r in cax.store.issued_for(row.email)
                    if _live(r, cax.issuer_fingerprint, at)]
            held, used = _covering(cax.store, live, needs)
            if held == needs:
                result = _held(row, used)
            else:
                issuance = cax.issue_generated(
                    row.email, purpose=_ask_for(purpose, set(needs - held)), name=row.name,
                    department=row.department, profile=profile, sign_key=sign_key,
                    encrypt_key=encrypt_key, validity=validity, lint=lint, now=now,
                    action="ca.enroll")
                delivery = deliver(issuance) if deliver is not None else Delivery()
                note = ("issued again: the earlier 'ok' row of this address is void (its run"
                        " was interrupted before it committed)") if _void(cax, earlier) else ""
                result = RowResult(
                    row.email, RowStatus.OK, note,
                    serials=tuple(i.record.serial for i in issuance.items),
                    files=delivery.files, passphrase=delivery.passphrase, line=row.line,
                    issuance=issuance)
            if results is not None:
                results.append(result)
                written = True
        return result, written
    except (SmimeError, OSError) as exc:
        _discard(delivery)
        message = _describe(exc)
        if written:
            message += "; nothing was recorded: ignore the row above"
        return RowResult(row.email, RowStatus.ERROR, message, line=row.line), False


def _discard(delivery: Delivery | None) -> None:
    """Remove the files of a person whose transaction rolled back: their certificates are
    not recorded, so they must not be handed out."""
    for path in delivery.files if delivery is not None else ():
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _void(cax: CertificateAuthority, earlier: RowResult | None) -> bool:
    """An earlier 'ok' row whose certificates the store does not know."""
    if earlier is None or earlier.status is not RowStatus.OK:
        return False
    return any(cax.store.issued_record(serial=serial,
                                       issuer_fingerprint=cax.issuer_fingerprint) is None
               for serial in earlier.serials)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror or exc}"
    return str(exc)


# -- renewal -------------------------------------------------------------------------------


def due_for_renewal(
    store: Store, within: dt.timedelta, *, now: dt.datetime | None = None,
    issuer_fingerprint: str | None = None,
) -> list[IssuedRecord]:
    """Live certificates (of ``issuer_fingerprint``'s CA, when given) that have not expired
    yet but will within ``within``, in issue order. Expired ones are left out: renewing
    them could revive people who left; enrol them again instead.

    Raises:
        StoreError: the database fails.
    """
    at = now or dt.datetime.now(dt.UTC)
    return [r for r in store.issued_records(expiring_before=at + within, live_only=True)
            if r.not_after > at and issuer_fingerprint in (None, r.issuer_fingerprint)]


def renew_due(
    cax: CertificateAuthority,
    records: Iterable[IssuedRecord],
    *,
    validity: dt.timedelta = DEFAULT_VALIDITY,
    lint: bool = True,
    now: dt.datetime | None = None,
    encrypt_key: SubscriberKeyType | None = None,
    deliver: Deliver | None = None,
    results: ResultsLog | None = None,
) -> Iterator[RowResult]:
    """Renew ``records`` (from :func:`due_for_renewal`) person by person; yield one result
    per person. A person's certificates, new keys, files and results row are one
    transaction. Encryption certificates are re-keyed (the old key stays in the history);
    signing certificates keep a key the holder made and get a new one when the CA made it.
    Certificates renewed or revoked since ``records`` was read are skipped.

    Raises:
        OSError: the results file cannot be written for a skipped or failed person.
    """
    people: dict[str, list[IssuedRecord]] = {}
    for record in records:
        people.setdefault(record.email, []).append(record)
    for email, group in people.items():
        written = False
        delivery: Delivery | None = None
        try:
            with cax.store.transaction():
                fresh = [cax.store.issued_record(fingerprint=r.fingerprint) for r in group]
                todo = [r for r in fresh if r is not None and r.live]
                if not todo:
                    result = RowResult(email, RowStatus.SKIPPED,
                                       "renewed or revoked meanwhile",
                                       serials=tuple(r.serial for r in group))
                else:
                    items = tuple(cax.renew(r, validity=validity, lint=lint, now=now,
                                            encrypt_key=encrypt_key) for r in todo)
                    issuance = Issuance(email, items)
                    delivery = deliver(issuance) if deliver is not None else Delivery()
                    rekeyed = [i.purpose.value for i in items if i.key is not None]
                    message = "replaces " + ", ".join(
                        f"{r.purpose} {r.serial}" for r in todo)
                    if rekeyed:
                        message += "; new keys: " + ", ".join(rekeyed)
                    result = RowResult(email, RowStatus.OK, message,
                                       serials=tuple(i.record.serial for i in items),
                                       files=delivery.files, passphrase=delivery.passphrase,
                                       issuance=issuance)
                if results is not None:
                    results.append(result)
                    written = True
        except (SmimeError, OSError) as exc:
            _discard(delivery)
            message = _describe(exc)
            if written:
                message += "; nothing was recorded: ignore the row above"
            result = RowResult(email, RowStatus.ERROR, message,
                               serials=tuple(r.serial for r in group))
            if results is not None:
                results.append(result)
        yield result


# -- expiry notices ------------------------------------------------------------------------


@dataclass(frozen=True)
class Expiring:
    """A live certificate close to its end."""

    record: IssuedRecord
    days_left: int
    """Whole days from now to notAfter."""


def expiring(
    store: Store, within: dt.timedelta, *, now: dt.datetime | None = None,
    issuer_fingerprint: str | None = None,
) -> list[Expiring]:
    """Live, unexpired certificates ending within ``within``, soonest first.

    Raises:
        StoreError: the database fails.
    """
    at = now or dt.datetime.now(dt.UTC)
    records = due_for_renewal(store, within, now=at, issuer_fingerprint=issuer_fingerprint)
    return sorted((Expiring(r, (r.not_after - at).days) for r in records),
                  key=lambda e: (e.record.not_after, e.record.email, e.record.purpose))


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
