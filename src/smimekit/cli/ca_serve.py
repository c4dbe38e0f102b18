"""``smimekit ca serve``: the CA's CRLs, OCSP and certificates over HTTP, with granian
(:mod:`smimekit.service.runner`).

Which process holds which key:

* the parent reads the passphrase, opens the OCSP signer (``CAHome.open_ocsp_signer``: the
  delegated OCSP key only), binds the socket and forks the workers; it answers no request;
* each worker inherits the OCSP signer as memory, opens its own store connection after the
  fork and answers requests; CRLs come from the store as published;
* with ``--sign-crls`` one more process, ``crl-signer``, is forked from the parent *before*
  anything is unlocked: it alone unlocks the CA (issuing key, file or token), renews the
  OCSP signer when it expires within 30 days and re-signs the CRL when less than half its
  validity is left, every ``--crl-check-interval`` seconds. The workers never hold the
  issuing key.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from smimekit.ca.home import CAHome
from smimekit.cli.ca import (
    OCSP_SIGNER_RENEW_BEFORE,
    _ca_passphrase,
    _renew_ocsp_signer_if_due,
    ca_options,
    open_ca,
)
from smimekit.cli.common import CliError, cli_globals, open_store
from smimekit.errors import SmimeError

__all__ = ["COMMANDS", "serve"]

SIGNER_START_TIMEOUT = 300
"""Seconds the crl-signer may take to unlock the CA (a token may be slow) and sign."""


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--sign-crls", is_flag=True,
              help="Also run a crl-signer process that holds the issuing key: it re-signs"
              " the CRL before it goes stale and renews the OCSP signer (default: the OCSP"
              " signer key only; CRLs come from the store as 'ca crl' published them).")
@click.option("--crl-check-interval", default=3600, show_default=True,
              type=click.IntRange(1, 86400), metavar="SECONDS",
              help="With --sign-crls: how often to check whether the CRL needs re-signing.")
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="Worker processes  [default: the number of CPUs]")
@click.option("--max-connections", default=1024, show_default=True,
              type=click.IntRange(1, 1_000_000), metavar="N",
              help="Connections one worker serves at once; more wait in the backlog.")
@click.option("--head-timeout", default=10.0, show_default=True,
              type=click.FloatRange(0.1, 3600), metavar="SECONDS",
              help="Deadline for a whole request head (also the keep-alive idle timeout).")
@click.option("--max-head-size", default=16384, show_default=True,
              type=click.IntRange(8192, 1 << 20), metavar="BYTES",
              help="Largest request line plus headers (larger: 431).")
@click.option("--no-keep-alive", is_flag=True, help="Close the connection after each answer.")
@click.option("--backlog", default=1024, show_default=True, type=click.IntRange(1, 65535),
              metavar="N", help="Connections the kernel queues before a worker takes them.")
@click.option("--shutdown-timeout", default=10, show_default=True,
              type=click.IntRange(1, 3600), metavar="SECONDS",
              help="At SIGTERM/SIGINT, how long requests in flight may take to finish.")
@ca_options
def serve(host: str, port: int, sign_crls: bool, crl_check_interval: int,
          workers: int | None, max_connections: int, head_timeout: float,
          max_head_size: int, no_keep_alive: bool, backlog: int, shutdown_timeout: int,
          passphrase_file: str | None, passphrase_env: str | None,
          pin_file: str | None) -> None:
    """Serve the CRLs, OCSP and the CA certificates over HTTP until SIGTERM or Ctrl-C.

    Paths: /crl/issuing.crl, /crl/root.crl, /ocsp (POST and GET), /certs/issuing.der,
    /certs/root.der. Put a reverse proxy at the CA's base URL in front of it
    (docs/deploy/nginx-ca.conf).

    By default only the OCSP signer's key is unlocked: the issuing key (file or token), the
    root key and the vault key are never read, and the newest CRL is served from the store.
    Publish CRLs with 'smimekit ca crl' from cron, or run one 'ca serve --sign-crls'.
    At SIGTERM or Ctrl-C requests in flight finish, then it exits 0.
    """
    from smimekit.service.runner import ServerLimits, default_workers

    limits = ServerLimits(workers=workers or default_workers(),
                          max_connections=max_connections, head_timeout=head_timeout,
                          keep_alive=not no_keep_alive, max_head_bytes=max_head_size,
                          backlog=backlog, shutdown_timeout=shutdown_timeout)
    passphrase = _ca_passphrase(passphrase_file, passphrase_env)
    signer_process = None
    if sign_crls:
        signer_process = _start_crl_signer(passphrase, pin_file, crl_check_interval)
    try:
        _serve(host, port, limits, passphrase, signer_process is not None)
    finally:
        if signer_process is not None:
            signer_process.terminate()
            signer_process.join(30)


def _serve(host: str, port: int, limits: Any, passphrase: bytes, signing: bool) -> None:
    from smimekit.ca.issuance import fingerprint
    from smimekit.service.ca_endpoints import ca_app, ocsp_only_endpoints
    from smimekit.service.runner import serve as run

    home = CAHome(cli_globals().data_dir)
    signer = home.open_ocsp_signer(passphrase)
    if signer.cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < OCSP_SIGNER_RENEW_BEFORE:
        click.echo(f"smimekit: warning: the OCSP signer certificate expires on"
                   f" {signer.cert.not_valid_after_utc:%Y-%m-%d}; renew it with 'smimekit ca"
                   " crl' where the issuing key is, then copy it here and restart", err=True)
    open_store().close()  # a wrong store is an error here, not in every worker
    store_opener = _store_opener()
    issuer = fingerprint(signer.issuing)

    def load() -> Any:  # in each worker, after the fork
        endpoints = ocsp_only_endpoints(signer, store_opener(), issuer, root_crl=home.root_crl)
        return ca_app(endpoints)

    what = ("serving CRL, OCSP and CA certificates, signing CRLs" if signing else
            "serving CRL, OCSP and CA certificates (OCSP signer key only)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        run(load, host, port, limits,
            on_ready=lambda url: click.echo(f"{what} on {url} (Ctrl-C to stop)", err=True))
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _store_opener() -> Callable[[], Any]:
    """open_store() of this run, callable in a forked worker (outside click's call)."""
    context = click.get_current_context()

    def opener() -> Any:
        with context.scope(cleanup=False):
            return open_store()

    return opener


def _start_crl_signer(passphrase: bytes, pin_file: str | None,
                      interval: int) -> Any:
    """Fork the crl-signer (nothing is unlocked in this process yet) and wait until it
    has unlocked the CA, renewed the OCSP signer if due and checked the CRL.

    Raises:
        CliError: it could not (its error, e.g. the issuing key file is missing).
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    click_context = click.get_current_context()
    process = context.Process(target=_crl_signer, name="crl-signer",
                              args=(click_context, passphrase, pin_file, interval, sender))
    process.start()
    sender.close()
    try:
        if not receiver.poll(SIGNER_START_TIMEOUT):
            raise CliError("the CRL signer did not start in time")
        status = receiver.recv()
    except EOFError:
        status = "the CRL signer stopped before it started"
    if status != "ready":
        process.join(10)
        if process.is_alive():
            process.terminate()
        raise CliError(status)
    return process


def _crl_signer(click_context: click.Context, passphrase: bytes, pin_file: str | None,
                interval: int, report: Any) -> None:
    """The crl-signer process: the only one that holds the issuing key."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log = logging.getLogger("smimekit.ca.crl")
    parent = os.getppid()
    try:
        with click_context.scope(cleanup=False), \
                open_ca(None, None, pin_file, passphrase=passphrase) as cax:
            _renew_ocsp_signer_if_due(cax, None, None, passphrase=passphrase)
            cax.current_crl()  # re-signs when less than half the period is left
            report.send("ready")
            report.close()
            while True:
                deadline = time.monotonic() + interval
                while time.monotonic() < deadline:
                    if os.getppid() != parent:
                        return  # the server is gone
                    time.sleep(min(1.0, interval))
                try:
                    cax.current_crl()
                except Exception as exc:  # the next round tries again; serving goes on
                    log.error("CRL re-signing failed", extra={"error": type(exc).__name__})
    except SmimeError as exc:
        _report_failure(report, str(exc))
    except Exception as exc:
        _report_failure(report, f"internal error ({type(exc).__name__}): {exc}")


def _report_failure(report: Any, message: str) -> None:
    try:
        report.send(message)
    except OSError:  # the parent went away
        pass
    sys.exit(1)


COMMANDS: list[click.Command] = [serve]
"""Registered into the ``ca`` group by :mod:`smimekit.cli.main`."""
