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

:func:`expiring` lists what ends soon; the notices about it (:func:`notify`, :class:`Mailer`,
:class:`SmtpMailer`) live in :mod:`smimekit.ca.notices` and are re-exported here.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import os
import smtplib
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smimekit.ca.issuance import (
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_SIGN_KEY,
    CertificateAuthority,
    Issuance,
    PreparedIssuance,
    SubscriberKeyType,
)
from smimekit.ca.notices import (
    RENOTIFY_AFTER,
    Expiring,
    Mailer,
    NotifyReport,
    SmtpMailer,
    holder_message,
    notify,
)
from smimekit.ca.profiles import DEFAULT_VALIDITY, Purpose
from smimekit.errors import CAError, SmimeError
from smimekit.fsutil import private_dir
from smimekit.mailbox import comparable
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
    folded = comparable(email)  # Bücher.example and xn--bcher-kva.example are one address
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
        self._header_sent = False

    def previous(self) -> dict[str, RowResult]:
        """The last row of each address (keyed case-folded) from earlier runs ({} if none,
        or when the path is a FIFO or a device: nothing to resume from there)."""
        try:
            if not stat.S_ISREG(self.path.stat().st_mode):
                return {}
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
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOCTTY, 0o600)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            if regular:
                os.fchmod(fd, 0o600)
                size = os.fstat(fd).st_size
                if size and not _ends_with_newline(self.path, size):
                    buffer.write("\r\n")  # the previous run died in the middle of a row
                if size == 0:
                    writer.writerow(RESULT_COLUMNS)
            elif not self._header_sent:  # a FIFO or a device: written to, never chmod-ed
                writer.writerow(RESULT_COLUMNS)
            self._header_sent = True
            writer.writerow(result.cells())
            os.write(fd, buffer.getvalue().encode())
            if regular:
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


def _wanted(purpose: str, missing: set[Purpose] | frozenset[Purpose]) -> frozenset[Purpose]:
    asked = _ask_for(purpose, set(missing))
    return frozenset((Purpose.SIGN, Purpose.ENCRYPT)) if asked == "dual" \
        else frozenset({Purpose(asked)})


def _prepare(
    cax: CertificateAuthority, row: Row, purpose: str, missing: set[Purpose] | frozenset[Purpose],
    *, sign_key: SubscriberKeyType, encrypt_key: SubscriberKeyType, profile: str | None,
    validity: dt.timedelta, lint: bool, now: dt.datetime | None,
) -> PreparedIssuance:
    return cax.prepare_generated(
        row.email, purpose=_ask_for(purpose, set(missing)), name=row.name, profile=profile,
        sign_key=sign_key, encrypt_key=encrypt_key, validity=validity, lint=lint, now=now)


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
    needs, at, holdings, earlier = _begin(cax, purpose, profile, now, results)
    for row in rows:
        recorded = False
        if row.error is not None:
            result = RowResult(row.email, RowStatus.ERROR, row.error, line=row.line)
        else:
            held, used = _covering(cax.store, holdings.get(comparable(row.email), ()),
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


def _begin(cax: CertificateAuthority, purpose: str, profile: str | None,
           now: dt.datetime | None, results: ResultsLog | None,
           ) -> tuple[frozenset[Purpose], dt.datetime, dict[str, list[IssuedRecord]],
                      dict[str, RowResult]]:
    """What an enrolment run needs before its first row: the purposes, the time, who
    holds what (live certificates of this CA by address) and the rows of earlier runs."""
    if purpose not in _NEEDS:
        raise CAError(f"unknown purpose {purpose!r}: dual, sign, encrypt or both")
    cax.profile(profile)  # an unknown profile fails the batch, not each row
    at = now or dt.datetime.now(dt.UTC)
    holdings: dict[str, list[IssuedRecord]] = {}
    for record in cax.store.issued_records(live_only=True):
        if _live(record, cax.issuer_fingerprint, at):
            holdings.setdefault(record.email, []).append(record)
    earlier = results.previous() if results is not None else {}
    return _NEEDS[purpose], at, holdings, earlier


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
        # The slow work first, outside the write transaction (which on SQLite blocks every
        # other writer): keys, signatures, lint. A read, not a lock: re-checked below.
        before = [r for r in cax.store.issued_for(comparable(row.email))
                  if _live(r, cax.issuer_fingerprint, at)]
        held_before, _ = _covering(cax.store, before, needs)
        prepared = None
        if held_before != needs:
            prepared = _prepare(cax, row, purpose, needs - held_before, sign_key=sign_key,
                                encrypt_key=encrypt_key, profile=profile,
                                validity=validity, lint=lint, now=now)
        with cax.store.transaction():
            # again inside the transaction: another run may have enrolled them meanwhile
            live = [r for r in cax.store.issued_for(comparable(row.email))
                    if _live(r, cax.issuer_fingerprint, at)]
            held, used = _covering(cax.store, live, needs)
            if held == needs:
                result = _held(row, used)
            else:
                if prepared is None or prepared.purposes != _wanted(purpose, needs - held):
                    # rare: someone enrolled part of it meanwhile; make what is missing now
                    prepared = _prepare(cax, row, purpose, needs - held, sign_key=sign_key,
                                        encrypt_key=encrypt_key, profile=profile,
                                        validity=validity, lint=lint, now=now)
                issuance = cax.record_generated(prepared, department=row.department,
                                                action="ca.enroll", now=now)
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


# -- expiry --------------------------------------------------------------------------------


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
