"""``smimekit archive scan | decrypt | reencrypt``: mail archives (mbox, Maildir, .eml folders).

Thin commands over :mod:`smimekit.archive`. All three are resumable (``scan`` with
``--state FILE``): run the same command again after a crash, a kill or Ctrl-C. A progress bar goes
to stderr when stderr is a terminal (or with ``--progress``). Keys come from ``--key`` files
and/or from escrow (``--user ADDR --share SPEC ... --reason TEXT``: the user's key history,
recovered with M officers' shares as ``smimekit escrow recover`` does, and audited).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from smimekit import archive as lib
from smimekit.cli.common import (
    CliError,
    Globals,
    ca_data_dir,
    load_cert_files,
    load_decryption_keys,
    open_store,
    passphrase_from,
    passphrase_options,
)
from smimekit.cli.escrow import SHARE_HELP, recover_with_shares
from smimekit.store import DB_FILENAME, Store

__all__ = ["archive"]

_FLAG_MEANINGS = {
    "3des": "Triple DES content encryption (legacy, 64-bit blocks)",
    "rc2": "RC2 content encryption (legacy, often 40-bit)",
    "cbc-no-integrity": "EnvelopedData: CBC without integrity (malleable, Efail)",
    "rsa-under-2048": "RSA key transport to a key under 2048 bits",
    "unknown-cipher": "a content cipher smimekit does not know",
    "encrypted-then-signed": "encrypted inside a signature (re-encrypting would break it)",
    "partially-encrypted": "an encrypted part next to unencrypted parts",
    "partially-signed": "a signed part inside an unsigned multipart",
}
_LIST_LIMIT = 20


def _keys_option(func: Any) -> Any:
    return click.option("--key", "key_paths", multiple=True,
                        type=click.Path(dir_okay=False), metavar="FILE",
                        help="A private key (PEM/DER/PKCS#8) or a PKCS#12 with a whole key"
                             " history; repeatable.")(func)


def _escrow_options(func: Any) -> Any:
    for option in reversed((
        click.option("--user", "escrow_user", metavar="ADDR",
                     help="Also use this user's key history from escrow (needs --share and"
                          " --reason; the recovery is audited)."),
        click.option("--share", "share_specs", multiple=True, metavar="SPEC",
                     help=SHARE_HELP),
        click.option("--reason", help="Why the user's keys are recovered (ticket, case):"
                                      " audited."),
    )):
        func = option(func)
    return func


def _progress_option(func: Any) -> Any:
    return click.option("--progress/--no-progress", default=None,
                        help="Show a progress bar on stderr [when stderr is a terminal].")(func)


def _path_argument(func: Any) -> Any:
    return click.argument("path", type=click.Path(exists=True))(func)


def _existing_store() -> Store | None:
    """The store, only when one exists already (scanning never creates one)."""
    ctx = click.get_current_context()
    globals_ = ctx.find_object(Globals)
    if globals_ is None:
        return None
    if globals_.database_url is None and not (globals_.data_dir / DB_FILENAME).exists():
        return None
    return open_store()


def _keys(key_paths: Sequence[str], passphrase_file: str | None,
          passphrase_env: str | None) -> list[lib.KeyPair]:
    if not key_paths:
        return []
    return load_decryption_keys(key_paths, None,
                                passphrase_from(passphrase_file, passphrase_env))


def _all_keys(key_paths: Sequence[str], passphrase_file: str | None,
              passphrase_env: str | None, user: str | None, share_specs: Sequence[str],
              reason: str | None, details: dict[str, Any]) -> list[lib.KeyPair]:
    """The --key keys, then the user's keys recovered from escrow (audited)."""
    if user is None:
        if share_specs or reason is not None:
            raise click.UsageError("--share and --reason go with --user ADDR")
        if not key_paths:
            raise click.UsageError("give the keys: --key FILE, or --user ADDR --share SPEC ..."
                                   " --reason TEXT (escrow)")
    elif not share_specs or reason is None:
        raise click.UsageError("--user needs --share SPEC (one per officer) and --reason TEXT")
    keys = _keys(key_paths, passphrase_file, passphrase_env)
    if user is None:
        return keys
    data_dir = ca_data_dir()
    store = open_store()
    try:
        pairs, shares = recover_with_shares(data_dir, store, share_specs, email=user,
                                            reason=reason or "", details=details)
    finally:
        store.close()
    click.echo(f"smimekit: recovered {len(pairs)} key{'s' if len(pairs) != 1 else ''} of"
               f" {user} from escrow (officers:"
               f" {', '.join(s.header.officer for s in shares)})", err=True)
    return [*keys, *pairs]


@contextmanager
def _file_errors() -> Iterator[None]:
    """A file that cannot be read or written ends the run with one line (exit status 1)."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise CliError(f"{where}{exc.strerror or exc}") from None


@contextmanager
def _progress_bar(show: bool | None, label: str) -> Iterator[lib.ProgressCallback]:
    visible = sys.stderr.isatty() if show is None else show
    console = Console(stderr=True, force_terminal=True if show else None)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                   disable=not visible)
    with bar:
        task = bar.add_task(label, total=None)

        def update(p: lib.Progress) -> None:
            bar.update(task, completed=p.done, total=p.total,
                       description=f"{p.phase} ({p.messages} messages)")

        yield update


@click.group("archive")
def archive() -> None:
    """Scan, export and re-encrypt mail archives (mbox, Maildir, folders of .eml)."""


# -- scan --------------------------------------------------------------------------------------


@archive.command("scan")
@_path_argument
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_keys_option
@passphrase_options
@click.option("--state", "state_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Record each message's result in FILE (0600) and take the ones already"
                   " there from it: an interrupted scan goes on where it stopped.")
@_progress_option
def scan_command(path: str, as_json: bool, key_paths: tuple[str, ...],
                 passphrase_file: str | None, passphrase_env: str | None,
                 state_path: str | None, progress: bool | None) -> None:
    """What is encrypted in an archive, to whom, how, and who can still read it.

    Readable "now": a --key opens it, or it is sent to a live certificate of our CA.
    "escrow": only a key in the store's key history opens it. Nothing is decrypted.
    With --state FILE, run the same command again to resume an interrupted scan.
    """
    keys = _keys(key_paths, passphrase_file, passphrase_env)
    store = _existing_store()
    state = Path(state_path) if state_path is not None else None
    try:
        with _file_errors(), _progress_bar(progress, "scanning") as update:
            report = lib.scan(Path(path), store=store, keys=keys, progress=update,
                              state=state)
    finally:
        if store is not None:
            store.close()
    if report.resumed:
        click.echo(f"smimekit: {report.resumed} of {report.messages} messages taken from"
                   f" {state}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    _print_scan(report, store is not None)


def _print_scan(report: lib.ScanReport, with_store: bool) -> None:
    out = Console()
    kinds, readable = report.by_kind, report.by_readability
    summary = Table("messages", "count", title=f"{report.path} ({report.format})",
                    title_justify="left")
    summary.add_row("plain", str(kinds["plain"]))
    summary.add_row("signed", str(kinds["signed"]))
    summary.add_row("encrypted, readable now", str(readable["now"]))
    summary.add_row("encrypted, readable only through escrow", str(readable["escrow"]))
    summary.add_row("encrypted, unreadable (no known key)", str(readable["unreadable"]))
    summary.add_row("malformed", str(kinds["malformed"]))
    summary.add_row("total", str(report.messages))
    out.print(summary)
    if report.recipients:
        table = Table("recipient", "certificate", "serial", "readable", "messages",
                      title="recipients", title_justify="left")
        for r in report.recipients:
            if r.subject is not None:
                who, cert = r.label, r.subject
            elif r.issuer is not None:
                who, cert = "(unknown)", f"issued by {r.issuer}"
            else:
                who, cert = "(unknown)", r.identifier
            serial = format(r.serial, "x")[:16] if r.serial is not None else ""
            table.add_row(who, cert, serial, r.readability.value, str(r.messages))
        out.print(table)
    if report.by_cipher:
        table = Table("algorithm", "kind", "messages", title="algorithms", title_justify="left")
        for name, count in report.by_cipher.most_common():
            table.add_row(name, "content encryption", str(count))
        for name, count in report.by_key_transport.most_common():
            table.add_row(name, "key transport / agreement", str(count))
        out.print(table)
    if report.by_flag:
        table = Table("flag", "meaning", "messages", title="flags", title_justify="left")
        for flag, count in report.by_flag.most_common():
            table.add_row(flag, _FLAG_MEANINGS.get(flag, ""), str(count))
        out.print(table)
    if report.escrow_users:
        table = Table("user", "messages", title="readable only through escrow (key recovery"
                      " with --user ADDR --share ... --reason ...)", title_justify="left")
        for user, count in sorted(report.escrow_users.items(), key=lambda e: (-e[1], e[0])):
            table.add_row(user, str(count))
        out.print(table)
    _print_list(out, "unreadable", ("location", "Message-ID", "recipients"),
                [(loc, mid or "", "; ".join(rcpt)) for loc, mid, rcpt in report.unreadable])
    _print_list(out, "malformed", ("location", "reason"), report.malformed)
    if not with_store:
        out.print("no store in the data directory: readability comes from --key only")


def _print_list(out: Console, title: str, columns: Sequence[str],
                rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        return
    table = Table(*columns, title=title, title_justify="left")
    for row in rows[:_LIST_LIMIT]:
        table.add_row(*row)
    out.print(table)
    if len(rows) > _LIST_LIMIT:
        out.print(f"... and {len(rows) - _LIST_LIMIT} more ({title}; --json lists them all)")


# -- decrypt ------------------------------------------------------------------------------------


@archive.command("decrypt")
@_path_argument
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="A new folder for the plaintext (or an earlier export, to resume).")
@_keys_option
@_escrow_options
@passphrase_options
@click.option("--allow-legacy", is_flag=True,
              help="Also open 3DES and RC2 messages (old archives).")
@_progress_option
def decrypt_command(path: str, out_dir: str, key_paths: tuple[str, ...],
                    escrow_user: str | None, share_specs: tuple[str, ...],
                    reason: str | None, passphrase_file: str | None,
                    passphrase_env: str | None, allow_legacy: bool,
                    progress: bool | None) -> None:
    """Export the plaintext of every message the keys open, for discovery.

    One .eml per message and a manifest (manifest.jsonl, manifest.csv: source location,
    status, reason, SHA-256 of each output). Run again to resume. The keys: --key files
    and/or --user's key history from escrow (--share, --reason; audited).
    """
    keys = _all_keys(key_paths, passphrase_file, passphrase_env, escrow_user, share_specs,
                     reason, {"output": "archive-decrypt", "archive": str(Path(path))})
    with _file_errors(), _progress_bar(progress, "decrypting") as update:
        report = lib.decrypt_archive(Path(path), Path(out_dir), keys,
                                     allow_legacy=allow_legacy, progress=update)
    c = report.counts
    _print_problems(report.problems)
    summary = (f"decrypted {c['decrypted']}, not encrypted {c['not-encrypted']}, no key"
               f" {c['no-key']}, failed {c['failed']}, malformed {c['malformed']}"
               + (f", done before {report.resumed}" if report.resumed else "")
               + f"; manifest in {report.manifest}")
    if c["failed"]:
        raise CliError(summary)
    click.echo(f"smimekit: {summary}", err=True)


def _print_problems(problems: Sequence[tuple[str, str, str]]) -> None:
    if problems:
        _print_list(Console(stderr=True), "not done", ("location", "status", "reason"),
                    problems)


# -- reencrypt ----------------------------------------------------------------------------------


@archive.command("reencrypt")
@_path_argument
@_keys_option
@_escrow_options
@click.option("--to", "to_paths", multiple=True, type=click.Path(dir_okay=False),
              metavar="CERT", help="Encrypt every message to this certificate (repeatable)"
                                   " instead of its owners' current certificates in the store.")
@passphrase_options
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--allow-legacy", is_flag=True, help="Also migrate 3DES and RC2 messages.")
@click.option("--oaep", is_flag=True, help="RSA-OAEP key transport for RSA recipients.")
@click.option("--keep-original", is_flag=True,
              help="mbox: keep the old file as NAME.orig after the swap.")
@_progress_option
def reencrypt_command(path: str, key_paths: tuple[str, ...], escrow_user: str | None,
                      share_specs: tuple[str, ...], reason: str | None,
                      to_paths: tuple[str, ...], passphrase_file: str | None,
                      passphrase_env: str | None, dry_run: bool, allow_legacy: bool,
                      oaep: bool, keep_original: bool, progress: bool | None) -> None:
    """Re-encrypt every encrypted message to its owners' current certificates, AES-256-GCM.

    Each message is verified (decrypted again with the keys) before it replaces the old
    one; a crash or kill loses nothing. The keys must open the old messages and the new
    certificates. Run again to finish an interrupted run. The keys: --key files and/or
    --user's key history from escrow (--share, --reason; audited).
    """
    store = _existing_store()
    if not to_paths and store is None:
        raise click.UsageError("no store in the data directory: name the new recipients with"
                               " --to CERT")
    try:
        targets: list[x509.Certificate] = load_cert_files(to_paths)
        keys = _all_keys(key_paths, passphrase_file, passphrase_env, escrow_user, share_specs,
                         reason, {"output": "archive-reencrypt", "archive": str(Path(path)),
                                  "dry_run": dry_run})
    except BaseException:
        if store is not None:
            store.close()
        raise

    def fixed(old: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        return targets

    try:
        with _file_errors(), _progress_bar(progress, "re-encrypting") as update:
            report = lib.reencrypt_archive(
                Path(path), keys, fixed if targets else None, store=store,
                allow_legacy=allow_legacy, oaep=oaep, dry_run=dry_run,
                keep_original=keep_original, progress=update)
    finally:
        if store is not None:
            store.close()
    c = report.counts
    _print_problems(report.problems)
    done = (f"would re-encrypt {c['would-reencrypt']}" if dry_run
            else f"re-encrypted {c['reencrypted']}")
    summary = (f"{done}, already current {c['current']}, left unchanged {c['unchanged']},"
               f" no key {c['no-key']}, failed {c['failed']}"
               + (f", done before {report.resumed}" if report.resumed else ""))
    if c["failed"]:
        raise CliError(summary)
    click.echo(f"smimekit: {summary}", err=True)
