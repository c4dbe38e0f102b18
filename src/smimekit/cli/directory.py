"""``smimekit directory ...``: certificate distribution (docs/directory.md).

Each part of the group is a block of its own below (publish/export, smimea, harvest, client
settings), added by the branch that built it; the commands stay thin over
:mod:`smimekit.directory`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from smimekit.cli.common import CliError, cli_globals, load_cert_files, open_store, trust_anchors
from smimekit.cli.messages import _CERTS, _TRUST, _revocation_options

__all__ = ["directory"]


@click.group()
def directory() -> None:
    """Certificate distribution: harvest, publish, client settings."""


# -- harvest (certificates from signed mail) -------------------------------------------------


@directory.command("harvest")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@_TRUST
@_CERTS
@click.option("--allow-legacy", is_flag=True,
              help="Accept SHA-1 signatures and other legacy algorithms (old archives).")
@click.option("--max-size", type=click.IntRange(min=1), default=32 * 1024 * 1024,
              show_default=True, metavar="BYTES",
              help="A larger message is skipped unread.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_revocation_options
def harvest_command(paths: tuple[str, ...], trust_paths: tuple[str, ...],
                    cert_paths: tuple[str, ...], allow_legacy: bool, max_size: int,
                    as_json: bool, revocation: Any) -> None:
    """Keep the certificates of validly signed mail (mbox, Maildir, .eml files or folders).

    Each message is verified as 'smimekit verify' does (the trust store and --trust,
    revocation per --revocation). Only when the signature validates and the From address
    is the signer's are the signer's certificate and the encryption certificate it names
    (SMIMEEncryptionKeyPreference) kept for that address. Encrypted messages are skipped.
    """
    from smimekit.cli import local
    from smimekit.directory.harvest import harvest
    from smimekit.validation.intermediates import IntermediateCache

    for path in paths:
        if not Path(path).exists():
            raise CliError(f"{path} does not exist")
    data_dir = cli_globals().data_dir
    trust = trust_anchors(trust_paths)
    if not trust:
        raise CliError("no trust anchors: add some with 'smimekit trust add' or give --trust"
                       " (nothing can validate without them)")
    extra = load_cert_files(cert_paths)
    extra += [c for c in local.local_ca_chain(data_dir) if c not in extra]
    # the store our CA uses when there is one; else harvesting makes one (a mail user's)
    store = open_store(create=not local.has_ca(data_dir))
    try:
        report = harvest(paths, store=store, trust=trust, extra_certs=extra,
                         revocation=revocation, allow_legacy=allow_legacy,
                         intermediates=IntermediateCache.in_data_dir(data_dir),
                         max_size=max_size)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
    click.echo(f"messages read: {report.messages}; signed: {report.signed}; valid and bound"
               f" to their From: {report.valid}")
    click.echo(f"certificates: {report.new} new, {report.updated} updated,"
               f" {report.unchanged} unchanged")
    click.echo(f"skipped: {skipped}")
    for note in report.notes[:20]:
        click.echo(f"  {note}", err=True)
    if len(report.notes) > 20:
        click.echo(f"  ... and {len(report.notes) - 20} more (--json lists them)", err=True)
