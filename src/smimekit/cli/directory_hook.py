"""Keeping the LDAP directory current after ``ca issue | renew | revoke | enroll``.

When ``[directory.ldap] publish = true``, the people a command changed have their entries
updated after the command's store transactions committed. A directory failure is a warning
line: the issuance (or revocation) stands, and ``smimekit directory publish`` repairs the
directory later. Nothing here runs (nor is ldap3 imported) without that setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from smimekit.cli.common import CliError, cli_config
from smimekit.errors import SmimeError

if TYPE_CHECKING:
    from smimekit.ca.issuance import CertificateAuthority

__all__ = ["kept_current", "publish_changes"]


def publish_changes(cax: CertificateAuthority, emails: list[str]) -> None:
    """Update the directory entries of ``emails`` when publishing is configured; a failure
    is reported as a warning on stderr, never raised."""
    people = list(dict.fromkeys(e for e in emails if e))
    if not people:
        return
    try:
        config = cli_config()
        ldap = config.directory.ldap if config.directory is not None else None
        if ldap is None or not ldap.publish:
            return
        from smimekit.directory.ldap import publish

        report = publish(cax.store, ldap, issuer_fingerprint=cax.issuer_fingerprint,
                         chain=[cax.ca.authority.cert, cax.ca.authority.root], emails=people)
    except SmimeError as exc:
        click.echo(f"smimekit: warning: the directory was not updated for {len(people)}"
                   f" people ({exc}); the certificates stand: run 'smimekit directory"
                   " publish' to repair it", err=True)
        return
    click.echo(f"directory: {report.summary()}", err=True)


@contextmanager
def kept_current(cax: CertificateAuthority) -> Iterator[list[str]]:
    """A list to add the changed addresses to; they are published when the block ends
    normally or with a reported failure (a batch with failed rows still recorded the rest)."""
    changed: list[str] = []
    try:
        yield changed
    except CliError:
        publish_changes(cax, changed)
        raise
    publish_changes(cax, changed)
