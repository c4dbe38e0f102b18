"""Bulk enrolment with worker processes (``smimekit ca enroll --workers N``).

The slow work of :func:`~smimekit.ca.lifecycle.enroll_rows` is spread over ``N`` worker
processes while this process stays the one writer::

    row --> worker: generate the keys --> here: sign --> worker: lint, build and stage the
    files (PEM, PKCS#12, .mobileconfig: temporary names, fsynced) --> here, one transaction:
    record the person, rename the staged files, append the results row (fsynced), commit

Signing stays here because the issuing key may live in a PKCS#11 token, whose sessions do
not survive into another process; the workers are started with ``spawn`` and never hold the
CA key, the vault key or a database connection. Generated private keys travel between the
processes unencrypted (PKCS#8) through the pool's pipes: local, same user, never written
anywhere but into the PKCS#12 files and, sealed, the store.

Every guarantee of the one-process path holds: a person is recorded, their files are under
their final names and their results row is written in one transaction, or none of it; a bad
row is reported and the batch goes on; results come in input order; re-running resumes. At
most ``8 * workers`` people are in flight, so memory stays flat whatever the batch size. A
worker that dies stops the batch with :class:`~smimekit.errors.CAError` (what was recorded
stays recorded); closing the generator early (Ctrl-C between people) drops the people in
flight and their staged files.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.ca.authority import refuse_lint_errors
from smimekit.ca.bundle import (
    BundleOptions,
    BundlePart,
    bundle_files,
    discard,
    new_passphrase,
    publish,
    stage,
    write_bundle,
)
from smimekit.ca.issuance import (
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_SIGN_KEY,
    CertificateAuthority,
    Issuance,
    PreparedIssuance,
    SubscriberKeyType,
    checked_email,
)
from smimekit.ca.lifecycle import (
    Delivery,
    ResultsLog,
    Row,
    RowResult,
    RowStatus,
    _ask_for,
    _begin,
    _covering,
    _describe,
    _enrol_one,
    _held,
    _live,
    _void,
    _wanted,
)
from smimekit.ca.profiles import DEFAULT_VALIDITY, Purpose
from smimekit.errors import CAError, SmimeError
from smimekit.mailbox import comparable
from smimekit.store import IssuedRecord

__all__ = ["default_workers", "enroll_rows_pooled"]

_T = TypeVar("_T")

_DER = serialization.Encoding.DER


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# -- in the worker processes ----------------------------------------------------------------


def _init_worker(parent: int) -> None:
    # Ctrl-C is the writer's business: it stops the batch between people (the pool is
    # started with SIGINT ignored already, so no worker dies of one while starting).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    # A killed writer cannot stop its workers; they notice they were orphaned and leave
    # (what they staged is removed by the next run).
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _ready() -> None:
    """A first task for each worker: the pool starts them all at once."""


def _make_keys(kinds: tuple[tuple[str, str], ...]) -> tuple[tuple[str, bytes], ...]:
    """(purpose, key type) -> (purpose, PKCS#8 DER), unencrypted: they go back through the
    pool's pipe to the writer."""
    return tuple((purpose, SubscriberKeyType(kind).generate().private_bytes(
        _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        for purpose, kind in kinds)


@dataclass(frozen=True)
class _FilesJob:
    email: str
    profile: str
    lint: bool
    parts: tuple[tuple[str, bytes, bytes, tuple[tuple[bytes, bytes], ...]], ...]
    """(purpose, certificate DER, PKCS#8 DER, older (PKCS#8, certificate) pairs)"""
    chain: tuple[bytes, ...]
    out: str
    legacy: bool
    mobileconfig: bool
    organization: str
    iterations: int


@dataclass(frozen=True)
class _Staged:
    passphrase: str = field(repr=False)
    files: tuple[tuple[str, str], ...] = ()
    """(staged, final) paths"""
    error: str | None = None


def _key(der: bytes) -> PrivateKeyTypes:
    # made by our own worker a moment ago: the (slow) RSA consistency check adds nothing
    return serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)


def _make_files(job: _FilesJob) -> _Staged:
    """Lint the certificates, build the person's files and stage them."""
    try:
        parts = []
        for purpose, cert_der, key_der, extra in job.parts:
            cert = x509.load_der_x509_certificate(cert_der)
            if job.lint:
                refuse_lint_errors(cert, job.profile)
            parts.append(BundlePart(Purpose(purpose), cert, _key(key_der), tuple(
                (_key(k), x509.load_der_x509_certificate(c)) for k, c in extra)))
        passphrase = new_passphrase()
        files = bundle_files(
            job.email, parts, [x509.load_der_x509_certificate(c) for c in job.chain],
            passphrase=passphrase, legacy=job.legacy, mobileconfig=job.mobileconfig,
            organization=job.organization, iterations=job.iterations)
        staged = stage(Path(job.out), files)
    except (SmimeError, OSError) as exc:
        return _Staged("", error=_describe(exc))
    return _Staged(passphrase, tuple((str(s), str(f)) for s, f in staged))


# -- in the writer ---------------------------------------------------------------------------


@dataclass
class _Entry:
    """One row on its way through the pipeline."""

    row: Row
    result: RowResult | None = None
    """Known without the workers (error, held), or once recorded."""
    asked: tuple[Purpose, ...] = ()
    keys: Future[tuple[tuple[str, bytes], ...]] | None = None
    prepared: PreparedIssuance | None = None
    files: Future[_Staged] | None = None

    def pending(self) -> Future[object] | None:
        """The future this row waits for, if any."""
        for future in (self.keys, self.files):
            if future is not None and not future.done():
                return future  # type: ignore[return-value]
        return None


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (it unlinks the pool's semaphores when this
    process is gone) so that it does not warn on stderr about them after a kill -9: that
    is expected here, and the user's terminal is no place for a Python warning."""
    from multiprocessing import resource_tracker

    saved = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(
        w for w in (saved, "ignore::UserWarning:multiprocessing.resource_tracker") if w)
    try:
        resource_tracker.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = saved


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started inside inherit SIGINT ignored (a Python interpreter keeps it so)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _result(future: Future[_T]) -> _T:
    try:
        return future.result()
    except BrokenProcessPool:
        raise
    except Exception as exc:  # a bug in a worker, carried over: this row fails, not the batch
        raise _WorkerFailed(f"a worker failed: {type(exc).__name__}: {exc}") from None


class _WorkerFailed(Exception):
    pass


class _Pipeline:
    def __init__(self, cax: CertificateAuthority, pool: ProcessPoolExecutor,
                 bundle: BundleOptions, *, purpose: str, needs: frozenset[Purpose],
                 profile: str | None, sign_key: SubscriberKeyType,
                 encrypt_key: SubscriberKeyType, validity: dt.timedelta, lint: bool,
                 now: dt.datetime | None, at: dt.datetime,
                 holdings: dict[str, list[IssuedRecord]], earlier: dict[str, RowResult],
                 results: ResultsLog | None) -> None:
        self.cax, self.pool, self.bundle = cax, pool, bundle
        self.purpose, self.needs, self.profile = purpose, needs, profile
        self.sign_key, self.encrypt_key = sign_key, encrypt_key
        self.validity, self.lint, self.now, self.at = validity, lint, now, at
        self.holdings, self.earlier, self.results = holdings, earlier, results
        self.chain = tuple(c.public_bytes(_DER) for c in (cax.ca.authority.cert,
                                                           cax.ca.authority.root))

    def _live_now(self, email: str) -> list[IssuedRecord]:
        return [r for r in self.cax.store.issued_for(comparable(email))
                if _live(r, self.cax.issuer_fingerprint, self.at)]

    # step 1: what the row needs; keys ordered
    def start(self, entry: _Entry) -> None:
        row = entry.row
        try:
            held, used = _covering(self.cax.store, self.holdings.get(comparable(row.email), ()),
                                   self.needs)
            if held != self.needs:  # read again: the holdings are from the start of the run
                held, used = _covering(self.cax.store, self._live_now(row.email), self.needs)
            if held == self.needs:
                entry.result = _held(row, used)
                return
            # the refusals that need no key first: no key is made for a row that fails
            email = checked_email(row.email)
            self.cax.subject(email, row.name, self.cax.profile(self.profile))
        except (SmimeError, OSError) as exc:
            entry.result = RowResult(row.email, RowStatus.ERROR, _describe(exc), line=row.line)
            return
        asked = _ask_for(self.purpose, set(self.needs - held))
        entry.asked = (Purpose.SIGN, Purpose.ENCRYPT) if asked == "dual" \
            else (Purpose(asked),)
        entry.keys = self.pool.submit(_make_keys, tuple(
            (p.value, (self.sign_key if p is Purpose.SIGN else self.encrypt_key).value)
            for p in entry.asked))

    # step 2: sign here, then lint and files in a worker
    def sign(self, entry: _Entry) -> None:
        assert entry.keys is not None
        row = entry.row
        try:
            made = {Purpose(p): der for p, der in _result(entry.keys)}
            prepared = self.cax.prepare_with_keys(
                row.email, {p: _key(der) for p, der in made.items()}, name=row.name,
                profile=self.profile, validity=self.validity, lint=False, now=self.now)
            parts = []
            for cert, purpose, _key_object in prepared.built:
                extra: tuple[tuple[bytes, bytes], ...] = ()
                if purpose is Purpose.ENCRYPT and self.bundle.history \
                        and not self.bundle.legacy and self.cax.ca.vault.key is not None:
                    extra = tuple(
                        (k.private_bytes(_DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), c.public_bytes(_DER))
                        for k, c in self.cax.key_history(prepared.email))
                parts.append((purpose.value, cert.public_bytes(_DER), made[purpose], extra))
        except (SmimeError, OSError, _WorkerFailed) as exc:
            message = str(exc) if isinstance(exc, _WorkerFailed) else _describe(exc)
            entry.result = RowResult(row.email, RowStatus.ERROR, message, line=row.line)
            return
        entry.prepared = prepared
        entry.files = self.pool.submit(_make_files, _FilesJob(
            prepared.email, prepared.profile.name, self.lint, tuple(parts), self.chain,
            str(self.bundle.out), self.bundle.legacy, self.bundle.mobileconfig,
            self.cax.ca.config.organization, self.bundle.iterations))

    # step 3: one transaction
    def record(self, entry: _Entry) -> RowResult:
        row = entry.row
        if entry.result is not None:  # decided without recording anything
            if self.results is not None:
                self.results.append(entry.result)
            return entry.result
        assert entry.files is not None and entry.prepared is not None
        try:
            done = _result(entry.files)
        except _WorkerFailed as exc:
            done = _Staged("", error=str(exc))
        if done.error is not None:
            result = RowResult(row.email, RowStatus.ERROR, done.error, line=row.line)
            if self.results is not None:
                self.results.append(result)
            return result
        staged = [(Path(s), Path(f)) for s, f in done.files]
        published: list[Path] = []
        written = committed = redo = False
        try:
            with self.cax.store.transaction():
                held, used = _covering(self.cax.store, self._live_now(row.email),
                                       self.needs)
                if held == self.needs:
                    result = _held(row, used)
                elif entry.prepared.purposes != _wanted(self.purpose, self.needs - held):
                    redo = True  # rare: enrolled in part meanwhile; see below
                    result = RowResult(row.email, RowStatus.ERROR, "")
                else:
                    issuance = self.cax.record_generated(
                        entry.prepared, department=row.department, action="ca.enroll",
                        now=self.now)
                    published = publish(staged)
                    note = ("issued again: the earlier 'ok' row of this address is void (its"
                            " run was interrupted before it committed)") \
                        if _void(self.cax, self.earlier.get(row.email.casefold())) else ""
                    result = RowResult(
                        row.email, RowStatus.OK, note,
                        serials=tuple(i.record.serial for i in issuance.items),
                        files=tuple(published), passphrase=done.passphrase, line=row.line,
                        issuance=issuance)
                if self.results is not None and not redo:
                    self.results.append(result)
                    written = True
            committed = True
        except (SmimeError, OSError) as exc:
            message = _describe(exc)
            if written:
                message += "; nothing was recorded: ignore the row above"
            result = RowResult(row.email, RowStatus.ERROR, message, line=row.line)
        finally:
            discard(s for s, _ in staged)  # those published are gone from there already
            if not committed:
                discard(published)
        if redo:
            return self._in_process(row)
        if not committed and self.results is not None:
            self.results.append(result)
        return result

    def _in_process(self, row: Row) -> RowResult:
        """The one-process path for a row that changed under us."""
        def deliver(issuance: Issuance) -> Delivery:
            passphrase = new_passphrase()
            return Delivery(tuple(write_bundle(self.cax, issuance, self.bundle,
                                               passphrase=passphrase)), passphrase)

        result, written = _enrol_one(
            self.cax, row, self.purpose, self.needs, sign_key=self.sign_key,
            encrypt_key=self.encrypt_key, profile=self.profile,
            validity=self.validity, lint=self.lint, now=self.now,
            at=self.at, deliver=deliver, results=self.results,
            earlier=self.earlier.get(row.email.casefold()))
        if self.results is not None and not written:
            self.results.append(result)
        return result


def enroll_rows_pooled(
    cax: CertificateAuthority,
    rows: Iterable[Row],
    *,
    bundle: BundleOptions,
    workers: int | None = None,
    purpose: str = "dual",
    profile: str | None = None,
    sign_key: SubscriberKeyType = DEFAULT_SIGN_KEY,
    encrypt_key: SubscriberKeyType = DEFAULT_ENCRYPT_KEY,
    validity: dt.timedelta = DEFAULT_VALIDITY,
    lint: bool = True,
    now: dt.datetime | None = None,
    results: ResultsLog | None = None,
) -> Iterator[RowResult]:
    """:func:`~smimekit.ca.lifecycle.enroll_rows` with ``workers`` processes (default: the
    CPUs this process may use) making the keys and the files; files go to ``bundle.out``
    under fresh random PKCS#12 passphrases. One result per row, in input order.

    Raises:
        CAError: unknown purpose or profile (before any row), or a worker process died (the
            people yielded before are recorded; run again to continue).
        OSError: the results file cannot be written for a skipped or refused row.
    """
    needs, at, holdings, earlier = _begin(cax, purpose, profile, now, results)
    count = workers or default_workers()
    # in input order: the writer waits for the first row in flight; enough rows behind it
    # keep the workers busy meanwhile (one RSA-3072 key may take 1 s, the mean is ~0.2 s)
    window = 8 * count
    pending: deque[_Entry] = deque()
    yielded = 0
    _quiet_resource_tracker()  # before the pool: its queues start the tracker otherwise
    pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))
    try:
        with _sigint_ignored():
            for _ in range(count):
                pool.submit(_ready)
        flow = _Pipeline(cax, pool, bundle, purpose=purpose, needs=needs, profile=profile,
                         sign_key=sign_key, encrypt_key=encrypt_key, validity=validity,
                         lint=lint, now=now, at=at, holdings=holdings, earlier=earlier,
                         results=results)
        source = iter(rows)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                row = next(source, None)
                if row is None:
                    exhausted = True
                    break
                entry = _Entry(row)
                if row.error is not None:
                    entry.result = RowResult(row.email, RowStatus.ERROR, row.error,
                                             line=row.line)
                else:
                    flow.start(entry)
                pending.append(entry)
            if not pending:
                return
            for entry in pending:
                if entry.result is None and entry.files is None and entry.keys is not None \
                        and entry.keys.done():
                    flow.sign(entry)
            head = pending[0]
            if head.pending() is None and (head.result is not None or head.files is not None):
                pending.popleft()
                result = flow.record(head)
                yielded += 1
                yield result
                continue
            waiting = [f for f in (e.pending() for e in pending) if f is not None]
            wait(waiting, return_when=FIRST_COMPLETED)
    except BrokenProcessPool:
        raise CAError(f"a worker process died (killed, or out of memory?): stopped after"
                      f" {yielded} rows, which are recorded; run the same command again to"
                      " continue") from None
    finally:
        for entry in pending:
            for future in (entry.keys, entry.files):
                if future is not None:
                    future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for entry in pending:  # dropped: what their workers staged goes too
            if entry.files is not None and entry.files.done() \
                    and not entry.files.cancelled() and entry.files.exception() is None:
                discard(Path(s) for s, _ in entry.files.result().files)
