"""``smimekit ca enroll | renew | expiring | sync``: the CA's subscribers in bulk.

Thin commands over :mod:`smimekit.ca.lifecycle` and :mod:`smimekit.ca.sync`. Batches are
resumable: re-running the same command continues where a crash, a kill or Ctrl-C stopped it
(the first Ctrl-C finishes the current person, a second one stops at once; nothing half-done
is kept either way). A progress bar goes to stderr when stderr is a terminal (or with
``--progress``); otherwise the only output is one summary line.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import Any

import click

from smimekit.ca.bundle import BundleOptions, remove_leftovers
from smimekit.ca.issuance import (
    CertificateAuthority,
    Issuance,
    SubscriberKeyType,
)
from smimekit.ca.lifecycle import (
    RENOTIFY_AFTER,
    Deliver,
    Delivery,
    Expiring,
    ResultsLog,
    RowResult,
    RowStatus,
    SmtpMailer,
    due_for_renewal,
    enroll_rows,
    expiring,
    notify,
    read_enrolment_csv,
    renew_due,
)
from smimekit.ca.profiles import PROFILES
from smimekit.cli.ca import (
    KEY_TYPE_HELP,
    ca_options,
    key_kinds,
    new_passphrase,
    open_ca,
    parse_duration,
    write_bundle,
)
from smimekit.cli.common import CliError, output_dir
from smimekit.cli.directory_hook import kept_current
from smimekit.cli.progress import progress_bar

__all__ = ["COMMANDS", "enroll", "expiring_command", "renew", "sync"]

_KEY_TYPES = click.Choice([k.value for k in SubscriberKeyType])


class _Stopped(CliError):
    """Ctrl-C between two people: the batch stopped cleanly."""

    exit_code = 130


def _batch_options(func: Any) -> Any:
    func = click.option("--progress/--no-progress", default=None,
                        help="Show a progress bar on stderr [when stderr is a terminal].")(func)
    func = click.option("--mobileconfig", is_flag=True,
                        help="Also write an Apple .mobileconfig per PKCS#12.")(func)
    func = click.option("--legacy-p12", is_flag=True,
                        help="PKCS#12 with 3DES/SHA-1 for older clients (gpgsm, old"
                             " Outlook/macOS); one key per file, without the key history.")(func)
    func = click.option("--validity", default="730d", show_default=True,
                        help="Validity of the new certificates, e.g. 365d (at most 825d).")(func)
    func = click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
                        show_default=True, help="Where to write each person's files.")(func)
    return func


def _deliverer(cax: CertificateAuthority, out: Path, *, legacy: bool,
               mobileconfig: bool) -> Deliver:
    def deliver(issuance: Issuance) -> Delivery:
        passphrase = new_passphrase() if any(i.key is not None for i in issuance.items) \
            else None
        # the legacy form holds one key (gpgsm): no key history, the old file stays in use
        files = write_bundle(cax, issuance, out, passphrase=passphrase or "", legacy=legacy,
                             mobileconfig=mobileconfig, history=not legacy)
        return Delivery(tuple(files), passphrase)
    return deliver


@contextmanager
def _stop_between_rows() -> Iterator[Callable[[], bool]]:
    """The first SIGINT asks the batch to stop after the current person; a second one
    interrupts at once (the person's transaction rolls back)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    requested = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        click.echo("smimekit: stopping after the current person (Ctrl-C again to stop now)",
                   err=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_batch(verb: str, results: Iterator[RowResult], log: ResultsLog, *, total: int,
               label: str, progress: bool | None) -> None:
    """Drive a batch generator with a progress bar; one summary line at the end (an error,
    exit status 1, when any row failed)."""
    counts: Counter[RowStatus] = Counter()
    with _stop_between_rows() as stop_requested, progress_bar(progress, label,
                                                              total=total) as bar:
        try:
            for result in results:
                counts[result.status] += 1
                if result.status is RowStatus.ERROR:
                    bar.error(f"error: {result.email or '(no address)'}: {result.message}")
                bar.advance()
                if stop_requested():
                    raise _Stopped(f"stopped by Ctrl-C: {_summary(verb, counts, log)}; run"
                                   " the same command again to continue")
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
    summary = _summary(verb, counts, log)
    if counts[RowStatus.ERROR]:
        raise CliError(summary)
    click.echo(summary, err=True)


def _recorded(results: Iterator[RowResult], changed: list[str]) -> Iterator[RowResult]:
    """``results``, adding the address of every row recorded to ``changed`` (the directory
    is updated for them after the batch: smimekit.cli.directory_hook)."""
    try:
        for result in results:
            if result.status is RowStatus.OK and result.email:
                changed.append(result.email)
            yield result
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _summary(verb: str, counts: Counter[RowStatus], results: ResultsLog) -> str:
    return (f"{verb} {counts[RowStatus.OK]}, skipped {counts[RowStatus.SKIPPED]}, failed"
            f" {counts[RowStatus.ERROR]}; results in {results.path}")


@click.command("enroll")
@click.option("--csv", "csv_path", required=True, metavar="FILE",
              help="UTF-8 CSV with a header row: email (required), name, department.")
@click.option("--results", "results_path", type=click.Path(dir_okay=False),
              help="Append one row per person here [OUT/results.csv]; mode 0600, it holds"
                   " the PKCS#12 passphrases.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)),
              help="Certificate profile [the CA's default].")
@click.option("--purpose", type=click.Choice(["dual", "sign", "encrypt", "both"]),
              default="dual", show_default=True,
              help="dual: a signing and an encryption certificate per person.")
@click.option("--key-type", "key_types", multiple=True, type=_KEY_TYPES, help=KEY_TYPE_HELP)
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="Processes making keys and files [the number of CPUs]; 1: all in this"
                   " process.")
@_batch_options
@ca_options
def enroll(csv_path: str, results_path: str | None, profile: str | None, purpose: str,
           key_types: tuple[str, ...], workers: int | None, out_dir: str, validity: str,
           legacy_p12: bool, mobileconfig: bool, progress: bool | None,
           passphrase_file: str | None, passphrase_env: str | None,
           pin_file: str | None) -> None:
    """Issue certificates with generated keys to everyone in a CSV file.

    Each person gets their files in OUT (PKCS#12 under a fresh random passphrase) and a row
    in the results file. People who hold live certificates of this CA already are skipped,
    so running it again resumes an interrupted batch. Keys, lint and files are made by
    --workers processes; this one signs and records. Exit status 1 when any row failed.
    """
    period = parse_duration(validity)
    sign_key, encrypt_key = key_kinds(key_types, purpose, legacy_p12=legacy_p12)
    rows = read_enrolment_csv(csv_path)
    out = Path(out_dir)
    results = ResultsLog(Path(results_path) if results_path else out / "results.csv")
    from smimekit.ca.enrol_pool import default_workers, enroll_rows_pooled

    count = workers or default_workers()
    with open_ca(passphrase_file, passphrase_env, pin_file) as cax, kept_current(cax) as changed:
        output_dir(out)  # before anyone is enrolled
        remove_leftovers(out)  # temporary files of a run that was killed
        if count == 1:
            batch = enroll_rows(
                cax, rows, purpose=purpose, profile=profile, sign_key=sign_key,
                encrypt_key=encrypt_key, validity=period, results=results,
                deliver=_deliverer(cax, out, legacy=legacy_p12, mobileconfig=mobileconfig))
        else:
            batch = enroll_rows_pooled(
                cax, rows, workers=count, purpose=purpose, profile=profile,
                sign_key=sign_key, encrypt_key=encrypt_key, validity=period, results=results,
                bundle=BundleOptions(out, legacy=legacy_p12, mobileconfig=mobileconfig,
                                     history=not legacy_p12))
        _run_batch("enrolled", _recorded(batch, changed), results, total=len(rows),
                   label="enrolling", progress=progress)


@click.command("renew")
@click.option("--due", default="30d", show_default=True,
              help="Renew live certificates expiring within this period (30d, 6w, ...).")
@click.option("--results", "results_path", type=click.Path(dir_okay=False),
              help="Append one row per person here [OUT/renewals.csv]; mode 0600.")
@click.option("--dry-run", is_flag=True, help="Only list what would be renewed.")
@click.option("--key-type", type=_KEY_TYPES, help="Type of the new keys [the old key's].")
@_batch_options
@ca_options
def renew(due: str, results_path: str | None, dry_run: bool, key_type: str | None,
          out_dir: str, validity: str, legacy_p12: bool, mobileconfig: bool,
          progress: bool | None, passphrase_file: str | None, passphrase_env: str | None,
          pin_file: str | None) -> None:
    """Renew every live certificate that expires within --due.

    Encryption certificates get new keys (the old ones stay in the key history, and the new
    PKCS#12 carries them all); signing certificates keep a key the holder made and get a new
    one when the CA made it. Already-expired certificates are not renewed: enrol again.
    Running it again does nothing new (a renewed certificate is no longer live).
    """
    window = parse_duration(due)
    period = parse_duration(validity)
    encrypt_key = SubscriberKeyType(key_type) if key_type else None
    if legacy_p12 and key_type and key_type.startswith("ml-"):
        raise click.UsageError("--legacy-p12 cannot carry ML-DSA or ML-KEM keys (the clients"
                               " that need it know no post-quantum key)")
    with open_ca(passphrase_file, passphrase_env, pin_file, locked=dry_run) as cax:
        records = due_for_renewal(cax.store, window, issuer_fingerprint=cax.issuer_fingerprint)
        if dry_run:
            items = expiring(cax.store, window, issuer_fingerprint=cax.issuer_fingerprint)
            if items:
                _table(items)
            people = len({r.email for r in records})
            click.echo(f"would renew {len(records)} certificates of {people} people", err=True)
            return
        out = output_dir(out_dir)
        results = ResultsLog(Path(results_path) if results_path else out / "renewals.csv")
        deliver = _deliverer(cax, out, legacy=legacy_p12, mobileconfig=mobileconfig)
        with kept_current(cax) as changed:
            _run_batch("renewed", _recorded(renew_due(
                cax, records, validity=period, encrypt_key=encrypt_key, deliver=deliver,
                results=results), changed), results, total=len({r.email for r in records}),
                label="renewing", progress=progress)


def _table(items: Sequence[Expiring]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table("email", "purpose", "serial", "not after (UTC)", "days left",
                  box=None, header_style="bold")
    for item in items:
        r = item.record
        table.add_row(r.email, r.purpose, r.serial, f"{r.not_after:%Y-%m-%d %H:%M}",
                      str(item.days_left))
    console.print(table)


def _as_json(items: Sequence[Expiring]) -> str:
    return json.dumps([{
        "email": i.record.email, "purpose": i.record.purpose, "serial": i.record.serial,
        "not_after": i.record.not_after.isoformat(), "days_left": i.days_left,
        "key_origin": i.record.key_origin,
        "notified_at": i.record.notified_at.isoformat() if i.record.notified_at else None,
    } for i in items], indent=2)


@click.command("expiring")
@click.option("--within", default="30d", show_default=True,
              help="List live certificates expiring within this period (30d, 6w, ...).")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.option("--notify", "send", is_flag=True,
              help="Mail each holder (at most once a week) and the --admin addresses.")
@click.option("--smtp-host", default="localhost", show_default=True)
@click.option("--smtp-port", type=click.IntRange(1, 65535), default=25, show_default=True)
@click.option("--smtp-plain", is_flag=True, help="No STARTTLS, even when the server offers it.")
@click.option("--from", "sender", metavar="ADDR",
              help="Sender of the notices [the first --admin address].")
@click.option("--admin", "admins", multiple=True, metavar="ADDR",
              help="Send a summary here (repeatable).")
def expiring_command(within: str, as_json: bool, send: bool, smtp_host: str, smtp_port: int,
                     smtp_plain: bool, sender: str | None, admins: tuple[str, ...]) -> None:
    """List the live certificates that expire soon; with --notify, tell their holders."""
    window = parse_duration(within)
    sender = sender or (admins[0] if admins else None)  # the PKI team answers replies
    if send and not sender:
        raise click.UsageError("--notify needs --from ADDR or an --admin ADDR to send from")
    if not send and admins:
        raise click.UsageError("--admin goes with --notify")
    with open_ca(None, None, None, locked=True) as cax:
        items = expiring(cax.store, window, issuer_fingerprint=cax.issuer_fingerprint)
        if as_json:
            click.echo(_as_json(items))
        elif items:
            _table(items)
        else:
            click.echo(f"no live certificate expires within {window.days} days", err=True)
        if not send or not items:
            return
        assert sender is not None
        with SmtpMailer(smtp_host, smtp_port, starttls=not smtp_plain) as mailer:
            report = notify(cax.store, items, mailer=mailer, sender=sender, admins=admins,
                            within=window, organization=cax.ca.config.organization,
                            actor=cax.actor)
    for recipient, error in report.failed:
        click.echo(f"smimekit: error: mail to {recipient}: {error}", err=True)
    summary = (f"notified {len(report.notified)} holders"
               f" ({len(report.recent)} told within the last {RENOTIFY_AFTER.days} days"
               f" already), summary to {len(report.admins)} admins")
    if report.failed:
        raise CliError(f"{summary}; {len(report.failed)} messages could not be sent")
    click.echo(summary, err=True)


class _Refused(CliError):
    """ca sync: the plan was refused (an empty source, too many leavers); nothing changed."""

    exit_code = 3


class _Busy(CliError):
    """ca sync: another sync holds the lock."""

    exit_code = 75  # EX_TEMPFAIL: cron may try again later


SYNC_LOCK = "ca-sync.lock"


@contextmanager
def _sync_lock(data_dir: Path) -> Iterator[None]:
    """One ``ca sync`` at a time per data directory (an flock, released by the kernel when
    the process ends, however it ends)."""
    import fcntl
    import os

    path = data_dir / SYNC_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOCTTY, 0o600)
    except OSError as exc:
        raise CliError(f"cannot open the lock {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Busy(f"another 'ca sync' is running (it holds {path}); nothing was"
                        " changed: try again when it has finished") from None
        yield
    finally:
        os.close(fd)


def _print_plan(plan: Any) -> None:
    for identity in plan.joiners:
        click.echo(f"join    {identity.id}  {identity.key}  {identity.name or ''}".rstrip())
    for leaver in plan.leavers:
        click.echo(f"leave   {leaver.id}  {leaver.email}  (revoke {len(leaver.records)}"
                   " certificates)")
    for move in plan.moves:
        click.echo(f"move    {move.identity.id}  {move.old_email} -> {move.identity.key}"
                   f"  (supersede {len(move.records)} certificates)")
    for rename in plan.renames:
        click.echo(f"rename  {rename.identity.id}  {rename.identity.key}  ->"
                   f" {rename.identity.name or ''}  (supersede {len(rename.records)}"
                   " certificates)")
    for identity in plan.recorded:
        click.echo(f"record  {identity.id}  {identity.key}  (certificates current)")


def _plan_notes(plan: Any) -> None:
    for problem in plan.problems:
        click.echo(f"smimekit: warning: {problem}", err=True)
    if plan.outside:
        click.echo(f"note: {len(plan.outside)} addresses hold live certificates but are not"
                   " in the source and were not enrolled by ca sync: left alone", err=True)


@click.command("sync")
@click.option("--ldap", "use_ldap", is_flag=True,
              help="Read the people from the directory of [sync.ldap] in the configuration.")
@click.option("--csv", "csv_path", metavar="FILE",
              help="Read the people from an HR export: UTF-8 CSV with id, email and name"
                   " columns.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--allow-removals", type=click.IntRange(0), metavar="N",
              help="Allow up to N leavers in this run, above [sync] max_removals.")
@click.option("--results", "results_path", type=click.Path(dir_okay=False),
              help="Append one row per person here [OUT/sync-results.csv]; mode 0600, it"
                   " holds the PKCS#12 passphrases.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)),
              help="Certificate profile of joiners [the CA's default].")
@click.option("--purpose", type=click.Choice(["dual", "sign", "encrypt", "both"]),
              default="dual", show_default=True, help="What joiners get.")
@click.option("--key-type", "key_types", multiple=True, type=_KEY_TYPES, help=KEY_TYPE_HELP)
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="Processes making joiners' keys and files [the number of CPUs].")
@_batch_options
@ca_options
def sync(use_ldap: bool, csv_path: str | None, dry_run: bool, allow_removals: int | None,
         results_path: str | None, profile: str | None, purpose: str,
         key_types: tuple[str, ...],
         workers: int | None, out_dir: str, validity: str, legacy_p12: bool,
         mobileconfig: bool, progress: bool | None, passphrase_file: str | None,
         passphrase_env: str | None, pin_file: str | None) -> None:
    """Reconcile the CA with the identity source (--ldap or --csv FILE).

    Joiners are enrolled (files in OUT), leavers' certificates revoked
    (cessation-of-operation; their encryption keys stay in escrow), and a new address or a
    new name in a certificate gets a new certificate, the old one revoked as superseded.
    Running it again does nothing when nothing changed, and finishes a run that was
    stopped. Exit status: 0 done (or nothing to do), 1 an error (nothing or only part
    done: run again), 2 bad usage, 3 refused (an empty source, or more leavers than [sync]
    max_removals: nothing changed), 75 another sync is running.
    """
    from smimekit.ca.sync import (
        SyncRefused,
        apply_sync,
        check_removals,
        plan_sync,
        publish_pending_crl,
        read_identity_csv,
        read_identity_ldap,
    )
    from smimekit.cli.common import ca_data_dir, cli_config
    from smimekit.config import SyncConfig

    if use_ldap == (csv_path is not None):
        raise click.UsageError("give --ldap or --csv FILE (one of them)")
    period = parse_duration(validity)
    sign_key, encrypt_key = key_kinds(key_types, purpose, legacy_p12=legacy_p12)
    settings = cli_config().sync or SyncConfig()
    if use_ldap and settings.ldap is None:
        raise CliError("--ldap needs a [sync.ldap] table in the configuration file (--config"
                       " or SMIMEKIT_CONFIG); see docs/directory.md")
    if settings.max_removals < 0:
        raise CliError("[sync] max_removals must be 0 or more (a share below 1, or a count)")
    data_dir = ca_data_dir()
    with nullcontext() if dry_run else _sync_lock(data_dir):
        assert settings.ldap is not None or not use_ldap
        source = read_identity_ldap(settings.ldap) if use_ldap and settings.ldap \
            else read_identity_csv(csv_path or "")
        with open_ca(passphrase_file, passphrase_env, pin_file, locked=dry_run) as cax:
            plan = plan_sync(cax, source)
            if dry_run:
                _print_plan(plan)
            _plan_notes(plan)
            try:
                check_removals(plan, settings.max_removals, allow=allow_removals)
            except SyncRefused as exc:
                raise _Refused(str(exc)) from None
            if dry_run:
                click.echo(f"would do: {plan.counts()} ({plan.source_count} people in the"
                           " source)", err=True)
                return
            if plan.empty:
                publish_pending_crl(cax)  # a CRL a killed run did not publish
                click.echo(f"nothing to do: the CA matches the source ({plan.source_count}"
                           " people)", err=True)
                return
            out = output_dir(out_dir)
            remove_leftovers(out)
            results = ResultsLog(Path(results_path) if results_path
                                 else out / "sync-results.csv")
            deliver = _deliverer(cax, out, legacy=legacy_p12, mobileconfig=mobileconfig)
            count = workers or _workers()

            def enrol(rows: list[Any]) -> Iterator[RowResult]:
                if count == 1 or len(rows) < 2:
                    return enroll_rows(cax, rows, purpose=purpose, profile=profile,
                                       sign_key=sign_key, encrypt_key=encrypt_key,
                                       validity=period, results=results, deliver=deliver)
                from smimekit.ca.enrol_pool import enroll_rows_pooled

                return enroll_rows_pooled(
                    cax, rows, workers=count, purpose=purpose, profile=profile,
                    sign_key=sign_key, encrypt_key=encrypt_key, validity=period,
                    results=results, bundle=BundleOptions(out, legacy=legacy_p12,
                                                          mobileconfig=mobileconfig,
                                                          history=not legacy_p12))

            total = (len(plan.joiners) + len(plan.leavers) + len(plan.moves)
                     + len(plan.renames) + len(plan.recorded))
            counts: Counter[str] = Counter()
            failed = 0
            with kept_current(cax) as changed, \
                    _stop_between_rows() as stop_requested, \
                    progress_bar(progress, "syncing", total=total) as bar:
                events = apply_sync(cax, plan, enrol=enrol, deliver=deliver, results=results,
                                    validity=period)
                try:
                    for event in events:
                        if event.status is RowStatus.ERROR:
                            failed += 1
                            bar.error(f"error: {event.action.value} {event.id}"
                                      f" {event.email}: {event.message}")
                        else:
                            counts[event.action.value] += 1
                            changed += list(event.emails)
                        bar.advance()
                        if stop_requested():
                            raise _Stopped(f"stopped by Ctrl-C: {_sync_summary(counts, failed)};"
                                           " run the same command again to continue")
                finally:
                    events.close()  # type: ignore[attr-defined]
                summary = _sync_summary(counts, failed) + f"; results in {results.path}"
                if failed:
                    raise CliError(summary)
    click.echo(summary, err=True)


def _workers() -> int:
    from smimekit.ca.enrol_pool import default_workers

    return default_workers()


def _sync_summary(counts: Counter[str], failed: int) -> str:
    return (f"synced: {counts['joined']} joined, {counts['left']} left, {counts['moved']}"
            f" moved, {counts['renamed']} renamed, {counts['recorded']} recorded, failed"
            f" {failed}")


COMMANDS: list[click.Command] = [enroll, renew, expiring_command, sync]
"""Registered into the ``ca`` group by :mod:`smimekit.cli.ca`."""
