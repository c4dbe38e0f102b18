"""``smimekit drill``: the crisis drill (audit/drill.py) with the outside network cut.

The command re-executes itself as a child process that enters a fresh network namespace
(loopback only) before it opens anything, so the caller keeps its network; the child runs
the steps, prints one line per step, writes ``<data-dir>/drill/latest.json`` (and --json)
and exits 1 when a step failed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from smimekit.cli.ca import _ca_passphrase, ca_options, open_ca
from smimekit.cli.common import cli_globals

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["drill"]



def _globals_argv() -> list[str]:
    globals_ = cli_globals()
    argv = [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(globals_.data_dir)]
    if globals_.config is not None:
        argv += ["--config", str(globals_.config)]
    if globals_.database_url is not None:
        argv += ["--database-url", globals_.database_url]
    return argv


def _tcp_database(url: str | None) -> bool:
    """Whether ``url`` reaches its database over TCP (a host that is not a socket folder)."""
    if url is None or url.startswith("sqlite"):
        return False
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    socket_dirs = [h for h in parse_qs(parts.query).get("host", []) if h.startswith("/")]
    return bool(parts.hostname) or not socket_dirs


@click.command("drill")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the report here (it always goes to DATA-DIR/drill/latest.json).")
@click.option("--address", help="The throwaway identity's address [default:"
              " drill-YYYYmmddHHMMSS@ the domain of the first --to].")
@click.option("--to", "colleagues", multiple=True, metavar="ADDR",
              help="A colleague to encrypt the drill message to, looked up by address"
              " (repeatable).")
@click.option("--leaver", metavar="ADDR", help="Whose key history to recover [default: the"
              " throwaway identity's, which changes no real user's records].")
@click.option("--share", "share_specs", multiple=True,
              help="An officer's escrow share, as for 'escrow recover' (repeat M times).")
@click.option("--reason", default="crisis drill", show_default=True,
              help="The recovery's reason in the audit log.")
@click.option("--no-namespace", is_flag=True,
              help="Do not try a network namespace: refuse outbound connections in-process"
              " (the report says so).")
@click.option("--in-child", is_flag=True, hidden=True)
@ca_options
def drill(json_path: str | None, address: str | None,
          colleagues: tuple[str, ...], leaver: str | None, share_specs: tuple[str, ...],
          reason: str, no_namespace: bool, in_child: bool, passphrase_file: str | None,
          passphrase_env: str | None, pin_file: str | None) -> None:
    """Run sign, verify, encrypt, decrypt, issue, revoke, OCSP and recovery offline.

    Inside a fresh network namespace with loopback only (a user namespace when not
    root), or with outbound
    connections refused where that is not possible. Each step is timed and reported; the
    report goes to DATA-DIR/drill/latest.json for 'smimekit assess'. A throwaway identity is
    issued for the drill and revoked before it ends. Exit 1 when a step failed.
    """
    if address is None and not (colleagues and "@" in colleagues[0]):
        raise click.UsageError("name the drill identity with --address, or give --to ADDR")
    if not in_child:
        argv = [*_globals_argv(), "drill", "--in-child"]
        for flag, value in (("--json", json_path), ("--address", address),
                            ("--leaver", leaver), ("--reason", reason),
                            ("--passphrase-file", passphrase_file),
                            ("--passphrase-env", passphrase_env), ("--pin-file", pin_file)):
            if value is not None:
                argv += [flag, value]
        for colleague in colleagues:
            argv += ["--to", colleague]
        for spec in share_specs:
            argv += ["--share", spec]
        if no_namespace:
            argv.append("--no-namespace")
        raise SystemExit(subprocess.run(argv, check=False).returncode)
    _run(json_path, address, colleagues, leaver, share_specs, reason, no_namespace,
         passphrase_file, passphrase_env, pin_file)


def _run(json_path: str | None, address: str | None, colleagues: tuple[str, ...],
         leaver: str | None, share_specs: tuple[str, ...], reason: str, no_namespace: bool,
         passphrase_file: str | None, passphrase_env: str | None,
         pin_file: str | None) -> None:
    import datetime as dt
    import time

    from smimekit.audit.drill import DrillInputs, cut_network, run_drill, write_report
    from smimekit.audit.model import DrillReport, DrillStep
    from smimekit.cli.escrow import unlock_share_specs
    from smimekit.cli.lookup import resolve_recipients
    from smimekit.errors import CAError, StoreError
    from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

    # first of all, before any file, database or socket is opened
    isolation = cut_network(allow_namespace=not no_namespace)
    data_dir = cli_globals().data_dir
    if address is None:
        domain = colleagues[0].rsplit("@", 1)[1]
        address = f"drill-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}@{domain}"
    passphrase = _ca_passphrase(passphrase_file, passphrase_env)
    shares = (lambda: unlock_share_specs(share_specs)) if share_specs else None
    offline = RevocationOptions(policy=RevocationPolicy.OFFLINE,
                                cache_dir=data_dir / "revocation-cache")

    def resolve(addresses: Sequence[str]) -> tuple[list[x509.Certificate],
                                                   list[x509.Certificate]]:
        certs, chains, _, _ = resolve_recipients(
            list(addresses), trust_paths=(), cert_paths=(), revocation=offline, aia=False)
        return certs, chains

    serve_argv = [*_globals_argv(), "ca", "serve", "--workers", "1"]
    if pin_file is not None:
        serve_argv += ["--pin-file", pin_file]
    click.echo(f"isolation: {isolation}")

    def show(step: DrillStep) -> None:
        click.echo(f"{'ok  ' if step.ok else 'FAIL'} {step.name:<24} {step.seconds:7.2f} s"
                   f"  {step.detail}")

    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = time.perf_counter()
    try:
        with open_ca(None, None, pin_file, passphrase=passphrase) as cax:
            inputs = DrillInputs(data_dir=data_dir, ca=cax, address=address,
                                 colleagues=colleagues, resolve=resolve,
                                 serve_argv=serve_argv, serve_passphrase=passphrase,
                                 shares=shares, leaver=leaver, reason=reason)
            report = run_drill(inputs, isolation, on_step=show)
    except (StoreError, CAError) as exc:
        # nothing ran: say why, in the report too (assess shows the latest drill)
        detail = f"{type(exc).__name__}: {exc}"
        if _tcp_database(cli_globals().database_url):
            detail += ("; a database reached over TCP is outside the drill's network: give"
                       " --database-url with a unix socket (e.g. ?host=/var/run/postgresql)")
        step = DrillStep("open-ca", False, time.perf_counter() - clock, detail)
        show(step)
        report = DrillReport(started, isolation, (step,))
    path = write_report(report, data_dir, Path(json_path) if json_path else None)
    failed = [s.name for s in report.steps if not s.ok]
    if failed:
        click.echo(f"smimekit: drill failed: {', '.join(failed)} (report: {path})", err=True)
        raise SystemExit(1)
    click.echo(f"drill passed: {len(report.steps)} steps (report: {path})")
